"""Test-time augmentation and tiled inference (retdet/modeling/test_time_aug.py, merge_detections.py)."""
import os

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from retdet.modeling.merge_detections import merge_detections
from retdet.modeling.test_time_aug import TiledInference, cut_by_window, flip_boxes, resize_image
from retdet.structures import Detections, ImageSample

from .conftest import CONFIGS, ROOT, run_tool
from .helpers.models import detecting_model

CONFIG = os.path.join(CONFIGS, "quickstart.py")


@pytest.fixture(scope="module")
def model():
    return detecting_model(CONFIG)


def image(h=150, w=200, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 255, (3, h, w), dtype=np.uint8))


def infer(model, samples, test_time_aug=None, tiling=None):
    from retdet.modeling.retinanet import _options
    from retdet.modeling.test_time_aug import TestTimeAugmentation

    model.test_time_aug = None if test_time_aug is None else _options(TestTimeAugmentation, test_time_aug, "tta")
    model.tiling = None if tiling is None else _options(TiledInference, tiling, "tiling")
    try:
        with torch.no_grad():
            return model(samples)
    finally:
        model.test_time_aug = model.tiling = None


def same(a, b):
    return torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels)


def test_flip_boxes_hand_case():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 100.0, 5.0]])
    assert flip_boxes(boxes, 100).tolist() == [[70.0, 20.0, 90.0, 40.0], [0.0, 0.0, 100.0, 5.0]]
    assert torch.equal(flip_boxes(flip_boxes(boxes, 100), 100), boxes)


def test_one_view_or_one_window_is_plain_inference_bit_for_bit(model):
    samples = [ImageSample(image=image(), original_size=(300, 400), image_id=7), ImageSample(image=image(97, 131, 1))]
    plain = infer(model, samples)
    assert len(plain[0].scores) > 10
    views = infer(model, samples, dict(flips=[False], scales=[1.0]))
    assert all(same(a, b) for a, b in zip(plain, views)) and views[0].image_id == 7
    # Tiling runs each image on its own (its windows batched): the reference is each image alone, since
    # in a batch the smaller image is padded, which changes what the convolutions see at its border.
    alone = [infer(model, [s])[0] for s in samples]
    for tta, tiling in ((None, dict(tile=256, overlap=32)), (dict(flips=[False]), dict(tile=200, full_image=True))):
        views = infer(model, samples, tta, tiling)
        assert all(same(a, b) for a, b in zip(alone, views)) and views[0].image_id == 7


def test_a_flipped_or_scaled_view_maps_back_exactly(model):
    """One flipped view = plain inference on the mirrored image, boxes mirrored back; one half-size
    view = plain inference on the half-size image, boxes doubled."""
    img = image()
    flipped = infer(model, [ImageSample(image=img)], dict(flips=[True]))[0]
    mirrored = infer(model, [ImageSample(image=img.flip(-1))])[0]
    assert torch.equal(flipped.boxes, flip_boxes(mirrored.boxes, 200)) and torch.equal(flipped.scores, mirrored.scores)
    half = infer(model, [ImageSample(image=img)], dict(scales=[0.5]))[0]
    small = infer(model, [ImageSample(image=resize_image(img, (75, 100)))])[0]
    assert torch.equal(half.boxes, small.boxes * 2) and torch.equal(half.labels, small.labels)


def test_several_views_are_merged(model):
    img = image()
    plain = infer(model, [ImageSample(image=img)])[0]
    both = infer(model, [ImageSample(image=img)], dict(flips=[False, True], scales=[0.8, 1.0]))[0]
    assert len(both.scores) == 100 and not same(plain, both)
    assert torch.all(both.scores[:-1] >= both.scores[1:])
    wbf = infer(model, [ImageSample(image=img)], dict(flips=[False, True], merge="wbf"))[0]
    assert 0 < len(wbf.scores) <= 100 and torch.all(wbf.scores <= plain.scores.max())


def test_nms_merge_keeps_one_of_two_identical_views_and_wbf_averages_by_score():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    scores, labels = torch.tensor([0.9, 0.3]), torch.tensor([1, 1])
    b, s, lbl = merge_detections(torch.cat([boxes, boxes]), torch.cat([scores, scores]), torch.cat([labels, labels]),
                                 merge="nms", iou_threshold=0.5, max_detections=100, num_views=2)
    assert torch.equal(b, boxes) and torch.equal(s, scores)
    # two views: [0, 0, 10, 10] at 0.9 and [0, 0, 12, 12] at 0.6 fuse to their score-weighted mean, score
    # their mean; the box only one view found keeps half its score
    b, s, lbl = merge_detections(torch.tensor([[0.0, 0, 10, 10], [0, 0, 12, 12], [50, 50, 60, 60]]),
                                 torch.tensor([0.9, 0.6, 0.4]), torch.tensor([2, 2, 2]), merge="wbf",
                                 iou_threshold=0.55, max_detections=100, num_views=2)
    assert torch.allclose(b, torch.tensor([[0.0, 0, 10.8, 10.8], [50, 50, 60, 60]]))
    assert torch.allclose(s, torch.tensor([0.75, 0.2])) and lbl.tolist() == [2, 2]


def test_windows_cover_the_image_and_end_at_its_border():
    tiler = TiledInference(tile=400, overlap=100)
    assert tiler.starts(1000) == [0, 300, 600] and tiler.starts(400) == [0] and tiler.starts(250) == [0]
    assert tiler.starts(701) == [0, 150, 301]  # 2 windows would share 99 px: 3, spread evenly
    assert tiler.starts(700) == [0, 300] and TiledInference(tile=512, overlap=128).starts(900) == [0, 194, 388]
    assert tiler.windows(250, 1000) == [(0, 0, 250, 400), (0, 300, 250, 700), (0, 600, 250, 1000)]


def test_a_box_at_an_inner_window_edge_is_cut_one_at_the_image_border_is_not():
    window, size = (0, 300, 400, 700), (400, 1000)  # the middle window of a row: inner edges left and right
    boxes = torch.tensor([[0.5, 50, 40, 90],      # at the left edge: cut
                          [360, 50, 399.5, 90],   # at the right edge: cut
                          [50, 0, 90, 40],        # at the top, the image's border: kept
                          [50, 360, 90, 400],     # at the bottom, the image's border: kept
                          [50, 50, 90, 90]])      # inside: kept
    assert cut_by_window(boxes, window, size).tolist() == [True, True, False, False, False]


def test_tiles_bound_the_network_input_on_a_6000x8000_image():
    """The windows of a 6000 x 8000 image, with a stand-in network that finds one box in the middle of
    each input: every input is at most a tile, and each box lands at its window's centre."""
    seen = []

    def detect(samples):
        seen.extend(s.image_size for s in samples)
        sizes = [s.image_size for s in samples]
        return [Detections(boxes=torch.tensor([[w / 2 - 5, h / 2 - 5, w / 2 + 5, h / 2 + 5]]),
                           scores=torch.tensor([0.5]), labels=torch.tensor([0])) for h, w in sizes]

    stub = SimpleNamespace(postprocess=SimpleNamespace(nms_threshold=0.5, max_detections=1000))
    tiler = TiledInference(tile=1024, overlap=128, full_image=True, batch_size=2)
    dets = tiler.detect(stub, [ImageSample(image=torch.zeros(3, 6000, 8000, dtype=torch.uint8))], detect)[0]
    assert len(seen) == 7 * 9 + 1 and max(max(s) for s in seen) == 1024 and seen[-1] == (768, 1024)
    centres = sorted((y0 + 512, x0 + 512) for y0, x0, _, _ in tiler.windows(6000, 8000))
    found = sorted(((b[1] + b[3]) / 2, (b[0] + b[2]) / 2) for b in dets.boxes.tolist())
    assert found == centres  # the full view's box (78 px at full size) is below the overlap: dropped


def test_tiled_inference_of_a_large_image_finds_what_plain_inference_of_each_window_finds():
    model = detecting_model(os.path.join(ROOT, "tests", "configs", "tiny_train.py"))
    img = image(600, 900, 2)
    tiled = infer(model, [ImageSample(image=img)], tiling=dict(tile=512, overlap=128, full_image=False))[0]
    # an object well inside the first window only, as that window alone sees it
    first = infer(model, [ImageSample(image=img[:, :512, :512])])[0]
    inner = (first.boxes[:, 2] < 380) & (first.boxes[:, 3] < 380) & (first.boxes[:, :2] > 2).all(1)
    assert inner.any()
    # (windows run 4 to a batch here, 1 there: float rounding may differ in the last bits)
    for box, score in zip(first.boxes[inner], first.scores[inner]):
        hit = ((tiled.boxes - box).abs().max(1).values < 1e-2) & ((tiled.scores - score).abs() < 1e-4)
        assert hit.any() or (tiled.scores > score).sum() >= 99 or _suppressed(tiled, box, score)


def _suppressed(dets, box, score, iou=0.5):
    """Some kept detection of the class overlaps ``box`` above the merge's IoU, scoring at least as much."""
    from torchvision.ops import box_iou

    return bool(((box_iou(box[None], dets.boxes)[0] > iou) & (dets.scores >= score - 1e-4)).any())


@pytest.mark.parametrize("key, value, message", [
    ("tiling", "dict(tile=0)", "model.tiling.tile must be a positive"),
    ("tiling", "dict(tile=-64)", "model.tiling.tile must be a positive"),
    ("tiling", "dict(tile=256, overlap=256)", r"model.tiling.overlap must be .* \[0, tile=256\)"),
    ("tiling", "dict(tile=256, merge='mean')", "model.tiling.merge must be one of"),
    ("tiling", "dict(tile=256, stride=3)", "model.tiling.stride is not an option"),
    ("test_time_aug", "dict(flips=[0, 1])", "model.test_time_aug.flips must be a non-empty list of True/False"),
    ("test_time_aug", "dict(scales=[1.0, -0.5])", "model.test_time_aug.scales must be a positive number"),
    ("test_time_aug", "dict(merge='vote')", "model.test_time_aug.merge must be one of"),
    ("test_time_aug", "True", "model.test_time_aug must be a dict of options"),
])
def test_bad_options_are_errors_naming_the_key(key, value, message):
    from retdet.config import load_config
    from retdet.modeling import build_model

    with pytest.raises(ValueError, match=message):
        build_model(load_config(CONFIG, [f"model.{key}={value}"]).model)


def test_export_refuses_a_model_with_views(model):
    from retdet.export import ExportableRetinaNet

    model.tiling = TiledInference(tile=128)
    try:
        with pytest.raises(ValueError, match="model.tiling is set, but the exported graph holds the single-view"):
            ExportableRetinaNet(model)
    finally:
        model.tiling = None


def test_demo_tiles_and_tta(tmp_path, model):
    path = tmp_path / "model.pth"
    torch.save({"model": model.state_dict()}, path)
    out = run_tool("demo", "--config", CONFIG, "--weights", path, "--input", os.path.join(ROOT, "docs", "assets",
                   "shapes.jpg"), "--output", tmp_path / "out", "--tiles", "128,32", "--tta")
    assert "1 drawn images" in out.stdout
    bad = run_tool("demo", "--config", CONFIG, "--weights", path, "--input", ".", "--output", tmp_path,
                   "--tiles", "a,b", ok=False)
    assert "expected TILE or TILE,OVERLAP" in bad.stderr
