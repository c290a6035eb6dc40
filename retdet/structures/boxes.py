"""Pairwise box geometry for xyxy boxes."""
from __future__ import annotations

import torch
from torch import Tensor


def pairwise_intersection(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """(M, 4), (R, 4) -> (M, R) intersection areas."""
    wh = (torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:]) - torch.max(boxes1[:, None, :2], boxes2[None, :, :2]))
    wh = wh.clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def box_area(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def pairwise_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """(M, 4), (R, 4) -> (M, R) intersection over union (0 where the union is empty)."""
    inter = pairwise_intersection(boxes1, boxes2)
    union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))


def pairwise_ioa(regions: Tensor, boxes: Tensor) -> Tensor:
    """(M, 4) regions, (R, 4) boxes -> (M, R): the fraction of each box's area inside each region."""
    inter = pairwise_intersection(regions, boxes)
    area = box_area(boxes)[None, :]
    return torch.where(area > 0, inter / area.clamp(min=torch.finfo(area.dtype).tiny), torch.zeros_like(inter))
