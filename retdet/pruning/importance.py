"""Channel importance criteria for structured pruning, registered by name (``--importance NAME``).

A criterion follows torch-pruning's protocol: called with a dependency group (the channels of every
layer that must be removed together, e.g. a conv's outputs, its BN and the next conv's inputs), it
returns one score per channel of the group, shape (C,); the lowest scores are removed. Those that
need gradients (``needs_gradients = True``) are called after tools/prune.py has accumulated the
detection loss's gradients over a few training batches.

A researcher's own criterion lives in their module and registers itself::

    from retdet.registry import PRUNING_IMPORTANCES
    import torch
import torch
import torch_pruning as tp

    @PRUNING_IMPORTANCES.register("MyCriterion")
    class MyCriterion(tp.importance.GroupMagnitudeImportance):
        ...

then ``tools/prune.py --import my_module --importance MyCriterion``.
"""
from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from retdet.registry import PRUNING_IMPORTANCES

_LAYERS = [nn.modules.conv._ConvNd, nn.Linear]
_NORMS = [nn.modules.batchnorm._BatchNorm, nn.GroupNorm]


@PRUNING_IMPORTANCES.register("l1")
class L1Importance(tp.importance.GroupMagnitudeImportance):
    """Sum of |w| over each channel's weights in the group's convolutions (Li et al. 2017, "Pruning
    Filters for Efficient ConvNets"), averaged over the group's layers after per-layer normalisation."""

    needs_gradients = False

    def __init__(self) -> None:
        super().__init__(p=1, group_reduction="mean", normalizer="mean", target_types=_LAYERS)


@PRUNING_IMPORTANCES.register("l2")
class L2Importance(tp.importance.GroupMagnitudeImportance):
    """As ``l1`` with squared weights (the L2 filter norm)."""

    needs_gradients = False

    def __init__(self) -> None:
        super().__init__(p=2, group_reduction="mean", normalizer="mean", target_types=_LAYERS)


@PRUNING_IMPORTANCES.register("taylor")
class TaylorImportance(tp.importance.GroupTaylorImportance):
    """First-order Taylor estimate of the loss change when a channel is removed, |sum(w * dL/dw)|
    (Molchanov et al. 2019), with the detection loss's gradients on training batches: data-driven."""

    needs_gradients = True

    def __init__(self) -> None:
        super().__init__(group_reduction="mean", normalizer="mean", target_types=_LAYERS)


@PRUNING_IMPORTANCES.register("norm_scale")
class NormScaleImportance(tp.importance.GroupMagnitudeImportance):
    """|gamma| of the channel's batch or group norm (network slimming, Liu et al. 2017): how much the
    trained network itself scales the channel; for a frozen BN, its effective scale gamma/sqrt(var+eps).
    Groups without a norm layer (e.g. FPN convolutions) fall back to ``l1``, so every layer is pruned."""

    needs_gradients = False

    def __init__(self) -> None:
        super().__init__(p=1, group_reduction="mean", normalizer="mean")
        self._fallback = L1Importance()

    @torch.no_grad()
    def __call__(self, group):
        scores, roots = [], []
        for i, (dep, idxs) in enumerate(group):
            layer = dep.layer
            if isinstance(layer, FrozenBatchNorm2d):
                scale = layer.weight * (layer.running_var + layer.eps).rsqrt()
            elif isinstance(layer, tuple(_NORMS)) and getattr(layer, "weight", None) is not None:
                scale = layer.weight
            else:
                continue
            scores.append(scale.detach()[idxs].abs())
            roots.append(group[i].root_idxs)
        if not scores:
            return self._fallback(group)
        return self._normalize(self._reduce(scores, roots), self.normalizer)
