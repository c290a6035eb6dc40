"""3x3 stride-1 convolutions by Winograd's minimal filtering, F(m x m, 3 x 3) (Lavin & Gray 2016).

A direct 3x3 convolution spends 9 multiply-adds per input channel on each output pixel. Winograd's
algorithm computes a tile of m x m outputs from an (m+2) x (m+2) input tile with (m+2)^2 products
per channel pair: with B, G, A the transform matrices below,

    y_tile = A^T [ (G w G^T) * (B^T x_tile B) ] A        (* elementwise, summed over input channels)

so a layer becomes (m+2)^2 independent matrix products of (tiles x C_in) by (C_in x C_out), plus
cheap linear transforms of the input, the weights and the output. F(2x2) needs 2.25x fewer
multiplications than the direct convolution, F(4x4) 4x fewer. Its float32 results differ from the
direct convolution's by rounding only: about the direct convolution's own error for F(2x2), and
an order of magnitude more (still ~1e-5 relative) for F(4x4), whose transforms hold 1/4, 1/6,
1/24 (docs/benchmarking.md has the measured errors).

The transforms are the extension's CPU kernels (csrc/cpu/winograd_cpu.cpp) on channels-last images;
the matrix products are torch's (MKL/oneDNN GEMM); the backward pass is the same algebra transposed,
so training gets the same saving: dV = dM U^T and dU = V^T dM are products of the same size, and the
input and output transforms' adjoints are two more kernels.

Which algorithm a convolution uses: :func:`conv_algorithm` (a context manager; the detector's
forward enters it with its ``model.conv_algorithm`` setting; code that calls ``model.network``,
``model.features`` or ``model.head`` itself enters it too) holds one of

- ``"auto"`` (the default): Winograd F(4x4) on the CPU for float32 3x3 stride-1 convolutions with at
  least :data:`MIN_CHANNELS` input and output channels on batches of at least :data:`MIN_TILES` 4x4
  output tiles (two 32x32 images), where it measured faster than oneDNN's direct kernels; the
  direct convolution elsewhere (CUDA, where cuDNN chooses its own algorithms; autocast; small layers).
- ``"direct"``: always the framework's convolution.
- ``"winograd_f2"`` / ``"winograd_f4"``: Winograd with that tile wherever it applies (CPU, float32 or
  float64, a 3x3 stride-1 padding-1 convolution), whatever the size.
"""
from __future__ import annotations

import contextlib
import math
import threading
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor, nn

from retdet.ops import _extension

ALGORITHMS = ("auto", "direct", "winograd_f2", "winograd_f4")
# "auto"'s limits: below them oneDNN's direct kernels were as fast or faster (a 64-channel layer's
# transforms cost more than its products save; a few tiles make the products small and the weight
# transform dominate). Measured per layer shape, docs/benchmarking.md.
MIN_CHANNELS = 128
MIN_TILES = 128

# G (weights), one row per tile position. B^T and A^T live only in the kernels
# (csrc/cpu/winograd_cpu.cpp); the weight transform is here, where autograd and the GEMM are.
_G = {
    2: ((1, 0, 0), (1 / 2, 1 / 2, 1 / 2), (1 / 2, -1 / 2, 1 / 2), (0, 0, 1)),
    4: ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
        (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
}

_state = threading.local()


def current_algorithm() -> str:
    return getattr(_state, "algorithm", "auto")


def check_algorithm(algorithm: str, where: str = "model.conv_algorithm") -> str:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{where} must be one of {list(ALGORITHMS)}, got {algorithm!r}")
    return algorithm


@contextlib.contextmanager
def conv_algorithm(algorithm: str) -> Iterator[None]:
    """Inside it (this thread), :func:`tile_for` chooses by ``algorithm`` (see the module doc)."""
    check_algorithm(algorithm, "conv_algorithm")
    previous = current_algorithm()
    _state.algorithm = algorithm
    try:
        yield
    finally:
        _state.algorithm = previous


def tile_for(x: Tensor, conv: nn.Conv2d, weight: Tensor) -> Optional[int]:
    """The Winograd tile (2 or 4) to run ``conv`` (with ``weight``) on ``x`` with, or None for the
    direct convolution; by the current algorithm (:func:`conv_algorithm`)."""
    algorithm = current_algorithm()
    if algorithm == "direct" or not applicable(x, conv, weight):
        return None
    if algorithm == "auto":
        n, _, h, w = x.shape
        big = (x.dtype == torch.float32 and min(conv.in_channels, conv.out_channels) >= MIN_CHANNELS
               and _tiles(4, n, h, w)[1] >= MIN_TILES)
        return 4 if big else None
    return 2 if algorithm == "winograd_f2" else 4


def applicable(x: Tensor, conv: nn.Conv2d, weight: Tensor) -> bool:
    """Whether Winograd can compute ``conv`` here: the extension's CPU kernels, float32/64, a 3x3
    stride-1 padding-1 ungrouped undilated convolution, not under autocast, tracing or compile."""
    return (conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and x.device.type == "cpu" and x.dim() == 4 and x.dtype in (torch.float32, torch.float64)
            and weight.dtype == x.dtype and _extension.has_extension()
            and not torch.is_autocast_enabled("cpu") and not torch.jit.is_tracing()
            and not torch.jit.is_scripting() and not torch.compiler.is_compiling())


def _weight_transform_matrix(tile: int, dtype, device) -> Tensor:
    """K = G (x) G, ((tile+2)^2, 9): U[i, j] = sum_kl G[i, k] w[k, l] G[j, l] = (K @ w.flatten())[i * a + j]."""
    g = torch.tensor(_G[tile], dtype=dtype, device=device)
    return torch.kron(g, g)


def weight_transform(weight: Tensor, tile: int) -> Tensor:
    """(C_out, C_in, 3, 3) weights -> U = G w G^T as ((tile+2)^2, C_in, C_out), ready for the products
    (one GEMM with the output in that layout: einsum's permutations cost 10x more)."""
    o, c = weight.shape[:2]
    k = _weight_transform_matrix(tile, weight.dtype, weight.device)
    return torch.mm(k, weight.permute(2, 3, 1, 0).reshape(9, c * o)).view(-1, c, o)


def weight_transform_backward(du: Tensor, tile: int) -> Tensor:
    """The adjoint of :func:`weight_transform`: dU ((tile+2)^2, C_in, C_out) -> dw (C_out, C_in, 3, 3)."""
    _, c, o = du.shape
    k = _weight_transform_matrix(tile, du.dtype, du.device)
    return torch.mm(k.t(), du.reshape(-1, c * o)).view(3, 3, c, o).permute(3, 2, 0, 1)


def _workspace(role: str, shape: Tuple[int, ...], like: Tensor) -> Tensor:
    """A buffer of ``shape`` for a temporary that never outlives one call (``role`` names it), reused
    across calls in this thread. Fresh tensors of tens of MB come from new pages on the CPU, and
    faulting them in took longer than the transform that fills them (15 of 20 ms for the input
    transform of a 200x304 64-channel image). :func:`release_workspaces` frees them.

    Buffers made under ``torch.inference_mode`` are inference tensors, which cannot be written outside
    it: the pool keeps one set per mode."""
    pool = _state.__dict__.setdefault("workspaces", {})
    numel = math.prod(shape)
    key = (role, like.dtype, torch.is_inference_mode_enabled())
    buffer = pool.get(key)
    if buffer is None or buffer.numel() < numel:
        pool[key] = buffer = like.new_empty(numel)
    return buffer[:numel].view(shape)


def release_workspaces() -> None:
    """Free this thread's reused Winograd buffers. They grow to the largest layer run and stay: for
    R50-FPN on 800x1216 images about 100 MB each for the GEMM output and its gradient."""
    _state.__dict__.pop("workspaces", None)


def _products(left: Tensor, right: Tensor, out: Tensor, transpose_left: bool = False,
              transpose_right: bool = False) -> Tensor:
    """out[p] = left[p] @ right[p] for every tile position p (optionally transposed), one GEMM call
    each: torch.bmm ran these shapes up to 1.2x slower than a loop of torch.mm (MKL picks per call)."""
    for i in range(left.shape[0]):
        a = left[i].t() if transpose_left else left[i]
        b = right[i].t() if transpose_right else right[i]
        torch.mm(a, b, out=out[i])
    return out


def _tiles(tile: int, n: int, h: int, w: int) -> Tuple[int, int]:
    """(positions per tile, tiles) of an (n, ., h, w) batch."""
    return (tile + 2) ** 2, n * -(-h // tile) * -(-w // tile)


def _forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], tile: int, relu: bool,
             keep_v: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """(y, V, U); V is a fresh tensor when ``keep_v`` (saved for the weight's gradient), else a workspace."""
    n, c, h, w = x.shape
    shape = _tiles(tile, n, h, w)
    u = weight_transform(weight, tile)
    v = x.new_empty(shape + (c,)) if keep_v else _workspace("V", shape + (c,), x)
    torch.ops.retdet.winograd_input_transform(x, tile, v)
    m = _products(v, u, _workspace("M", shape + (weight.shape[0],), x))
    return torch.ops.retdet.winograd_output_transform(m, bias, relu, tile, n, h, w), v, u


class _WinogradConv3x3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], tile: int, relu: bool) -> Tensor:
        y, v, u = _forward(x, weight, bias, tile, relu, keep_v=ctx.needs_input_grad[1])
        ctx.save_for_backward(v if ctx.needs_input_grad[1] else None, u, y if relu else None)
        ctx.geometry = (tile, x.shape[0], x.shape[1], x.shape[2], x.shape[3], bias is not None)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: Tensor):
        v, u, relu_output = ctx.saved_tensors
        tile, n, c, h, w, has_bias = ctx.geometry
        shape = _tiles(tile, n, h, w)
        dm = _workspace("dM", shape + (dy.shape[1],), dy)
        torch.ops.retdet.winograd_output_transform_backward(dy, relu_output, tile, dm)
        dx = dweight = dbias = None
        if ctx.needs_input_grad[0]:
            dv = _products(dm, u, _workspace("dV", shape + (c,), dy), transpose_right=True)
            dx = torch.ops.retdet.winograd_input_transform_backward(dv, tile, n, h, w)
        if ctx.needs_input_grad[1]:
            du = _products(v, dm, dy.new_empty(shape[0], c, dy.shape[1]), transpose_left=True)
            dweight = weight_transform_backward(du, tile)
        if has_bias and ctx.needs_input_grad[2]:
            # Column 1 of A^T is all ones, so position (1, 1) of dM (flat index tile + 3) sums
            # each tile's output gradient.
            dbias = dm[tile + 3].sum(0)
        return dx, dweight, dbias, None, None


def winograd_conv3x3(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, *, tile: int = 4,
                     relu: bool = False) -> Tensor:
    """relu?(conv2d(x, weight, bias, padding=1)) by Winograd F(tile x tile, 3 x 3) on the CPU.

    Args:
        x: (N, C_in, H, W) float32/float64 (any layout; read as channels-last).
        weight: (C_out, C_in, 3, 3); bias: (C_out,) or None.
    Returns (N, C_out, H, W) in x's layout (the kernels work channels-last: an NCHW x costs a reorder
    each way). Differentiable (once) in x, weight and bias.
    """
    if tile not in _G:
        raise ValueError(f"Winograd tile must be 2 or 4, got {tile}")
    if weight.shape[-2:] != (3, 3) or x.shape[1] != weight.shape[1]:
        raise ValueError(f"winograd_conv3x3 needs (C_out, {x.shape[1]}, 3, 3) weights, got {tuple(weight.shape)}")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        y = _WinogradConv3x3.apply(x, weight, bias, tile, relu)
    else:  # nothing to save: every temporary is a workspace (eval of a trainable model included)
        y = _forward(x, weight, bias, tile, relu, keep_v=False)[0]
    return y if x.is_contiguous(memory_format=torch.channels_last) else y.contiguous()
