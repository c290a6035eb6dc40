"""Winograd 3x3 convolutions (retdet/layers/winograd.py, csrc/cpu/winograd_cpu.cpp) against torch's
direct convolution (float64), torch.autograd.gradcheck and a hand-computed case; the detector with
Winograd against the plain NCHW model within the same tolerances as every other layout."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from retdet.layers import winograd
from retdet.layers.conv_bn import conv_norm
from retdet.ops import _extension

from .test_memory_format import frozen_bn, samples, small_detector

pytestmark = pytest.mark.skipif(not _extension.has_extension(), reason="needs the compiled extension")

SHAPES = [(1, 1, 4, 4, 1), (2, 5, 7, 9, 4), (3, 13, 6, 11, 10), (1, 16, 1, 5, 3)]  # (N, C, H, W, C_out)


def direct(x, w, b, relu):
    y = F.conv2d(x, w, b, padding=1)
    return y.relu() if relu else y


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_equals_the_direct_convolution_with_gradients(tile, shape, relu, with_bias):
    """float64, odd sizes (partial tiles), channel counts off the vector width: outputs and all three
    gradients equal F.conv2d's to rounding."""
    n, c, h, w, o = shape
    g = torch.Generator().manual_seed(sum(shape) + tile)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(o, c, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(o, generator=g, dtype=torch.float64, requires_grad=True) if with_bias else None
    y = winograd.winograd_conv3x3(x, weight, bias, tile=tile, relu=relu)
    ref = direct(x, weight, bias, relu)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    assert y.is_contiguous(), "NCHW in, NCHW out"
    assert winograd.winograd_conv3x3(x.contiguous(memory_format=torch.channels_last), weight, bias, tile=tile,
                                     relu=relu).is_contiguous(memory_format=torch.channels_last)
    dy = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    inputs = (x, weight) + ((bias,) if with_bias else ())
    for got, expected in zip(torch.autograd.grad(y, inputs, dy), torch.autograd.grad(ref, inputs, dy)):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("tile", [2, 4])
def test_gradcheck(tile):
    """The backward pass (adjoint kernels, weight-transform adjoint, bias from tile position (1, 1))
    against finite differences."""
    g = torch.Generator().manual_seed(tile)
    x = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: winograd.winograd_conv3x3(*a, tile=tile, relu=True), (x, weight, bias))


@pytest.mark.parametrize("tile", [2, 4])
def test_hand_computed_box_filter(tile):
    """All-ones 3x3 kernel on an all-ones 5x5 image with zero padding: each output counts the pixels
    of its 3x3 window inside the image (4 at corners, 6 on edges, 9 inside). F(4x4)'s 1/6 and 1/24
    are inexact in binary, hence float64 and a rounding tolerance."""
    ones = dict(dtype=torch.float64)
    y = winograd.winograd_conv3x3(torch.ones(1, 1, 5, 5, **ones), torch.ones(1, 1, 3, 3, **ones), tile=tile)
    expected = torch.tensor([[4, 6, 6, 6, 4], [6, 9, 9, 9, 6], [6, 9, 9, 9, 6], [6, 9, 9, 9, 6], [4, 6, 6, 6, 4]], **ones)
    torch.testing.assert_close(y[0, 0], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("tile,factor", [(2, 4), (4, 50)])
def test_float32_error_is_near_the_direct_convolutions(tile, factor):
    """float32 against a float64 reference: F(2x2) within a few times the direct convolution's own
    error, F(4x4) within ~50x (its transforms hold 1/4, 1/6 and 1/24); both < 1e-4 of the output's scale."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 256, 20, 24, generator=g)
    weight = torch.randn(256, 256, 3, 3, generator=g) * (2 / (9 * 256)) ** 0.5
    ref = F.conv2d(x.double(), weight.double(), padding=1)
    direct_error = (F.conv2d(x, weight, padding=1).double() - ref).abs().max().item()
    error = (winograd.winograd_conv3x3(x, weight, tile=tile).double() - ref).abs().max().item()
    assert error <= factor * direct_error
    assert error <= 1e-4 * ref.abs().max().item()


def test_transforms_are_adjoint():
    """<T x, v> == <x, T* v> for the input and the output transform (what the backward relies on)."""
    g = torch.Generator().manual_seed(3)
    for tile in (2, 4):
        x = torch.randn(2, 5, 7, 6, generator=g, dtype=torch.float64)
        tiles = ((tile + 2) ** 2, 2 * -(-7 // tile) * -(-6 // tile), 5)
        v = torch.empty(tiles, dtype=torch.float64)
        torch.ops.retdet.winograd_input_transform(x, tile, v)
        dv = torch.randn(tiles, generator=g, dtype=torch.float64)
        dx = torch.ops.retdet.winograd_input_transform_backward(dv, tile, 2, 7, 6)
        torch.testing.assert_close((v * dv).sum(), (x * dx).sum())
        m = torch.randn(tiles, generator=g, dtype=torch.float64)
        y = torch.ops.retdet.winograd_output_transform(m, None, False, tile, 2, 7, 6)
        dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
        dm = torch.empty(tiles, dtype=torch.float64)
        torch.ops.retdet.winograd_output_transform_backward(dy, None, tile, dm)
        torch.testing.assert_close((y * dy).sum(), (m * dm).sum())


def test_reused_workspaces_never_clobber_saved_tensors():
    """Two forward passes before either backward (the second reuses the temporaries): both gradients
    stay right; then a larger and a smaller layer in turn."""
    g = torch.Generator().manual_seed(4)
    f64 = dict(generator=g, dtype=torch.float64, requires_grad=True)
    xs = [torch.randn(1, 8, s, s, **f64) for s in (12, 20, 7)]
    w = torch.randn(8, 8, 3, 3, **f64)
    outs = [winograd.winograd_conv3x3(x, w, tile=4) for x in xs]
    for x, y in zip(xs, outs):
        torch.testing.assert_close(y, F.conv2d(x, w, padding=1), rtol=1e-10, atol=1e-10)
    grads = [torch.autograd.grad(y.square().sum(), (x, w)) for x, y in zip(xs, outs)]
    for x, (gx, gw) in zip(xs, grads):
        ref = torch.autograd.grad(F.conv2d(x, w, padding=1).square().sum(), (x, w))
        torch.testing.assert_close(gx, ref[0], rtol=1e-10, atol=1e-9)
        torch.testing.assert_close(gw, ref[1], rtol=1e-10, atol=1e-9)
    winograd.release_workspaces()


def test_deterministic():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 16, 17, 13, generator=g, requires_grad=True)
    w = torch.randn(16, 16, 3, 3, generator=g, requires_grad=True)
    runs = []
    for _ in range(2):
        y = winograd.winograd_conv3x3(x, w, tile=4, relu=True)
        runs.append((y, *torch.autograd.grad(y.sum(), (x, w))))
    assert all(torch.equal(a, b) for a, b in zip(*runs))


# ---- which convolutions run as Winograd ---------------------------------------------------------

@pytest.mark.parametrize("algorithm,channels,size,kernel,stride,expected", [
    ("auto", 256, 64, 3, 1, 4),      # a large head layer
    ("auto", 256, 16, 3, 1, None),   # 2 x 4 x 4 tiles: too few
    ("auto", 64, 64, 3, 1, None),    # 64 channels: the transforms cost more than they save
    ("auto", 256, 64, 3, 2, None),   # stride 2
    ("auto", 256, 64, 1, 1, None),   # 1x1
    ("direct", 256, 64, 3, 1, None),
    ("winograd_f2", 8, 4, 3, 1, 2),  # forced: wherever it applies
    ("winograd_f4", 8, 4, 3, 1, 4),
])
def test_tile_choice(algorithm, channels, size, kernel, stride, expected):
    conv = nn.Conv2d(channels, channels, kernel, stride=stride, padding=kernel // 2)
    x = torch.randn(2, channels, size, size)
    with winograd.conv_algorithm(algorithm):
        assert winograd.tile_for(x, conv, conv.weight) == expected
        assert winograd.tile_for(x.double(), conv, conv.weight.double()) == (None if algorithm == "auto" else expected)


def test_no_winograd_without_the_extension_or_on_other_devices(monkeypatch):
    conv = nn.Conv2d(256, 256, 3, padding=1)
    x = torch.randn(2, 256, 64, 64)
    assert winograd.tile_for(x, conv, conv.weight) == 4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert winograd.tile_for(x, conv, conv.weight) is None
    monkeypatch.setattr(_extension, "has_extension", lambda: False)
    assert winograd.tile_for(x, conv, conv.weight) is None


def test_unknown_algorithm_is_a_clear_error():
    with pytest.raises(ValueError, match="model.conv_algorithm must be one of .*'winograd'"):
        small_detector("NCHW", conv_algorithm="winograd")


def test_conv_norm_folds_frozen_bn_into_the_winograd_convolution():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1, bias=False)
    bn = frozen_bn(16, 2)
    x = torch.randn(2, 16, 10, 10).contiguous(memory_format=torch.channels_last)
    r = torch.randn(2, 16, 10, 10)
    with torch.no_grad():
        expected = (bn(conv(x)) + r).relu()
        with winograd.conv_algorithm("winograd_f4"):
            torch.testing.assert_close(conv_norm(x, conv, bn, relu=True, residual=r), expected, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(conv_norm(x, conv, bn, relu=True), bn(conv(x)).relu(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("algorithm", ["winograd_f2", "winograd_f4"])
def test_detector_with_winograd_computes_what_the_direct_nchw_model_computes(algorithm):
    """Every 3x3 stride-1 layer as Winograd (forced, so the small model uses it everywhere): losses,
    gradients and detections within test_memory_format's tolerances of the direct NCHW model.
    Padded to 32, the inputs these tolerances were set on (the quickstart now pads to 8: there the worst
    F(4x4) box coordinate differs by 0.017 px, 2.3x what NHWC against NCHW direct gives on that input)."""
    reference = small_detector("NCHW", conv_algorithm="direct", size_divisibility=32)
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    batch = samples()
    ref_losses = reference.train()(batch)
    sum(ref_losses.values()).backward()
    ref_grads = {k: p.grad.clone() for k, p in reference.named_parameters() if p.grad is not None}
    with torch.no_grad():
        ref_dets = reference.eval()(batch)

    model = small_detector("auto", conv_algorithm=algorithm, size_divisibility=32)
    model.load_state_dict(initial)
    calls = []
    original = winograd.winograd_conv3x3
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(winograd, "winograd_conv3x3", lambda *a, **k: calls.append(1) or original(*a, **k))
        losses = model.train()(batch)
        assert len(calls) > 10, "the forced algorithm reaches the backbone, FPN and head"
        sum(losses.values()).backward()
        with torch.no_grad():
            dets = model.eval()(batch)
    for k in losses:
        torch.testing.assert_close(losses[k], ref_losses[k], rtol=1e-4, atol=1e-6, msg=k)
    for k, p in model.named_parameters():
        if k in ref_grads:
            torch.testing.assert_close(p.grad, ref_grads[k], rtol=1e-3, atol=1e-5 * ref_grads[k].abs().max().item(),
                                       msg=f"grad of {k}")
    for d, r in zip(dets, ref_dets):
        assert len(d.scores) == len(r.scores)
        torch.testing.assert_close(d.scores, r.scores, atol=1e-4, rtol=0)
        torch.testing.assert_close(d.boxes, r.boxes, atol=1e-2, rtol=0)
        assert torch.equal(d.labels, r.labels)


def test_roofline_counts_winograd_time_as_convolution():
    """tools/benchmark.py --task roofline: the transforms and GEMMs of a Winograd layer are conv time."""
    from retdet.benchmarks.roofline import time_split

    x = torch.randn(2, 32, 24, 24, requires_grad=True)
    w = torch.randn(32, 32, 3, 3, requires_grad=True)
    split = time_split(lambda: winograd.winograd_conv3x3(x, w, tile=4).sum().backward(), runs=1)
    assert split["conv"] > 0.8 * split["profiled"], split


@pytest.mark.parametrize("needs", ["x", "weight", "bias"])
def test_gradients_when_only_one_input_needs_them(needs):
    """A frozen layer under a trainable input (x only: V is then a reused buffer) and the first
    trainable layer (weight or bias only)."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 5, 9, 7, generator=g, dtype=torch.float64, requires_grad=needs == "x")
    weight = torch.randn(6, 5, 3, 3, generator=g, dtype=torch.float64, requires_grad=needs == "weight")
    bias = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=needs == "bias")
    target = {"x": x, "weight": weight, "bias": bias}[needs]
    (got,) = torch.autograd.grad(winograd.winograd_conv3x3(x, weight, bias, relu=True).square().sum(), target)
    (expected,) = torch.autograd.grad(direct(x, weight, bias, True).square().sum(), target)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-9)


def test_float32_channel_tail():
    """13 channels: one full 8-float vector and a 5-channel tail in every kernel."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 13, 11, 10, generator=g, requires_grad=True)
    w = torch.randn(13, 13, 3, 3, generator=g, requires_grad=True)
    for tile in (2, 4):
        y = winograd.winograd_conv3x3(x, w, tile=tile)
        ref = F.conv2d(x, w, padding=1)
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
        got, expected = torch.autograd.grad(y.sum(), x), torch.autograd.grad(ref.sum(), x)
        torch.testing.assert_close(got[0], expected[0], rtol=1e-4, atol=1e-4)


def test_inference_mode_then_no_grad_then_training():
    """Buffers made under torch.inference_mode are inference tensors; later calls outside it must not
    write into them. And eval of a trainable layer (no_grad, weight requiring grad) is right too."""
    winograd.release_workspaces()
    g = torch.Generator().manual_seed(8)
    x = torch.randn(1, 8, 12, 12, generator=g)
    w = torch.randn(8, 8, 3, 3, generator=g, requires_grad=True)
    ref = F.conv2d(x, w, padding=1).detach()
    with torch.inference_mode():
        torch.testing.assert_close(winograd.winograd_conv3x3(x, w), ref, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(winograd.winograd_conv3x3(x, w), ref, rtol=1e-4, atol=1e-4)
    y = winograd.winograd_conv3x3(x, w)
    y.sum().backward()
    torch.testing.assert_close(y.detach(), ref, rtol=1e-4, atol=1e-4)
    assert w.grad is not None
    winograd.release_workspaces()


def test_relu_propagates_nan_like_torch():
    """A NaN input is not hidden by the fused ReLU (a NaN check must still see it): every output that
    torch makes NaN is NaN (Winograd spreads it over the whole tile, so more can be), and the weight's
    gradient is NaN where torch.relu's is."""
    x = torch.zeros(1, 2, 5, 5, dtype=torch.float64)
    x[0, 0, 2, 2] = float("nan")
    w = torch.ones(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    for tile in (2, 4):
        y = winograd.winograd_conv3x3(x, w, tile=tile, relu=True)
        ref = F.conv2d(x, w, padding=1).relu()
        assert ref.isnan().any() and (y.isnan() | ~ref.isnan()).all()
        got, expected = torch.autograd.grad(y.sum(), w)[0], torch.autograd.grad(ref.sum(), w)[0]
        assert expected.isnan().any() and torch.equal(got.isnan(), expected.isnan())


def test_hooks_and_swapped_modules_are_called():
    """conv_norm calls a conv that has forward hooks, and a Conv2d subclass, as modules: hooks fire."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    x = torch.randn(2, 16, 12, 12)
    seen = []
    handle = conv.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with winograd.conv_algorithm("winograd_f4"):
        torch.testing.assert_close(conv_norm(x, conv, None), F.conv2d(x, conv.weight, conv.bias, padding=1))
    assert seen == [(2, 16, 12, 12)]
    handle.remove()

    class Doubled(nn.Conv2d):
        def forward(self, x):
            return 2 * super().forward(x)
    doubled = Doubled(16, 16, 3, padding=1)
    with winograd.conv_algorithm("winograd_f4"):
        torch.testing.assert_close(conv_norm(x, doubled, None), 2 * F.conv2d(x, doubled.weight, doubled.bias, padding=1))


def test_compiled_network_follows_the_direct_layout_rule(monkeypatch):
    """model.compile runs no Winograd layer, so on AVX2 it trains in NCHW like conv_algorithm="direct"."""
    from retdet.layers import memory_format as mf

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert small_detector("auto").train().memory_format == torch.channels_last
    assert small_detector("auto", conv_algorithm="direct").train().memory_format == torch.contiguous_format
    assert small_detector("auto", compile=True).train().memory_format == torch.contiguous_format
    assert mf.layout_name(small_detector("auto", compile=True).eval().memory_format) == "NHWC"
