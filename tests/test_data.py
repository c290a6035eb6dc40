"""Data pipeline: datasets by name (BCCD, synthetic), bad inputs, box-aligned augmentations, samplers."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from retdet.data import (
    DetectionDataset, GroupedBatchSampler, ImageReadError, InferenceSampler, TrainingSampler, build_train_loader,
    get_dataset, read_image, register_coco,
)
from retdet.data.catalog import _CACHE, _LOADERS
from retdet.data.synthetic import CLASSES, generate_synthetic_shapes
from retdet.data.transforms import (
    AugSample, ColorJitter, CutMix, MixUp, Mosaic, RandomFlip, RandomRotation, ResizeShortestEdge, ScaleJitterCrop,
)

from .conftest import SHARED

BCCD = os.path.join(SHARED, "datasets", "bccd")


@pytest.fixture
def registered():
    """Register datasets for one test; unregister afterwards."""
    names = []

    def reg(name, json_file, image_root):
        register_coco(name, json_file, image_root, overwrite=True)
        names.append(name)

    yield reg
    for n in names:
        _LOADERS.pop(n, None)
        _CACHE.pop(n, None)


# ---- datasets -----------------------------------------------------------------------------------

@pytest.mark.parametrize("split, images, boxes", [("train", 292, 3935), ("val", 72, 944)])
def test_bccd_registers_and_loads(registered, split, images, boxes):
    registered(f"bccd_{split}_t", os.path.join(BCCD, "annotations", f"instances_{split}.json"), os.path.join(BCCD, "images"))
    info = get_dataset(f"bccd_{split}_t")
    assert (len(info), info.num_boxes) == (images, boxes)
    assert info.class_names == ["RBC", "WBC", "Platelets"]
    # label round trip: contiguous labels map back to the json's category ids
    raw = json.load(open(os.path.join(BCCD, "annotations", f"instances_{split}.json")))
    by_image = {}
    for a in raw["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["category_id"])
    for r in info.records[:20]:
        assert sorted(info.label_to_category_id[int(lbl)] for lbl in r.labels) == sorted(by_image.get(r.image_id, []))
    assert info.category_id_to_label == {1: 0, 2: 1, 3: 2}
    sample = DetectionDataset(info)[0]
    assert sample.image.shape == (3, 480, 640) and sample.image.dtype == torch.uint8


def test_synthetic_is_deterministic_with_requested_counts(tmp_path):
    a = generate_synthetic_shapes(str(tmp_path / "a"), num_images=6, seed=3)
    b = generate_synthetic_shapes(str(tmp_path / "b"), num_images=6, seed=3)
    c = generate_synthetic_shapes(str(tmp_path / "c"), num_images=6, seed=4)
    assert open(a, "rb").read() == open(b, "rb").read() != open(c, "rb").read()
    for name in sorted(os.listdir(tmp_path / "a" / "images")):
        assert (tmp_path / "a" / "images" / name).read_bytes() == (tmp_path / "b" / "images" / name).read_bytes()
    data = json.load(open(a))
    assert len(data["images"]) == 6 and [c["name"] for c in data["categories"]] == CLASSES
    assert len(data["annotations"]) >= 6
    sizes = [a["bbox"][2] * a["bbox"][3] for a in data["annotations"]]
    assert min(sizes) < 40 ** 2 and max(sizes) > 100 ** 2  # small and large objects


def test_synthetic_cache_command_fills_the_cache_as_first_use_would(tmp_path, monkeypatch):
    """`python -m retdet.data.synthetic --cache` (the Makefile runs it while the ops compile) writes
    each split where the training's first use looks, the same bytes, and generates nothing twice."""
    from retdet.data import synthetic

    monkeypatch.setenv("RETDET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(synthetic, "SPLITS", {"train": (3, 0), "val": (2, 1)})
    synthetic.main(["--cache"])
    for split, (num, seed) in synthetic.SPLITS.items():
        json_file, image_root = synthetic.ensure_synthetic_shapes(split)
        assert json_file.startswith(str(tmp_path / "cache")) and len(os.listdir(image_root)) == num
        fresh = generate_synthetic_shapes(str(tmp_path / f"fresh_{split}"), num_images=num, seed=seed)
        assert open(json_file, "rb").read() == open(fresh, "rb").read()
    stamp = os.path.getmtime(json_file)
    synthetic.main(["--cache"])
    assert os.path.getmtime(json_file) == stamp
    with pytest.raises(SystemExit):
        synthetic.main([])  # --output or --cache is required


def write_coco(tmp_path, images, annotations, categories=({"id": 7, "name": "thing"},)):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": list(categories)}))
    return str(path)


def test_bad_boxes_and_empty_images(tmp_path, registered):
    (tmp_path / "img").mkdir()
    for i in (1, 2):
        cv2.imwrite(str(tmp_path / "img" / f"{i}.png"), np.zeros((40, 60, 3), np.uint8))
    ann = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 0, 5], "iscrowd": 0},      # zero width
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [50, 30, 30, 30], "iscrowd": 0},    # leaves the image
        {"id": 3, "image_id": 1, "category_id": 7, "bbox": [70, 50, 5, 5], "iscrowd": 0},      # fully outside
        {"id": 4, "image_id": 1, "category_id": 7, "bbox": [0, 0, 20, 20], "iscrowd": 1},      # crowd
    ]
    images = [{"id": 1, "file_name": "1.png", "height": 40, "width": 60},
              {"id": 2, "file_name": "2.png", "height": 40, "width": 60}]  # image 2: no annotations
    registered("bad_boxes", write_coco(tmp_path, images, ann), str(tmp_path / "img"))
    info = get_dataset("bad_boxes")
    r1, r2 = info.records
    np.testing.assert_allclose(r1.boxes, [[50, 30, 60, 40]])
    np.testing.assert_allclose(r1.ignore_boxes, [[0, 0, 20, 20]])
    assert info.stats["dropped_degenerate_boxes"] == 2 and info.stats["clipped_boxes"] == 2
    assert len(r2.boxes) == 0 and info.stats["images_without_boxes"] == 1  # kept as a negative
    from retdet.data import merge_datasets

    assert len(merge_datasets(["bad_boxes"], filter_empty=True)) == 1


def test_corrupt_and_missing_images(tmp_path, registered):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "bad.jpg").write_bytes(b"not a jpeg at all")
    cv2.imwrite(str(tmp_path / "img" / "good.png"), np.zeros((10, 10, 3), np.uint8))
    images = [{"id": 1, "file_name": "bad.jpg", "height": 10, "width": 10},
              {"id": 2, "file_name": "missing.png", "height": 10, "width": 10},
              {"id": 3, "file_name": "good.png", "height": 10, "width": 10}]
    registered("corrupt", write_coco(tmp_path, images, []), str(tmp_path / "img"))
    info = get_dataset("corrupt")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        DetectionDataset(info)[0]
    with pytest.raises(ImageReadError, match="missing.png"):
        DetectionDataset(info)[1]
    skipping = DetectionDataset(info, skip_bad_images=True)
    assert skipping[0].image_id == 3 and skipping[1].image_id == 3
    assert [os.path.basename(f) for f in skipping.skipped] == ["bad.jpg", "missing.png"]


def test_image_cache_gives_the_same_samples_and_reads_each_file_once(tmp_path, registered):
    """cache_images_mb: samples (augmented, by (index, seed)) equal the uncached dataset's; a cached
    image is not read again (its file can go), an image beyond the budget is; cached arrays are
    read-only, so a transform that wrote into its input would fail instead of corrupting the cache."""
    (tmp_path / "img").mkdir()
    rng = np.random.default_rng(0)
    images = []
    for i, (h, w) in enumerate([(40, 60), (50, 30), (64, 64)]):
        cv2.imwrite(str(tmp_path / "img" / f"{i}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": h, "width": w})
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 7, "bbox": [2, 3, 20, 15], "area": 300, "iscrowd": 0}
            for i in range(3)]
    registered("cached", write_coco(tmp_path, images, anns), str(tmp_path / "img"))
    info = get_dataset("cached")
    transforms = [ResizeShortestEdge(short_edge_length=(24, 32, 40), max_size=100), RandomFlip(prob=0.5), ColorJitter()]
    plain = DetectionDataset(info, transforms)
    budget = (40 * 60 * 3 + 50 * 30 * 3) / 2**20  # the first two images, not the third
    cached = DetectionDataset(info, transforms, cache_images_mb=budget)
    for key in [(0, 1), (1, 2), (2, 3), (0, 4), (1, 5)]:
        a, b = plain[key], cached[key]
        assert torch.equal(a.image, b.image) and torch.equal(a.gt_boxes, b.gt_boxes)
    assert sorted(cached._cache) == [0, 1] and all(not im.flags.writeable for im in cached._cache.values())
    expected = plain[(0, 1)].image
    for i in range(3):
        os.remove(tmp_path / "img" / f"{i}.png")
    assert torch.equal(cached[(0, 1)].image, expected)  # from memory
    with pytest.raises(ImageReadError, match="2.png"):
        cached[2]  # over the budget: read again, and the file is gone
    with pytest.raises(ValueError, match="cache_images_mb"):
        DetectionDataset(info, cache_images_mb=-1)


def test_missing_annotation_file_and_unknown_name(tmp_path, registered):
    registered("nowhere", str(tmp_path / "none.json"), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="annotation file not found: .*none.json"):
        get_dataset("nowhere")
    with pytest.raises(KeyError, match="unknown dataset 'coco_2017_trian'.*Did you mean 'coco_2017_train'"):
        get_dataset("coco_2017_trian")
    os.environ["RETDET_DATASETS"] = str(tmp_path)
    try:
        with pytest.raises(FileNotFoundError, match=f"{tmp_path}/coco/annotations/instances_val2017.json.*RETDET_DATASETS"):
            _CACHE.pop("coco_2017_val", None)
            get_dataset("coco_2017_val")
    finally:
        del os.environ["RETDET_DATASETS"]


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :10] = 255
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    pil.save(tmp_path / "rot.jpg", exif=exif)
    out = read_image(str(tmp_path / "rot.jpg"))
    assert out.shape == (40, 20, 3) and out[:8].mean() > 200 and out[-20:].mean() < 50
    assert read_image(str(tmp_path / "rot.jpg"), "RGB").shape == (40, 20, 3)


# ---- transforms keep boxes on their pixels --------------------------------------------------------

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


def painted(seed=0, h=120, w=160):
    """Black image with non-overlapping boxes, each filled with its own colour (label = colour index)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((h, w, 3), np.uint8)
    boxes = []
    cells = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    for k, (r, c) in enumerate(cells):
        x0 = c * w / 3 + rng.uniform(2, 10)
        y0 = r * h / 2 + rng.uniform(2, 10)
        x1 = x0 + rng.uniform(15, w / 3 - 12)
        y1 = y0 + rng.uniform(15, h / 2 - 12)
        box = np.array([round(x0), round(y0), round(x1), round(y1)], np.float32)
        image[int(box[1]):int(box[3]), int(box[0]):int(box[2])] = COLOURS[k]
        boxes.append(box)
    return AugSample(image=image, boxes=np.stack(boxes), labels=np.arange(5))


def measured_box(image, colour, tol=60):
    mask = np.all(np.abs(image.astype(int) - colour) < tol, axis=2)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None, 0
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32), len(xs)


def assert_boxes_follow_pixels(out, atol=2.5):
    assert len(out.boxes) == len(out.labels)
    for box, label in zip(out.boxes, out.labels):
        found, _ = measured_box(out.image, COLOURS[label])
        assert found is not None, f"label {label} has a box but no pixels"
        np.testing.assert_allclose(box, found, atol=atol, err_msg=f"label {label}")


@pytest.mark.parametrize("transform", [
    ResizeShortestEdge(short_edge_length=200, max_size=1000),
    ResizeShortestEdge(short_edge_length=(60, 90), max_size=100, sample_style="range"),
    RandomFlip(prob=1.0),
    RandomFlip(prob=1.0, horizontal=False),
    ScaleJitterCrop(output_size=(96, 96), scale_range=(0.8, 1.6), min_visible=0.3),
])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_geometric_transforms_keep_boxes_aligned(transform, seed):
    sample = painted(seed)
    out = transform(sample, np.random.default_rng(seed), None)
    assert_boxes_follow_pixels(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rotation_boxes_enclose_rotated_corners(seed):
    out = RandomRotation(angle=(25, 25), prob=1.0, min_visible=0.0)(painted(seed), np.random.default_rng(0), None)
    h, w = out.size
    for box, label in zip(out.boxes, out.labels):
        found, _ = measured_box(out.image, COLOURS[label])
        assert found is not None
        # the object's pixels lie inside its box ...
        assert found[0] >= box[0] - 2 and found[1] >= box[1] - 2 and found[2] <= box[2] + 2 and found[3] <= box[3] + 2
        # ... and, where the border did not cut the rotated rectangle, the box is tight
        if box[0] > 0 and box[1] > 0 and box[2] < w and box[3] < h:
            np.testing.assert_allclose(box, found, atol=3.0, err_msg=f"label {label}")


def test_crop_drops_mostly_hidden_boxes():
    sample = painted(0)
    t = ScaleJitterCrop(output_size=(60, 60), scale_range=(1.0, 1.0), min_visible=0.5)
    for seed in range(5):
        out = t(sample, np.random.default_rng(seed), None)
        for label in range(5):
            _, visible = measured_box(out.image, COLOURS[label])
            full = (sample.boxes[label, 2] - sample.boxes[label, 0]) * (sample.boxes[label, 3] - sample.boxes[label, 1])
            scale = min(60 / 120, 60 / 160)
            if label in out.labels:
                assert visible >= 0.5 * full * scale ** 2 * 0.8
            elif visible > 0:
                assert visible < 0.5 * full * scale ** 2 * 1.2


def test_color_jitter_changes_pixels_not_boxes():
    sample = painted(0)
    out = ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, prob=1.0)(sample, np.random.default_rng(0), None)
    np.testing.assert_array_equal(out.boxes, sample.boxes)
    assert not np.array_equal(out.image, sample.image)


def other_source(seed=10):
    """A source of painted samples whose labels are shifted so colours stay unique per sample."""
    def source(rng):
        return painted(int(rng.integers(100)) + seed)
    return source


def test_mosaic_keeps_only_visible_boxes_aligned():
    for seed in range(4):
        out = Mosaic(output_size=(160, 160), prob=1.0, min_visible=0.3)(painted(seed), np.random.default_rng(seed),
                                                                        other_source())
        assert out.image.shape == (160, 160, 3)
        # colours repeat across the four tiles: measure each box inside its own region
        for box, label in zip(out.boxes, out.labels):
            x0, y0, x1, y1 = box.astype(int)
            region = out.image[y0:y1, x0:x1]
            mask = np.all(np.abs(region.astype(int) - COLOURS[label]) < 60, axis=2)
            assert mask.mean() > 0.8, f"box {box} (label {label}) is not on its colour"


def test_mixup_blends_and_keeps_both_sets():
    base = painted(0)
    out = MixUp(alpha=2.0, prob=1.0)(base, np.random.default_rng(0), other_source())
    other = painted(int(np.random.default_rng(0).integers(100)) + 10)
    assert len(out.boxes) == len(base.boxes) + len(other.boxes)
    assert out.image.shape == base.image.shape and not np.array_equal(out.image, base.image)


def test_cutmix_keeps_visible_boxes():
    base = painted(0)
    for seed in range(5):
        out = CutMix(prob=1.0, area_range=(0.2, 0.4), min_visible=0.4)(base, np.random.default_rng(seed), other_source())
        for box, label in zip(out.boxes, out.labels):
            x0, y0, x1, y1 = box.astype(int)
            region = out.image[y0:y1, x0:x1]
            mask = np.all(np.abs(region.astype(int) - COLOURS[label]) < 60, axis=2)
            assert mask.mean() >= 0.35, f"kept box {box} is mostly covered"
        # base boxes that were dropped are mostly covered by the patch
        for label in set(range(5)) - set(out.labels[: len(base.boxes)].tolist()):
            _, visible = measured_box(out.image, COLOURS[label])
            x0, y0, x1, y1 = base.boxes[label]
            if label not in out.labels.tolist():  # the other image can bring the colour back
                assert visible <= 0.45 * (x1 - x0) * (y1 - y0)


# ---- samplers and loaders -----------------------------------------------------------------------

def test_training_sampler_is_deterministic_and_ranks_are_disjoint():
    take = lambda s, n: [next(it) for it in [iter(s)] for _ in range(n)]  # noqa: E731
    a = take(TrainingSampler(10, seed=5), 25)
    assert a == take(TrainingSampler(10, seed=5), 25) and a != take(TrainingSampler(10, seed=6), 25)
    assert sorted(i for i, _ in a[:10]) == list(range(10))  # each epoch is a permutation
    r0 = take(TrainingSampler(10, seed=5, rank=0, world_size=2), 5)
    r1 = take(TrainingSampler(10, seed=5, rank=1, world_size=2), 5)
    assert sorted(i for i, _ in r0 + r1) == list(range(10))


def test_inference_sampler_covers_each_image_once_across_two_ranks():
    for size in (0, 1, 7, 10):
        shards = [list(InferenceSampler(size, rank=r, world_size=2)) for r in range(2)]
        assert sorted(i for s in shards for i, _ in s) == list(range(size))


def test_grouped_batches_and_skipping():
    landscape = [i % 3 != 0 for i in range(12)]
    batches = GroupedBatchSampler(TrainingSampler(12, seed=1), landscape, 2)
    it = iter(batches)
    first = [next(it) for _ in range(8)]
    for batch in first:
        assert len({landscape[i] for i, _ in batch}) == 1
    resumed = iter(GroupedBatchSampler(TrainingSampler(12, seed=1), landscape, 2, start_batch=5))
    assert [next(resumed) for _ in range(3)] == first[5:8]


def test_train_loader_batches_are_deterministic(registered):
    registered("bccd_loader_t", os.path.join(BCCD, "annotations", "instances_val.json"), os.path.join(BCCD, "images"))
    cfg = dict(dataset=dict(names=["bccd_loader_t"]), total_batch_size=2, num_workers=0,
               transforms=[dict(type="ResizeShortestEdge", short_edge_length=(96, 128)), dict(type="RandomFlip")])
    first = [b for b, _ in zip(build_train_loader(cfg, input_format="BGR", seed=3)[0], range(3))]
    again = [b for b, _ in zip(build_train_loader(cfg, input_format="BGR", seed=3)[0], range(3))]
    for x, y in zip(first, again):
        for s, t in zip(x, y):
            assert s.image_id == t.image_id and torch.equal(s.image, t.image) and torch.equal(s.gt_boxes, t.gt_boxes)
