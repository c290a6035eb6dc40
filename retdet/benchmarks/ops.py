"""Op benchmark cases: retdet's fused ops against torchvision's, and its Winograd 3x3 convolutions
against torch's direct one (oneDNN, channels-last), on the same inputs."""
from __future__ import annotations

import functools
from typing import Callable, Dict, List, Optional

import torch
import torchvision

from retdet import ops
from retdet.utils.timing import median_ms


def _labels(n: int, k: int, fg_fraction: float, ignore_fraction: float, g: torch.Generator) -> torch.Tensor:
    """RetinaNet-style anchor labels: mostly background (k), some foreground, some ignored (-1)."""
    labels = torch.full((n,), k, dtype=torch.long)
    r = torch.rand(n, generator=g)
    fg = r < fg_fraction
    labels[fg] = torch.randint(0, k, (int(fg.sum()),), generator=g)
    labels[(r >= fg_fraction) & (r < fg_fraction + ignore_fraction)] = -1
    return labels


def _one_hot(labels: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels.clamp(min=0), k + 1)[:, :k].float()


def _focal_pair(logits, ours_targets, ref_logits_rows, ref_targets) -> Dict[str, Callable[[], None]]:
    """Forward + backward of both implementations, reduction sum (as in training)."""

    def ours():
        x = logits.detach().requires_grad_()
        ops.sigmoid_focal_loss(x, ours_targets, 0.25, 2.0, "sum").backward()

    def ref():
        x = logits.detach().requires_grad_()
        rows = x if ref_logits_rows is None else x[ref_logits_rows]
        torchvision.ops.sigmoid_focal_loss(rows, ref_targets, 0.25, 2.0, "sum").backward()

    return {"ours": ours, "ref": ref}


def focal_cases(device: str) -> Dict[str, Dict[str, Callable[[], None]]]:
    g = torch.Generator().manual_seed(0)
    cases = {}
    n, k = 100000, 80
    logits = (torch.randn(n, k, generator=g) - 2).to(device)
    labels = _labels(n, k, 0.01, 0.0, g)
    cases["(100000, 80) int targets"] = _focal_pair(logits, labels.to(device), None, _one_hot(labels, k).to(device))
    onehot = _one_hot(labels, k).to(device)
    cases["(100000, 80) one-hot float targets"] = _focal_pair(logits, onehot, None, onehot)
    # A trained detector's easy negatives: very confident logits, whose p^gamma falls into (and past)
    # float32's subnormal range, the slow path of x86 CPUs unless the kernel avoids it.
    for mean in (-20, -50, -100):
        extreme = (torch.randn(n, k, generator=g) * 5 + mean).to(device)
        cases[f"(100000, 80) int targets, logits ~ N({mean}, 5)"] = _focal_pair(
            extreme, labels.to(device), None, _one_hot(labels, k).to(device))
    # RetinaNet batch: 2 images x 120087 anchors (800 x 1344 input, 9 anchors, P3-P7) x 80 classes.
    n = 2 * 120087
    logits = (torch.randn(n, k, generator=g) - 4).to(device)
    labels = _labels(n, k, 0.005, 0.01, g)
    valid = labels >= 0
    # The reference does what Detectron2 does: drop ignored anchors, build one-hot targets.
    cases["RetinaNet batch 2x120k anchors x 80, int targets"] = _focal_pair(
        logits, labels.to(device), valid.to(device), _one_hot(labels[valid], k).to(device)
    )
    return cases


def _random_boxes(n: int, scale: float, max_wh: float, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * scale
    wh = torch.rand(n, 2, generator=g) * max_wh + 1
    return torch.cat([xy, xy + wh], 1)


def nms_cases(device: str):
    g = torch.Generator().manual_seed(0)
    cases = {}
    n = 20000
    cases["20k random boxes, 80 classes"] = (
        _random_boxes(n, 1000, 200, g), torch.rand(n, generator=g), torch.randint(0, 80, (n,), generator=g))
    # Post-processing input: 5 levels x top-1000 candidates around ~30 objects of a few classes.
    objects = _random_boxes(30, 1000, 300, g)
    boxes = objects.repeat(5000 // 30 + 1, 1)[:5000] + torch.randn(5000, 4, generator=g) * 10
    object_class = torch.randint(0, 80, (30,), generator=g).repeat(5000 // 30 + 1)[:5000]
    noisy_class = torch.where(torch.rand(5000, generator=g) < 0.2, torch.randint(0, 80, (5000,), generator=g), object_class)
    cases["RetinaNet post-processing 5x1000, clustered"] = (boxes, torch.rand(5000, generator=g), noisy_class)
    n = 200000
    cases["200k random boxes, 80 classes"] = (
        _random_boxes(n, 4000, 200, g), torch.rand(n, generator=g), torch.randint(0, 80, (n,), generator=g))
    return {name: tuple(t.to(device) for t in case) for name, case in cases.items()}


# R50-FPN's 3x3 stride-1 layers in a training step (batch 2 of 512x512): (N, C_in, H, W, C_out).
WINOGRAD_SHAPES = [(2, 64, 128, 128, 64), (2, 128, 64, 64, 128), (2, 256, 32, 32, 256), (2, 512, 16, 16, 512),
                   (2, 256, 64, 64, 256), (2, 256, 64, 64, 720), (2, 256, 16, 16, 256)]


def winograd_cases(device: str, wanted: Callable[[str], bool] = lambda name: True
                   ) -> Dict[str, Dict[str, Callable[[], None]]]:
    """Forward + backward of one convolution with bias: Winograd F(2x2) and F(4x4) against F.conv2d,
    all channels-last (the CPU layout the detector trains in); the cases whose "conv3x3 fwd+bwd <case>"
    name is ``wanted``. Each is checked against F.conv2d first."""
    from retdet.layers.winograd import winograd_conv3x3

    if device != "cpu":
        return {}
    g = torch.Generator().manual_seed(0)
    cases = {}
    for n, c, h, w, o in WINOGRAD_SHAPES:
        names = {tile: f"({n}, {c}, {h}, {w}) -> {o}, F({tile}x{tile}) vs F.conv2d" for tile in (2, 4)}
        names = {tile: name for tile, name in names.items() if wanted("conv3x3 fwd+bwd " + name)}
        if not names:
            continue
        x = torch.randn(n, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
        weight = (torch.randn(o, c, 3, 3, generator=g) * (2 / (9 * c)) ** 0.5).contiguous(memory_format=torch.channels_last)
        bias = torch.randn(o, generator=g)

        def step(conv, x=x, weight=weight, bias=bias):
            xs, ws, bs = (t.detach().requires_grad_() for t in (x, weight, bias))
            y = conv(xs, ws, bs)
            y.backward(torch.ones_like(y))
            return y.detach()

        direct = functools.partial(step, lambda a, b, c_: torch.nn.functional.conv2d(a, b, c_, padding=1))
        expected = direct()
        for tile, name in names.items():
            ours = functools.partial(step, functools.partial(winograd_conv3x3, tile=tile))
            error = (ours() - expected).abs().max().item()
            if error > 1e-3 * expected.abs().max().item():
                raise AssertionError(f"Winograd F({tile}x{tile}) differs from F.conv2d by {error} on {(n, c, h, w, o)}")
            cases[name] = {"ours": ours, "ref": direct}
    return cases


def run_op_benchmarks(device: str = "cpu", runs: int = 20, warmup: int = 3, only: Optional[List[str]] = None):
    results = []

    def wanted(name: str) -> bool:
        return not only or any(o.lower() in name.lower() for o in only)

    for case, fns in focal_cases(device).items():
        if not wanted("sigmoid_focal_loss " + case):
            continue
        ours = median_ms(fns["ours"], device=device, runs=runs, warmup=warmup)
        ref = median_ms(fns["ref"], device=device, runs=runs, warmup=warmup)
        results.append(dict(name="sigmoid_focal_loss fwd+bwd", case=case, ours_ms=ours, ref_ms=ref, speedup=ref / ours))
    for case, (boxes, scores, idxs) in nms_cases(device).items():
        if not wanted("batched_nms " + case):
            continue
        same = torch.equal(ops.batched_nms(boxes, scores, idxs, 0.5), torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))
        if not same:
            raise AssertionError(f"batched_nms differs from torchvision on {case!r}")
        n_runs = max(5, runs // 4) if len(boxes) > 100000 else runs  # the 200k reference is slow
        ours = median_ms(lambda: ops.batched_nms(boxes, scores, idxs, 0.5), device=device, runs=n_runs, warmup=1)
        ref = median_ms(lambda: torchvision.ops.batched_nms(boxes, scores, idxs, 0.5), device=device, runs=n_runs, warmup=1)
        results.append(dict(name="batched_nms", case=case, ours_ms=ours, ref_ms=ref, speedup=ref / ours))
    for case, fns in winograd_cases(device, wanted).items():
        ours = median_ms(fns["ours"], device=device, runs=max(3, runs // 4), warmup=1)
        ref = median_ms(fns["ref"], device=device, runs=max(3, runs // 4), warmup=1)
        results.append(dict(name="conv3x3 fwd+bwd", case=case, ours_ms=ours, ref_ms=ref, speedup=ref / ours))
    return results
