"""Pascal VOC detection mAP at IoU 0.5: the VOC2007 11-point and the VOC2010+ area (all-point) AP.

Matching as the VOC devkit does it, per class: detections in decreasing score; each looks at the
ground-truth box of its image (of that class) with the highest IoU; IoU >= 0.5 with a "difficult"
box makes it neither a true nor a false positive, with an unmatched one a true positive, with an
already matched one (a duplicate) a false positive. Difficult boxes do not count towards recall. Boxes are continuous xywh (retdet's
VOC reader turns the devkit's 1-based inclusive pixel indices into them, which makes the plain IoU
here equal to the devkit's "+1" IoU).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np


def voc_ap(recall: np.ndarray, precision: np.ndarray, *, use_11_point: bool) -> float:
    """AP from a recall/precision curve (detections in decreasing score)."""
    if use_11_point:  # VOC2007: mean of the best precision at recall >= 0, 0.1, ..., 1
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                               for t in np.linspace(0, 1, 11)]))
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # the precision envelope
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with (G, 4) xyxy boxes."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return inter / np.maximum(union, np.finfo(np.float64).eps)


def class_recall_precision(gts: Mapping[int, Tuple[np.ndarray, np.ndarray]], dets: Sequence[Tuple[int, float, np.ndarray]],
                           iou_threshold: float = 0.5) -> Tuple[np.ndarray, np.ndarray, int]:
    """(recall, precision, number of non-difficult boxes) of one class.

    gts: image id -> ((G, 4) xyxy boxes, (G,) bool difficult); dets: (image id, score, xyxy box)."""
    npos = int(sum((~difficult).sum() for _, difficult in gts.values()))
    matched = {img: np.zeros(len(boxes), bool) for img, (boxes, _) in gts.items()}
    tp, fp = [], []
    for img, _, box in sorted(dets, key=lambda d: -d[1]):
        boxes, difficult = gts.get(img, (np.zeros((0, 4)), np.zeros(0, bool)))
        if len(boxes):
            ious = _iou(box, boxes)
            j = int(np.argmax(ious))
            if ious[j] >= iou_threshold:
                if difficult[j]:
                    continue  # neither true nor false positive
                hit = not matched[img][j]
                matched[img][j] = True
                tp.append(hit)
                fp.append(not hit)
                continue
        tp.append(False)
        fp.append(True)
    tp_c, fp_c = np.cumsum(tp, dtype=np.float64), np.cumsum(fp, dtype=np.float64)
    recall = tp_c / max(npos, 1)
    precision = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
    return recall, precision, npos


def voc_detection_map(coco_gt: Mapping[str, Any], results: List[Mapping[str, Any]], image_ids: Sequence[int],
                      iou_threshold: float = 0.5) -> Dict[str, Any]:
    """{"mAP50_voc07", "mAP50_area": percentages over the classes with ground truth, "per_class":
    {category id: (11-point AP, area AP)}} of COCO-style ``results`` against a COCO-format ground
    truth whose crowd (``iscrowd``) boxes are VOC's difficult ones, on ``image_ids``."""
    wanted = set(int(i) for i in image_ids)
    gts: Dict[int, Dict[int, List[Tuple[List[float], bool]]]] = defaultdict(lambda: defaultdict(list))
    for ann in coco_gt.get("annotations", []):
        if ann["image_id"] in wanted:
            x, y, w, h = ann["bbox"]
            gts[ann["category_id"]][ann["image_id"]].append(([x, y, x + w, y + h], bool(ann.get("iscrowd", 0))))
    dets: Dict[int, List[Tuple[int, float, np.ndarray]]] = defaultdict(list)
    for r in results:
        if r["image_id"] in wanted:
            x, y, w, h = r["bbox"]
            dets[r["category_id"]].append((r["image_id"], float(r["score"]), np.array([x, y, x + w, y + h])))
    per_class = {}
    for cat in sorted(c["id"] for c in coco_gt["categories"]):
        class_gts = {img: (np.array([b for b, _ in items], np.float64).reshape(-1, 4), np.array([d for _, d in items]))
                     for img, items in gts.get(cat, {}).items()}
        recall, precision, npos = class_recall_precision(class_gts, dets.get(cat, []), iou_threshold)
        if npos == 0:
            continue  # VOC averages over classes that have (non-difficult) objects
        per_class[cat] = (100 * voc_ap(recall, precision, use_11_point=True),
                          100 * voc_ap(recall, precision, use_11_point=False))
    values = list(per_class.values())
    return {"mAP50_voc07": float(np.mean([a for a, _ in values])) if values else 0.0,
            "mAP50_area": float(np.mean([b for _, b in values])) if values else 0.0, "per_class": per_class}
