"""Model parts against hand-computed values and torchvision references; the whole model on tiny inputs."""
import math
import os

import pytest
import torch
import torch.nn.functional as F
import torchvision

from retdet.checkpoint import convert_torchvision_backbone, load_weights
from retdet.config import load_config
from retdet.modeling import AnchorGenerator, DeltaXYWHBoxCoder, Matcher, build_model
from retdet.modeling.backbones import EfficientNet, ResNet
from retdet.modeling.losses import GIoULoss, SmoothL1Loss, giou_loss
from retdet.modeling.necks import FPN
from retdet.registry import BACKBONES, build
from retdet.structures import ImageSample
from retdet.structures.boxes import pairwise_ioa, pairwise_iou

from .conftest import CONFIGS


def small_model(**overrides):
    cfg = load_config(os.path.join(CONFIGS, "quickstart.py"))
    for key, value in overrides.items():
        node = cfg.model
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    torch.manual_seed(0)
    return build_model(cfg.model)


# ---- anchors ------------------------------------------------------------------------------------

def test_cell_anchors_hand_computed():
    gen = AnchorGenerator(sizes=[32], aspect_ratios=[0.5, 1.0, 2.0], strides=[8], scales_per_octave=1)
    s = 32 / math.sqrt(2)  # ratio 0.5: w = 32 / sqrt(0.5) = 45.25, h = 22.63
    expected = torch.tensor([[-s, -s / 2, s, s / 2], [-16, -16, 16, 16], [-s / 2, -s, s / 2, s]])
    torch.testing.assert_close(gen.cell_anchors(0), expected)
    # shifted grid: anchors of location (row 1, col 2) are the cell anchors + (16, 8)
    grid = gen([torch.zeros(1, 1, 3, 4)])[0]
    assert grid.shape == (3 * 4 * 3, 4)
    torch.testing.assert_close(grid[(1 * 4 + 2) * 3 + 1], torch.tensor([16 - 16, 8 - 16, 16 + 16, 8 + 16.0]))


def test_anchor_sizes_orders_offset_and_cache():
    gen = AnchorGenerator(sizes=[32, 64], strides=[8, 16], scales_per_octave=3, offset=0.5)
    assert gen.num_anchors == 9
    assert gen.sizes[0] == pytest.approx([32, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)])
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in gen.cell_anchors(1)]
    assert areas[:3] == pytest.approx([64 ** 2] * 3, rel=1e-5)  # size-major: first size, three ratios
    ratio_major = AnchorGenerator(sizes=[[32, 40]], aspect_ratios=[1.0, 2.0], strides=[8], order="ratio_major")
    widths = (ratio_major.cell_anchors(0)[:, 2] * 2).tolist()
    assert widths == pytest.approx([32, 40, 32 / math.sqrt(2), 40 / math.sqrt(2)])
    f = torch.zeros(1, 1, 2, 2)
    a = gen([f, torch.zeros(1, 1, 1, 1)])
    torch.testing.assert_close(a[0][0].view(2, 2).mean(0), torch.tensor([4.0, 4.0]))  # centre at 0.5 * 8
    assert gen([f, torch.zeros(1, 1, 1, 1)])[0] is a[0]  # cached


def test_anchor_config_errors():
    with pytest.raises(ValueError, match="2 size entries but 1 strides"):
        AnchorGenerator(sizes=[32, 64], strides=[8])
    with pytest.raises(ValueError, match="order"):
        AnchorGenerator(sizes=[32], strides=[8], order="random")


# ---- boxes, matcher, box coder --------------------------------------------------------------------

def random_boxes(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 50 + 1], 1)


def test_pairwise_iou_matches_torchvision_and_ioa():
    a, b = random_boxes(7, 1), random_boxes(11, 2)
    torch.testing.assert_close(pairwise_iou(a, b), torchvision.ops.box_iou(a, b))
    region = torch.tensor([[0.0, 0, 10, 10]])
    ioa = pairwise_ioa(region, torch.tensor([[5.0, 5, 15, 15], [0, 0, 5, 5], [20, 20, 30, 30]]))
    torch.testing.assert_close(ioa, torch.tensor([[0.25, 1.0, 0.0]]))


def test_box_coder_round_trip_and_hand_values():
    coder = DeltaXYWHBoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    anchors, boxes = random_boxes(50, 3), random_boxes(50, 4)
    torch.testing.assert_close(coder.decode(coder.encode(anchors, boxes), anchors), boxes, atol=1e-4, rtol=1e-5)
    plain = DeltaXYWHBoxCoder()
    d = plain.encode(torch.tensor([[0.0, 0, 10, 20]]), torch.tensor([[5.0, 0, 25, 20]]))
    torch.testing.assert_close(d, torch.tensor([[1.0, 0.0, math.log(2), 0.0]]))
    # the clamp keeps exp() finite; half inputs decode in float32
    huge = plain.decode(torch.tensor([[0.0, 0, 100, 100]]).half(), torch.tensor([[0.0, 0, 10, 10]]))
    assert huge.dtype == torch.float32 and torch.isfinite(huge).all()
    assert (huge[0, 2] - huge[0, 0]).item() == pytest.approx(1000.0 / 16 * 10, rel=1e-4)


def test_box_coder_matches_torchvision():
    tv = torchvision.models.detection._utils.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    anchors, boxes = random_boxes(40, 5), random_boxes(40, 6)
    ours = DeltaXYWHBoxCoder()
    torch.testing.assert_close(ours.encode(anchors, boxes), tv.encode_single(boxes, anchors))
    deltas = torch.randn(40, 4)
    torch.testing.assert_close(ours.decode(deltas, anchors), tv.decode_single(deltas, anchors))


def test_matcher_thresholds_ties_low_quality_and_empty():
    m = Matcher(thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=True)
    iou = torch.tensor([
        [0.1, 0.45, 0.6, 0.3, 0.0],
        [0.2, 0.30, 0.6, 0.35, 0.0],   # ties gt 0 on anchor 2; its best is 0.6 (anchor 2)
        [0.0, 0.00, 0.0, 0.38, 0.0],   # best IoU 0.38 < 0.4: low-quality match to anchor 3
    ])
    matched, labels = m(iou)
    assert labels.tolist() == [0, -1, 1, 1, 0]
    assert matched[2].item() == 0  # on equal IoU the first gt wins (torch.max)
    assert matched[3].item() == 2  # anchor 3's best gt
    strict = Matcher(thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=False)
    assert strict(iou)[1].tolist() == [0, -1, 1, 0, 0]
    matched, labels = m(torch.zeros(0, 5))
    assert labels.tolist() == [0] * 5 and matched.tolist() == [0] * 5
    # a box that overlaps no anchor at all gets none (not every IoU-0 anchor)
    assert m(torch.tensor([[0.0, 0.0, 0.0]]))[1].tolist() == [0, 0, 0]


def test_matcher_agrees_with_torchvision():
    tv = torchvision.models.detection._utils.Matcher(0.5, 0.4, allow_low_quality_matches=True)
    iou = torchvision.ops.box_iou(random_boxes(6, 7), random_boxes(300, 8))
    tv_idx = tv(iou)
    matched, labels = Matcher()(iou)
    assert torch.equal(labels == 1, tv_idx >= 0)
    assert torch.equal(labels == -1, tv_idx == -2)
    assert torch.equal(matched[labels == 1], tv_idx[tv_idx >= 0])


# ---- losses -------------------------------------------------------------------------------------

def test_box_losses_against_torch_and_torchvision():
    pred, target = torch.randn(30, 4), torch.randn(30, 4)
    torch.testing.assert_close(SmoothL1Loss(beta=0.1)(pred, target), F.smooth_l1_loss(pred, target, beta=0.1, reduction="sum"))
    torch.testing.assert_close(SmoothL1Loss(beta=0.0)(pred, target), F.l1_loss(pred, target, reduction="sum"))
    a, b = random_boxes(30, 9), random_boxes(30, 10)
    torch.testing.assert_close(GIoULoss()(a, b), torchvision.ops.generalized_box_iou_loss(a, b, reduction="sum"))
    assert giou_loss(a, a).abs().max() < 1e-6


# ---- backbones and neck -------------------------------------------------------------------------

@pytest.mark.parametrize("depth, c5", [(18, 512), (34, 512), (50, 2048), (101, 2048), (152, 2048)])
def test_resnet_shapes(depth, c5):
    net = ResNet(depth=depth, out_features=["res2", "res3", "res4", "res5"], norm="FrozenBN")
    shapes = net.output_shape()
    assert shapes["res5"].channels == c5 and shapes["res5"].stride == 32 and shapes["res2"].stride == 4
    if depth <= 50:
        out = net(torch.zeros(1, 3, 64, 64))
        assert {k: tuple(v.shape[1:]) for k, v in out.items()} == {
            k: (s.channels, 64 // s.stride, 64 // s.stride) for k, s in shapes.items()}


@pytest.mark.parametrize("depth", [18, 50, 101])
def test_resnet_layout_is_torchvisions(depth):
    """At the default width every parameter and buffer has torchvision's name and shape (checkpoints load)."""
    ours = ResNet(depth=depth, norm="BN", freeze_at=0).state_dict()
    ref = getattr(torchvision.models, f"resnet{depth}")(weights=None).state_dict()
    ref = {k: v for k, v in ref.items() if not k.startswith("fc.")}
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}


@pytest.mark.parametrize("depth, width", [(18, 32), (50, 16)])
def test_resnet_narrow(depth, width):
    net = ResNet(depth=depth, width=width, norm="BN", freeze_at=0, out_features=["res2", "res3", "res4", "res5"])
    expansion = 1 if depth == 18 else 4
    assert [s.channels for s in net.output_shape().values()] == [width * 2**i * expansion for i in range(4)]
    out = net(torch.zeros(2, 3, 64, 96))
    assert [tuple(t.shape) for t in out.values()] == [
        (2, width * 2**i * expansion, 16 // 2**i, 24 // 2**i) for i in range(4)]
    full = sum(p.numel() for p in ResNet(depth=depth).parameters())
    assert sum(p.numel() for p in net.parameters()) < full / 3  # a quarter of the weights, about
    with pytest.raises(ValueError, match="width"):
        ResNet(depth=18, width=20)
    with pytest.raises(ValueError, match="'GN' uses 32 groups.*got a layer of 16"):
        ResNet(depth=18, width=16, norm="GN")


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_zero_init_residual_is_torchvisions(depth):
    """zero_init_residual: the same zeroed norms as torchvision's option, and every block starts as
    the identity on its shortcut (a block without projection returns relu(x) = x for x >= 0)."""
    ours = ResNet(depth=depth, norm="BN", freeze_at=0, zero_init_residual=True)
    ref = getattr(torchvision.models, f"resnet{depth}")(weights=None, zero_init_residual=True)
    ref_zero = {k for k, v in ref.state_dict().items() if k.endswith(".weight") and v.dim() == 1 and not v.any()}
    ours_zero = {k for k, v in ours.state_dict().items() if k.endswith(".weight") and v.dim() == 1 and not v.any()}
    blocks = sum(isinstance(m, (torchvision.models.resnet.BasicBlock, torchvision.models.resnet.Bottleneck))
                 for m in ref.modules())
    assert ours_zero == ref_zero and len(ours_zero) == blocks
    block = ours.layer1[1]
    x = torch.rand(2, block.conv1.in_channels, 8, 8)
    torch.testing.assert_close(block.eval()(x), x)
    default = ResNet(depth=depth, norm="BN", freeze_at=0)
    assert not any(k for k, v in default.state_dict().items() if k.endswith(".weight") and v.dim() == 1 and not v.any())


def test_resnet_norms_and_freeze():
    from torchvision.ops.misc import FrozenBatchNorm2d

    net = ResNet(depth=18, norm="BN", freeze_at=2)
    assert isinstance(net.bn1, FrozenBatchNorm2d) and not net.conv1.weight.requires_grad
    assert not any(p.requires_grad for p in net.layer1.parameters())
    assert all(p.requires_grad for p in net.layer2.parameters())
    assert isinstance(net.layer2[0].bn1, torch.nn.BatchNorm2d)
    gn = ResNet(depth=18, norm="GN", freeze_at=0)
    assert isinstance(gn.layer3[0].bn1, torch.nn.GroupNorm)
    with pytest.raises(ValueError, match="depth"):
        ResNet(depth=42)
    with pytest.raises(ValueError, match="unknown norm"):
        ResNet(depth=18, norm="LayerNorm")
    with pytest.raises(ValueError, match="ResNet needs a norm"):
        ResNet(depth=18, norm=None)


@pytest.mark.parametrize("variant", [0, 1, 2, 3])
def test_efficientnet_taps(variant):
    net = EfficientNet(variant=variant).eval()
    shapes = net.output_shape()
    assert [s.stride for s in shapes.values()] == [8, 16, 32]
    out = net(torch.zeros(1, 3, 64, 64))
    for name, s in shapes.items():
        assert out[name].shape[1:] == (s.channels, 64 // s.stride, 64 // s.stride)


@pytest.mark.parametrize("top_block, norm", [("p6p7_from_c5", None), ("p6p7_from_p5", "GN"), (None, None)])
def test_fpn_levels(top_block, norm):
    backbone = ResNet(depth=18)
    fpn = FPN(input_shape=backbone.output_shape(), out_channels=64, top_block=top_block, norm=norm)
    out = fpn(backbone(torch.zeros(1, 3, 128, 128)))
    expected = ["p3", "p4", "p5"] + (["p6", "p7"] if top_block else [])
    assert list(out) == expected and fpn.out_features == expected
    for name, t in out.items():
        assert t.shape == (1, 64, 128 // 2 ** int(name[1]), 128 // 2 ** int(name[1]))
    odd = fpn(backbone(torch.zeros(1, 3, 100, 75)))  # odd sizes still line up
    assert odd["p3"].shape[-2:] == (13, 10)


# ---- the whole model ----------------------------------------------------------------------------

def sample(h=96, w=128, boxes=None, labels=None, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    return ImageSample(image=torch.rand(3, h, w, generator=g) * 255, gt_boxes=boxes, gt_labels=labels, **kw)


def test_no_gt_gives_classification_loss_only_and_one_box_gives_both():
    model = small_model().train()
    losses = model([sample(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))])
    assert losses["loss_cls"] > 0 and losses["loss_box_reg"] == 0
    losses = model([sample(boxes=torch.tensor([[10.0, 20, 60, 80]]), labels=torch.tensor([2]))])
    assert losses["loss_cls"] > 0 and losses["loss_box_reg"] > 0
    sum(losses.values()).backward()
    assert model.head.cls_score.weight.grad.abs().sum() > 0


def test_crowd_regions_are_ignored():
    model = small_model()
    anchors = torch.cat(model.anchor_generator(model.features(torch.zeros(1, 3, 128, 128))))
    plain = sample(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    crowd = sample(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long),
                   ignore_boxes=torch.tensor([[0.0, 0, 64, 64]]))
    labels, _ = model.label_anchors(anchors, [plain, crowd])
    assert (labels[0] == model.num_classes).all()
    inside = pairwise_ioa(torch.tensor([[0.0, 0, 64, 64]]), anchors)[0] > 0.5
    assert inside.any() and (labels[1][inside] == -1).all() and (labels[1][~inside] == model.num_classes).all()


def test_inference_outputs_and_rescaling():
    model = small_model(**{"postprocess.score_threshold": 0.0}).eval()
    with torch.no_grad():
        dets = model([sample(original_size=(192, 256), image_id=7), sample(h=64, w=100, seed=1)])
    assert len(dets) == 2 and dets[0].image_id == 7
    d = dets[0]
    assert 0 < len(d) <= 100 and d.boxes.dtype == torch.float32
    assert torch.all(d.scores[:-1] >= d.scores[1:])
    assert d.boxes[:, 2].max() <= 256 and d.boxes[:, 3].max() <= 192  # in original pixels
    assert d.boxes[:, 2].max() > 128  # rescaled from the 128-wide input
    assert dets[1].boxes[:, 2].max() <= 100


def test_bfloat16_autocast_on_cpu_returns_float32_boxes():
    model = small_model(**{"postprocess.score_threshold": 0.0}).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        dets = model([sample()])
    assert dets[0].boxes.dtype == torch.float32 and dets[0].scores.dtype == torch.float32 and len(dets[0]) > 0
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model([sample(boxes=torch.tensor([[10.0, 20, 60, 80]]), labels=torch.tensor([1]))])
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


def test_loss_normalizer_modes():
    boxes, labels = torch.tensor([[10.0, 20, 60, 80]]), torch.tensor([1])
    for mode in ("ema", "batch", "per_image"):
        model = small_model(**{"loss_normalizer": dict(mode=mode)}).train()
        losses = model([sample(boxes=boxes, labels=labels), sample(seed=1, boxes=boxes, labels=labels)])
        assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    ema = small_model().loss_normalizer
    ema.train()
    assert ema.batch_normalizer(torch.tensor(10)).item() == pytest.approx(0.9 * 100 + 0.1 * 10)


def test_wrong_head_argument_and_stride_mismatch_are_clear():
    with pytest.raises(TypeError, match="no argument 'num_conv'"):
        small_model(**{"head.num_conv": 2})
    with pytest.raises(ValueError, match="strides"):
        small_model(**{"anchor_generator.strides": [8, 16, 32, 64, 256]})


# ---- checkpoints --------------------------------------------------------------------------------

def test_imagenet_resnet_conversion_initialises_the_backbone(tmp_path):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None)
    torch.save(convert_torchvision_backbone(resnet.state_dict(), "resnet"), tmp_path / "r18.pth")
    model = small_model(**{"backbone.norm": "FrozenBN", "backbone.width": 64})  # ImageNet's width
    keys = load_weights(model, str(tmp_path / "r18.pth"))
    assert not keys.unexpected and all(not k.startswith("backbone.") for k in keys.missing)
    torch.testing.assert_close(model.backbone.layer3[0].conv1.weight, resnet.layer3[0].conv1.weight)


def test_imagenet_efficientnet_conversion(tmp_path):
    net = torchvision.models.efficientnet_b0(weights=None)
    converted = convert_torchvision_backbone(net.state_dict(), "efficientnet")
    torch.save(converted, tmp_path / "b0.pth")
    backbone = EfficientNet(variant=0)
    wrapper = torch.nn.Module()
    wrapper.backbone = backbone
    keys = load_weights(wrapper, str(tmp_path / "b0.pth"))
    assert not keys.missing and all(k.startswith("backbone.features.8.") for k in keys.unexpected)


def test_shape_mismatch_and_missing_checkpoint_are_errors(tmp_path):
    model = small_model()
    state = model.state_dict()
    state["head.cls_score.weight"] = torch.zeros(9 * 80, 128, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"head.cls_score.weight: checkpoint \(720, 128, 3, 3\) vs model"):
        load_weights(model, str(tmp_path / "bad.pth"))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_weights(model, str(tmp_path / "missing.pth"))


def test_backbone_registered_and_buildable_by_name():
    net = build(dict(type="ResNet", depth=18, out_features=["res5"]), BACKBONES)
    assert list(net.output_shape()) == ["res5"]
