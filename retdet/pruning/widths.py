"""A pruned network's layer widths, recorded as data and re-applied to a model built from its config.

Structured pruning leaves a plain dense network whose convolutions and norms are narrower than the
config says. Rather than pickling the pruned modules, a pruned checkpoint carries, beside its state
dict, ``pruned_widths``: ``{module path: [numbers]}`` for every convolution and norm layer (ints only,
so ``torch.load(weights_only=True)`` reads it). Loading builds the model from the config as usual,
then :func:`apply_widths` replaces each layer whose recorded widths differ with a fresh one of those
widths; the state dict then loads into it like any other.

    conv (Conv2d):                    [in_channels, out_channels, groups]
    batch norm (BN, SyncBN, FrozenBN): [num_features]
    GroupNorm:                         [num_groups, num_channels]
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional

from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

WIDTHS_KEY = "pruned_widths"  # the checkpoint key; the detector holds the record as ``model.pruned_widths``


def _widths_of(module: nn.Module) -> Optional[List[int]]:
    if isinstance(module, nn.Conv2d):
        return [module.in_channels, module.out_channels, module.groups]
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)):
        return [int(module.weight.shape[0]) if isinstance(module, FrozenBatchNorm2d) else module.num_features]
    if isinstance(module, nn.GroupNorm):
        return [module.num_groups, module.num_channels]
    return None


def record_widths(model: nn.Module) -> Dict[str, List[int]]:
    """``{module path: widths}`` for every convolution and norm layer of ``model`` (see the module doc)."""
    return {name: w for name, m in model.named_modules() if (w := _widths_of(m)) is not None}


def _resized(module: nn.Module, widths: List[int]) -> nn.Module:
    """A new, uninitialised layer like ``module`` with ``widths`` (the state dict fills it)."""
    if isinstance(module, nn.Conv2d):
        cin, cout, groups = widths
        return type(module)(cin, cout, module.kernel_size, stride=module.stride, padding=module.padding,
                            dilation=module.dilation, groups=groups, bias=module.bias is not None,
                            padding_mode=module.padding_mode)
    if isinstance(module, FrozenBatchNorm2d):
        return FrozenBatchNorm2d(widths[0], eps=module.eps)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return type(module)(widths[0], eps=module.eps, momentum=module.momentum, affine=module.affine,
                            track_running_stats=module.track_running_stats)
    if isinstance(module, nn.GroupNorm):
        return nn.GroupNorm(widths[0], widths[1], eps=module.eps, affine=module.affine)
    raise TypeError(f"cannot resize a {type(module).__name__}")


def apply_widths(model: nn.Module, widths: Mapping[str, List[int]], *, source: str = "checkpoint") -> int:
    """Give ``model``'s layers the recorded ``widths`` (layers already that wide are kept). Returns the
    number of layers replaced. A recorded path the model lacks, or a layer of another kind, is an error
    naming it: the checkpoint was pruned from another architecture than the config builds."""
    modules = dict(model.named_modules())
    replaced = 0
    for name, want in widths.items():
        module = modules.get(name)
        have = _widths_of(module) if module is not None else None
        if have is None or len(have) != len(want):
            what = "no such layer" if module is None else f"a {type(module).__name__}"
            raise ValueError(f"{source}: pruned layer {name!r} (widths {list(want)}) does not match the model built "
                             f"from the config ({what}): give the config the checkpoint was pruned from")
        if list(have) == [int(w) for w in want]:
            continue
        param = next(module.parameters(), None)
        if param is None:
            param = next(module.buffers())
        new = _resized(module, [int(w) for w in want]).to(device=param.device, dtype=param.dtype)
        new.train(module.training)
        for p_new, p_old in zip(new.parameters(), module.parameters()):
            p_new.requires_grad_(p_old.requires_grad)
        parent_name, _, child = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, child, new)
        replaced += 1
    if replaced:
        model.apply_memory_format(force=True)  # the new layers in the model's layout
    model.pruned_widths = {k: [int(w) for w in v] for k, v in widths.items()}
    return replaced


def widths_in_checkpoint(data: Mapping) -> Optional[Dict[str, List[int]]]:
    """The ``pruned_widths`` record of a loaded checkpoint (None for a dense one)."""
    record = data.get(WIDTHS_KEY) if isinstance(data, Mapping) else None
    return dict(record) if record else None
