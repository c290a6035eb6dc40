"""Class-wise (batched) non-maximum suppression: torch.ops.retdet.batched_nms, its fake kernel,
and the pure-PyTorch reference.

Result: indices of the kept boxes sorted by decreasing score, identical to
torchvision.ops.batched_nms, including the order of equal scores. That order is torchvision's:
for up to 1000 boxes on CPU (25000 on CUDA) the lower index comes first; for more, torchvision
orders the kept indices (ascending) with the default, not stable, ``torch.sort(descending=True)``,
and so do we. Inside a class, of two equal-score boxes the lower index is ranked first (and so
suppresses the other). Boxes of different classes never suppress each other; a box is suppressed by a higher-ranked kept box of its class whose IoU with it is
> iou_threshold. Zero-area boxes have IoU 0/0 = NaN with each other, which is not > threshold, so
they are kept (as in torchvision).
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import _extension

__all__ = ["batched_nms", "batched_nms_reference"]


def _check_finite(boxes: Tensor, scores: Tensor) -> None:
    if boxes.numel() and not (torch.isfinite(boxes).all() and torch.isfinite(scores).all()):
        raise ValueError("batched_nms: boxes and scores must be finite; found NaN or inf "
                         "(check the model's outputs or the box decoding)")


def _box_iou_same_rounding(b: Tensor) -> Tensor:
    """(M, M) IoU of xyxy boxes with the kernels' expression and rounding order."""
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    w = (torch.minimum(b[:, None, 2], b[None, :, 2]) - torch.maximum(b[:, None, 0], b[None, :, 0])).clamp(min=0)
    h = (torch.minimum(b[:, None, 3], b[None, :, 3]) - torch.maximum(b[:, None, 1], b[None, :, 1])).clamp(min=0)
    inter = w * h
    return inter / (area[:, None] + area[None, :] - inter)


def batched_nms_reference(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Plain PyTorch batched NMS: same kept set and order as :func:`batched_nms`.

    One IoU matrix per class, so memory is quadratic in the largest class's box count.
    """
    _check_finite(boxes, scores)
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    b = boxes if boxes.dtype == torch.float64 else boxes.float()
    kept = []
    for c in torch.unique(idxs):
        members = torch.nonzero(idxs == c).flatten()
        members = members[torch.sort(scores[members], stable=True, descending=True).indices]
        over = (_box_iou_same_rounding(b[members]) > iou_threshold).cpu()
        suppressed = torch.zeros(len(members), dtype=torch.bool)
        for i in range(len(members)):
            if not suppressed[i]:
                suppressed[i + 1:] |= over[i, i + 1:]
        kept.append(members[~suppressed.to(members.device)])
    return order_kept_by_score(torch.cat(kept), scores, boxes.shape[0])


def order_kept_by_score(kept: Tensor, scores: Tensor, num_boxes: int) -> Tensor:
    """Kept indices -> by decreasing score, equal scores in torchvision's order (module docstring)."""
    kept_asc = torch.sort(kept).values
    stable = num_boxes * 4 <= (100000 if kept.is_cuda else 4000)  # torchvision's path choice
    return kept_asc[torch.sort(scores[kept_asc], stable=stable, descending=True).indices]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Class-wise NMS.

    Args:
        boxes: (N, 4) xyxy boxes (float32 or float64; half is compared in float32).
        scores: (N,) scores.
        idxs: (N,) integer class (or image-and-class) index of each box.
        iou_threshold: a box is removed when its IoU with a kept box of its class is greater.

    Returns (K,) int64 indices of the kept boxes, by decreasing score (ties: see the module docstring).
    Raises for NaN or inf boxes or scores.
    """
    if _extension.has_extension():
        return torch.ops.retdet.batched_nms(boxes, scores, idxs, float(iou_threshold))
    _extension.warn_fallback()
    return batched_nms_reference(boxes, scores, idxs, iou_threshold)


if _extension.has_extension():

    @torch.library.register_fake("retdet::batched_nms")
    def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
        ctx = torch.library.get_ctx()
        return boxes.new_empty((ctx.new_dynamic_size(),), dtype=torch.int64)
