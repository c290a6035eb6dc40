"""Student-teacher losses for knowledge distillation, registered by name in DISTILL_LOSSES.

Each loss is an ``nn.Module`` built with the student's and the teacher's shapes (so it can own a
learned adapter) and called with a :class:`DistillInputs`; it returns a scalar. Its parameters train
with the student's, and are saved in the student's checkpoints under ``distill`` (not in ``model``).

A researcher's own loss registers itself in their module::

    from retdet.registry import DISTILL_LOSSES
    from retdet.distillation import DistillLoss

    @DISTILL_LOSSES.register()
    class MyLoss(DistillLoss):
        def forward(self, inputs):
            return ...

and is named in the student's config: ``train.distill.losses=[dict(type="MyLoss", ...)]`` with the
module in ``imports``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from retdet.modeling.retinanet import DenseOutputs
from retdet.registry import DISTILL_LOSSES


@dataclass
class DistillInputs:
    """What a distillation loss sees for one batch.

    student, teacher: the two detectors' :class:`DenseOutputs` on the same images (teacher's without
        gradients). Same anchors, so logits line up anchor for anchor: (N, Hi*Wi*A, K) per level.
    labels: (N, R) the student's anchor labels (class, K = background, -1 = ignored), R = sum(Hi*Wi*A).
    num_anchors: A, anchors per location.
    """

    student: DenseOutputs
    teacher: DenseOutputs
    labels: Tensor
    num_classes: int
    num_anchors: int

    @property
    def num_foreground(self) -> Tensor:
        """Foreground anchors in the batch, at least 1 (the detection losses' normaliser)."""
        fg = (self.labels >= 0) & (self.labels != self.num_classes)
        return fg.sum().clamp(min=1).float()

    def foreground_maps(self) -> List[Tensor]:
        """Per level, (N, 1, Hi, Wi) float: 1 where any of the location's anchors is foreground."""
        fg = (self.labels >= 0) & (self.labels != self.num_classes)
        maps, start = [], 0
        for feature in self.student.features:
            n, _, h, w = feature.shape
            count = h * w * self.num_anchors
            level = fg[:, start:start + count].reshape(n, h, w, self.num_anchors).any(dim=3)
            maps.append(level.unsqueeze(1).to(feature.dtype))
            start += count
        return maps


class DistillLoss(nn.Module):
    """Base of the registered losses. Constructed with ``student_channels`` and ``teacher_channels``
    (the pyramid levels' widths) besides its own config arguments; ``forward(DistillInputs) -> scalar``."""

    def __init__(self, *, student_channels: int, teacher_channels: int, weight: float = 1.0) -> None:
        super().__init__()
        self.student_channels, self.teacher_channels, self.weight = student_channels, teacher_channels, weight


@DISTILL_LOSSES.register()
class LogitDistillLoss(DistillLoss):
    """Classification-logit distillation on every anchor, for sigmoid classifiers.

    Each (anchor, class) is a binary problem, so the teacher's soft target is sigmoid(t / T) and the
    student's prediction sigmoid(s / T) (not a softmax over classes). Cross-entropy between them,
    weighted by |p_teacher - p_student|^gamma (focal-aware, as the quality focal loss of Li et al.
    2020): the ~100k anchors where both already agree on background add almost nothing, as in the
    focal loss itself. Times T^2 (Hinton et al. 2015), summed and divided by the foreground anchors.
    """

    def __init__(self, *, student_channels: int, teacher_channels: int, weight: float = 1.0,
                 temperature: float = 1.0, gamma: float = 2.0) -> None:
        super().__init__(student_channels=student_channels, teacher_channels=teacher_channels, weight=weight)
        if temperature <= 0:
            raise ValueError(f"LogitDistillLoss temperature must be positive, got {temperature}")
        self.temperature, self.gamma = temperature, gamma

    def forward(self, inputs: DistillInputs) -> Tensor:
        t = self.temperature
        student = torch.cat(inputs.student.logits, dim=1).float() / t
        target = torch.sigmoid(torch.cat(inputs.teacher.logits, dim=1).float() / t)
        modulator = (target - torch.sigmoid(student)).abs().pow(self.gamma)
        loss = F.binary_cross_entropy_with_logits(student, target, reduction="none") * modulator
        return self.weight * loss.sum() * t * t / inputs.num_foreground


@DISTILL_LOSSES.register()
class FeatureImitationLoss(DistillLoss):
    """FPN feature imitation: a learned 1x1 adapter maps the student's levels to the teacher's width,
    and the squared error to the teacher's levels is averaged separately over foreground locations
    (those with a foreground anchor: near objects, as Wang et al. 2019's fine-grained imitation) and
    background ones, weighted ``weight`` and ``weight * background_weight``; halved (the gradient of
    (s - t)^2 / 2 is the error) and averaged over the levels.

    normalize: compare per-channel standardised maps (zero mean, unit variance over each map, as
        PKD, Cao et al. 2022) so the loss does not depend on either network's feature scale.
    """

    def __init__(self, *, student_channels: int, teacher_channels: int, weight: float = 1.0,
                 background_weight: float = 0.1, normalize: bool = True) -> None:
        super().__init__(student_channels=student_channels, teacher_channels=teacher_channels, weight=weight)
        self.background_weight, self.normalize = background_weight, normalize
        self.adapter = nn.Conv2d(student_channels, teacher_channels, 1)
        nn.init.kaiming_uniform_(self.adapter.weight, a=1)
        nn.init.zeros_(self.adapter.bias)

    @staticmethod
    def _standardize(x: Tensor) -> Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True, unbiased=False)
        return (x - mean) / (std + 1e-6)

    def forward(self, inputs: DistillInputs) -> Tensor:
        if inputs.teacher.features is None:
            raise ValueError("FeatureImitationLoss compares pyramid levels, and the teacher's network runs in an "
                             "inference runtime that returns none (an int8 artifact): give a float32 teacher "
                             "checkpoint")
        total, levels = 0.0, len(inputs.student.features)
        for s, t, fg in zip(inputs.student.features, inputs.teacher.features, inputs.foreground_maps()):
            s, t, fg = self.adapter(s.float()), t.float(), fg.float()
            if self.normalize:
                s, t = self._standardize(s), self._standardize(t)
            err = (s - t).pow(2).mean(dim=1, keepdim=True)  # (N, 1, H, W)
            bg = 1.0 - fg
            total = total + (err * fg).sum() / fg.sum().clamp(min=1)
            total = total + self.background_weight * (err * bg).sum() / bg.sum().clamp(min=1)
        return self.weight * total / (2 * levels)
