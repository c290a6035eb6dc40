"""Merging detections of several views of one image (test-time augmentation, tiles): class-wise NMS
(our batched NMS op) or weighted box fusion (Solovyev et al. 2021, "Weighted boxes fusion")."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from retdet import ops

MERGE_CHOICES = ("nms", "wbf")


def check_merge(merge: str, where: str) -> str:
    if merge not in MERGE_CHOICES:
        raise ValueError(f"{where}.merge must be one of {MERGE_CHOICES}, got {merge!r}")
    return merge


def merge_detections(boxes: Tensor, scores: Tensor, labels: Tensor, *, merge: str, iou_threshold: float,
                     max_detections: int, num_views: int = 1) -> Tuple[Tensor, Tensor, Tensor]:
    """(R, 4) xyxy boxes, (R,) scores and labels pooled from the views -> the merged (K, 4), (K,), (K,),
    by decreasing score, at most ``max_detections``.

    nms: class-wise NMS at ``iou_threshold``. wbf: per class, boxes join the cluster (in score order)
    whose fused box they overlap above ``iou_threshold``; a cluster's box is the score-weighted mean of
    its members, its score their mean score times min(members, num_views) / num_views, so a box that
    only some views found counts less.
    """
    if merge == "nms":
        keep = ops.batched_nms(boxes, scores, labels, iou_threshold)[:max_detections]
        return boxes[keep], scores[keep], labels[keep]
    return weighted_box_fusion(boxes, scores, labels, iou_threshold, max_detections, num_views)


def weighted_box_fusion(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float, max_detections: int,
                        num_views: int) -> Tuple[Tensor, Tensor, Tensor]:
    from torchvision.ops import box_iou

    out_boxes, out_scores, out_labels = [], [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.sort(scores[idx], descending=True, stable=True).indices]
        fused, weight, members, score_sum = [], [], [], []  # per cluster
        for i in idx.tolist():
            b, s = boxes[i].double(), float(scores[i])
            j = -1
            if fused:
                iou = box_iou(b[None], torch.stack([f / w for f, w in zip(fused, weight)]))[0]
                best = int(iou.argmax())
                j = best if float(iou[best]) > iou_threshold else -1
            if j < 0:
                fused.append(b * s)
                weight.append(s)
                members.append(1)
                score_sum.append(s)
            else:
                fused[j], weight[j] = fused[j] + b * s, weight[j] + s
                members[j] += 1
                score_sum[j] += s
        for f, w, n, total in zip(fused, weight, members, score_sum):
            out_boxes.append((f / w).to(boxes.dtype))
            out_scores.append(total / n * min(n, num_views) / num_views)
            out_labels.append(int(c))
    if not out_boxes:
        return boxes[:0], scores[:0], labels[:0]
    merged_scores = torch.tensor(out_scores, dtype=scores.dtype, device=scores.device)
    order = torch.sort(merged_scores, descending=True, stable=True).indices[:max_detections]
    return (torch.stack(out_boxes)[order], merged_scores[order],
            torch.tensor(out_labels, dtype=labels.dtype, device=labels.device)[order])
