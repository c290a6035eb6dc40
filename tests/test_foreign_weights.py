"""Detectron2 and MMDetection RetinaNet checkpoints: conversion, strict loading, and outputs.

Neither framework is installed here, so the source checkpoints are built from their published
layouts (key names and shapes of Detectron2's retinanet_R_50_FPN and MMDetection's
retinanet_r50_fpn), with random weights. The reference is a functional forward pass written
directly against those source keys (stride placement, FPN top block, ReLU before P7 as each
framework does it) and a reference post-processing written from each framework's description
(anchor order, delta clamping, clipping and NMS order): independent of retdet's modules.
When the real framework is importable, the last tests compare with it (skipped otherwise).
"""
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from retdet.checkpoint.detectron2 import convert_detectron2_resnet, convert_detectron2_retinanet
from retdet.checkpoint.mmdetection import convert_mmdet_retinanet
from retdet.config import load_config
from retdet.modeling import build_model
from retdet.structures import ImageSample
from retdet.tools.convert_weights import ConversionError, check_against_model
from retdet.tools.convert_weights import main as convert_main

from .conftest import CONFIGS
from .helpers.foreign_checkpoints import A, K, STAGES, caffe2_resnet50_blobs, d2_retinanet_state, mmdet_retinanet_state

D2_CONFIG = f"{CONFIGS}/compat/retinanet_R50_FPN_detectron2.py"
MM_CONFIG = f"{CONFIGS}/compat/retinanet_R50_FPN_mmdet.py"


# ---- reference forward, on the source keys -------------------------------------------------------

def _norm(x, sd, p, eps=1e-5):
    shape = (1, -1, 1, 1)
    return (x - sd[p + ".running_mean"].view(shape)) / torch.sqrt(sd[p + ".running_var"].view(shape) + eps) \
        * sd[p + ".weight"].view(shape) + sd[p + ".bias"].view(shape)


def ref_resnet(x, sd, fmt):
    """C3, C4, C5 of a ResNet-50 in Detectron2 ("d2": stride in the 1x1) or MMDetection ("mm":
    stride in the 3x3) layout."""
    if fmt == "d2":
        r = "backbone.bottom_up."
        stem, stem_norm = r + "stem.conv1.weight", r + "stem.conv1.norm"
        block = lambda s, b: f"{r}res{s + 2}.{b}."  # noqa: E731
        conv, norm = (lambda j: f"conv{j}.weight"), (lambda j: f"conv{j}.norm")
        short, short_norm = "shortcut.weight", "shortcut.norm"
    else:
        stem, stem_norm = "backbone.conv1.weight", "backbone.bn1"
        block = lambda s, b: f"backbone.layer{s + 1}.{b}."  # noqa: E731
        conv, norm = (lambda j: f"conv{j}.weight"), (lambda j: f"bn{j}")
        short, short_norm = "downsample.0.weight", "downsample.1"
    x = F.max_pool2d(F.relu(_norm(F.conv2d(x, sd[stem], stride=2, padding=3), sd, stem_norm)), 3, 2, 1)
    outs = []
    for s, count in enumerate(STAGES):
        for b in range(count):
            p = block(s, b)
            stride = 2 if (s > 0 and b == 0) else 1
            s1, s3 = (stride, 1) if fmt == "d2" else (1, stride)
            y = F.relu(_norm(F.conv2d(x, sd[p + conv(1)], stride=s1), sd, p + norm(1)))
            y = F.relu(_norm(F.conv2d(y, sd[p + conv(2)], stride=s3, padding=1), sd, p + norm(2)))
            y = _norm(F.conv2d(y, sd[p + conv(3)]), sd, p + norm(3))
            identity = _norm(F.conv2d(x, sd[p + short], stride=stride), sd, p + short_norm) if b == 0 else x
            x = F.relu(y + identity)
        if s > 0:
            outs.append(x)
    return outs


def ref_network(x, sd, fmt):
    """Per-level (logits (N, A*K, H, W), deltas (N, A*4, H, W)) of the source model, P3..P7."""
    c3, c4, c5 = ref_resnet(x, sd, fmt)
    if fmt == "d2":
        lat, out = (lambda i: f"backbone.fpn_lateral{i + 3}"), (lambda i: f"backbone.fpn_output{i + 3}")
        p6k, p7k = "backbone.top_block.p6", "backbone.top_block.p7"
        cls_k, box_k = (lambda i: f"head.cls_subnet.{2 * i}"), (lambda i: f"head.bbox_subnet.{2 * i}")
        cls_out, box_out = "head.cls_score", "head.bbox_pred"
    else:
        lat, out = (lambda i: f"neck.lateral_convs.{i}.conv"), (lambda i: f"neck.fpn_convs.{i}.conv")
        p6k, p7k = "neck.fpn_convs.3.conv", "neck.fpn_convs.4.conv"
        cls_k, box_k = (lambda i: f"bbox_head.cls_convs.{i}.conv"), (lambda i: f"bbox_head.reg_convs.{i}.conv")
        cls_out, box_out = "bbox_head.retina_cls", "bbox_head.retina_reg"

    def conv(t, key, stride=1):
        w = sd[key + ".weight"]
        return F.conv2d(t, w, sd[key + ".bias"], stride=stride, padding=w.shape[-1] // 2)

    inner = [conv(c, lat(i)) for i, c in enumerate((c3, c4, c5))]
    for i in (1, 0):  # top-down: Detectron2 doubles, MMDetection resizes to the lateral (equal at pad 32)
        inner[i] = inner[i] + F.interpolate(inner[i + 1], scale_factor=2.0, mode="nearest")
    levels = [conv(t, out(i)) for i, t in enumerate(inner)]
    p6 = conv(c5, p6k, stride=2)
    p7 = conv(F.relu(p6) if fmt == "d2" else p6, p7k, stride=2)
    levels += [p6, p7]
    logits, deltas = [], []
    for f in levels:
        c, b = f, f
        for i in range(4):
            c, b = F.relu(conv(c, cls_k(i))), F.relu(conv(b, box_k(i)))
        logits.append(conv(c, cls_out))
        deltas.append(conv(b, box_out))
    return logits, deltas


# ---- reference post-processing, from each framework's description -------------------------------

def ref_anchors(fmt, level, h, w):
    """(h*w*A, 4): Detectron2 loops sizes then ratios (w = sqrt(size^2 / r), h = r w); MMDetection
    ratios then scales (w = stride * scale / sqrt(r)); centres at (x, y) * stride, no rounding."""
    stride = 8 * 2**level
    cells = []
    if fmt == "d2":
        for size in [32 * 2**level * 2 ** (i / 3) for i in range(3)]:
            for r in (0.5, 1.0, 2.0):
                aw = math.sqrt(size * size / r)
                cells.append([-aw / 2, -r * aw / 2, aw / 2, r * aw / 2])
    else:
        for r in (0.5, 1.0, 2.0):
            for scale in [4 * 2 ** (i / 3) for i in range(3)]:
                aw, ah = stride * scale / math.sqrt(r), stride * scale * math.sqrt(r)
                cells.append([-aw / 2, -ah / 2, aw / 2, ah / 2])
    ys, xs = torch.meshgrid(torch.arange(h) * stride, torch.arange(w) * stride, indexing="ij")
    shifts = torch.stack([xs, ys, xs, ys], -1).reshape(-1, 1, 4).float()
    return (shifts + torch.tensor(cells)[None]).reshape(-1, 4)


def ref_detections(fmt, logits, deltas, input_hw, output_hw):
    """One image's (boxes, scores, labels) the way the source framework post-processes."""
    clamp = math.log(1000 / 16)
    boxes_all, scores_all, labels_all = [], [], []
    for level, (lg, dl) in enumerate(zip(logits, deltas)):
        h, w = lg.shape[-2:]
        scores = lg[0].permute(1, 2, 0).reshape(-1, K).sigmoid().flatten()
        d = dl[0].permute(1, 2, 0).reshape(-1, 4)
        idx = torch.nonzero(scores > 0.05).flatten()
        top = scores[idx].sort(descending=True).indices[:1000]
        idx = idx[top]
        a = ref_anchors(fmt, level, h, w)[idx // K]
        dd = d[idx // K]
        dw, dh = dd[:, 2].clamp(max=clamp), dd[:, 3].clamp(max=clamp)
        if fmt == "mm":
            dw, dh = dw.clamp(min=-clamp), dh.clamp(min=-clamp)
        aw, ah = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        cx, cy = (a[:, 0] + a[:, 2]) / 2 + dd[:, 0] * aw, (a[:, 1] + a[:, 3]) / 2 + dd[:, 1] * ah
        bw, bh = aw * dw.exp(), ah * dh.exp()
        boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        if fmt == "mm":  # clipped to the input image before NMS
            boxes = torch.stack([boxes[:, 0].clamp(0, input_hw[1]), boxes[:, 1].clamp(0, input_hw[0]),
                                 boxes[:, 2].clamp(0, input_hw[1]), boxes[:, 3].clamp(0, input_hw[0])], 1)
        boxes_all.append(boxes)
        scores_all.append(scores[idx])
        labels_all.append(idx % K)
    boxes, scores, labels = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(labels_all)
    if fmt == "mm":  # 3.x: empty boxes out before NMS
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = torchvision.ops.batched_nms(boxes, scores, labels, 0.5)[:100]
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    sy, sx = output_hw[0] / input_hw[0], output_hw[1] / input_hw[1]
    boxes = boxes * torch.tensor([sx, sy, sx, sy])
    if fmt == "d2":  # detector_postprocess: clip to the output size, then drop empty boxes
        boxes = torch.stack([boxes[:, 0].clamp(0, output_hw[1]), boxes[:, 1].clamp(0, output_hw[0]),
                             boxes[:, 2].clamp(0, output_hw[1]), boxes[:, 3].clamp(0, output_hw[0])], 1)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    return boxes, scores, labels


# ---- tests ---------------------------------------------------------------------------------------

CASES = {"d2": (d2_retinanet_state, convert_detectron2_retinanet, D2_CONFIG),
         "mm": (mmdet_retinanet_state, convert_mmdet_retinanet, MM_CONFIG)}


@pytest.fixture(scope="module", params=sorted(CASES))
def converted(request):
    make, convert, config = CASES[request.param]
    source = make()
    state, report = convert(source)
    cfg = load_config(config)
    model = build_model(cfg.model).eval()
    keys = model.load_state_dict(state, strict=False)
    assert not keys.unexpected_keys and keys.missing_keys == ["loss_normalizer.ema"]  # training state only
    return request.param, source, state, report, model, cfg


def test_every_source_key_is_reported_and_mapped_once(converted):
    fmt, source, state, report, model, _ = converted
    assert [k for k, _ in report] == list(source)
    targets = [t for _, t in report if not t.startswith("(")]
    assert len(targets) == len(set(targets)) == len(state)
    dropped = [k for k, t in report if t.startswith("(")]
    assert all(k.endswith("num_batches_tracked") for k in dropped)
    assert set(state) == set(model.state_dict()) - {"loss_normalizer.ema"}


def test_network_outputs_equal_the_reference_forward(converted):
    fmt, source, _, _, model, _ = converted
    torch.manual_seed(3)
    x = torch.randn(1, 3, 224, 320)
    with torch.no_grad():
        _, logits, deltas = model.network(x)
        ref_logits, ref_deltas = ref_network(x, source, fmt)
    for ours, ref in zip(logits + deltas, ref_logits + ref_deltas):
        scale = ref.abs().max().item()
        torch.testing.assert_close(ours, ref, rtol=1e-3, atol=1e-4 * scale)


def test_detections_equal_the_reference_postprocessing(converted):
    fmt, source, _, _, model, cfg = converted
    torch.manual_seed(4)
    # Pixels around the config's mean (normalised ~N(0, 1)), 200x300: padded to 224x320; detections
    # rescaled to 300x450.
    mean, std = torch.tensor(cfg.model.pixel_mean).view(3, 1, 1), torch.tensor(cfg.model.pixel_std).view(3, 1, 1)
    image = (mean + std * torch.randn(3, 200, 300)).clamp(0, 255)
    with torch.no_grad():
        det = model([ImageSample(image=image, original_size=(300, 450))])[0]
        x = model.preprocess([image]).tensor
        ref_logits, ref_deltas = ref_network(x, source, fmt)
    boxes, scores, labels = ref_detections(fmt, ref_logits, ref_deltas, (200, 300), (300, 450))
    assert len(scores) >= 50, "the random head should give many detections"
    assert len(det) == len(scores)
    torch.testing.assert_close(det.scores, scores, rtol=1e-3, atol=1e-4)
    assert torch.equal(det.labels, labels)
    torch.testing.assert_close(det.boxes, boxes, rtol=1e-3, atol=0.05)


def test_compat_conventions_by_hand():
    """The settings the two compat configs change, each against a hand-computed case."""
    d2 = build_model(load_config(D2_CONFIG).model)
    mm = build_model(load_config(MM_CONFIG).model)
    # Detectron2: the stride of a downsampling bottleneck is in its 1x1; MMDetection: in its 3x3.
    assert d2.backbone.layer3[0].conv1.stride == (2, 2) and d2.backbone.layer3[0].conv2.stride == (1, 1)
    assert mm.backbone.layer3[0].conv1.stride == (1, 1) and mm.backbone.layer3[0].conv2.stride == (2, 2)
    # MMDetection's anchor 1 on P3: ratio 0.5, second scale: w = 8 * 4 * 2^(1/3) / sqrt(0.5).
    w = 8 * 4 * 2 ** (1 / 3) / math.sqrt(0.5)
    torch.testing.assert_close(mm.anchor_generator.cell_anchors(0)[1],
                               torch.tensor([-w / 2, -w / 4, w / 2, w / 4]))
    # ... Detectron2's anchor 1 on P3: size 32, ratio 1.
    torch.testing.assert_close(d2.anchor_generator.cell_anchors(0)[1], torch.tensor([-16.0, -16.0, 16.0, 16.0]))
    # A very negative log-width: MMDetection clamps it at -log(1000/16), Detectron2 does not.
    deltas, anchors = torch.tensor([[0.0, 0.0, -10.0, 0.0]]), torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    assert mm.box_coder.decode(deltas, anchors)[0, 2] - mm.box_coder.decode(deltas, anchors)[0, 0] == \
        pytest.approx(100 * 16 / 1000, rel=1e-5)
    assert d2.box_coder.decode(deltas, anchors)[0, 2] - d2.box_coder.decode(deltas, anchors)[0, 0] == \
        pytest.approx(100 * math.exp(-10), rel=1e-3)


def test_detectron2_clips_after_nms_and_drops_empty_boxes():
    """Two boxes sticking out of a 100x100 image overlap little (IoU 1/3) but a lot once clipped
    (IoU 1): Detectron2's order keeps both, clip-first keeps one. A box wholly outside is dropped."""
    from retdet.modeling import RetinaNetPostProcess

    anchors = torch.tensor([[40.0, 0.0, 200.0, 100.0], [40.0, 0.0, 120.0, 100.0], [150.0, 0.0, 190.0, 40.0]])
    logits = torch.tensor([[[3.0], [2.0], [1.0]]])  # (N, R, K=1)
    deltas = torch.zeros(1, 3, 4)
    for clip_first, drop, expected in [(True, None, 2), (False, "after_nms", 2), (False, None, 3)]:
        post = RetinaNetPostProcess(clip_before_nms=clip_first, drop_empty=drop, nms_threshold=0.5)
        det = post([logits], [deltas], [anchors], [(100, 100)], [(100, 100)])[0]
        assert len(det) == expected, (clip_first, drop)
        assert (det.boxes[:, 2] <= 100).all()
    post = RetinaNetPostProcess(clip_before_nms=False, drop_empty="after_nms", nms_threshold=0.5)
    det = post([logits], [deltas], [anchors], [(100, 100)], [(100, 100)])[0]
    assert det.scores.tolist() == pytest.approx([torch.sigmoid(torch.tensor(3.0)).item(),
                                                 torch.sigmoid(torch.tensor(2.0)).item()])
    with pytest.raises(ValueError, match="drop_empty"):
        RetinaNetPostProcess(drop_empty="always")


# ---- files and the tool --------------------------------------------------------------------------

def _write_pkl(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def test_tool_converts_a_detectron2_pkl_strictly(tmp_path, capsys):
    source = d2_retinanet_state()
    arrays = {k: v.numpy() for k, v in source.items()}
    arrays["pixel_mean"] = np.array([103.53, 116.28, 123.675], np.float32).reshape(3, 1, 1)
    _write_pkl(tmp_path / "model_final.pkl", {"model": arrays, "__author__": "Detectron2 Model Zoo"})
    convert_main(["--source", "detectron2-retinanet", "--input", str(tmp_path / "model_final.pkl"),
                  "--output", str(tmp_path / "ours.pth")])
    out = capsys.readouterr().out
    assert "backbone.bottom_up.res4.5.conv3.norm.running_var" in out and "pixel_mean" in out
    assert "matches" in out
    state = torch.load(tmp_path / "ours.pth", weights_only=True)["model"]
    torch.testing.assert_close(state["backbone.layer3.5.bn3.running_var"],
                               source["backbone.bottom_up.res4.5.conv3.norm.running_var"])

    # Pixel statistics that disagree with the config: an error before anything is written.
    arrays["pixel_mean"] = np.array([123.675, 116.28, 103.53], np.float32).reshape(3, 1, 1)
    _write_pkl(tmp_path / "rgb.pkl", {"model": arrays, "__author__": "x"})
    with pytest.raises(ConversionError, match=r"pixel_mean \[123\.675.*model\.pixel_mean="):
        convert_main(["--source", "detectron2-retinanet", "--input", str(tmp_path / "rgb.pkl"),
                      "--output", str(tmp_path / "x.pth")])
    assert not (tmp_path / "x.pth").exists()


def test_mismatches_are_errors_naming_the_keys():
    source = d2_retinanet_state()
    model_state = build_model(load_config(D2_CONFIG).model).state_dict()
    state, _ = convert_detectron2_retinanet(source)
    check_against_model(state, model_state)  # the whole network, exactly
    partial = {k: v for k, v in state.items() if k != "head.cls_score.bias"}
    with pytest.raises(ConversionError, match=r"1 missing.*\n.*missing .*: head\.cls_score\.bias"):
        check_against_model(partial, model_state)
    # R101 weights (23 res4 blocks) into the R50 model: the extra blocks are named.
    deep = dict(source)
    deep.update({k.replace(".res4.5.", ".res4.6."): v for k, v in source.items() if ".res4.5." in k})
    with pytest.raises(ConversionError, match=r"unexpected .*backbone\.layer3\.6\.conv1\.weight"):
        check_against_model(convert_detectron2_retinanet(deep)[0], model_state)
    # A Faster R-CNN checkpoint is not a RetinaNet: the first foreign key is named.
    with pytest.raises(KeyError, match="roi_heads.box_predictor.cls_score.weight"):
        convert_detectron2_retinanet({**source, "roi_heads.box_predictor.cls_score.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="bbox_head.atss_centerness.weight"):
        convert_mmdet_retinanet({**mmdet_retinanet_state(), "bbox_head.atss_centerness.weight": torch.zeros(1)})


def test_pkl_with_code_is_refused(tmp_path):
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    _write_pkl(tmp_path / "evil.pkl", {"model": {"conv1_w": Payload()}})
    with pytest.raises(pickle.UnpicklingError, match=r"evil\.pkl: refused to load (posix|os|nt)\.system"):
        convert_main(["--source", "detectron2-resnet", "--input", str(tmp_path / "evil.pkl"),
                      "--output", str(tmp_path / "x.pth")])
    assert not (tmp_path / "ran").exists()


def test_caffe2_imagenet_resnet_converts_and_its_norms_are_exact_affines(tmp_path, capsys):
    blobs = caffe2_resnet50_blobs()
    _write_pkl(tmp_path / "R-50.pkl", {"blobs": {k: v.numpy() for k, v in blobs.items()}})
    convert_main(["--source", "detectron2-resnet", "--input", str(tmp_path / "R-50.pkl"),
                  "--output", str(tmp_path / "r50.pth"), "--quiet"])
    state = torch.load(tmp_path / "r50.pth", weights_only=True)["model"]
    model = build_model(load_config(D2_CONFIG).model).eval()
    keys = model.load_state_dict(state, strict=False)
    assert not keys.unexpected_keys and all(not k.startswith("backbone.") for k in keys.missing_keys)
    # res3 block 0 = conv1 (stride 2 in the 1x1) -> x * s + b, exactly as Caffe2 computed it.
    x = torch.randn(1, 256, 16, 16)
    block = model.backbone.layer2[0]
    with torch.no_grad():
        ours = block.bn1(block.conv1(x))
        ref = F.conv2d(x, blobs["res3_0_branch2a_w"], stride=2) * blobs["res3_0_branch2a_bn_s"].view(1, -1, 1, 1) \
            + blobs["res3_0_branch2a_bn_b"].view(1, -1, 1, 1)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    # Detectron2-named backbones convert too (the names only: a torchvision-derived one has its stride in
    # the 3x3 and needs model.backbone.stride_in_1x1=False).
    named, report = convert_detectron2_resnet({"stem.conv1.weight": blobs["conv1_w"],
                                               "res2.0.shortcut.norm.bias": torch.zeros(256)})
    assert set(named) == {"backbone.conv1.weight", "backbone.layer1.0.downsample.1.bias"}
    with pytest.raises(KeyError, match="res6_0_branch2a_w"):
        convert_detectron2_resnet({"res6_0_branch2a_w": torch.zeros(1)})


class HistoryBuffer:  # stands for mmengine.logging.HistoryBuffer in a 3.x checkpoint's message_hub
    def __init__(self):
        self.data = np.arange(5)


class ConfigDict:  # stands for a framework config object in its meta
    def __init__(self, **items):
        self.items = items


def test_mmdet_checkpoint_with_framework_objects_loads_without_them(tmp_path, capsys, monkeypatch):
    import sys
    import types

    # Saved under a module that exists only while saving: loading must not need (or import) it.
    fake = types.ModuleType("mmengine_fake_for_test")
    for cls in (HistoryBuffer, ConfigDict):
        monkeypatch.setattr(cls, "__module__", fake.__name__)
        setattr(fake, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    source = mmdet_retinanet_state()
    torch.save({"meta": {"mmdet_version": "3.3.0", "cfg": ConfigDict(a=1), "hub": HistoryBuffer()},
                "state_dict": source, "message_hub": {"log": HistoryBuffer()}}, tmp_path / "retina_mm.pth")
    del sys.modules[fake.__name__]
    convert_main(["--source", "mmdet-retinanet", "--input", str(tmp_path / "retina_mm.pth"),
                  "--output", str(tmp_path / "ours.pth"), "--quiet"])
    out = capsys.readouterr().out
    assert "mmengine_fake_for_test.HistoryBuffer" in out and "numpy" in out and "matches" in out
    assert fake.__name__ not in sys.modules
    state = torch.load(tmp_path / "ours.pth", weights_only=True)["model"]
    assert torch.equal(state["neck.p7.weight"], source["neck.fpn_convs.4.conv.weight"])
    assert torch.equal(state["head.cls_subnet.3.0.bias"], source["bbox_head.cls_convs.3.conv.bias"])
    # A different class count is a shape error naming the tensor.
    source["bbox_head.retina_cls.weight"] = source["bbox_head.retina_cls.weight"][: A * 20]
    source["bbox_head.retina_cls.bias"] = source["bbox_head.retina_cls.bias"][: A * 20]
    torch.save({"state_dict": source}, tmp_path / "voc.pth")
    with pytest.raises(ConversionError, match=r"head\.cls_score\.weight: checkpoint \(180, 256, 3, 3\)"):
        convert_main(["--source", "mmdet-retinanet", "--input", str(tmp_path / "voc.pth"),
                      "--output", str(tmp_path / "x.pth")])
    # ... which the matching config accepts.
    convert_main(["--source", "mmdet-retinanet", "--input", str(tmp_path / "voc.pth"),
                  "--output", str(tmp_path / "voc_ours.pth"), "--quiet", "model.head.num_classes=20"])


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pth_with_code_runs_nothing(tmp_path, zip_format):
    """A .pth whose pickle calls os.system is refused by torch's weights-only reader (it blocks
    such modules even as stand-ins), in the zip and the legacy format, and nothing runs."""
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    torch.save({"meta": Payload(), "state_dict": mmdet_retinanet_state()}, tmp_path / "evil.pth",
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(ValueError, match=r"evil\.pth: not a readable torch checkpoint \(UnpicklingError: "
                                         r".*GLOBAL posix\.system"):
        convert_main(["--source", "mmdet-retinanet", "--input", str(tmp_path / "evil.pth"),
                      "--output", str(tmp_path / "x.pth")])
    assert not (tmp_path / "ran").exists() and not (tmp_path / "x.pth").exists()


def test_missing_or_unreadable_inputs_are_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        convert_main(["--source", "mmdet-retinanet", "--input", str(tmp_path / "none.pth"),
                      "--output", str(tmp_path / "x.pth")])
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"broken\.pth: not a readable torch checkpoint"):
        convert_main(["--source", "mmdet-retinanet", "--input", str(tmp_path / "broken.pth"),
                      "--output", str(tmp_path / "x.pth")])
    (tmp_path / "broken.pkl").write_bytes(b"\x80\x02}q\x00(X")
    with pytest.raises(ValueError, match=r"broken\.pkl: not a readable weight pickle"):
        convert_main(["--source", "detectron2-retinanet", "--input", str(tmp_path / "broken.pkl"),
                      "--output", str(tmp_path / "x.pth")])


# ---- the real frameworks, when installed ---------------------------------------------------------

def test_equal_to_detectron2_itself():
    """Detectron2's own RetinaNet with random weights vs retdet with the converted weights."""
    pytest.importorskip("detectron2")
    from detectron2 import model_zoo
    from detectron2.modeling import build_model as d2_build

    d2_cfg = model_zoo.get_config("COCO-Detection/retinanet_R_50_FPN_1x.yaml")
    d2_cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    theirs = d2_build(d2_cfg).eval()
    state, _ = convert_detectron2_retinanet(theirs.state_dict())
    ours = build_model(load_config(D2_CONFIG).model).eval()
    assert ours.load_state_dict(state, strict=False).missing_keys == ["loss_normalizer.ema"]
    image = torch.rand(3, 256, 320) * 255
    with torch.no_grad():
        ref = theirs([{"image": image, "height": 256, "width": 320}])[0]["instances"]
        det = ours([ImageSample(image=image)])[0]
    assert len(det) == len(ref)
    torch.testing.assert_close(det.scores, ref.scores, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(det.boxes, ref.pred_boxes.tensor, rtol=1e-3, atol=0.05)


def test_equal_to_mmdetection_itself():
    """MMDetection's own RetinaNet (3.x) with random weights vs retdet with the converted weights."""
    pytest.importorskip("mmdet")
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import mmdet

    register_all_modules()
    cfg = Config.fromfile(f"{mmdet.__path__[0]}/.mim/configs/retinanet/retinanet_r50_fpn_1x_coco.py")
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    theirs = MODELS.build(cfg.model).eval()
    state, _ = convert_mmdet_retinanet(theirs.state_dict())
    ours = build_model(load_config(MM_CONFIG).model).eval()
    assert ours.load_state_dict(state, strict=False).missing_keys == ["loss_normalizer.ema"]
    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        ref_logits, ref_deltas = theirs.bbox_head(theirs.neck(theirs.backbone(x)))
        _, logits, deltas = ours.network(x)
    for a, b in zip(logits + deltas, list(ref_logits) + list(ref_deltas)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    # Its anchor generator and box coder (plain torch in MMDetection): the same anchors, the same
    # clamped and clipped boxes.
    sizes = [tuple(f.shape[-2:]) for f in logits]
    their_anchors = theirs.bbox_head.prior_generator.grid_priors(sizes, device="cpu")
    our_anchors = ours.anchor_generator(logits)
    for a, b in zip(our_anchors, their_anchors):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    anchors = torch.cat(our_anchors)
    wild = torch.randn(anchors.shape[0], 4, generator=torch.Generator().manual_seed(0)) * 3  # beyond the clamp
    from retdet.modeling.postprocess import clip_boxes

    torch.testing.assert_close(clip_boxes(ours.box_coder.decode(wild, anchors), (256, 320)),
                               theirs.bbox_head.bbox_coder.decode(anchors, wild, max_shape=(256, 320)),
                               rtol=1e-5, atol=1e-3)
