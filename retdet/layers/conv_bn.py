"""A convolution followed by a frozen batch norm, computed as one convolution.

A frozen BN is a per-channel affine map y = x * s + t with constants s, t, so conv -> FrozenBN equals
one convolution with weight W * s and bias b * s + t. Folding it on the fly (not once, into the
checkpoint) keeps the parameters and the state dict as they are and keeps training exact: the
gradient still reaches W through the product, and only the small weight tensor is scaled, instead of
two elementwise passes over every activation (forward and backward).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d


def frozen_bn_affine(bn: FrozenBatchNorm2d):
    """(scale (C,), shift (C,)) with bn(x) == x * scale[:, None, None] + shift[:, None, None]."""
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
    return scale, bn.bias - bn.running_mean * scale


_calling_modules = False


@contextlib.contextmanager
def calling_modules() -> Iterator[None]:
    """Inside it, conv_norm calls the conv and norm modules instead of folding (as under tracing):
    for tools that follow modules through a forward pass, such as the pruning dependency graph."""
    global _calling_modules
    previous, _calling_modules = _calling_modules, True
    try:
        yield
    finally:
        _calling_modules = previous


def strided_1x1_as_slice(x: Tensor, conv: nn.Conv2d) -> bool:
    """Whether to run ``conv`` as a stride-1 convolution of every stride-th pixel (the same sums).

    oneDNN in torch 2.14.1 corrupts the heap in the backward pass of a 1x1 stride-2 convolution of a
    channels-last CPU input with 2-15 input channels (free(): invalid next size, or a segfault, from
    the second input size on; seen on a Zen 4 EPYC, not on Zen 5). A pruned ResNet's downsample
    shortcut has such widths. The slice avoids that kernel and computes the same outputs."""
    return (conv.kernel_size == (1, 1) and conv.stride != (1, 1) and conv.padding == (0, 0)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.in_channels < 16 and x.device.type == "cpu"
            and x.is_contiguous(memory_format=torch.channels_last) and not torch.jit.is_tracing()
            and not _calling_modules)


def _conv2d(x: Tensor, conv: nn.Conv2d, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    if strided_1x1_as_slice(x, conv):
        sy, sx = conv.stride
        return F.conv2d(x[:, :, ::sy, ::sx].contiguous(memory_format=torch.channels_last), weight, bias)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def conv_norm(x: Tensor, conv: nn.Conv2d, norm: Optional[nn.Module]) -> Tensor:
    """norm(conv(x)); a FrozenBN is folded into the convolution (see the module docstring)."""
    # While tracing (FLOP counting, export) call the modules, so each op is attributed to its module.
    if (not isinstance(norm, FrozenBatchNorm2d) or conv.padding_mode != "zeros" or torch.jit.is_tracing()
            or _calling_modules):
        y = _conv2d(x, conv, conv.weight, conv.bias) if strided_1x1_as_slice(x, conv) else conv(x)
        return y if norm is None else norm(y)
    scale, shift = frozen_bn_affine(norm)
    weight = conv.weight * scale.view(-1, 1, 1, 1).to(conv.weight.dtype)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return _conv2d(x, conv, weight, bias.to(conv.weight.dtype))
