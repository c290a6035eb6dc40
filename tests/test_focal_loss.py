"""retdet.ops.sigmoid_focal_loss against torchvision's and fvcore's focal losses, by hand, gradcheck
and opcheck; CPU always, CUDA (CPU vs CUDA agreement) when available."""
import math
import os
import subprocess
import sys

import pytest
import torch
import torchvision
from fvcore.nn import sigmoid_focal_loss as fvcore_focal_loss

from retdet.ops import sigmoid_focal_loss, sigmoid_focal_loss_reference

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
REDUCTIONS = ["none", "sum", "mean"]
GAMMAS = [0.0, 1.0, 2.0, 3.0, 3.5]  # 0-3: the vector path on CPU; 3.5: the scalar path
# The CPU's float32 vector path runs by rows for K >= 8 (13: 8 vector columns, 5 scalar), over the
# flattened elements for K < 8 (3: the quickstart's 4 classes and BCCD's 3 are such).
CLASS_COUNTS = [13, 3]


def make_case(n=257, k=13, seed=0, kind="binary", dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, k, generator=g) * 4).to(dtype)
    if kind == "binary":
        targets = (torch.rand(n, k, generator=g) < 0.2).to(dtype)
    elif kind == "soft":
        targets = torch.rand(n, k, generator=g).to(dtype)
    else:  # class indices with background (k) and ignore (-1)
        targets = torch.randint(-1, k + 1, (n,), generator=g)
    return logits.to(device), targets.to(device)


def onehot(labels, k):
    return torch.nn.functional.one_hot(labels.clamp(min=0), k + 1)[:, :k].float()


def test_hand_computed_values():
    # x = 0: p = 0.5, ce = log 2, (1 - p_t)^2 = 0.25; alpha_t = 0.25 (t = 1) or 0.75 (t = 0).
    x = torch.zeros(1, 2)
    t = torch.tensor([[1.0, 0.0]])
    expected = torch.tensor([[0.25 * math.log(2) * 0.25, 0.75 * math.log(2) * 0.25]])
    torch.testing.assert_close(sigmoid_focal_loss(x, t, 0.25, 2.0), expected)
    # x = 2, t = 1, gamma = 1, no alpha: ce = log(1 + e^-2), 1 - p = sigmoid(-2)
    x = torch.tensor([[2.0]])
    expected = math.log1p(math.exp(-2)) * (1 / (1 + math.exp(2)))
    assert sigmoid_focal_loss(x, torch.ones(1, 1), -1.0, 1.0).item() == pytest.approx(expected, rel=1e-6)
    # class index K (background) is all-zero targets; -1 (ignore) is all zeros, loss and gradient.
    x = torch.randn(3, 4, requires_grad=True)
    labels = torch.tensor([4, -1, 2])
    loss = sigmoid_focal_loss(x, labels, 0.25, 2.0)
    torch.testing.assert_close(loss[0], sigmoid_focal_loss(x[:1], torch.zeros(1, 4), 0.25, 2.0)[0])
    assert torch.all(loss[1] == 0)
    loss.sum().backward()
    assert torch.all(x.grad[1] == 0) and torch.all(x.grad[0] != 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", [0.25, -1.0])
@pytest.mark.parametrize("kind", ["binary", "soft"])
@pytest.mark.parametrize("k", CLASS_COUNTS)
def test_float_targets_match_torchvision_and_fvcore(device, reduction, gamma, alpha, kind, k):
    logits, targets = make_case(k=k, kind=kind, device=device)
    x1 = logits.clone().requires_grad_()
    x2 = logits.clone().requires_grad_()
    x3 = logits.clone().requires_grad_()
    ours = sigmoid_focal_loss(x1, targets, alpha, gamma, reduction)
    ref = torchvision.ops.sigmoid_focal_loss(x2, targets, alpha, gamma, reduction)
    fv = fvcore_focal_loss(x3, targets, alpha, gamma, reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours, fv, rtol=1e-5, atol=1e-6)
    up = torch.rand_like(ours)
    (ours * up).sum().backward()
    (ref * up).sum().backward()
    (fv * up).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(x1.grad, x3.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", [0.25, -1.0])
@pytest.mark.parametrize("k", CLASS_COUNTS)
def test_int_targets_match_torchvision_one_hot(device, reduction, gamma, alpha, k):
    logits, labels = make_case(k=k, kind="index", device=device)
    k = logits.shape[1]
    valid = labels >= 0
    x1 = logits.clone().requires_grad_()
    x2 = logits.clone().requires_grad_()
    ours = sigmoid_focal_loss(x1, labels, alpha, gamma, reduction)
    per_elem = torchvision.ops.sigmoid_focal_loss(x2, onehot(labels, k), alpha, gamma, "none") * valid[:, None]
    ref = {"none": per_elem, "sum": per_elem.sum(), "mean": per_elem.mean()}[reduction]
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["binary", "index"])
def test_half_types_accumulate_in_float32(device, dtype, kind):
    logits, targets = make_case(n=2000, k=20, kind=kind, dtype=dtype, device=device)
    x = logits.clone().requires_grad_()
    ours = sigmoid_focal_loss(x, targets, 0.25, 2.0, "sum")
    assert ours.dtype == dtype
    # Reference: the same half inputs, computed in float32.
    x32 = logits.float().requires_grad_()
    t32 = targets.float() if targets.is_floating_point() else targets
    ref = sigmoid_focal_loss_reference(x32, t32, 0.25, 2.0, "sum")
    torch.testing.assert_close(ours.float(), ref, rtol=1e-2, atol=0)
    ours.backward()
    ref.backward()
    assert x.grad.dtype == dtype
    torch.testing.assert_close(x.grad.float(), x32.grad, rtol=2e-2, atol=1e-4)


@pytest.mark.parametrize("kind", ["binary", "soft", "index"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.5])
def test_gradcheck_float64(kind, reduction, gamma):
    logits, targets = make_case(n=9, k=5, kind=kind, dtype=torch.float64)
    logits.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: sigmoid_focal_loss(x, targets, 0.25, gamma, reduction), (logits,), eps=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["binary", "index"])
@pytest.mark.parametrize("reduction", [0, 1, 2])
def test_opcheck(device, kind, reduction):
    logits, targets = make_case(n=33, k=7, kind=kind, device=device)
    torch.library.opcheck(
        torch.ops.retdet.sigmoid_focal_loss.default, (logits.requires_grad_(), targets, 0.25, 2.0, reduction)
    )
    torch.library.opcheck(
        torch.ops.retdet.sigmoid_focal_loss_with_grad.default, (logits, targets, 0.25, 2.0, reduction)
    )
    grad = torch.rand(logits.shape if reduction == 0 else (), device=device)
    torch.library.opcheck(
        torch.ops.retdet.sigmoid_focal_loss_backward.default, (grad, logits.detach(), targets, 0.25, 2.0, reduction)
    )


def test_torch_compile_fullgraph():
    logits, labels = make_case(n=64, k=6, kind="index")

    def loss_fn(x, t):
        return sigmoid_focal_loss(x * 2.0, t, 0.25, 2.0, "sum")

    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    x1, x2 = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    torch.testing.assert_close(compiled(x1, labels), loss_fn(x2, labels))
    compiled(x1, labels).backward()
    loss_fn(x2, labels).backward()
    torch.testing.assert_close(x1.grad, x2.grad)


def test_autocast_computes_in_float32():
    logits, labels = make_case(n=64, k=6, kind="index")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sigmoid_focal_loss(logits.bfloat16(), labels, 0.25, 2.0, "sum")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, sigmoid_focal_loss(logits.bfloat16().float(), labels, 0.25, 2.0, "sum"))


def test_empty_and_extreme_logits():
    empty = torch.zeros(0, 5, requires_grad=True)
    assert sigmoid_focal_loss(empty, torch.zeros(0, dtype=torch.long), reduction="sum").item() == 0
    assert sigmoid_focal_loss(empty, torch.zeros(0, dtype=torch.long)).shape == (0, 5)
    x = torch.tensor([[-200.0, 200.0, 0.0, 88.0, -88.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0]])
    ours = sigmoid_focal_loss(x, t, 0.25, 2.0)
    ref = sigmoid_focal_loss_reference(x.double(), t.double(), 0.25, 2.0).float()
    torch.testing.assert_close(ours, ref)
    ours.sum().backward()
    assert torch.isfinite(x.grad).all()


TINY_RESULT = 2.0**-100  # float results below this are returned as 0 (csrc/focal_loss_math.h)


def exact_focal_loss(x, t, alpha, gamma):
    """Float64 focal loss with every term accurate down to 1e-300 (torch's float64 BCE is not:
    log(1 + exp(-69)) comes out 0), unreduced; ignored rows (label -1) give 0."""
    n, k = x.shape
    valid = torch.ones(n, 1, dtype=x.dtype)
    if not t.is_floating_point():
        valid = (t >= 0).to(x.dtype).unsqueeze(1)
        t = torch.nn.functional.one_hot(t.clamp(min=0), k + 1)[:, :k].to(x.dtype)
    e = torch.exp(-x.abs())
    p = torch.where(x >= 0, 1 / (1 + e), e / (1 + e))
    q = torch.where(x >= 0, e / (1 + e), 1 / (1 + e))
    ce = x.clamp(min=0) - x * t + torch.log1p(e)
    w = alpha * t + (1 - alpha) * (1 - t)
    return w * ce * (p * (1 - t) + q * t) ** gamma * valid


def extreme_case(kind, dtype, device, k=21):
    """Logits over -100..100 (every half-integer: the reference's autograd has kinks at 0, then
    random) with their targets, k (21 or 7) per row."""
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.arange(-100.5, 100.0), torch.rand(20 * 201, generator=g) * 200 - 100]).view(-1, k)
    n, k = x.shape
    if kind == "index":
        t = torch.randint(-1, k + 1, (n,), generator=g)
    else:
        t = torch.rand(n, k, generator=g)
        t[::2] = t[::2].round()  # half the rows binary, half soft
    return x.to(dtype).to(device), (t.to(dtype) if t.is_floating_point() else t).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 3.0, 3.5])
@pytest.mark.parametrize("kind", ["index", "soft"])
@pytest.mark.parametrize("k", [21, 7])
def test_extreme_logits_match_float64(device, dtype, gamma, kind, k):
    """Loss and gradient for logits in -100..100 against the float64 reference on the same
    (rounded) inputs, rounded to the dtype; float results below 2^-100 are exactly 0."""
    x, t = extreme_case(kind, dtype, device, k)
    x = x.requires_grad_()
    loss = sigmoid_focal_loss(x, t, 0.25, gamma)
    loss.backward(torch.ones_like(loss))
    x64 = x.detach().cpu().double().requires_grad_()
    ref = exact_focal_loss(x64, t.cpu().double() if t.is_floating_point() else t.cpu(), 0.25, gamma)
    ref.backward(torch.ones_like(ref))
    flushed = dtype != torch.float16  # float16 keeps its own subnormals (they are not slow)
    for ours, exact in ((loss.detach(), ref.detach()), (x.grad, x64.grad)):
        expected = torch.where(exact.abs() < TINY_RESULT, 0.0, exact) if flushed else exact
        rtol = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
        atol = {torch.float32: 1e-6, torch.float16: 1e-4, torch.bfloat16: 1e-3}[dtype] if kind == "soft" else 0
        ours = ours.cpu().double()
        torch.testing.assert_close(ours, expected.to(dtype).double(), rtol=rtol, atol=atol)
        assert ((ours != 0) == (expected.to(dtype) != 0)).all(), "zeros in other places than the reference's"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_confident_logits_give_no_subnormal_results(device, dtype):
    """An easy negative at x = -30 has a loss of ~1e-40 (subnormal in float32): returned as 0, and the
    gradient stays normal after the backward scales it by a loss normaliser (1 / 1000)."""
    from retdet.utils.subnormals import count_subnormal

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2000, 80, generator=g) * 8 - 35).to(dtype).to(device).requires_grad_()
    labels = torch.full((2000,), 80, device=device)
    loss = sigmoid_focal_loss(x, labels, 0.25, 2.0, "none")
    assert count_subnormal(loss) == 0
    (sigmoid_focal_loss(x, labels, 0.25, 2.0, "sum") / 1000).backward()
    assert count_subnormal(x.grad) == 0
    # The plain formula in float32 does make them here: the inputs reach the region that matters.
    assert count_subnormal(exact_focal_loss(x.detach().cpu().float(), labels.cpu(), 0.25, 2.0)) > 1000


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_sum_beyond_the_dtype_range_is_inf(device, dtype):
    """A diverging model's logits (half the dtype's largest value) make a loss sum no float holds:
    inf, as torch's sum gives, so that the trainer's non-finite loss check reports it."""
    big = torch.finfo(dtype).max / 2
    x = torch.full((4, 3), -big, dtype=dtype, device=device)
    targets = torch.ones(4, 3, dtype=dtype, device=device)  # every one confidently wrong: 0.25 * big each
    total = sigmoid_focal_loss(x, targets, 0.25, 2.0, "sum")
    assert total.dtype == dtype and torch.isinf(total) and total > 0
    assert torch.isfinite(sigmoid_focal_loss(x, targets, 0.25, 2.0, "none")).all()


def test_bad_inputs_are_clear_errors():
    x = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match=r"class index 7 at row 1 is outside \[-1, 3\]"):
        sigmoid_focal_loss(x, torch.tensor([0, 7, 1, 2]))
    with pytest.raises(RuntimeError, match="float targets must have the logits' shape"):
        sigmoid_focal_loss(x, torch.zeros(4, 2))
    with pytest.raises(RuntimeError, match=r"must be \(N,\)"):
        sigmoid_focal_loss(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction must be one of"):
        sigmoid_focal_loss(x, torch.zeros(4, 3), reduction="avg")
    with pytest.raises(RuntimeError, match=r"logits must be \(N, K\)"):
        sigmoid_focal_loss(torch.randn(4), torch.zeros(4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["binary", "soft", "index"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cpu_and_cuda_agree(kind, reduction):
    logits, targets = make_case(n=5000, k=80, kind=kind)
    xc = logits.clone().requires_grad_()
    xg = logits.cuda().requires_grad_()
    lc = sigmoid_focal_loss(xc, targets, 0.25, 2.0, reduction)
    lg = sigmoid_focal_loss(xg, targets.cuda(), 0.25, 2.0, reduction)
    torch.testing.assert_close(lg.cpu(), lc, rtol=1e-5, atol=1e-6)
    lc.sum().backward()
    lg.sum().backward()
    torch.testing.assert_close(xg.grad.cpu(), xc.grad, rtol=1e-5, atol=1e-7)


BASELINE_SCRIPT = r"""
import torch, torchvision, retdet.ops as ops
g = torch.Generator().manual_seed(0)
for k, gamma in ((83, 0.0), (83, 1.0), (83, 2.0), (83, 3.0), (5, 2.0)):
    x = torch.randn(1000, k, generator=g) * 5
    t = (torch.rand(1000, k, generator=g) < 0.1).float()
    xx, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = ops.sigmoid_focal_loss(xx, t, 0.25, gamma, "sum")
    ref = torchvision.ops.sigmoid_focal_loss(xr, t, 0.25, gamma, "sum")
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    ours.backward(); ref.backward()
    torch.testing.assert_close(xx.grad, xr.grad, rtol=1e-4, atol=1e-6)
print("BASELINE-OK")
"""


def test_cpu_baseline_vector_copy_without_avx2():
    """The non-AVX2 copy of the vector kernel (what CPUs without AVX2 run) is right too."""
    env = dict(os.environ, RETDET_DISABLE_AVX2="1")
    out = subprocess.run([sys.executable, "-c", BASELINE_SCRIPT], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "BASELINE-OK" in out.stdout


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_loss_only_and_with_grad_ops_agree(reduction):
    logits, labels = make_case(n=100, k=80, kind="index")
    code = {"none": 0, "mean": 1, "sum": 2}[reduction]
    loss, grad = torch.ops.retdet.sigmoid_focal_loss_with_grad(logits, labels, 0.25, 2.0, code)
    torch.testing.assert_close(loss, torch.ops.retdet.sigmoid_focal_loss(logits, labels, 0.25, 2.0, code))
    upstream = torch.ones_like(loss)
    recomputed = torch.ops.retdet.sigmoid_focal_loss_backward(upstream, logits, labels, 0.25, 2.0, code)
    torch.testing.assert_close(grad, recomputed)
    # backward through the loss-only op (autograd registered on it) matches too
    x = logits.clone().requires_grad_()
    torch.ops.retdet.sigmoid_focal_loss(x, labels, 0.25, 2.0, code).sum().backward()
    torch.testing.assert_close(x.grad, grad)


@pytest.mark.parametrize("k", CLASS_COUNTS)
@pytest.mark.parametrize("kind", ["index", "soft"])
def test_ignored_rows_and_nan_logits(k, kind):
    """An ignored row (label -1) gives 0 loss and 0 gradient even with NaN logits; a NaN logit in a
    row that counts makes its own loss NaN, as torchvision's, and leaves the other rows' alone."""
    logits, targets = make_case(n=37, k=k, kind=kind)
    if kind == "index":
        targets[5] = -1
        logits[5] = float("nan")
        targets[9] = 0
    logits[9, 1] = float("nan")
    x = logits.clone().requires_grad_()
    loss = sigmoid_focal_loss(x, targets, 0.25, 2.0, "none")
    loss.sum().backward()
    ref_t = onehot(targets, k) if kind == "index" else targets
    ref = torchvision.ops.sigmoid_focal_loss(logits, ref_t, 0.25, 2.0, "none")
    if kind == "index":
        assert (loss[5] == 0).all() and (x.grad[5] == 0).all()
        ref = torch.where((targets >= 0)[:, None], ref, 0.0)
    assert torch.isnan(loss[9, 1]) and torch.isnan(x.grad[9, 1])
    finite = ~torch.isnan(ref)
    assert finite.sum() == ref.numel() - 1
    torch.testing.assert_close(loss[finite], ref[finite], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", CLASS_COUNTS)
def test_sum_over_many_tasks_is_exact_and_thread_independent(k):
    """A sum over more elements than one task takes (32768), with a partial last vector: close to
    float64, and the same bits with 1 thread as with several."""
    logits, labels = make_case(n=100003 // k, k=k, kind="index", seed=4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = sigmoid_focal_loss(logits, labels, 0.25, 2.0, "sum")
        torch.set_num_threads(max(threads, 2))
        many = sigmoid_focal_loss(logits, labels, 0.25, 2.0, "sum")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)
    exact = exact_focal_loss(logits.double(), labels, 0.25, 2.0).sum()
    torch.testing.assert_close(one.double(), exact, rtol=1e-6, atol=0)
