"""A convolution followed by a frozen batch norm, computed as one convolution.

A frozen BN is a per-channel affine map y = x * s + t with constants s, t, so conv -> FrozenBN equals
one convolution with weight W * s and bias b * s + t. Folding it on the fly (not once, into the
checkpoint) keeps the parameters and the state dict as they are and keeps training exact: the
gradient still reaches W through the product, and only the small weight tensor is scaled, instead of
two elementwise passes over every activation (forward and backward).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from retdet.layers import winograd


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


def _has_hooks(module: Optional[nn.Module]) -> bool:
    return module is not None and bool(module._forward_hooks or module._forward_pre_hooks)


def _must_call(conv: nn.Module, norm: Optional[nn.Module]) -> bool:
    """Whether the modules themselves must run: tracing, :func:`calling_modules`, a Conv2d subclass or
    another module in the conv's place (e.g. a QAT swap), or forward hooks that must fire."""
    return (torch.jit.is_tracing() or _calling_modules or type(conv) is not nn.Conv2d or _has_hooks(conv)
            or _has_hooks(norm) or bool(nn.modules.module._global_forward_hooks)
            or bool(nn.modules.module._global_forward_pre_hooks))


def _folded(conv: nn.Conv2d, norm: Optional[nn.Module]) -> Optional[Tuple[Tensor, Optional[Tensor]]]:
    """(weight, bias) of norm(conv(.)) as one convolution, or None if the norm cannot be folded
    (GroupNorm, a training BatchNorm) or modules must be called (see :func:`_must_call`)."""
    if _must_call(conv, norm) or conv.padding_mode != "zeros":
        return None
    if norm is None:
        return conv.weight, conv.bias
    if not isinstance(norm, FrozenBatchNorm2d):
        return None
    scale, shift = frozen_bn_affine(norm)
    weight = conv.weight * scale.view(-1, 1, 1, 1).to(conv.weight.dtype)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return weight, bias.to(conv.weight.dtype)


def _fusable(x: Tensor, conv: nn.Conv2d, weight: Tensor) -> bool:
    """Whether oneDNN's fused convolution (ReLU and a residual sum as post-ops) may run: float32 on
    the CPU with no gradient to compute (inference, frozen stages), not under autocast or compile."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
            and torch.backends.mkldnn.is_available() and not strided_1x1_as_slice(x, conv))


def conv_norm(x: Tensor, conv: nn.Module, norm: Optional[nn.Module], *, relu: bool = False,
              residual: Optional[Tensor] = None) -> Tensor:
    """relu(norm(conv(x)) + residual) (``relu`` False: no ReLU; ``residual`` None: no sum).

    ``conv`` is an nn.Conv2d, or any module in its place (e.g. conv + norm in a Sequential), which is
    then called as it is.

    A FrozenBN is folded into the convolution (see the module docstring). Large 3x3 stride-1
    convolutions on the CPU run as Winograd F(4x4, 3x3), with the ReLU in its output transform
    (retdet/layers/winograd.py chooses). Where no gradient is needed on the CPU, the ReLU and the
    sum run inside oneDNN's convolution as post-ops, while its output is still in cache, instead of
    as one more pass over the activations each.
    """
    folded = _folded(conv, norm)
    if folded is None:  # call the modules (tracing attributes each op to its module)
        slice_1x1 = type(conv) is nn.Conv2d and not _has_hooks(conv) and strided_1x1_as_slice(x, conv)
        y = _conv2d(x, conv, conv.weight, conv.bias) if slice_1x1 else conv(x)
        y = y if norm is None else norm(y)
    else:
        weight, bias = folded
        tile = winograd.tile_for(x, conv, weight)
        if tile is not None:  # a large 3x3 stride-1 convolution on the CPU (retdet/layers/winograd.py)
            fused_relu = relu and residual is None  # in the output transform; otherwise after the sum
            y = winograd.winograd_conv3x3(x, weight, bias, tile=tile, relu=fused_relu)
            relu = relu and not fused_relu
        elif (relu or residual is not None) and _fusable(x, conv, weight):
            args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
            if residual is None:
                return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *args, "relu", [], "")
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, residual, weight, bias, *args, "add", 1.0, "relu" if relu else None, [], "")
        else:
            y = _conv2d(x, conv, weight, bias)
    if residual is not None:
        y = y + residual
    return y.relu_() if relu else y
