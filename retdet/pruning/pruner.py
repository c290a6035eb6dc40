"""Structured channel pruning of a detector's network with torch-pruning's dependency graph.

torch-pruning traces one forward pass of the network (backbone, FPN, head) and groups the channels
that must go together: a conv's outputs with its norm and every consumer's inputs, both sides of each
residual addition, the FPN laterals added to the upsampled levels, and the head convolutions that
every pyramid level shares. Removing a group's lowest-scoring channels leaves a smaller dense network
(real speed, no masks). Layers whose outputs are the network's outputs (the head's predictors: their
channels are anchors x classes and anchors x 4) are never pruned on their outputs.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Sequence

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from retdet.layers.conv_bn import calling_modules
from retdet.modeling import DetectorNetwork
from retdet.registry import PRUNING_IMPORTANCES, build
from retdet.utils.model_analysis import count_parameters, flop_analysis

from . import importance as _importance  # noqa: F401  (registers the criteria)
from .widths import record_widths


class FrozenBNPruner(tp.pruner.function.BasePruningFunc):
    """torch-pruning's rule for torchvision's FrozenBatchNorm2d (its statistics and affine are buffers)."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = sorted(set(range(layer.weight.shape[0])) - set(idxs))
        for name in ("weight", "bias", "running_mean", "running_var"):
            setattr(layer, name, getattr(layer, name).data[keep].clone())
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.weight.shape[0]

    get_in_channels = get_out_channels


class GroupNormBlockPruner(tp.pruner.function.GroupNormPruner):
    """Removes whole GroupNorm groups: the kept groups normalise over exactly the channels they did
    before, so their statistics are unchanged (torch-pruning's default removes channels inside every
    group, which changes all of them). :class:`WholeGroups` makes the criterion choose whole groups."""

    def prune_out_channels(self, layer: nn.GroupNorm, idxs: Sequence[int]) -> nn.Module:
        per_group = layer.num_channels // layer.num_groups
        removed = sorted(set(int(i) for i in idxs))
        groups = {i // per_group for i in removed}
        if len(removed) != len(groups) * per_group:
            raise RuntimeError(f"pruning {len(removed)} channels of {layer} would split its groups of {per_group}")
        layer.num_groups -= len(groups)
        return super().prune_out_channels(layer, removed)

    prune_in_channels = prune_out_channels

    def get_in_channel_groups(self, layer: nn.GroupNorm) -> int:
        return 1

    get_out_channel_groups = get_in_channel_groups


class WholeGroups:
    """Wraps a criterion: in a dependency group holding a GroupNorm of g channels per group, every
    channel scores its GN group's mean (plus a tiny offset by group, so no two groups tie), and the
    pruner, rounding to a multiple of g, removes the lowest-scoring groups whole."""

    def __init__(self, criterion) -> None:
        self.criterion = criterion
        self.needs_gradients = getattr(criterion, "needs_gradients", False)

    def __call__(self, group):
        scores = self.criterion(group)
        norms = [dep.layer for dep, _ in group if isinstance(dep.layer, nn.GroupNorm)]
        if scores is None or not norms:
            return scores
        per_group = max(n.num_channels // n.num_groups for n in norms)
        if per_group == 1 or scores.numel() % per_group:
            return scores
        blocks = scores.view(-1, per_group).mean(dim=1)
        blocks = blocks + torch.arange(blocks.numel(), device=blocks.device) * 1e-6 * blocks.abs().mean()
        return blocks.repeat_interleave(per_group)


def _round_to(model: nn.Module, round_to: Optional[int]) -> Optional[int]:
    """``round_to``, raised to a multiple of every GroupNorm's channels per group (whole groups)."""
    multiple = round_to or 1
    for m in model.modules():
        if isinstance(m, nn.GroupNorm):
            multiple = math.lcm(multiple, m.num_channels // m.num_groups)
    return multiple if multiple > 1 else None


@dataclass
class PruningReport:
    """Sizes before and after pruning (GFLOPs at the example input's size, one multiply-add = one FLOP)."""

    params_before: int
    params_after: int
    gflops_before: float
    gflops_after: float
    importance: str
    ratio: float

    def rows(self) -> List[List[str]]:
        return [["parameters (M)", f"{self.params_before / 1e6:.3f}", f"{self.params_after / 1e6:.3f}",
                 f"{self.params_after / self.params_before:.3f}"],
                ["GFLOPs", f"{self.gflops_before:.3f}", f"{self.gflops_after:.3f}",
                 f"{self.gflops_after / self.gflops_before:.3f}"]]


def output_layers(network: nn.Module, example: Tensor) -> List[nn.Module]:
    """The leaf modules whose output tensors are the network's outputs (their widths are fixed)."""
    produced = []  # (output, module), holding the outputs so that no two share an id()

    def remember(module: nn.Module, args, out) -> None:
        produced.append((out, module))

    hooks = [m.register_forward_hook(remember) for m in network.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            outputs = network(example)
    finally:
        for h in hooks:
            h.remove()
    found = [module for out, module in produced if any(out is o for o in outputs)]
    return list({id(m): m for m in found}.values())


def network_gflops(model: nn.Module, example: Tensor) -> float:
    with calling_modules():
        return flop_analysis(DetectorNetwork(model), example).total() / 1e9


@contextlib.contextmanager
def all_trainable(model: nn.Module) -> Iterator[None]:
    """Every parameter requires grad inside (frozen layers are pruned like the others, and
    torch-pruning follows the autograd graph, in which a frozen layer would not appear); afterwards
    the frozen ones are frozen again, by name (pruning replaces the parameter tensors)."""
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    for name in frozen:
        model.get_parameter(name).requires_grad_(True)
    try:
        yield
    finally:
        for name in frozen:
            model.get_parameter(name).requires_grad_(False)


def accumulate_gradients(model: nn.Module, batches: Iterable) -> None:
    """Sum the detection loss's gradients over ``batches`` into every parameter's .grad (for
    data-driven criteria); norm statistics are not updated."""
    was_training = model.training
    model.zero_grad(set_to_none=True)
    try:
        model.train()
        for m in model.modules():  # batch statistics would otherwise move the running ones
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        with all_trainable(model), calling_modules():  # a frozen BN's scale is then in the graph too
            for batch in batches:
                losses = model(batch)
                sum(losses.values()).backward()
    finally:
        model.train(was_training)


def prune_model(model: nn.Module, *, ratio: float, example: Tensor, importance: str = "l1",
                batches: Optional[Iterable] = None, round_to: Optional[int] = 8,
                ignored_layers: Sequence[nn.Module] = ()) -> PruningReport:
    """Remove ``ratio`` of the channels of every prunable layer group of ``model``'s network, in place.

    Args:
        ratio: fraction of each group's channels removed, in [0, 1). FLOPs fall by about (1 - ratio)^2.
        example: (1, 3, H, W) normalised input the dependency graph is traced with (and FLOPs counted at).
        importance: a name in PRUNING_IMPORTANCES (``l1``, ``l2``, ``taylor``, ``norm_scale``, or yours).
        batches: training batches (lists of ImageSample) for criteria that need gradients.
        round_to: remaining widths are multiples of this (vector-friendly convolutions); None for any.
        ignored_layers: more modules whose output channels are kept.

    The model's ``pruned_widths`` attribute records the new widths (saved in checkpoints).
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
    criterion = build(dict(type=importance), PRUNING_IMPORTANCES, where="--importance")
    if getattr(criterion, "needs_gradients", False):
        if batches is None:
            raise ValueError(f"importance {importance!r} needs gradients: give training batches")
        accumulate_gradients(model, batches)
    was_training = model.training
    network = DetectorNetwork(model).eval()  # traced in eval mode: no batch statistics move
    params_before = count_parameters(model)["total"]
    gflops_before = network_gflops(model, example)
    with all_trainable(model), calling_modules():
        fixed = output_layers(network, example) + list(ignored_layers)
        pruner = tp.pruner.MetaPruner(
            network, example, importance=WholeGroups(criterion), pruning_ratio=ratio, ignored_layers=fixed,
            round_to=_round_to(model, round_to), global_pruning=False,
            customized_pruners={FrozenBatchNorm2d: FrozenBNPruner(), nn.GroupNorm: GroupNormBlockPruner()})
        if ratio > 0:
            pruner.step()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    model.pruned_widths = record_widths(model)
    model.apply_memory_format(force=True)  # the new layers in the model's layout
    return PruningReport(params_before=params_before, params_after=count_parameters(model)["total"],
                         gflops_before=gflops_before, gflops_after=network_gflops(model, example),
                         importance=importance, ratio=ratio)
