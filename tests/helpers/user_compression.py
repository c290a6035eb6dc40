"""A researcher's own pruning criterion and distillation loss, in their own module: the tests load it
through --import / the config's `imports` and check that retdet picks both up by name."""
import torch

from retdet.distillation import DistillLoss
from retdet.registry import DISTILL_LOSSES, PRUNING_IMPORTANCES

CALLS = {"importance": 0, "teacher_dtypes": set()}


@PRUNING_IMPORTANCES.register("LargestFirstForTest")
class LargestFirst:
    """Scores each channel of a group by minus the L1 norm of the root layer's filters: the pruner
    then removes the largest filters (the opposite of l1), which the test can tell apart."""

    needs_gradients = False

    def __call__(self, group):
        CALLS["importance"] += 1
        dep, idxs = group[0]
        layer = dep.target.module
        if not isinstance(layer, torch.nn.Conv2d):
            return None
        return -layer.weight.detach().abs().flatten(1).sum(1)[idxs]


@DISTILL_LOSSES.register("MeanLogitGapForTest")
class MeanLogitGap(DistillLoss):
    """|mean student logit - mean teacher logit|, recording the teacher's feature dtype (AMP check)."""

    def forward(self, inputs):
        CALLS["teacher_dtypes"].add(inputs.teacher.features[0].dtype)
        s = torch.cat(inputs.student.logits, dim=1).float().mean()
        t = torch.cat(inputs.teacher.logits, dim=1).float().mean()
        return self.weight * (s - t).abs()
