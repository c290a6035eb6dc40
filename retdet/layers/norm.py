"""Normalisation layers by name, so configs can say norm="GN"."""
from __future__ import annotations

from typing import Callable, Optional

from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

NORMS = ("FrozenBN", "BN", "SyncBN", "GN")


def get_norm(norm: Optional[str], *, eps: float = 1e-5, gn_groups: int = 32) -> Optional[Callable[[int], nn.Module]]:
    """A factory ``channels -> norm module`` for ``norm`` in NORMS, or None for no norm.

    FrozenBN: batch norm with fixed statistics and affine parameters (torchvision's
    FrozenBatchNorm2d), the usual choice for detection backbones at small per-GPU batches.
    """
    if norm is None or norm == "":
        return None
    if norm == "FrozenBN":
        return lambda c: FrozenBatchNorm2d(c, eps=eps)
    if norm == "BN":
        return lambda c: nn.BatchNorm2d(c, eps=eps)
    if norm == "SyncBN":
        return lambda c: nn.SyncBatchNorm(c, eps=eps)
    if norm == "GN":
        def group_norm(c: int) -> nn.Module:
            if c % gn_groups:
                raise ValueError(f"norm 'GN' uses {gn_groups} groups, so it needs a multiple of {gn_groups} channels; "
                                 f"got a layer of {c} (choose widths/out_channels that are multiples of {gn_groups}, "
                                 f"or another norm)")
            return nn.GroupNorm(gn_groups, c)
        return group_norm
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)} or None")


def freeze_module(module: nn.Module) -> nn.Module:
    """No gradients for ``module``'s parameters, and its batch norms turned into FrozenBN."""
    for p in module.parameters():
        p.requires_grad_(False)
    return convert_to_frozen_bn(module)


def convert_to_frozen_bn(module: nn.Module) -> nn.Module:
    """Replace BatchNorm2d/SyncBatchNorm layers (recursively) with FrozenBN holding their statistics."""
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        if module.running_mean is not None:
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new_child = convert_to_frozen_bn(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
