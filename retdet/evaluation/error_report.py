"""The error-analysis report: a folder with report.md, report.json and pictures.

    from retdet.evaluation.error_report import write_error_report
    summary = write_error_report("instances_val.json", "coco_results.json", "output/analysis",
                                 image_root="images/")

Contents: the TIDE-style breakdown (retdet.evaluation.error_analysis) with a bar chart, the confusion
matrix (retdet.evaluation.confusion_matrix) as a table and a picture, per-class AP and AP50 (from
pycocotools) with precision and recall at each class's best-F1 score threshold, and a gallery of the
images with the most missed and false boxes at ``score_threshold``.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from retdet.utils.logger import format_table

from .coco_evaluator import evaluate_coco
from .confusion_matrix import confusion_matrix
from .error_analysis import (ERROR_KINDS, ERROR_NAMES, IGNORED, SPECIAL_KINDS, TP, GroundTruth, Matched,
                             check_results, error_breakdown, load_ground_truth, match, precision_recall_at_best_f1)
from .plots import plot_confusion_matrix, plot_error_breakdown

logger = logging.getLogger("retdet")


def load_results(path: str, gt: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """A COCO results json, checked against ``gt`` (errors name the file and the entry)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"results file {path!r} does not exist (write one with tools/train_net.py "
                                "--eval-only, which saves coco_results.json, or pass --weights)")
    try:
        with open(path) as f:
            results = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"results file {path!r} is not valid json: {e}") from e
    return check_results(results, gt, source=path)


def image_errors(m: Matched, score_threshold: float) -> Dict[str, np.ndarray]:
    """At ``score_threshold`` under COCO's matching: ``shown`` (N,) the detections shown (crowd-region
    ones are not), ``false`` (N,) the shown ones that are not true positives, ``missed`` (M,) the
    non-crowd boxes no shown detection found."""
    shown = (m.det_score >= score_threshold) & (m.det_kind != IGNORED)
    found = np.zeros(len(m.gt_image), bool)
    found[m.det_gt[shown & (m.det_kind == TP)]] = True
    return {"shown": shown, "false": shown & (m.det_kind != TP), "missed": ~found & ~m.gt_crowd}


def write_error_report(ground_truth: GroundTruth, results: Any, output_dir: str, *, image_root: Optional[str] = None,
                       iou: float = 0.5, bg_iou: float = 0.1, score_threshold: float = 0.3, num_images: int = 8,
                       backend: str = "pycocotools", title: str = "") -> Dict[str, Any]:
    """Analyse ``results`` (a COCO results list or json path) against ``ground_truth`` (a COCO json path
    or dict) and write the report to ``output_dir``; returns what report.json holds."""
    gt = load_ground_truth(ground_truth)
    results = load_results(results, gt) if isinstance(results, str) else check_results(list(results), gt)
    os.makedirs(output_dir, exist_ok=True)
    cats = sorted(gt["categories"], key=lambda c: int(c["id"]))
    names = [str(c.get("name", c["id"])) for c in cats]
    cat_ids = [int(c["id"]) for c in cats]
    m = match(gt, results, iou=iou, bg_iou=bg_iou)
    breakdown = error_breakdown(m)
    matrix = confusion_matrix(m, iou=iou, score_threshold=score_threshold)
    best_f1 = precision_recall_at_best_f1(m)
    metrics, per_class_ap, coco_eval = evaluate_coco(gt, results, m.image_ids, names, cat_ids, backend=backend)
    per_class = []
    for name, cid in zip(names, cat_ids):
        ap50 = float("nan")
        if coco_eval is not None:
            p = coco_eval.eval["precision"][0, :, coco_eval.params.catIds.index(cid), 0, -1]
            ap50 = float(p.mean() * 100) if (p > -1).all() else float("nan")
        per_class.append(dict(name=name, category_id=cid, ap=per_class_ap[name], ap50=ap50, **best_f1[cid]))
    summary: Dict[str, Any] = {
        "title": title, "images": len(m.image_ids), "detections": len(results), "iou": iou, "bg_iou": bg_iou,
        "score_threshold": score_threshold, "coco": metrics, "errors": {
            "ap": breakdown["ap"], "dap": breakdown["dap"], "counts": breakdown["counts"],
            "ap_all_fixed": breakdown["ap_all_fixed"],
            "per_class_dap": {names[cat_ids.index(c)]: {k: v[c] for k, v in breakdown["per_class_dap"].items()}
                              for c in breakdown["per_class_ap"]}},
        "confusion_matrix": {"labels": names + ["background"], "rows": "ground truth", "columns": "prediction",
                             "counts": matrix.tolist()},
        "per_class": per_class,
    }
    pictures = {"errors": plot_error_breakdown(breakdown, os.path.join(output_dir, "errors.png")),
                "confusion_matrix": plot_confusion_matrix(matrix, names, iou, score_threshold,
                                                    os.path.join(output_dir, "confusion_matrix.png"))}
    worst = _worst_images(m, score_threshold, num_images)
    summary["worst_images"] = [{"image_id": i, "missed": a, "false": b} for i, a, b in worst]
    if image_root is not None:
        gallery = _gallery(m, gt, worst, image_root, names, score_threshold,
                           os.path.join(output_dir, "worst_images.png"))
        if gallery:
            pictures["worst_images"] = gallery
    summary["pictures"] = {k: os.path.basename(v) for k, v in pictures.items()}
    with open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(summary, f, indent=1, default=float)
    with open(os.path.join(output_dir, "report.md"), "w") as f:
        f.write(markdown_report(summary))
    logger.info("Error analysis written to %s", output_dir)
    return summary


def markdown_report(s: Mapping[str, Any]) -> str:
    """report.md from the summary ``write_error_report`` returns."""
    e = s["errors"]
    lines = [f"# Error analysis{': ' + s['title'] if s['title'] else ''}", "",
             f"{s['images']} images, {s['detections']} detections; COCO AP {s['coco']['AP']:.2f}, "
             f"AP50 {s['coco']['AP50']:.2f}, AP75 {s['coco']['AP75']:.2f} (pycocotools).", "",
             f"## AP lost to each kind of error (IoU {s['iou']}, background below IoU {s['bg_iou']})", "",
             f"AP{int(round(s['iou'] * 100))} here is {e['ap']:.2f}, as pycocotools computes it. dAP: the AP "
             f"gained if an oracle fixed every error of that kind and nothing else (fixing all six kinds gives "
             f"{e['ap_all_fixed']:.2f}). The gains overlap, so they do not add up to the AP lost.", "",
             format_table([(ERROR_NAMES[k], k, e["counts"][k], f"{e['dap'][k]:.2f}") for k in ERROR_KINDS],
                          ["error", "kind", "count", "dAP"], floatfmt=".2f"), "",
             format_table([(ERROR_NAMES[k], f"{e['dap'][k]:.2f}") for k in SPECIAL_KINDS],
                          ["oracle", "dAP"], floatfmt=".2f"), "",
             f"{e['counts']['tp']} true positives, {e['counts']['gt']} ground-truth boxes, {e['counts']['ignored']} "
             "detections on crowd regions (ignored). Per class:", "",
             format_table([(name, *(f"{v[k]:.2f}" for k in ERROR_KINDS)) for name, v in e["per_class_dap"].items()],
                          ["class"] + [f"dAP {k}" for k in ERROR_KINDS], floatfmt=".2f"), "",
             "![errors](errors.png)", "",
             "## Per class", "",
             "Precision, recall and F1 at the score threshold with the best F1 (IoU 0.5 matching).", "",
             format_table([(c["name"], c["gt"], f"{c['ap']:.2f}", f"{c['ap50']:.2f}", round(c["threshold"], 3),
                            f"{c['precision']:.1f}", f"{c['recall']:.1f}", f"{c['f1']:.1f}") for c in s["per_class"]],
                          ["class", "boxes", "AP", "AP50", "best-F1 threshold", "precision", "recall", "F1"],
                          floatfmt=["", "", ".2f", ".2f", ".3f", ".1f", ".1f", ".1f"]), "",
             f"## Confusion matrix (IoU {s['iou']}, score >= {s['score_threshold']})", "",
             "Rows: ground truth; columns: predictions. The background row counts false detections, the "
             "background column missed boxes.", ""]
    labels = s["confusion_matrix"]["labels"]
    lines += [format_table([[labels[i]] + row for i, row in enumerate(s["confusion_matrix"]["counts"])],
                           ["true \\ predicted"] + labels), "", "![confusion matrix](confusion_matrix.png)",
              "", f"## The images with the most errors (score >= {s['score_threshold']})", "",
              format_table([(w["image_id"], w["missed"], w["false"]) for w in s["worst_images"]],
                           ["image id", "missed boxes", "false detections"]), ""]
    if "worst_images" in s["pictures"]:
        lines += ["Left: ground truth (missed boxes marked); right: detections (false ones marked).", "",
                  "![worst images](worst_images.png)", ""]
    return "\n".join(lines)


def _worst_images(m: Matched, score_threshold: float, n: int) -> List[tuple]:
    """[(image id, missed boxes, false detections)] of the ``n`` images with the most errors."""
    e = image_errors(m, score_threshold)
    ids = np.asarray(m.image_ids, np.int64)
    missed = np.bincount(np.searchsorted(ids, m.gt_image[e["missed"]]), minlength=len(ids))
    false = np.bincount(np.searchsorted(ids, m.det_image[e["false"]]), minlength=len(ids))
    order = np.lexsort((ids, -(missed + false)))[:n]
    return [(int(ids[i]), int(missed[i]), int(false[i])) for i in order if missed[i] + false[i] > 0]


def _gallery(m: Matched, gt: Mapping[str, Any], worst: List[tuple], image_root: str, names: Sequence[str],
             score_threshold: float, path: str) -> Optional[str]:
    import cv2

    from retdet.data.image_io import read_image
    from retdet.utils.visualize import draw_boxes, fit_to_cell, image_grid

    files = {int(im["id"]): im.get("file_name", "") for im in gt["images"]}
    e = image_errors(m, score_threshold)
    index = {c: i for i, c in enumerate(m.cat_ids)}
    k = len(names)
    # Labels k.. are the same classes marked as errors (another colour of the palette).
    shown_names = list(names) + [f"{n} MISSED" for n in names] + [f"{n} FALSE" for n in names]
    tiles = []
    for image_id, missed, false in worst:
        file = os.path.join(image_root, files[image_id])
        try:
            image = read_image(file)
        except Exception as e:  # the report stays useful without one picture
            logger.warning("gallery: skipping image %d: %s", image_id, e)
            continue
        gts = np.flatnonzero((m.gt_image == image_id) & ~m.gt_crowd)
        dets = np.flatnonzero((m.det_image == image_id) & e["shown"])
        gt_labels = [index[c] + (k if miss else 0) for c, miss in zip(m.gt_cat[gts], e["missed"][gts])]
        det_labels = [index[c] + (2 * k if bad else 0) for c, bad in zip(m.det_cat[dets], e["false"][dets])]
        tile, boxes = fit_to_cell(image, _xyxy(m.gt_box[gts]), 400)
        left = draw_boxes(tile, boxes, gt_labels, shown_names)
        tile, boxes = fit_to_cell(image, _xyxy(m.det_box[dets]), 400)
        right = draw_boxes(tile, boxes, det_labels, shown_names, scores=m.det_score[dets])
        for img, text in ((left, f"image {image_id}: {missed} missed"), (right, f"{false} false")):
            cv2.putText(img, text, (4, img.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(img, text, (4, img.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                        cv2.LINE_AA)
        tiles += [left, right]
    if not tiles:
        return None
    cv2.imwrite(path, image_grid(tiles, columns=4, cell=400))
    return path


def _xyxy(boxes: np.ndarray) -> np.ndarray:
    return np.c_[boxes[:, :2], boxes[:, :2] + boxes[:, 2:]]
