"""Why a detector misses: a TIDE-style breakdown of the AP lost to each kind of error.

Bolya et al. 2020 ("TIDE: A General Toolbox for Identifying Object Detection Errors"). Every detection
is first matched to the ground truth exactly as pycocotools matches at one IoU threshold (the same
greedy order, ties, crowd regions and 100 detections per image and class), so the base AP here *is*
pycocotools' AP at that threshold. Each false positive then gets one error kind, tried in this order:

============  ==========================================================================================
``bkg``       background: IoU below ``bg_iou`` (0.1) with every ground-truth box
``cls``       classification: IoU >= ``iou`` (0.5) with a box of another class
``dupe``      duplicate: IoU >= ``iou`` with a box of its class that a higher-scoring detection took
``loc``       localisation: ``bg_iou`` <= IoU < ``iou`` with a box of its class
``both``      classification and localisation: ``bg_iou`` <= IoU < ``iou`` with a box of another class
``miss``      missed: a ground-truth box that no detection matches and no cls/loc error points at
============  ==========================================================================================

An oracle fixes one kind and the AP is computed again; the gain is the AP that kind costs:
``cls`` gives the detection its box's class and ``loc`` its box's position (it becomes that box's
true positive, unless another detection, matched or fixed first in score order, has the box: then
it is removed), ``dupe``, ``bkg`` and ``both`` remove the detection, ``miss`` removes the missed box
from the ground truth. ``fp`` (remove every false positive) and ``fn`` (remove every unmatched box)
bound what precision and recall alone can give. Fixing all six kinds gives AP 100.

Each oracle is also written out as a results file (and ground truth) that pycocotools scores to the
same AP (tests/test_error_analysis.py): the gains are pycocotools' own numbers for the fixed results.

Arrays: ``det_*`` hold one entry per detection kept (N), ``gt_*`` one per ground-truth box (M).
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

ERROR_KINDS = ("cls", "loc", "both", "dupe", "bkg", "miss")
SPECIAL_KINDS = ("fp", "fn")
ERROR_NAMES = {"cls": "classification", "loc": "localisation", "both": "cls + loc", "dupe": "duplicate",
               "bkg": "background", "miss": "missed", "fp": "all false positives", "fn": "all false negatives"}
# det_kind codes: a true positive, a detection on a crowd region (ignored, as COCO does), or an error kind.
TP, IGNORED = 0, -1
KIND_CODE = {"cls": 1, "loc": 2, "both": 3, "dupe": 4, "bkg": 5}
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)  # COCO's 101 points

GroundTruth = Union[str, Mapping[str, Any]]


def load_ground_truth(ground_truth: GroundTruth) -> Dict[str, Any]:
    """A COCO json (path or dict) as a dict, with ``iscrowd`` and ``area`` filled in as the evaluator does."""
    if isinstance(ground_truth, str):
        with open(ground_truth) as f:
            data = json.load(f)
    else:
        data = copy.deepcopy(dict(ground_truth))
    for ann in data.get("annotations", []):
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
    return data


def check_results(results: Any, gt: Mapping[str, Any], *, source: str = "results") -> List[Dict[str, Any]]:
    """``results`` (a COCO detection results list) checked against ``gt``: each error names the entry and
    the field (an image id or category id the ground truth lacks, a NaN or infinite score or box, a box
    of negative size)."""
    if not isinstance(results, list):
        raise ValueError(f"{source}: a COCO results file is a list of detections, found {type(results).__name__}")
    image_ids = {int(im["id"]) for im in gt.get("images", [])}
    cat_ids = {int(c["id"]) for c in gt.get("categories", [])}
    for i, r in enumerate(results):
        where = f"{source}: detection {i}"
        if not isinstance(r, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(r):
            raise ValueError(f"{where} needs image_id, category_id, bbox and score, found {r!r}")
        if r["image_id"] not in image_ids:
            raise ValueError(f"{where} has image_id {r['image_id']!r}, which the ground truth does not have "
                             f"({len(image_ids)} images): results of another dataset or split?")
        if r["category_id"] not in cat_ids:
            raise ValueError(f"{where} has category_id {r['category_id']!r}, unknown to the ground truth "
                             f"(categories {sorted(cat_ids)})")
        score = r["score"]
        if not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError(f"{where} (image {r['image_id']}) has score {score!r}: scores must be finite numbers")
        box = r["bbox"]
        if (not isinstance(box, (list, tuple)) or len(box) != 4
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)):
            raise ValueError(f"{where} (image {r['image_id']}) has bbox {box!r}: expected 4 finite numbers "
                             "[x, y, w, h]")
        if box[2] < 0 or box[3] < 0:
            raise ValueError(f"{where} (image {r['image_id']}) has bbox {box!r} of negative width or height")
    return results


def box_iou(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """(D, G) IoU of xywh boxes, by pycocotools itself (for a crowd box: the intersection over the
    detection's area), so that the matching here sees COCOeval's numbers."""
    from pycocotools import mask as mask_utils

    if len(dt) == 0 or len(gt) == 0:
        return np.zeros((len(dt), len(gt)))
    return np.asarray(mask_utils.iou(np.asarray(dt, np.float64), np.asarray(gt, np.float64),
                                     np.asarray(crowd, np.uint8)), np.float64).reshape(len(dt), len(gt))


@dataclass
class Matched:
    """Detections and ground truth after COCO matching and error classification.

    det_image, det_cat (N,) int64; det_score (N,) float64; det_index (N,) position in the results list;
    det_box (N, 4) xywh; det_kind (N,) int8 (TP, IGNORED or a KIND_CODE); det_gt (N,) the ground-truth
    index a true positive matched or a cls/loc error points at, else -1.
    gt_image, gt_cat (M,) int64; gt_box (M, 4) xywh; gt_crowd, gt_matched, gt_missed (M,) bool;
    gt_ann (M,) the annotation's position in the json. image_ids: the evaluated images, ascending.
    """

    det_image: np.ndarray
    det_cat: np.ndarray
    det_score: np.ndarray
    det_index: np.ndarray
    det_box: np.ndarray
    det_kind: np.ndarray
    det_gt: np.ndarray
    gt_image: np.ndarray
    gt_cat: np.ndarray
    gt_box: np.ndarray
    gt_crowd: np.ndarray
    gt_matched: np.ndarray
    gt_missed: np.ndarray
    gt_ann: np.ndarray
    cat_ids: List[int]
    image_ids: List[int]
    iou: float
    bg_iou: float


def _match_image(dt: np.ndarray, dt_cat: np.ndarray, gt: np.ndarray, gt_cat: np.ndarray, crowd: np.ndarray,
                 iou_thr: float, bg_iou: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image. Detections come sorted by descending score (ties: results order). Returns
    (det kind (D,), det gt (D,), gt matched (G,))."""
    kind = np.full(len(dt), -2, np.int8)
    det_gt = np.full(len(dt), -1, np.int64)
    matched = np.zeros(len(gt), bool)
    ious = box_iou(dt, gt, crowd)
    t = min(iou_thr, 1 - 1e-10)
    for c in np.unique(dt_cat):
        gts = np.flatnonzero(gt_cat == c)
        gts = gts[np.argsort(crowd[gts], kind="mergesort")]  # pycocotools: crowd boxes last
        for d in np.flatnonzero(dt_cat == c):
            row = ious[d, gts]
            if not len(gts) or row.max() < t:
                continue
            best, best_iou = -1, t
            for g, v in zip(gts, row):  # pycocotools' greedy rule, ties included
                if matched[g] and not crowd[g]:
                    continue
                if best > -1 and not crowd[best] and crowd[g]:
                    break
                if v < best_iou:
                    continue
                best, best_iou = g, v
            if best == -1:
                continue
            if crowd[best]:
                kind[d] = IGNORED
            else:
                kind[d], det_gt[d], matched[best] = TP, best, True
    # The false positives' kinds, against the non-crowd boxes.
    fp = np.flatnonzero(kind == -2)
    if len(fp) and not (~crowd).any():
        kind[fp] = KIND_CODE["bkg"]
    elif len(fp):
        iou = np.where(crowd[None, :], 0.0, ious[fp])
        same = gt_cat[None, :] == dt_cat[fp, None]
        other_iou, same_iou = np.where(same, 0.0, iou), np.where(same, iou, 0.0)
        rows = np.arange(len(fp))
        other_best, same_best = other_iou.argmax(1), same_iou.argmax(1)
        other_max, same_max = other_iou[rows, other_best], same_iou[rows, same_best]
        used_max = np.where(matched[None, :], same_iou, 0.0).max(1)
        # Assigned from the last rule to the first, so the first rule that fits wins.
        k = np.full(len(fp), KIND_CODE["both"], np.int8)
        target = np.full(len(fp), -1, np.int64)
        is_loc = same_max >= bg_iou
        k[is_loc], target[is_loc] = KIND_CODE["loc"], same_best[is_loc]
        is_dupe = used_max >= iou_thr
        k[is_dupe], target[is_dupe] = KIND_CODE["dupe"], -1
        is_cls = other_max >= iou_thr
        k[is_cls], target[is_cls] = KIND_CODE["cls"], other_best[is_cls]
        is_bkg = np.maximum(other_max, same_max) < bg_iou
        k[is_bkg], target[is_bkg] = KIND_CODE["bkg"], -1
        kind[fp], det_gt[fp] = k, target
    return kind, det_gt, matched


def match(ground_truth: GroundTruth, results: Sequence[Mapping[str, Any]], *, iou: float = 0.5,
          bg_iou: float = 0.1, max_dets: int = 100, image_ids: Optional[Iterable[int]] = None) -> Matched:
    """COCO matching of ``results`` at IoU ``iou`` and each false positive's error kind (module doc).

    ``image_ids``: the images evaluated (default: every image of the ground truth), as COCOeval's
    ``params.imgIds``; detections on other images are dropped, as COCOeval does."""
    if not 0 < bg_iou <= iou <= 1:
        raise ValueError(f"error analysis needs 0 < bg_iou <= iou <= 1, got bg_iou={bg_iou}, iou={iou}")
    gt_data = load_ground_truth(ground_truth)
    results = check_results(list(results), gt_data)
    cat_ids = sorted(int(c["id"]) for c in gt_data["categories"])
    images = sorted(int(im["id"]) for im in gt_data["images"]) if image_ids is None else sorted(set(image_ids))
    image_pos = {im: i for i, im in enumerate(images)}
    anns = [(i, a) for i, a in enumerate(gt_data.get("annotations", [])) if int(a["image_id"]) in image_pos]
    gt_image = np.array([int(a["image_id"]) for _, a in anns], np.int64)
    gt_cat = np.array([int(a["category_id"]) for _, a in anns], np.int64)
    gt_box = np.array([a["bbox"] for _, a in anns], np.float64).reshape(-1, 4)
    gt_crowd = np.array([bool(a["iscrowd"]) for _, a in anns], bool)
    gt_ann = np.array([i for i, _ in anns], np.int64)

    keep = [i for i, r in enumerate(results) if int(r["image_id"]) in image_pos]
    det_image = np.array([int(results[i]["image_id"]) for i in keep], np.int64)
    det_cat = np.array([int(results[i]["category_id"]) for i in keep], np.int64)
    det_score = np.array([float(results[i]["score"]) for i in keep], np.float64)
    det_box = np.array([results[i]["bbox"] for i in keep], np.float64).reshape(-1, 4)
    det_index = np.array(keep, np.int64)
    # Per image, by descending score (ties: results order); then COCO's maxDets per image and class.
    order = np.lexsort((det_index, -det_score, det_image))
    det_image, det_cat, det_score, det_box, det_index = (a[order] for a in (det_image, det_cat, det_score, det_box,
                                                                          det_index))
    rank = np.zeros(len(order), np.int64)
    if len(order):
        key = det_image * (max(cat_ids) + 1) + det_cat
        grouped = np.lexsort((np.arange(len(key)), key))
        starts = np.r_[0, np.flatnonzero(np.diff(key[grouped])) + 1]
        run = np.arange(len(key)) - np.repeat(starts, np.diff(np.r_[starts, len(key)]))
        rank[grouped] = run
    top = rank < max_dets
    det_image, det_cat, det_score, det_box, det_index = (a[top] for a in (det_image, det_cat, det_score, det_box,
                                                                        det_index))
    det_kind = np.zeros(len(det_image), np.int8)
    det_gt = np.full(len(det_image), -1, np.int64)
    gt_matched = np.zeros(len(gt_image), bool)
    d_bounds = np.searchsorted(det_image, images + [images[-1] + 1] if images else [0])
    g_order = np.argsort(gt_image, kind="mergesort")
    g_sorted = gt_image[g_order]
    g_bounds = np.searchsorted(g_sorted, images + [images[-1] + 1] if images else [0])
    for k in range(len(images)):
        ds = slice(d_bounds[k], d_bounds[k + 1])
        gs = g_order[g_bounds[k]:g_bounds[k + 1]]
        if ds.start == ds.stop:
            continue
        kind, dgt, matched = _match_image(det_box[ds], det_cat[ds], gt_box[gs], gt_cat[gs], gt_crowd[gs], iou,
                                          bg_iou)
        det_kind[ds], gt_matched[gs] = kind, matched
        det_gt[ds] = np.where(dgt >= 0, gs[np.maximum(dgt, 0)] if len(gs) else -1, -1)
    covered = np.zeros(len(gt_image), bool)
    pointed = det_gt[(det_kind == KIND_CODE["cls"]) | (det_kind == KIND_CODE["loc"])]
    covered[pointed] = True
    gt_missed = ~gt_crowd & ~gt_matched & ~covered
    return Matched(det_image, det_cat, det_score, det_index, det_box, det_kind, det_gt, gt_image, gt_cat, gt_box,
                   gt_crowd, gt_matched, gt_missed, gt_ann, cat_ids, images, iou, bg_iou)


def average_precision(m: Matched, det_cat: np.ndarray, det_tp: np.ndarray, keep: np.ndarray,
                      num_gt: Mapping[int, int]) -> Dict[int, float]:
    """{category id: AP in %} as pycocotools accumulates it (101 recall points; ties in score by
    image id, then results order), for the detections ``keep`` with classes ``det_cat`` and true-positive
    flags ``det_tp``. Categories without ground truth are left out (COCO's -1)."""
    ap = {}
    scored = keep & (m.det_kind != IGNORED)
    order = np.lexsort((m.det_index, m.det_image, -m.det_score))
    order = order[scored[order]]
    cats, tps = det_cat[order], det_tp[order]
    for c in m.cat_ids:
        npig = num_gt.get(c, 0)
        if npig == 0:
            continue
        tp = tps[cats == c]
        tp_sum = np.cumsum(tp, dtype=np.float64)
        fp_sum = np.cumsum(~tp, dtype=np.float64)
        rc = tp_sum / npig
        pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
        inds = np.searchsorted(rc, REC_THRS, side="left")
        q = np.zeros(len(REC_THRS))
        valid = inds < len(pr)
        q[valid] = pr[inds[valid]]
        ap[c] = float(q.mean() * 100)
    return ap


def mean_ap(per_class: Mapping[int, float]) -> float:
    return float(np.mean(list(per_class.values()))) if per_class else float("nan")


@dataclass
class Fixed:
    """An oracle's outcome: kept detections (N,) bool, their classes and true-positive flags, the boxes
    that stay in the ground truth (M,) bool, and loc-fixed detections' new boxes (their gt index, or -1)."""

    keep: np.ndarray
    det_cat: np.ndarray
    det_tp: np.ndarray
    gt_keep: np.ndarray
    box_from_gt: np.ndarray


def fix(m: Matched, kinds: Iterable[str]) -> Fixed:
    """The oracle that fixes every error of ``kinds`` (ERROR_KINDS and SPECIAL_KINDS; module doc)."""
    kinds = set(kinds)
    unknown = kinds - set(ERROR_KINDS) - set(SPECIAL_KINDS)
    if unknown:
        raise ValueError(f"unknown error kind(s) {sorted(unknown)}: choose from {ERROR_KINDS + SPECIAL_KINDS}")
    keep = np.ones(len(m.det_kind), bool)
    det_cat, det_tp = m.det_cat.copy(), m.det_kind == TP
    box_from_gt = np.full(len(m.det_kind), -1, np.int64)
    claimed = m.gt_matched.copy()
    fp = (m.det_kind != TP) & (m.det_kind != IGNORED)
    if "fp" in kinds:
        keep &= ~fp
    for name in ("both", "dupe", "bkg"):
        if name in kinds:
            keep &= m.det_kind != KIND_CODE[name]
    repair = [KIND_CODE[k] for k in ("cls", "loc") if k in kinds and "fp" not in kinds]
    if repair:
        order = np.lexsort((m.det_index, m.det_image, -m.det_score))  # the highest score claims a box first
        for d in order[np.isin(m.det_kind[order], repair)]:
            g = m.det_gt[d]
            if claimed[g]:
                keep[d] = False
                continue
            claimed[g], det_tp[d], det_cat[d] = True, True, m.gt_cat[g]
            if m.det_kind[d] == KIND_CODE["loc"]:
                box_from_gt[d] = g
    gt_keep = np.ones(len(m.gt_image), bool)
    if "miss" in kinds:
        gt_keep &= ~m.gt_missed
    if "fn" in kinds:
        gt_keep &= m.gt_matched | m.gt_crowd
    return Fixed(keep, det_cat, det_tp, gt_keep, box_from_gt)


def fixed_ap(m: Matched, fixed: Fixed) -> Dict[int, float]:
    """Per-category AP (%) of the fixed detections against the fixed ground truth."""
    real = fixed.gt_keep & ~m.gt_crowd
    num_gt = {c: int(n) for c, n in zip(*np.unique(m.gt_cat[real], return_counts=True))}
    return average_precision(m, fixed.det_cat, fixed.det_tp, fixed.keep, num_gt)


def oracle_files(m: Matched, fixed: Fixed, ground_truth: GroundTruth,
                 results: Sequence[Mapping[str, Any]]) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """(ground truth, results) with the oracle's fix applied, for pycocotools: the check that the AP
    gains are the AP pycocotools gives the fixed results (only the detections COCO keeps are written)."""
    gt = load_ground_truth(ground_truth)
    drop = set(m.gt_ann[~fixed.gt_keep].tolist())
    gt["annotations"] = [a for i, a in enumerate(gt["annotations"]) if i not in drop]
    out = []
    for d in np.flatnonzero(fixed.keep)[np.argsort(m.det_index[fixed.keep], kind="mergesort")]:
        r = dict(results[int(m.det_index[d])])
        r["category_id"] = int(fixed.det_cat[d])
        if fixed.box_from_gt[d] >= 0:
            r["bbox"] = m.gt_box[fixed.box_from_gt[d]].tolist()
        out.append(r)
    return gt, out


def error_breakdown(m: Matched) -> Dict[str, Any]:
    """The base AP at ``m.iou``, each oracle's AP gain (dAP, in AP points), and the error counts."""
    num_gt = {c: int(n) for c, n in zip(*np.unique(m.gt_cat[~m.gt_crowd], return_counts=True))}
    base = average_precision(m, m.det_cat, m.det_kind == TP, np.ones(len(m.det_kind), bool), num_gt)
    base_ap = mean_ap(base)
    gains, per_class_gains = {}, {}
    for kind in ERROR_KINDS + SPECIAL_KINDS:
        fixed = fixed_ap(m, fix(m, [kind]))
        gains[kind] = mean_ap(fixed) - base_ap
        per_class_gains[kind] = {c: fixed.get(c, float("nan")) - base[c] for c in base}
    counts = {k: int((m.det_kind == code).sum()) for k, code in KIND_CODE.items()}
    counts["miss"] = int(m.gt_missed.sum())
    counts.update(tp=int((m.det_kind == TP).sum()), ignored=int((m.det_kind == IGNORED).sum()),
                  gt=int((~m.gt_crowd).sum()))
    return {"iou": m.iou, "bg_iou": m.bg_iou, "ap": base_ap, "per_class_ap": base, "dap": gains,
            "per_class_dap": per_class_gains, "counts": counts,
            "ap_all_fixed": mean_ap(fixed_ap(m, fix(m, ERROR_KINDS)))}


def precision_recall_at_best_f1(m: Matched) -> Dict[int, Dict[str, float]]:
    """Per category, from the matching at ``m.iou``: the score threshold with the best F1 and the
    precision, recall and F1 there (all 0 for a class with ground truth but no true positive)."""
    out = {}
    order = np.lexsort((m.det_index, m.det_image, -m.det_score))
    order = order[m.det_kind[order] != IGNORED]
    for c in m.cat_ids:
        npig = int(((m.gt_cat == c) & ~m.gt_crowd).sum())
        sel = order[m.det_cat[order] == c]
        tp = np.cumsum(m.det_kind[sel] == TP, dtype=np.float64)
        n = np.arange(1, len(sel) + 1)
        if npig == 0 or not len(sel) or tp[-1] == 0:
            out[c] = {"threshold": float("nan"), "precision": 0.0, "recall": 0.0, "f1": 0.0, "gt": npig}
            continue
        precision, recall = tp / n, tp / npig
        f1 = 2 * precision * recall / np.maximum(precision + recall, np.spacing(1))
        # A threshold keeps every detection of that score: only the last of a run of equal scores counts.
        last = np.r_[m.det_score[sel][1:] != m.det_score[sel][:-1], True]
        best = np.flatnonzero(last)[np.argmax(f1[last])]
        out[c] = {"threshold": float(m.det_score[sel][best]), "precision": float(precision[best] * 100),
                  "recall": float(recall[best] * 100), "f1": float(f1[best] * 100), "gt": npig}
    return out
