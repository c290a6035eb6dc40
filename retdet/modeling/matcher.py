"""Assigning each anchor a ground-truth box by IoU."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import Tensor

from retdet.registry import MATCHERS


@MATCHERS.register()
class Matcher:
    """IoU matcher with thresholds, as in Detectron2.

    Args:
        thresholds: increasing IoU thresholds, e.g. [0.4, 0.5]: they split [0, 1] into intervals
            [0, 0.4), [0.4, 0.5), [0.5, 1].
        labels: one label per interval, e.g. [0, -1, 1]: background, ignore, foreground.
        allow_low_quality_matches: also make foreground every anchor that has the highest IoU with
            some ground-truth box (ties included), so every box gets an anchor even if its best IoU
            is below the foreground threshold. Boxes whose best IoU is 0 get none.

    __call__: iou (M gt, A anchors) -> (matched gt index (A,) int64, match label (A,) int8).
    With M == 0 every anchor gets index 0 and the first interval's label (background).
    """

    def __init__(
        self,
        *,
        thresholds: Sequence[float] = (0.4, 0.5),
        labels: Sequence[int] = (0, -1, 1),
        allow_low_quality_matches: bool = True,
    ) -> None:
        thresholds = list(thresholds)
        if any(a > b for a, b in zip(thresholds[:-1], thresholds[1:])):
            raise ValueError(f"Matcher thresholds must be increasing, got {thresholds}")
        if len(labels) != len(thresholds) + 1 or any(lbl not in (-1, 0, 1) for lbl in labels):
            raise ValueError(f"Matcher needs {len(thresholds) + 1} labels in {{-1, 0, 1}}, got {list(labels)}")
        self.thresholds = [-float("inf")] + thresholds + [float("inf")]
        self.labels = list(labels)
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, iou: Tensor) -> Tuple[Tensor, Tensor]:
        num_anchors = iou.shape[1]
        if iou.shape[0] == 0:
            return (torch.zeros(num_anchors, dtype=torch.int64, device=iou.device),
                    torch.full((num_anchors,), self.labels[0], dtype=torch.int8, device=iou.device))
        best_iou, matched = iou.max(dim=0)
        match_labels = torch.empty(num_anchors, dtype=torch.int8, device=iou.device)
        for label, low, high in zip(self.labels, self.thresholds[:-1], self.thresholds[1:]):
            match_labels[(best_iou >= low) & (best_iou < high)] = label
        if self.allow_low_quality_matches:
            best_per_gt = iou.max(dim=1).values[:, None]
            is_best = (iou == best_per_gt) & (best_per_gt > 0)
            match_labels[is_best.any(dim=0)] = 1
        return matched, match_labels
