"""model.memory_format (NHWC or NCHW per mode, "auto" by the CPU's instruction set) and the fused
convolutions of retdet/layers/conv_bn.py: the same function as the plain NCHW model, within float
rounding, in every layout and mode."""
import os

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from retdet.config import load_config
from retdet.layers import memory_format as mf
from retdet.layers.conv_bn import calling_modules, conv_norm
from retdet.modeling import build_model
from retdet.structures import ImageSample

from .conftest import CONFIGS


def frozen_bn(channels: int, seed: int) -> FrozenBatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = FrozenBatchNorm2d(channels)
    bn.weight.copy_(torch.rand(channels, generator=g) + 0.5)
    bn.bias.copy_(torch.randn(channels, generator=g))
    bn.running_mean.copy_(torch.randn(channels, generator=g))
    bn.running_var.copy_(torch.rand(channels, generator=g) + 0.5)
    return bn


# ---- fused convolutions -------------------------------------------------------------------------

@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["NCHW", "NHWC"])
@pytest.mark.parametrize("kernel,stride", [(3, 1), (3, 2), (1, 1), (1, 2)])
@pytest.mark.parametrize("with_bn", [True, False], ids=["frozenbn", "nonorm"])
def test_fused_conv_relu_and_sum_equal_the_modules(layout, kernel, stride, with_bn):
    """relu(bn(conv(x)) + r) by oneDNN's post-ops (no gradient) against the modules called in turn."""
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 48, kernel, stride=stride, padding=kernel // 2, bias=not with_bn).to(memory_format=layout)
    bn = frozen_bn(48, 1) if with_bn else None
    x = torch.randn(2, 32, 19, 26).contiguous(memory_format=layout)
    with torch.no_grad():
        plain = conv(x) if bn is None else bn(conv(x))
        r = torch.randn_like(plain)
        for kwargs, expected in [(dict(relu=True), plain.relu()), (dict(residual=r), plain + r),
                                 (dict(relu=True, residual=r), (plain + r).relu()), ({}, plain)]:
            out = conv_norm(x, conv, bn, **kwargs)
            torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-5, msg=str(kwargs))
            assert out.is_contiguous(memory_format=layout), "the output keeps the input's layout"
            with calling_modules():  # the unfused route gives the same too (what tracers see)
                torch.testing.assert_close(conv_norm(x, conv, bn, **kwargs), expected, atol=2e-5, rtol=1e-5)


def test_fused_path_is_only_taken_without_gradients():
    """With a gradient to compute, conv_norm runs the differentiable ops: gradients equal the modules'."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(1, 8, 9, 9, requires_grad=True)
    r = torch.randn(1, 8, 9, 9)
    out = conv_norm(x, conv, None, relu=True, residual=r)
    assert out.requires_grad
    out.square().sum().backward()
    x2 = x.detach().clone().requires_grad_()
    conv2 = nn.Conv2d(8, 8, 3, padding=1)
    conv2.load_state_dict(conv.state_dict())
    (conv2(x2) + r).relu().square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(conv.weight.grad, conv2.weight.grad)


# ---- the rule ----------------------------------------------------------------------------------

@pytest.mark.parametrize("capability,direct_train,inference", [
    ("AVX512", "NHWC", "NHWC"), ("AVX512_BF16", "NHWC", "NHWC"), ("AVX2", "NCHW", "NHWC"), ("DEFAULT", "NCHW", "NHWC")])
def test_auto_layout_follows_the_instruction_set(monkeypatch, capability, direct_train, inference):
    """NCHW only for training with oneDNN's direct 3x3 kernels below AVX-512; Winograd's are NHWC."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    spec = mf.check_spec("auto")
    assert mf.layout_name(mf.resolve(spec, "train", "cpu", "direct")) == direct_train
    assert mf.layout_name(mf.resolve(spec, "train", "cpu")) == "NHWC"
    assert mf.layout_name(mf.resolve(spec, "inference", "cpu", "direct")) == inference
    assert mf.layout_name(mf.resolve(spec, "inference", "cpu")) == inference
    assert mf.layout_name(mf.resolve(spec, "train", "cuda")) == "NHWC"
    assert mf.layout_name(mf.resolve(mf.check_spec("NCHW"), "inference", "cpu")) == "NCHW"  # an override wins
    assert mf.layout_name(mf.resolve(mf.check_spec(dict(train="NHWC")), "train", "cpu")) == "NHWC"


@pytest.mark.parametrize("bad,match", [("NHCW", "'NHCW' for train is not a layout"), (dict(training="NHWC"), "training"),
                                       (True, "must be one of")])
def test_bad_memory_format_is_a_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        small_detector(bad)


# ---- the detector in each layout --------------------------------------------------------------

def small_detector(memory_format, **model):
    cfg = load_config(os.path.join(CONFIGS, "quickstart.py"))
    cfg.model.backbone.norm = "FrozenBN"  # folded and fused, as in the COCO configs
    cfg.model.backbone.freeze_at = 2  # frozen stem and res2: fused even in training
    cfg.model.head.norm = None  # conv + ReLU blocks: fused in inference
    cfg.model.memory_format = memory_format
    cfg.model.update(model)
    torch.manual_seed(0)
    detector = build_model(cfg.model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in detector.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.load_state_dict(frozen_bn(m.weight.numel(), int(torch.randint(0, 1000, (1,), generator=g))).state_dict())
        detector.head.cls_score.bias.fill_(-1.0)  # many candidates reach post-processing
    return detector


def samples():
    g = torch.Generator().manual_seed(2)
    sizes = [(150, 170), (128, 96)]
    return [ImageSample(image=torch.rand(3, h, w, generator=g) * 255, image_id=i,
                        gt_boxes=torch.tensor([[10.0, 12.0, 60.0, 80.0], [40.0, 30.0, 90.0, 95.0]]),
                        gt_labels=torch.tensor([1, 3])) for i, (h, w) in enumerate(sizes)]


def weights_layout(model) -> str:
    return "NHWC" if model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last) else "NCHW"


def test_every_layout_computes_what_plain_nchw_computes():
    reference = small_detector("NCHW")
    initial = {k: v.clone() for k, v in reference.state_dict().items()}  # before the loss normaliser's update
    batch = samples()
    reference.train()
    ref_losses = reference(batch)
    sum(ref_losses.values()).backward()
    ref_grads = {k: p.grad.clone() for k, p in reference.named_parameters() if p.grad is not None}
    with torch.no_grad():
        ref_dets = reference.eval()(batch)
    assert sum(len(d.scores) for d in ref_dets) > 50
    for spec in ("NHWC", dict(train="NCHW", inference="NHWC"), dict(train="NHWC", inference="NCHW"), "auto"):
        model = small_detector(spec)
        model.load_state_dict(initial)
        model.train()
        assert weights_layout(model) == mf.layout_name(mf.resolve(mf.check_spec(spec), "train", "cpu"))
        losses = model(batch)
        for k in losses:
            torch.testing.assert_close(losses[k], ref_losses[k], rtol=1e-4, atol=1e-6, msg=f"{spec}: {k}")
        sum(losses.values()).backward()
        for k, p in model.named_parameters():
            if k in ref_grads:
                torch.testing.assert_close(p.grad, ref_grads[k], rtol=1e-3, atol=1e-5 * ref_grads[k].abs().max().item(),
                                           msg=f"{spec}: grad of {k}")
        model.eval()
        assert weights_layout(model) == mf.layout_name(mf.resolve(mf.check_spec(spec), "inference", "cpu"))
        with torch.no_grad():
            dets = model(batch)
        for d, r in zip(dets, ref_dets):
            assert len(d.scores) == len(r.scores), spec
            torch.testing.assert_close(d.scores, r.scores, atol=1e-4, rtol=0)
            torch.testing.assert_close(d.boxes, r.boxes, atol=1e-2, rtol=0)
            assert torch.equal(d.labels, r.labels)


def test_switching_modes_keeps_the_optimizer_working():
    """dict(train="NCHW", inference="NHWC"): an evaluation between steps changes the weights' layout and
    back; the optimizer's parameters stay the module's and the steps equal those of a model that never
    switched."""
    def run(spec, evaluate):
        model = small_detector(spec)
        model.train()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
        for step in range(3):
            opt.zero_grad()
            sum(model(samples()).values()).backward()
            opt.step()
            if evaluate:
                with torch.no_grad():
                    model.eval()(samples())
                model.train()
        return model.state_dict()

    switched, fixed = run(dict(train="NCHW", inference="NHWC"), True), run("NCHW", False)
    for k in fixed:
        torch.testing.assert_close(switched[k], fixed[k], rtol=1e-4, atol=1e-6, msg=k)


def test_the_former_channels_last_setting_still_works():
    model = small_detector("auto", channels_last=False)
    assert weights_layout(model.eval()) == "NCHW" and weights_layout(model.train()) == "NCHW"
    model = small_detector("NCHW", channels_last=True)
    assert weights_layout(model.eval()) == "NHWC" and model.channels_last
