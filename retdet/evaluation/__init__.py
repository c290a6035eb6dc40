"""Evaluation: the COCO evaluator, inference over a dataset, plots."""
from .coco_evaluator import METRICS, COCOEvaluator, evaluate_coco
from .inference import inference_on_dataset

__all__ = ["COCOEvaluator", "METRICS", "evaluate_coco", "inference_on_dataset"]
