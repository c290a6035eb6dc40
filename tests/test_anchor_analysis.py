"""Anchor coverage and search (retdet/evaluation/anchor_coverage.py, anchor_search.py), against the
detector's own anchors and matcher and brute force; tools/analyze_anchors.py and visualize_data.py
--show-anchors."""
import json
import os

import numpy as np
import pytest
import torch

from retdet import modeling  # noqa: F401  (registers the anchor generators and matchers)
from retdet.config import load_config
from retdet.data import merge_datasets
from retdet.evaluation import anchor_coverage as ac
from retdet.evaluation.anchor_search import AnchorFitness, AnchorSetting, cell_anchors, search_anchors
from retdet.registry import ANCHOR_GENERATORS, MATCHERS, build
from retdet.structures import ImageSample
from retdet.structures.boxes import pairwise_iou

from .conftest import ROOT, run_tool

TINY = os.path.join(ROOT, "tests", "configs", "tiny_train.py")


def parts(overrides=()):
    cfg = load_config(TINY, list(overrides))
    return (cfg, build(cfg.model.anchor_generator, ANCHOR_GENERATORS), build(cfg.model.matcher, MATCHERS))


@pytest.fixture(scope="module")
def tiny_boxes():
    cfg, _, _ = parts()
    records = merge_datasets(cfg.dataloader.train.dataset.names, filter_empty=True).records[:40]
    return ac.training_boxes(records, cfg.dataloader.train.transforms, 32)


def test_training_boxes_are_the_train_resize_of_each_scale(tiny_boxes):
    cfg, _, _ = parts()
    records = merge_datasets(cfg.dataloader.train.dataset.names, filter_empty=True).records[:40]
    assert tiny_boxes.scales == [96, 112] and len(tiny_boxes.image_sizes) == 80
    r = records[3]
    from retdet.data.transforms import ResizeShortestEdge

    h, w = ResizeShortestEdge(short_edge_length=112, max_size=160).output_size(r.height, r.width, 112)
    sel = tiny_boxes.sample == 43  # the second scale's fourth image
    np.testing.assert_allclose(tiny_boxes.boxes[sel], r.boxes * np.array([w / r.width, h / r.height] * 2), rtol=1e-6)
    assert tiny_boxes.image_sizes[43] == (-(-h // 32) * 32, -(-w // 32) * 32)


@pytest.mark.parametrize("overrides", [[], ["model.anchor_generator.offset=0.5",
                                            "model.anchor_generator.aspect_ratios=[0.25,1.0,3.0]"]])
def test_nearest_position_best_iou_is_the_whole_grid_maximum(tiny_boxes, overrides):
    _, generator, matcher = parts(overrides)
    exact = ac.exact_coverage(generator, matcher, tiny_boxes)
    brute = np.zeros(len(tiny_boxes.boxes))
    for n, padded in enumerate(tiny_boxes.image_sizes):
        sel = tiny_boxes.sample == n
        if sel.any():
            grid = torch.cat([generator._grid(lvl, h, w, torch.device("cpu"))
                              for lvl, (h, w) in enumerate(ac.feature_sizes(padded, generator.strides))])
            brute[sel] = pairwise_iou(torch.from_numpy(tiny_boxes.boxes[sel]), grid).max(1).values.numpy()
    np.testing.assert_allclose(exact["best_iou"], brute, atol=1e-6)
    setting = AnchorSetting([list(s) for s in generator.sizes], generator.aspect_ratios)
    fast = AnchorFitness(tiny_boxes, generator.strides, generator.offset, 0.5).best_iou(setting)
    np.testing.assert_allclose(fast, brute, atol=1e-5)
    assert 0.3 < brute.mean() < 1


def test_anchor_grid_and_positives_are_the_detectors():
    """On an odd-sized image: the grid is the detector's anchors, and the positives per box are the
    anchors label_anchors gives that box's class."""
    cfg, generator, matcher = parts()
    model = modeling.build_model(cfg.model).eval()
    boxes = torch.tensor([[10.0, 12.0, 40.0, 30.0], [50.0, 5.0, 58.0, 11.0], [50.0, 5.0, 58.0, 11.0]])
    sample = ImageSample(image=torch.zeros(3, 101, 150), gt_boxes=boxes, gt_labels=torch.tensor([0, 2, 1]))
    with torch.no_grad():
        dense = model.dense_outputs([sample])
    anchors = torch.cat(dense.anchors)
    padded = tuple(int(v) for v in model.preprocess([sample.image]).tensor.shape[-2:])
    assert torch.equal(ac.anchor_grid(generator, padded), anchors)
    labels, _ = model.label_anchors(anchors, [sample])
    pos, owner = ac.positive_anchors(generator, matcher, boxes.numpy(), (101, 150), 32)
    expected = anchors[(labels[0] >= 0) & (labels[0] < model.num_classes)]
    assert torch.equal(torch.from_numpy(pos), expected)
    # a duplicated box gets none: each anchor trains on one box (the first of equal IoUs)
    assert np.bincount(owner, minlength=3)[2] == 0 and np.bincount(owner, minlength=3)[:2].min() > 0


def test_coverage_table_counts_unmatchable_and_low_quality_boxes():
    _, generator, matcher = parts()
    boxes = np.array([[0, 0, 32, 32], [0, 0, 32, 32], [40, 40, 43, 43], [64, 0, 96, 16]], np.float32)
    data = ac.TrainingBoxes(boxes, np.zeros(4, np.int64), [(128, 128)], [128])
    cov = ac.exact_coverage(generator, matcher, data)
    assert cov["best_iou"][0] == pytest.approx(1.0)  # a 32 px anchor of P4 (stride 16) at (16, 16)
    assert cov["positives"][1] == 0 and cov["positives"][0] > 0  # the duplicate trains nothing
    assert cov["best_iou"][2] < 0.5 and cov["positives"][2] > 0 and cov["strong"][2] == 0  # 3 px: low quality only
    table = ac.coverage_table(data, cov, 0.5)
    row = table["all"][0]
    assert row["boxes"] == 4 and row["unmatchable"] == 25.0 and row["low_quality_only"] == 25.0
    assert {r["bin"]: r["boxes"] for r in table["by_size"]} == {"0-16": 1, "16-32": 1, "32-64": 2}


def test_search_is_seeded_never_worse_and_its_overrides_build_those_anchors(tiny_boxes):
    _, generator, _ = parts()
    fitness = AnchorFitness(tiny_boxes, generator.strides, generator.offset, 0.5)
    start = AnchorSetting([list(s) for s in generator.sizes], generator.aspect_ratios)
    a = search_anchors(fitness, start, generations=40, seed=3)
    b = search_anchors(fitness, start, generations=40, seed=3)
    assert a["setting"] == b["setting"]
    assert a["fitness"] >= a["start_fitness"] == pytest.approx(fitness(start.rounded()))
    assert a["history"] == sorted(a["history"])
    cfg = load_config(TINY, a["setting"].overrides())
    tuned = build(cfg.model.anchor_generator, ANCHOR_GENERATORS)
    assert tuned.num_anchors == generator.num_anchors
    got = np.concatenate([tuned.cell_anchors(lvl).numpy() for lvl in range(5)])
    np.testing.assert_allclose(got, np.concatenate(cell_anchors(a["setting"])), atol=1e-4)
    assert fitness(a["setting"]) == pytest.approx(a["fitness"])


def test_analyze_anchors_tool(tmp_path):
    out = run_tool("analyze_anchors", "--config", TINY, "--optimize", "--generations", 10, "--output", tmp_path)
    assert "## Coverage by the optimised anchors" in out.stdout and "% unmatchable" in out.stdout
    report = json.load(open(tmp_path / "anchors.json"))
    assert report["scales"] == [96, 112] and report["coverage"]["all"][0]["boxes"] == report["boxes"]
    assert " ".join(report["optimized"]["overrides"]) in out.stdout
    assert os.path.getsize(tmp_path / "anchor_coverage.png") > 1000
    bad = run_tool("analyze_anchors", "--config", TINY, "--generations", 0, ok=False)
    assert "--generations must be >= 1" in bad.stderr


def test_visualize_data_shows_the_positive_anchors(tmp_path):
    out = run_tool("visualize_data", "--config", TINY, "--num", 2, "--output", tmp_path, "--show-anchors")
    assert out.stdout.count("positive anchors per box") == 2
    assert len([f for f in os.listdir(tmp_path) if f.startswith("sample_")]) == 2
