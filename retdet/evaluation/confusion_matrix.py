"""A detection confusion matrix with a background row and column.

Per image, the detections scoring at least ``score_threshold`` and the (non-crowd) ground-truth boxes
are paired one to one, whatever their classes, by descending IoU (ties: the higher score first), taking
only pairs with IoU >= ``iou``. A pair counts in [true class, predicted class]; a box left unpaired in
[its class, background] (missed); a detection left unpaired in [background, its class] (a false
detection), unless it lies on a crowd region (IoU >= ``iou`` as COCO measures it there), which COCO
ignores and so does this. Rows: ground truth; columns: predictions; the last of each is background.
With one class the matrix is 2 x 2: [[found, missed], [false, -]].
"""
from __future__ import annotations

import numpy as np

from .error_analysis import Matched, box_iou


def confusion_matrix(m: Matched, *, iou: float = 0.5, score_threshold: float = 0.3) -> np.ndarray:
    """The (K + 1, K + 1) int64 matrix for the K categories ``m.cat_ids`` (module doc)."""
    if not 0 < iou <= 1 or not 0 <= score_threshold <= 1:
        raise ValueError(f"confusion matrix: iou must be in (0, 1] and score_threshold in [0, 1], got "
                         f"iou={iou}, score_threshold={score_threshold}")
    k = len(m.cat_ids)
    index = {c: i for i, c in enumerate(m.cat_ids)}
    det_class = np.array([index[c] for c in m.det_cat.tolist()], np.int64)
    gt_class = np.array([index[c] for c in m.gt_cat.tolist()], np.int64)
    matrix = np.zeros((k + 1, k + 1), np.int64)
    shown = m.det_score >= score_threshold
    det_order = np.argsort(m.det_image, kind="mergesort")
    gt_order = np.argsort(m.gt_image, kind="mergesort")
    d_bounds = np.searchsorted(m.det_image[det_order], m.image_ids + [m.image_ids[-1] + 1] if m.image_ids else [0])
    g_bounds = np.searchsorted(m.gt_image[gt_order], m.image_ids + [m.image_ids[-1] + 1] if m.image_ids else [0])
    for n in range(len(m.image_ids)):
        dets = det_order[d_bounds[n]:d_bounds[n + 1]]
        dets = dets[shown[dets]]
        gts = gt_order[g_bounds[n]:g_bounds[n + 1]]
        crowd, gts = gts[m.gt_crowd[gts]], gts[~m.gt_crowd[gts]]
        ious = box_iou(m.det_box[dets], m.gt_box[gts], np.zeros(len(gts), bool))
        pair_d, pair_g = np.nonzero(ious >= iou)
        order = np.lexsort((pair_g, pair_d, -m.det_score[dets][pair_d], -ious[pair_d, pair_g]))
        det_used, gt_used = np.zeros(len(dets), bool), np.zeros(len(gts), bool)
        for d, g in zip(pair_d[order], pair_g[order]):
            if det_used[d] or gt_used[g]:
                continue
            det_used[d] = gt_used[g] = True
            matrix[gt_class[gts[g]], det_class[dets[d]]] += 1
        on_crowd = np.zeros(len(dets), bool)
        if len(crowd):
            on_crowd = (box_iou(m.det_box[dets], m.gt_box[crowd], np.ones(len(crowd), bool)) >= iou).any(1)
        false = ~det_used & ~on_crowd
        np.add.at(matrix, (np.full(int(false.sum()), k), det_class[dets[false]]), 1)
        np.add.at(matrix, (gt_class[gts[~gt_used]], np.full(int((~gt_used).sum()), k)), 1)
    return matrix
