"""Evaluating a model on its config's test set: the test loader and evaluator built from the config."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from torch import nn

from retdet.data import build_test_loader, register_from_config
from retdet.registry import EVALUATORS, build
from retdet.utils import comm

from .inference import inference_on_dataset


def evaluate(cfg: Mapping, model: nn.Module, *, output_dir: Optional[str], amp_dtype=None) -> Dict[str, Any]:
    """COCO evaluation of ``model`` on the config's test set (each image on exactly one worker)."""
    register_from_config(cfg["dataloader"].get("register", []))  # --eval-only comes here directly
    test = cfg["dataloader"]["test"]
    loader, dataset = build_test_loader(test, input_format=cfg["model"].get("input_format", "BGR"),
                                        rank=comm.get_rank(), world_size=comm.get_world_size())
    evaluator_cfg = dict(test.get("evaluator", cfg["dataloader"].get("evaluator", {"type": "COCOEvaluator"})))
    evaluator = build(evaluator_cfg, EVALUATORS, where="dataloader.evaluator", dataset=dataset.info,
                      output_dir=output_dir)
    return inference_on_dataset(model, loader, evaluator, amp_dtype=amp_dtype)
