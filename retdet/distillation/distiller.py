"""Training a student detector from a frozen teacher: ``train.distill`` in the student's config.

    train.distill = dict(
        teacher_config="configs/bccd_R18_FPN.py",            # the teacher's own config file
        teacher_weights="output/bccd_R18_FPN/model_final.pth",
        teacher_overrides=[],                                  # key=value overrides of the teacher's config
        losses=[dict(type="LogitDistillLoss", weight=1.0, temperature=1.0),
                dict(type="FeatureImitationLoss", weight=1.0)],
    )

The Trainer then steps a :class:`Distiller`: the student's own detection losses plus each
distillation loss (``loss_distill_<Name>``). The teacher runs in eval mode without gradients, inside
the step's autocast (so under AMP when the student trains with AMP). It is not a submodule: it is
not in the optimizer, nor in the student's checkpoints, which hold the student under ``model`` (a
plain detector checkpoint) and the losses' own parameters (adapters) under ``distill``, so an exact
resume restores those too.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Mapping, Sequence

import torch
from torch import Tensor, nn

from retdet.registry import DISTILL_LOSSES, build
from retdet.structures import ImageSample

from .losses import DistillInputs

logger = logging.getLogger("retdet")

DISTILL_KEYS = ("teacher_config", "teacher_weights", "teacher_overrides", "losses")


class Distiller(nn.Module):
    """The student (a submodule: trained, checkpointed) and the distillation losses (submodules: their
    adapters train with it); the teacher is held outside the module tree.

    forward(samples) -> {"loss_cls", "loss_box_reg", "loss_distill_<Name>", ...} (training only).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, losses: Sequence[nn.Module]) -> None:
        super().__init__()
        self.student = student
        self.losses = nn.ModuleList(losses)
        self._teacher = [teacher.eval().requires_grad_(False)]  # a list: not registered, not saved

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        self.teacher.eval()  # always: BN statistics and dropout of the teacher stay fixed
        return self

    def forward(self, samples: Sequence[ImageSample]) -> Dict[str, Tensor]:
        if not self.training:
            raise RuntimeError("Distiller is for training; evaluate its student")
        student = self.student.dense_outputs(samples)
        gt_labels, gt_boxes = self.student.label_anchors(torch.cat(student.anchors), samples)
        losses = self.student.losses(student.anchors, student.logits, student.deltas, gt_labels, gt_boxes)
        with torch.no_grad():
            teacher = self.teacher.dense_outputs(samples)
        inputs = DistillInputs(student=student, teacher=teacher, labels=gt_labels,
                               num_classes=self.student.num_classes,
                               num_anchors=self.student.anchor_generator.num_anchors)
        for loss in self.losses:
            losses[f"loss_distill_{type(loss).__name__}"] = loss(inputs)
        return losses


def _level_channels(model: nn.Module) -> int:
    shapes = model.neck.output_shape()
    widths = {s.channels for s in shapes.values()}
    if len(widths) != 1:
        raise ValueError(f"distillation compares pyramid levels of one width; this neck has {sorted(widths)}")
    return widths.pop()


def check_compatible(student: nn.Module, teacher: nn.Module, teacher_config: str) -> None:
    """Same classes and the same anchors (per location and strides): the logits and pyramid levels
    are then compared position for position."""
    problems = []
    if teacher.num_classes != student.num_classes:
        problems.append(f"the teacher has {teacher.num_classes} classes and the student {student.num_classes}")
    ta, sa = teacher.anchor_generator, student.anchor_generator
    if ta.num_anchors != sa.num_anchors:
        problems.append(f"the teacher has {ta.num_anchors} anchors per location and the student {sa.num_anchors}")
    if list(ta.strides) != list(sa.strides):
        problems.append(f"the teacher's pyramid strides {list(ta.strides)} differ from the student's {list(sa.strides)}")
    if problems:
        raise ValueError(f"train.distill.teacher_config={teacher_config}: {'; '.join(problems)}. Distillation "
                         f"compares the two anchor for anchor: give a teacher trained on the student's classes "
                         f"and anchors")


def build_teacher(distill: Mapping[str, Any], device: torch.device) -> nn.Module:
    """The teacher detector: its config, its weights, eval mode, no gradients, on ``device``."""
    from retdet.config import load_config
    from retdet.data import resolve_num_classes
    from retdet.engine.defaults import build_model_from_config

    config, weights = distill.get("teacher_config"), distill.get("teacher_weights")
    if not config or not weights:
        raise ValueError("train.distill needs teacher_config (the teacher's config file) and teacher_weights "
                         f"(its checkpoint); got teacher_config={config!r}, teacher_weights={weights!r}")
    if not os.path.exists(config):
        raise FileNotFoundError(f"train.distill.teacher_config: config file not found: {config}")
    if not os.path.exists(weights):
        raise FileNotFoundError(f"train.distill.teacher_weights: checkpoint not found: {weights} (train the teacher "
                                f"first, or point to its model_final.pth)")
    cfg = load_config(config, list(distill.get("teacher_overrides", [])))
    resolve_num_classes(cfg)
    return build_model_from_config(cfg, weights, device, logger=logger).requires_grad_(False)


def build_distiller(distill: Mapping[str, Any], student: nn.Module, *, device: torch.device) -> Distiller:
    """A :class:`Distiller` for ``train.distill`` (see the module doc) around ``student``."""
    unknown = sorted(set(distill) - set(DISTILL_KEYS))
    if unknown:
        raise ValueError(f"train.distill: unknown key(s) {unknown}; it takes {list(DISTILL_KEYS)}")
    loss_cfgs: List[Mapping[str, Any]] = list(distill.get("losses") or [])
    if not loss_cfgs:
        raise ValueError("train.distill.losses is empty: name at least one registered distillation loss, e.g. "
                         f"dict(type='LogitDistillLoss'); registered: {', '.join(DISTILL_LOSSES.names())}")
    teacher = build_teacher(distill, device)
    check_compatible(student, teacher, distill["teacher_config"])
    widths = dict(student_channels=_level_channels(student), teacher_channels=_level_channels(teacher))
    losses = [build(c, DISTILL_LOSSES, where=f"train.distill.losses[{i}]", **widths).to(device)
              for i, c in enumerate(loss_cfgs)]
    logger.info("Distilling from %s (%s): %s", distill["teacher_weights"], distill["teacher_config"],
                ", ".join(type(x).__name__ for x in losses))
    return Distiller(student, teacher, losses)
