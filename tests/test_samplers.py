"""Training samplers for imbalanced data (repeat-factor, class-aware) next to the uniform one: hand-computed
repeat factors, the frequencies they produce, determinism, disjoint ranks, exact resume, config errors,
the real loader and trainer, and the imbalanced BCCD split."""
import itertools
import json
import os
from collections import Counter

import numpy as np
import pytest
import torch

from retdet.config import load_config
from retdet.data import DatasetInfo, ImageRecord, build_train_loader
from retdet.data.build import build_train_sampler
from retdet.data.imbalanced_split import make_imbalanced_split
from retdet.data.samplers import (
    ClassAwareSampler, GroupedBatchSampler, RepeatFactorSampler, TrainingSampler, category_repeat_factors,
    image_repeat_factors,
)
from retdet.registry import SAMPLERS, RegistryError

from .conftest import SHARED
from .helpers.training import TINY, train_net

BCCD = os.path.join(SHARED, "datasets", "bccd")

# 10 images: class 0 in images 0-8, class 1 in images 1-4, class 2 (rare) in image 0 only, image 9 without boxes.
# f_0 = 0.9, f_1 = 0.4, f_2 = 0.1; with t = 0.9: r_0 = max(1, 1) = 1, r_1 = sqrt(0.9 / 0.4) = 1.5,
# r_2 = sqrt(0.9 / 0.1) = 3. Images: r = 3 (image 0), 1.5 (1-4), 1 (5-8), 1 (9, no boxes); sum 14.
LABELS = [np.array([0, 0, 2])] + [np.array([1, 0])] * 4 + [np.array([0])] * 4 + [np.zeros(0, np.int64)]
EXPECTED_IMAGE_FACTORS = [3.0] + [1.5] * 4 + [1.0] * 5

# one class per image, so the drawn image tells the drawn class: class 0 in 8 images, classes 1 and 2 in one
# each, the last image without boxes
ONE_CLASS_EACH = [np.array([0])] * 8 + [np.array([1, 1]), np.array([2]), np.zeros(0, np.int64)]

SAMPLER_KINDS = {
    "TrainingSampler": lambda **kw: TrainingSampler(LABELS, **kw),
    "RepeatFactorSampler": lambda **kw: RepeatFactorSampler(LABELS, repeat_thresh=0.9, **kw),
    "ClassAwareSampler": lambda **kw: ClassAwareSampler(LABELS, **kw),
}


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def epoch_list(sampler, epoch=0):
    """The whole (index, seed) list of one epoch, as every rank computes it."""
    g = torch.Generator().manual_seed(sampler.seed + epoch)
    order = sampler.epoch_indices(g)
    seeds = torch.randint(0, 2**31 - 1, (len(order),), generator=g)
    return list(zip(order.tolist(), seeds.tolist()))


def toy_info(labels, name="toy"):
    records = [ImageRecord(file_name=f"{i}.jpg", image_id=i, height=10, width=10,
                           boxes=np.zeros((len(lab), 4), np.float32), labels=np.asarray(lab, np.int64))
               for i, lab in enumerate(labels)]
    return DatasetInfo(name=name, records=records, class_names=["a", "b", "c"], label_to_category_id=[1, 2, 3])


# ---- repeat factors -----------------------------------------------------------------------------

def test_repeat_factors_by_hand():
    category = category_repeat_factors(LABELS, 0.9)
    assert category == pytest.approx({0: 1.0, 1: 1.5, 2: 3.0})
    assert image_repeat_factors(LABELS, category).tolist() == pytest.approx(EXPECTED_IMAGE_FACTORS)
    # LVIS's threshold repeats nothing here: every class is in at least 10% of the images
    assert RepeatFactorSampler(LABELS).image_factors.tolist() == [1.0] * 10


def test_repeat_factor_counts_match_the_factors():
    sampler = RepeatFactorSampler(LABELS, repeat_thresh=0.9, seed=3)
    epochs = 4000
    counts = np.zeros((epochs, 10))
    for e in range(epochs):
        counts[e] = np.bincount([i for i, _ in epoch_list(sampler, e)], minlength=10)
    assert (counts[:, 0] == 3).all() and (counts[:, 5:] == 1).all()  # whole factors: exactly, every epoch
    assert set(counts[:, 1:5].ravel().tolist()) == {1.0, 2.0}  # 1.5: once or twice
    assert counts.mean(0) == pytest.approx(EXPECTED_IMAGE_FACTORS, abs=0.03)  # twice in half the epochs
    # and through the stream itself: the first 1000 epochs' worth of items
    stream = Counter(i for i, _ in take(sampler, int(counts[:1000].sum())))
    assert [stream[i] / 1000 for i in range(10)] == pytest.approx(EXPECTED_IMAGE_FACTORS, abs=0.05)


def test_repeat_factor_sampler_handles_a_dataset_without_boxes():
    sampler = RepeatFactorSampler([np.zeros(0, np.int64)] * 4, repeat_thresh=0.5)
    assert sorted(i for i, _ in take(sampler, 4)) == [0, 1, 2, 3]


# ---- class-aware --------------------------------------------------------------------------------

def test_class_aware_draws_classes_uniformly():
    sampler = ClassAwareSampler(ONE_CLASS_EACH, seed=1)
    assert sampler.epoch_size == len(ONE_CLASS_EACH)
    drawn = Counter(i for i, _ in take(sampler, 30000))
    per_class = [sum(drawn[i] for i in range(8)), drawn[8], drawn[9]]
    assert np.array(per_class) / 30000 == pytest.approx([1 / 3] * 3, abs=0.015)
    assert drawn[10] == 0  # no boxes, no class to be drawn for
    assert np.array([drawn[i] for i in range(8)]) / 30000 == pytest.approx([1 / 24] * 8, abs=0.006)


def test_class_aware_epoch_size():
    sampler = ClassAwareSampler(ONE_CLASS_EACH, epoch_size=5)
    assert len(epoch_list(sampler)) == 5


# ---- the stream: determinism, ranks, resume -----------------------------------------------------

@pytest.mark.parametrize("kind", sorted(SAMPLER_KINDS))
def test_same_seed_same_stream_other_seed_other_stream(kind):
    make = SAMPLER_KINDS[kind]
    a = take(make(seed=5), 60)
    assert a == take(make(seed=5), 60)
    assert a != take(make(seed=6), 60)
    assert all(0 <= i < 10 and 0 <= s < 2**31 - 1 for i, s in a)


@pytest.mark.parametrize("kind", sorted(SAMPLER_KINDS))
def test_two_ranks_share_each_epoch_disjointly(kind):
    make = SAMPLER_KINDS[kind]
    one = make(seed=7)
    ranks = [make(seed=7, rank=r, world_size=2) for r in range(2)]
    first, second = epoch_list(one, 0), epoch_list(one, 1)
    # rank r takes positions r, r + 2, ... of the epoch list; then the next epoch's, likewise
    for r, sampler in enumerate(ranks):
        share = first[r::2] + second[r::2]
        assert take(sampler, len(share)) == share
    assert take(one, len(first)) == first
    both = Counter(first[0::2]) + Counter(first[1::2])
    assert both == Counter(first) and not set(first[0::2]) & set(first[1::2])


def test_an_epoch_too_short_for_the_ranks_is_an_error():
    with pytest.raises(ValueError, match="cannot be shared by 4 workers"):
        ClassAwareSampler(ONE_CLASS_EACH, epoch_size=3, world_size=4)


@pytest.mark.parametrize("kind", ["RepeatFactorSampler", "ClassAwareSampler"])
def test_resume_with_start_batch_continues_the_stream(kind):
    make = SAMPLER_KINDS[kind]
    landscape = [i % 3 != 0 for i in range(10)]
    it = iter(GroupedBatchSampler(make(seed=2), landscape, 2))
    first = [next(it) for _ in range(12)]
    for batch in first:
        assert len({landscape[i] for i, _ in batch}) == 1
    resumed = iter(GroupedBatchSampler(make(seed=2), landscape, 2, start_batch=7))
    assert [next(resumed) for _ in range(5)] == first[7:12]


def test_training_sampler_stream_is_unchanged():
    """The uniform stream is the one runs before the registry had (same epochs, same seeds): resumed
    checkpoints of those runs continue with the same data."""
    g = torch.Generator().manual_seed(4)
    order, seeds = torch.randperm(10, generator=g), torch.randint(0, 2**31 - 1, (10,), generator=g)
    assert take(TrainingSampler(10, seed=4), 10) == list(zip(order.tolist(), seeds.tolist()))


# ---- building from the config -------------------------------------------------------------------

def test_build_from_config_nodes():
    info = toy_info(LABELS)
    assert sorted(SAMPLERS.names()) == ["ClassAwareSampler", "RepeatFactorSampler", "TrainingSampler"]
    assert isinstance(build_train_sampler(None, info), TrainingSampler)
    rfs = build_train_sampler(dict(type="RepeatFactorSampler", repeat_thresh=0.9), info, seed=3, rank=1, world_size=2)
    assert (rfs.seed, rfs.rank, rfs.world_size) == (3, 1, 2)
    assert rfs.image_factors.tolist() == pytest.approx(EXPECTED_IMAGE_FACTORS)
    assert "c 3.00" in rfs.summary(info.class_names)


@pytest.mark.parametrize("node, error, message", [
    (dict(type="RepeatFactorSampler", repeat_thresh=0), ValueError, r"dataloader\.train\.sampler.*repeat_thresh must"),
    (dict(type="RepeatFactorSampler", repeat_thresh=-0.1), ValueError, "repeat_thresh must be a number in"),
    (dict(type="RepeatFactorSampler", repeat_thresh=1.5), ValueError, r"in \(0, 1\].*got 1.5"),
    (dict(type="RepeatFactorSampler", repeat_thresh="0.1"), ValueError, "got '0.1'"),
    (dict(type="RepeatFactorSampler", repeat_tresh=0.1), TypeError,
     r"dataloader\.train\.sampler.*Did you mean 'repeat_thresh'"),
    (dict(type="RepeatFactorSamplr"), RegistryError,
     r"dataloader\.train\.sampler\.type.*Did you mean: 'RepeatFactorSampler'"),
    (dict(type="ClassAwareSampler", epoch_size=0), ValueError, "epoch_size must be a positive integer"),
    (dict(type="ClassAwareSampler", seed=1), ValueError, r"dataloader\.train\.sampler\.seed cannot be set"),
    ("RepeatFactorSampler", TypeError, r"dataloader\.train\.sampler must be dict\(type=NAME"),
])
def test_bad_sampler_nodes_are_named(node, error, message):
    with pytest.raises(error, match=message):
        build_train_sampler(node, toy_info(LABELS))


def test_class_aware_needs_labelled_images():
    message = r"dataloader\.train\.sampler.*on dataset empty.*none of the 3 training images has a box"
    with pytest.raises(ValueError, match=message):
        build_train_sampler(dict(type="ClassAwareSampler"), toy_info([np.zeros(0, np.int64)] * 3, name="empty"))


# ---- the real loader and trainer ----------------------------------------------------------------

def test_train_loader_follows_the_sampler_and_resumes():
    cfg = load_config(TINY).dataloader.train
    cfg.sampler = dict(type="ClassAwareSampler")
    cfg.total_batch_size = 2
    loader, dataset = build_train_loader(cfg, input_format="BGR", seed=3)
    records = dataset.info.records
    stream = take(ClassAwareSampler([r.labels for r in records], seed=3), 8)
    batches = [b for b, _ in zip(loader, range(4))]
    assert [s.image_id for b in batches for s in b] == [records[i].image_id for i, _ in stream]
    resumed, _ = build_train_loader(cfg, input_format="BGR", seed=3, start_batch=2)
    for x, y in zip(batches[2:], [b for b, _ in zip(resumed, range(2))]):
        for s, t in zip(x, y):  # same images, same augmentation
            assert s.image_id == t.image_id and torch.equal(s.image, t.image) and torch.equal(s.gt_boxes, t.gt_boxes)


def test_trainer_takes_the_sampler_from_the_command_line(tmp_path):
    out = train_net("--config", TINY, "--output-dir", tmp_path / "rfs", "train.max_iter=2", "train.checkpoint_period=0",
                    "dataloader.train.sampler=dict(type='RepeatFactorSampler', repeat_thresh=0.5)", in_process=True)
    assert "Training sampler: RepeatFactorSampler(repeat_thresh=0.5)" in out.stdout
    bad = train_net("--config", TINY, "--output-dir", tmp_path / "bad", "train.max_iter=2",
                    "dataloader.train.sampler=dict(type='RepeatFactorSampler', repeat_thresh=2.0)",
                    in_process=True, expect_ok=False)
    assert "repeat_thresh must be a number in (0, 1]" in bad.stdout + bad.stderr
    assert not os.path.exists(tmp_path / "bad" / "metrics.json")  # refused before the first step


# ---- the imbalanced BCCD split ------------------------------------------------------------------

@pytest.mark.skipif(not os.path.isdir(BCCD), reason="../shared/datasets/bccd is not here")
def test_imbalanced_split_is_deterministic(tmp_path):
    source = os.path.join(BCCD, "annotations", "instances_train.json")
    a, b, c = (str(tmp_path / f"{n}.json") for n in "abc")
    stats = make_imbalanced_split(source, a, category="Platelets", keep=0.1, seed=0)
    make_imbalanced_split(source, b, category="Platelets", keep=0.1, seed=0)
    make_imbalanced_split(source, c, category="Platelets", keep=0.1, seed=1)
    assert open(a).read() == open(b).read() != open(c).read()
    # BCCD train: 292 images, 162 of them with Platelets -> 16 kept + 130 without
    assert stats["images"] == 146 and stats["categories"]["Platelets"]["images"] == 16
    kept = json.load(open(a))
    assert {im["id"] for im in kept["images"]} >= {a["image_id"] for a in kept["annotations"]}
    with pytest.raises(KeyError, match="no category 'Plateletz'"):
        make_imbalanced_split(source, a, category="Plateletz", keep=0.1)
