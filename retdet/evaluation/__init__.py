"""Evaluation: the COCO evaluator, inference over a dataset, plots.

A config's model on its test set: ``from retdet.evaluation.evaluate import evaluate`` (not re-exported here,
where the name would hide the module of the same name)."""
from .coco_evaluator import METRICS, COCOEvaluator, evaluate_coco
from .inference import inference_on_dataset

__all__ = ["COCOEvaluator", "METRICS", "evaluate_coco", "inference_on_dataset"]
