"""The key check: retdet built from configs/compat/ with converted torchvision weights computes what
torchvision's RetinaNet computes, for the same preprocessed images: per-level head outputs, anchors,
training losses and final detections (v1 and v2)."""
import os

import cv2
import pytest
import torch
import torchvision
from torchvision.models.detection.image_list import ImageList

from retdet.checkpoint import load_weights
from retdet.config import load_config
from retdet.modeling import build_model
from retdet.structures import ImageSample

from .conftest import CONFIGS, SHARED
from retdet.tools.convert_weights import main as convert_main

BCCD = os.path.join(SHARED, "datasets", "bccd")
VARIANTS = {
    "v1": (torchvision.models.detection.retinanet_resnet50_fpn, "retinanet_resnet50_fpn_torchvision.py"),
    "v2": (torchvision.models.detection.retinanet_resnet50_fpn_v2, "retinanet_resnet50_fpn_v2_torchvision.py"),
}


def randomise_norm_and_bias(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BN statistics and affine parameters, GN affine, and class biases that let many
    anchors pass the score threshold (a fresh model would detect nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
            elif isinstance(m, torch.nn.GroupNorm):
                m.weight.copy_(torch.rand(m.num_channels, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_channels, generator=g) * 0.1)
        # Spread the logits (std ~1.5 around -2) and deltas (std ~0.3): distinct scores, real boxes.
        x = torch.randn(1, 3, 256, 256, generator=g)
        features = list(model.backbone(x).values())
        out = model.head(features)
        cls = model.head.classification_head.cls_logits
        cls.weight.mul_(1.5 / (out["cls_logits"] - cls.bias.mean()).std())
        cls.bias.copy_(torch.randn(cls.bias.shape, generator=g) * 0.5 - 2.0)
        model.head.regression_head.bbox_reg.weight.mul_(0.3 / out["bbox_regression"].std())


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pair(request, tmp_path_factory):
    builder, config = VARIANTS[request.param]
    torch.manual_seed(0)
    tv = builder(weights=None, weights_backbone=None, num_classes=91).eval()
    randomise_norm_and_bias(tv, seed=1)
    tmp = tmp_path_factory.mktemp(request.param)
    torch.save(tv.state_dict(), tmp / "tv.pth")
    convert_main(["--source", "torchvision-retinanet", "--input", str(tmp / "tv.pth"), "--output", str(tmp / "ours.pth")])
    ours = build_model(load_config(os.path.join(CONFIGS, "compat", config)).model)
    keys = load_weights(ours, str(tmp / "ours.pth"))
    # the loss normaliser's running value is training state, not a weight
    assert set(keys.missing) <= {"loss_normalizer.ema"} and not keys.unexpected, keys.table()
    return request.param, tv, ours.eval()


def random_batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 3, 256, 384, generator=g), [(256, 384), (230, 370)], [(512, 768), (460, 740)]


def bccd_batch():
    """Two BCCD images, normalised as torchvision does, padded to a multiple of 128."""
    names = ["BloodImage_00000.jpg", "BloodImage_00001.jpg"]
    tensors = []
    for name in names:
        img = cv2.imread(os.path.join(BCCD, "images", name))
        assert img is not None, name
        rgb = torch.from_numpy(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float() / 255
        mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        tensors.append((rgb - mean) / std)
    h, w = tensors[0].shape[-2:]
    batch = torch.zeros(2, 3, 512, 640)
    for i, t in enumerate(tensors):
        batch[i, :, : t.shape[1], : t.shape[2]] = t
    return batch, [(h, w)] * 2, [(h, w)] * 2


def targets_for(sizes):
    g = torch.Generator().manual_seed(5)
    targets = []
    for h, w in sizes:
        xy = torch.rand(4, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = torch.rand(4, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 8
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(1, 91, (4,), generator=g)})
    targets[-1] = {"boxes": targets[-1]["boxes"][:1], "labels": targets[-1]["labels"][:1]}
    return targets


def tv_head(tv, x):
    features = list(tv.backbone(x).values())
    return features, tv.head(features)


def ours_head(ours, x):
    from retdet.modeling import permute_to_N_HWA_K

    features = ours.features(x)
    logits, deltas = ours.head(features)
    return (features, [permute_to_N_HWA_K(t, ours.num_classes) for t in logits],
            [permute_to_N_HWA_K(t, 4) for t in deltas])


@pytest.mark.parametrize("inputs", ["random", "bccd"])
def test_head_outputs_anchors_losses_and_detections(pair, inputs):
    name, tv, ours = pair
    x, image_sizes, original_sizes = random_batch() if inputs == "random" else bccd_batch()
    with torch.no_grad():
        tv_feats, tv_out = tv_head(tv, x)
        feats, logits, deltas = ours_head(ours, x)
    # per-level head outputs
    split = [f.shape[-2] * f.shape[-1] * 9 for f in feats]
    for level, (a, b) in enumerate(zip(tv_out["cls_logits"].split(split, 1), logits)):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=0, msg=f"{name} cls logits, level {level}")
    for level, (a, b) in enumerate(zip(tv_out["bbox_regression"].split(split, 1), deltas)):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=0, msg=f"{name} box deltas, level {level}")
    # anchors
    image_list = ImageList(x, image_sizes)
    tv_anchors = tv.anchor_generator(image_list, tv_feats)
    anchors = ours.anchor_generator(feats)
    torch.testing.assert_close(torch.cat(anchors), tv_anchors[0], atol=0, rtol=0)
    # training losses for the same targets
    targets = targets_for(image_sizes)
    with torch.no_grad():
        tv_losses = tv.compute_loss(targets, tv_out, tv_anchors)
        samples = [ImageSample(image=torch.zeros(3, h, w), gt_boxes=t["boxes"], gt_labels=t["labels"])
                   for (h, w), t in zip(image_sizes, targets)]
        gt_labels, gt_boxes = ours.label_anchors(torch.cat(anchors), samples)
        losses = ours.losses(anchors, logits, deltas, gt_labels, gt_boxes)
    assert tv_losses["classification"] > 0 and tv_losses["bbox_regression"] > 0
    torch.testing.assert_close(losses["loss_cls"], tv_losses["classification"], rtol=1e-4, atol=0)
    torch.testing.assert_close(losses["loss_box_reg"], tv_losses["bbox_regression"], rtol=1e-4, atol=0)
    # final detections, rescaled to the original sizes
    with torch.no_grad():
        split_out = {k: list(v.split(split, 1)) for k, v in tv_out.items()}
        tv_dets = tv.postprocess_detections(split_out, [list(a.split(split)) for a in tv_anchors], image_sizes)
        tv_dets = tv.transform.postprocess(tv_dets, image_sizes, original_sizes)
        dets = ours.postprocess(logits, deltas, anchors, image_sizes, original_sizes)
    for i, (a, b) in enumerate(zip(tv_dets, dets)):
        assert len(a["scores"]) > 20, "too few detections for a meaningful comparison"
        assert_same_detections(a, b, f"{name} {inputs} image {i}")


def assert_same_detections(tv_det, det, where, box_atol=1e-2, score_atol=1e-4):
    """Same detections: one-to-one pairs with the same label, boxes within box_atol and scores within
    score_atol, in the same order except between scores closer than score_atol (the head outputs
    agree to ~1e-5, so such near-ties may swap; so may one at the max_detections cut)."""
    torch.testing.assert_close(det.scores, tv_det["scores"], atol=score_atol, rtol=0)  # both sorted
    cut = tv_det["scores"][-1] + score_atol if len(tv_det["scores"]) == 300 else -1.0
    used = torch.zeros(len(det), dtype=torch.bool)
    for j in range(len(tv_det["scores"])):
        box, score, label = tv_det["boxes"][j], tv_det["scores"][j], tv_det["labels"][j]
        ok = (~used & (det.labels == label) & ((det.scores - score).abs() <= score_atol)
              & ((det.boxes - box).abs().max(dim=1).values <= box_atol))
        if not ok.any():
            assert score <= cut, f"{where}: torchvision detection {j} (label {label}, score {score:.5f}) has no match"
            continue
        used[torch.nonzero(ok)[0, 0]] = True
    assert bool(used[det.scores > cut].all()), f"{where}: detections without a torchvision counterpart"


def test_preprocessing_matches_torchvision_normalisation(pair):
    name, tv, ours = pair
    g = torch.Generator().manual_seed(9)
    images = [torch.randint(0, 256, (3, 200, 300), generator=g, dtype=torch.uint8) for _ in range(2)]
    batch = ours.preprocess(images)
    expected = [tv.transform.normalize(im.float() / 255) for im in images]
    for i, e in enumerate(expected):
        torch.testing.assert_close(batch.tensor[i, :, :200, :300], e, atol=1e-5, rtol=1e-5)
    assert batch.tensor.shape[-2:] == (256, 384)  # padded to a multiple of 128
    assert batch.tensor[:, :, 200:].abs().sum() == 0
