"""Evaluation benchmark: the COCO evaluator's backends on one synthetic ground truth and result set."""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from typing import Any, Dict, List, Tuple

import numpy as np


def synthetic_coco(num_images: int, num_classes: int = 5, seed: int = 0, detections_per_image: int = 0
                   ) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """(COCO json dict, detection results): objects of every size, a few crowd boxes, images without
    objects, and detections that are jittered copies of the objects (some with the wrong class),
    duplicates and false positives: every branch of the matching and accumulation.
    ``detections_per_image``: add low-scoring random boxes up to this many per image (a detector's
    100 at a 0.05 score threshold)."""
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for i in range(1, num_images + 1):
        w, h = int(rng.integers(200, 800)), int(rng.integers(200, 800))
        images.append({"id": i, "width": w, "height": h, "file_name": f"{i}.jpg"})
        for _ in range(int(rng.integers(0, 8))):
            bw, bh = float(rng.uniform(4, w / 2)), float(rng.uniform(4, h / 2))
            x, y = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
            cat = int(rng.integers(1, num_classes + 1))
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": cat, "bbox": [x, y, bw, bh],
                                "area": bw * bh, "iscrowd": int(rng.random() < 0.05)})
            for _ in range(int(rng.integers(0, 3))):
                j = rng.normal(0, 0.06, 4) * [bw, bh, bw, bh]
                label = cat if rng.random() < 0.8 else int(rng.integers(1, num_classes + 1))
                results.append({"image_id": i, "category_id": label,
                                "bbox": [x + j[0], y + j[1], max(bw + j[2], 1.0), max(bh + j[3], 1.0)],
                                "score": float(rng.random())})
        for _ in range(int(rng.integers(0, 4))):
            results.append({"image_id": i, "category_id": int(rng.integers(1, num_classes + 1)),
                            "bbox": [float(rng.uniform(0, w - 20)), float(rng.uniform(0, h - 20)),
                                     float(rng.uniform(5, 100)), float(rng.uniform(5, 100))],
                            "score": float(rng.random())})
        for _ in range(detections_per_image - sum(r["image_id"] == i for r in results[-detections_per_image:])):
            bw, bh = float(rng.uniform(4, w / 2)), float(rng.uniform(4, h / 2))
            results.append({"image_id": i, "category_id": int(rng.integers(1, num_classes + 1)),
                            "bbox": [float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh)), bw, bh],
                            "score": float(rng.uniform(0.05, 0.3))})
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, num_classes + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def evaluation_benchmark(num_images: int = 5000, runs: int = 3) -> List[Dict[str, Any]]:
    """Seconds per full evaluation (load, match, accumulate, summarise) with each backend, medians of
    ``runs``, interleaved; faster-coco-eval against pycocotools, and the largest AP difference."""
    from retdet.evaluation.coco_evaluator import METRICS, evaluate_coco

    gt, results = synthetic_coco(num_images)
    names, ids = [c["name"] for c in gt["categories"]], [c["id"] for c in gt["categories"]]
    image_ids = [im["id"] for im in gt["images"]]
    times: Dict[str, List[float]] = {"pycocotools": [], "faster_coco_eval": []}
    metrics: Dict[str, Dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gt.json")
        with open(path, "w") as f:
            json.dump(gt, f)
        for _ in range(runs):
            for backend in times:
                start = time.perf_counter()
                metrics[backend] = evaluate_coco(path, results, image_ids, names, ids, backend=backend)[0]
                times[backend].append(time.perf_counter() - start)
    ours, ref = statistics.median(times["faster_coco_eval"]), statistics.median(times["pycocotools"])
    diff = max(abs(metrics["faster_coco_eval"][m] - metrics["pycocotools"][m]) for m in METRICS)
    return [{"name": f"COCO evaluation, {num_images} images, {len(results)} detections "
                     f"(faster_coco_eval vs pycocotools; max metric difference {diff:.1e} points)",
             "ours": ours, "ref": ref, "unit": "s", "speedup": ref / ours}]


def error_analysis_benchmark(num_images: int = 5000, runs: int = 3) -> List[Dict[str, Any]]:
    """Seconds for tools/analyze_errors.py's analysis of a results file of ``num_images`` images with
    100 detections each (80 classes), medians of ``runs``, against one pycocotools evaluation of the same
    file: the analysis alone (matching, the eight oracles, confusion matrix, best-F1 thresholds) and
    the whole report (the analysis, per-class AP and the pictures; no image gallery) with each COCO
    backend installed (faster-coco-eval is optional)."""
    from retdet.evaluation import error_analysis as ea
    from retdet.evaluation.coco_evaluator import evaluate_coco
    from retdet.evaluation.confusion_matrix import confusion_matrix
    from retdet.evaluation.error_report import write_error_report

    gt, results = synthetic_coco(num_images, num_classes=80, detections_per_image=100)
    names, ids = [c["name"] for c in gt["categories"]], [c["id"] for c in gt["categories"]]
    image_ids = [im["id"] for im in gt["images"]]
    backends = ["pycocotools"]
    try:
        import faster_coco_eval  # noqa: F401

        backends.append("faster_coco_eval")
    except ImportError:
        pass
    times: Dict[str, List[float]] = {"analysis": [], "pycocotools": [], **{f"report {b}": [] for b in backends}}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            start = time.perf_counter()
            m = ea.match(gt, results)
            ea.error_breakdown(m)
            confusion_matrix(m)
            ea.precision_recall_at_best_f1(m)
            times["analysis"].append(time.perf_counter() - start)
            for backend in backends:
                start = time.perf_counter()
                write_error_report(gt, results, tmp, backend=backend)
                times[f"report {backend}"].append(time.perf_counter() - start)
            start = time.perf_counter()
            evaluate_coco(gt, results, image_ids, names, ids)
            times["pycocotools"].append(time.perf_counter() - start)
    ref = statistics.median(times["pycocotools"])
    what = f"{num_images} images, {len(results)} detections, 80 classes"
    rows = [("error analysis alone ({what}) vs a pycocotools evaluation".format(what=what), "analysis")]
    rows += [(f"the whole report, per-class AP by {b}, vs a pycocotools evaluation", f"report {b}") for b in backends]
    return [{"name": name, "ours": statistics.median(times[key]), "ref": ref, "unit": "s",
             "speedup": ref / statistics.median(times[key])} for name, key in rows]
