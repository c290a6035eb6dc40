"""COCO box evaluation: AP/AR tables, per-class AP, a results json, and pictures.

The numbers come from pycocotools (the reference) or, with ``backend="faster_coco_eval"`` (an
optional install: ``pip install retdet[fast-eval]``), from faster-coco-eval's C++ implementation of
the same algorithm, which gives the same numbers (tests/test_evaluation_backends.py) in less time on
large sets.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from retdet.data.records import DatasetInfo
from retdet.registry import EVALUATORS
from retdet.structures import Detections, ImageSample
from retdet.utils import comm
from retdet.utils.logger import format_table

logger = logging.getLogger("retdet")

BACKENDS = ("pycocotools", "faster_coco_eval")
METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


@EVALUATORS.register()
class COCOEvaluator:
    """Collects detections over a dataset and scores them against its COCO json.

    Args:
        dataset: the evaluated dataset (its json file and label -> category id map).
        output_dir: where coco_results.json and the plots go (None: nowhere).
        plots: write pr_curves.png and detections.png (rank 0).
        num_examples: images in the example grid.
        backend: "pycocotools" or "faster_coco_eval" (same numbers, faster; an optional install).

    Each image is counted once even if several workers (or batches) report it. Numbers are
    percentages, as COCO reports them.
    """

    def __init__(self, *, dataset: DatasetInfo, output_dir: Optional[str] = None, plots: bool = True,
                 num_examples: int = 8, backend: str = "pycocotools") -> None:
        self.dataset, self.output_dir, self.plots, self.num_examples = dataset, output_dir, plots, num_examples
        self.backend = check_backend(backend)
        self.reset()

    def reset(self) -> None:
        self._results: List[Dict[str, Any]] = []
        self._image_ids: List[int] = []
        self._examples: List[Any] = []

    def process(self, samples: Sequence[ImageSample], detections: Sequence[Detections]) -> None:
        cat_ids = self.dataset.label_to_category_id
        for sample, det in zip(samples, detections):
            image_id = int(sample.image_id)
            self._image_ids.append(image_id)
            boxes = det.boxes.detach().cpu().numpy().astype(np.float64)
            boxes[:, 2:] -= boxes[:, :2]
            for box, score, label in zip(boxes.tolist(), det.scores.tolist(), det.labels.tolist()):
                self._results.append({"image_id": image_id, "category_id": int(cat_ids[int(label)]),
                                      "bbox": [round(v, 3) for v in box], "score": round(float(score), 5)})
            if len(self._examples) < self.num_examples:
                self._examples.append((sample.image.cpu().numpy(), det.boxes.cpu().numpy(), det.labels.cpu().numpy(),
                                       det.scores.cpu().numpy(), sample.original_size))

    def evaluate(self) -> Dict[str, Any]:
        """All ranks call it; rank 0 returns {"bbox": {metric: value}, "per_class": {name: AP}}, others {}."""
        gathered = comm.all_gather_object((self._results, self._image_ids))
        if not comm.is_main_process():
            return {}
        seen, results, image_ids = set(), [], []
        for results_r, ids_r in gathered:
            new_ids = [i for i in dict.fromkeys(ids_r) if i not in seen]
            new_set = set(new_ids)
            results.extend(r for r in results_r if r["image_id"] in new_set)
            image_ids.extend(new_ids)
            seen.update(new_ids)
        if self.output_dir:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, "coco_results.json"), "w") as f:
                json.dump(results, f)
        ground_truth = self.dataset.coco if self.dataset.coco is not None else self.dataset.json_file
        if not ground_truth:
            raise ValueError(f"dataset {self.dataset.name!r} has no single ground truth to evaluate against (several "
                             "VOC/YOLO sets merged, or a set registered in code without a json file): evaluate on "
                             "one dataset at a time (dataloader.test.dataset.names = [one name])")
        metrics, per_class, coco_eval = evaluate_coco(ground_truth, results, sorted(image_ids),
                                                      self.dataset.class_names, self.dataset.label_to_category_id,
                                                      backend=self.backend)
        logger.info("Evaluation on %s (%d images):\n%s", self.dataset.name, len(image_ids),
                    format_table([[f"{metrics[m]:.2f}" for m in METRICS]], METRICS))
        output: Dict[str, Any] = {"bbox": metrics, "per_class": per_class}
        if self.dataset.source_format == "voc" and self.dataset.coco is not None:
            from .voc_metric import voc_detection_map

            voc = voc_detection_map(self.dataset.coco, results, sorted(image_ids))
            output["voc"] = {k: voc[k] for k in ("mAP50_voc07", "mAP50_area")}
            logger.info("Pascal VOC mAP@0.5 (difficult objects ignored): 11-point (VOC07) %.2f, area %.2f\n%s",
                        voc["mAP50_voc07"], voc["mAP50_area"],
                        format_table(sorted((self.dataset.class_names[self.dataset.label_to_category_id.index(c)],
                                             a, b) for c, (a, b) in voc["per_class"].items()),
                                     ["class", "AP50 (11-point)", "AP50 (area)"], floatfmt=".2f"))
        logger.info("Per-class AP:\n%s", format_table(sorted(per_class.items()), ["class", "AP"], floatfmt=".2f"))
        if self.plots and self.output_dir and coco_eval is not None:
            from .plots import plot_examples, plot_pr_curves

            paths = [plot_pr_curves(coco_eval, self.dataset.class_names, self.dataset.label_to_category_id,
                                    os.path.join(self.output_dir, "pr_curves.png")),
                     plot_examples(self._examples, self.dataset.class_names,
                                   os.path.join(self.output_dir, "detections.png"))]
            logger.info("Plots: %s", ", ".join(paths))
        return output


def check_backend(backend: str) -> str:
    """``backend`` if it is known and importable, else a clear error saying what to do."""
    if backend not in BACKENDS:
        raise ValueError(f"dataloader.evaluator.backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "faster_coco_eval":
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError as e:
            raise ImportError("dataloader.evaluator.backend='faster_coco_eval' needs the faster-coco-eval package: "
                              "pip install 'retdet[fast-eval]' (or use backend='pycocotools')") from e
    return backend


def _coco_api(backend: str):
    """(COCO, COCOeval) classes of ``backend``."""
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


def evaluate_coco(ground_truth: Union[str, Dict[str, Any]], results: List[Dict[str, Any]], image_ids: Sequence[int],
                  class_names: Sequence[str], category_ids: Sequence[int], *, backend: str = "pycocotools"):
    """(metrics, per-class AP, the COCOeval object or None) for ``results`` on ``image_ids``, against
    ``ground_truth``: a COCO json file, or the same content as a dict (datasets converted in memory)."""
    COCO, COCOeval = _coco_api(check_backend(backend))

    if not results:
        logger.warning("no detections at all: every metric is 0")
        return {m: 0.0 for m in METRICS}, {n: 0.0 for n in class_names}, None
    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(ground_truth, dict):
            gt = COCO()
            gt.dataset = copy.deepcopy(ground_truth)  # fill_eval_defaults must not change the dataset's own
            gt.createIndex()
        else:
            gt = COCO(ground_truth)
        fill_eval_defaults(gt)
        dt = gt.loadRes(results)
        coco_eval = COCOeval(gt, dt, "bbox")
        coco_eval.params.imgIds = list(image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    # faster-coco-eval appends extra numbers (AR50, AR75, ...) after COCO's twelve: zip stops at twelve.
    metrics = {m: float(v) * 100 if v >= 0 else float("nan") for m, v in zip(METRICS, coco_eval.stats)}
    precision = coco_eval.eval["precision"]  # (IoU thresholds, recall points, classes, areas, max dets)
    per_class = {}
    for k, (name, cid) in enumerate(zip(class_names, category_ids)):
        idx = coco_eval.params.catIds.index(cid)
        p = precision[:, :, idx, 0, -1]
        p = p[p > -1]
        per_class[name] = float(p.mean() * 100) if p.size else float("nan")
    return metrics, per_class, coco_eval


def fill_eval_defaults(gt) -> None:
    """COCOeval reads ``area`` and ``iscrowd`` of every ground-truth box and fails with a bare KeyError
    where a file (valid for training, see retdet.data.coco) leaves them out: take the box area and
    "not crowd", as the loader does."""
    for ann in gt.dataset.get("annotations", []):
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
