"""Losses: sigmoid focal loss for classification; smooth L1, L1 or GIoU for boxes; the normaliser.

Each loss returns the *sum* over its inputs; the normaliser divides the sums (per image or per batch).
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch import Tensor, nn

from retdet import ops
from retdet.registry import LOSSES
from retdet.utils import comm


@LOSSES.register()
class SigmoidFocalLoss(nn.Module):
    """Focal loss over anchors, from class-index targets (K = background, -1 = ignore).

    forward: logits (R, K), labels (R,) int64 -> scalar sum. Uses the fused op (no one-hot tensor).
    """

    def __init__(self, *, alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return ops.sigmoid_focal_loss(logits, labels, self.alpha, self.gamma, "sum")


class BoxLoss(nn.Module):
    """Base of the box losses. ``on_boxes``: the loss compares decoded boxes (GIoU), else deltas."""

    on_boxes = False

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@LOSSES.register()
class SmoothL1Loss(BoxLoss):
    """Smooth L1 on deltas: 0.5 x^2 / beta for |x| < beta, else |x| - 0.5 beta; beta = 0 is L1."""

    def __init__(self, *, beta: float = 0.1) -> None:
        super().__init__()
        if beta < 0:
            raise ValueError(f"SmoothL1Loss beta must be >= 0, got {beta}")
        self.beta = beta

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        diff = (pred - target).abs()
        if self.beta < 1e-5:
            return diff.sum()
        return torch.where(diff < self.beta, 0.5 * diff * diff / self.beta, diff - 0.5 * self.beta).sum()


@LOSSES.register()
class L1Loss(BoxLoss):
    """L1 on deltas (torchvision's RetinaNet v1)."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return (pred - target).abs().sum()


@LOSSES.register()
class GIoULoss(BoxLoss):
    """1 - generalised IoU (Rezatofighi et al. 2019) between decoded and target xyxy boxes."""

    on_boxes = True

    def __init__(self, *, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return giou_loss(pred, target, self.eps).sum()


def giou_loss(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Elementwise 1 - GIoU of (R, 4) xyxy boxes -> (R,)."""
    x1, y1, x2, y2 = boxes1.unbind(-1)
    u1, v1, u2, v2 = boxes2.unbind(-1)
    inter = (torch.min(x2, u2) - torch.max(x1, u1)).clamp(min=0) * (torch.min(y2, v2) - torch.max(y1, v1)).clamp(min=0)
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter
    iou = inter / (union + eps)
    hull = (torch.max(x2, u2) - torch.min(x1, u1)) * (torch.max(y2, v2) - torch.min(y1, v1))
    return 1 - iou + (hull - union) / (hull + eps)


class LossNormalizer(nn.Module):
    """What the summed losses are divided by.

    mode:
        "ema": an exponential moving average of the number of foreground anchors in the whole batch
            (all workers), momentum 0.9, starting at 100 (Detectron2's scheme, computed on the global
            batch so that N workers train exactly like one process with the same total batch).
        "batch": the whole batch's number of foreground anchors (at least 1).
        "per_image": each image's loss divided by its own foreground count (at least 1), then the
            mean over images (torchvision).

    With several workers, DDP averages gradients over them; ``world_scale`` (the world size)
    multiplies each worker's loss so that the average equals the global-batch loss.

    Gradient accumulation (``train.accumulate``) runs one batch as several micro-batches, and inside
    :meth:`accumulating` the divisor of the whole batch is not known until the last one: see there.
    """

    MODES = ("ema", "batch", "per_image")

    def __init__(self, *, mode: str = "ema", momentum: float = 0.9, initial: float = 100.0) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"loss normaliser mode must be one of {self.MODES}, got {mode!r}")
        self.mode, self.momentum = mode, momentum
        # A buffer: saved in checkpoints, so a resumed run continues with the same value.
        self.register_buffer("ema", torch.tensor(float(initial)), persistent=True)
        self._accumulation: Optional["Accumulation"] = None

    def groups(self, num_images: int) -> List[slice]:
        """The sets of images whose losses are summed together before the division: each image alone
        ("per_image") or the whole batch."""
        if self.mode == "per_image":
            return [slice(i, i + 1) for i in range(num_images)]
        return [slice(None)]

    def forward(self, summed: Sequence[Dict[str, Tensor]], num_foreground: Tensor) -> Dict[str, Tensor]:
        """summed: per set of :meth:`groups`, the losses summed over its anchors ({name: scalar});
        num_foreground: (N,) each image's foreground anchors -> {name: the normalised loss}."""
        acc = self._accumulation
        if self.mode == "per_image":
            divisors = [count.clamp(min=1).float() for count in num_foreground]
            scale = acc.num_micro_batches if acc is not None else 1  # the mean over all micro-batches' images
            return {name: torch.stack([s[name] / d for s, d in zip(summed, divisors)]).mean() / scale
                    for name in summed[0]}
        if acc is not None:
            divisor = acc.provisional_divisor(num_foreground.sum())
        else:
            divisor = self.batch_normalizer(num_foreground.sum())
        (batch,) = summed
        return {name: loss / divisor for name, loss in batch.items()}

    def batch_normalizer(self, num_foreground: Tensor) -> Tensor:
        """For "ema" and "batch": this worker's divisor given its foreground count (a 0-dim tensor)."""
        total, world = _sum_over_workers(num_foreground.detach().float())
        count = total.clamp(min=1.0)
        if self.mode == "ema":
            if self.training:
                with torch.no_grad():
                    self.ema.mul_(self.momentum).add_((1 - self.momentum) * count)
            count = self.ema.clamp(min=1.0)
        return count / world


    @contextlib.contextmanager
    def accumulating(self, num_micro_batches: int) -> Iterator["Accumulation"]:
        """Micro-batches of one batch: inside, each micro-batch's summed loss is divided by the same
        provisional divisor (the current EMA, or 100 for "batch": only its order of magnitude
        matters, to keep AMP's scaled gradients in range). :meth:`Accumulation.correction`, after the
        last micro-batch, gives the factor p / d that turns the accumulated gradients (and losses) into
        those of the whole batch, whose divisor d counts the foreground anchors of all micro-batches
        (on all workers) and updates the EMA once, as one batch would. Gradients are linear in the
        loss, so this is exact up to float rounding. "per_image" needs no correction (factor 1)."""
        self._accumulation = Accumulation(self, num_micro_batches)
        try:
            yield self._accumulation
        finally:
            self._accumulation = None


class Accumulation:
    """The state of :meth:`LossNormalizer.accumulating` over one batch's micro-batches."""

    def __init__(self, normalizer: LossNormalizer, num_micro_batches: int) -> None:
        self.normalizer, self.num_micro_batches = normalizer, int(num_micro_batches)
        self.divisor: Optional[Tensor] = None  # p, fixed at the first micro-batch
        self.foreground: Optional[Tensor] = None  # this worker's foreground anchors so far

    def provisional_divisor(self, num_foreground: Tensor) -> Tensor:
        count = num_foreground.detach().float()
        self.foreground = count if self.foreground is None else self.foreground + count
        if self.divisor is None:
            start = self.normalizer.ema if self.normalizer.mode == "ema" else torch.tensor(100.0)
            self.divisor = start.detach().clone().to(count.device).clamp(min=1.0) / comm.get_world_size()
        return self.divisor

    def correction(self) -> float:
        """p / d (1.0 for "per_image", or when no micro-batch reached the normaliser)."""
        if self.normalizer.mode == "per_image" or self.divisor is None:
            return 1.0
        return float(self.divisor / self.normalizer.batch_normalizer(self.foreground))


def _sum_over_workers(value: Tensor):
    """(sum of ``value`` over workers, world size); (value, 1) without distribution."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value, 1
    value = value.clone()
    dist.all_reduce(value)
    return value, dist.get_world_size()


__all__ = ["BoxLoss", "GIoULoss", "L1Loss", "LossNormalizer", "SigmoidFocalLoss", "SmoothL1Loss", "giou_loss"]
