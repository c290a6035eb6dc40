"""The best value of a validation metric over a run, and stopping early when it stops improving.

``train.early_stop = dict(metric="AP", patience=5, min_delta=0.1)`` stops training after 5 evaluations
in a row that did not beat the reference value by more than 0.1 AP; ``metric="val_loss"`` watches the
validation loss (``train.val_loss_period``) instead, lower being better. Without it, the trainer still
keeps ``model_best.pth`` by AP. The state (best value and iteration, evaluations without improvement)
is a checkpointable, so a resumed run stops exactly where an uninterrupted one would.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional

from retdet.evaluation.coco_evaluator import METRICS

# short names -> the metrics.json key the trainer writes for them
ALIASES = {**{m: f"bbox/{m}" for m in METRICS}, "val_loss": "val/total_loss"}
VAL_KEYS = ("val/total_loss", "val/loss_cls", "val/loss_box_reg")
OPTIONS = ("metric", "patience", "min_delta", "mode")


class BestMetric:
    """Tracks one metric across evaluations.

    Args:
        metric: "AP", "AP50", ... (any COCO metric, as ``bbox/<name>`` in metrics.json), "val_loss" or
            a ``val/...`` key; see ``ALIASES`` and ``VAL_KEYS``.
        patience: stop after this many evaluations in a row without an improvement; None never stops.
        min_delta: an improvement must beat the reference value by more than this.
        mode: "max" or "min"; by default "min" for losses and "max" for AP/AR.
        where: the config key, for error messages.

    ``best`` (strictly the best value seen, what ``model_best.pth`` holds) and the patience reference
    differ when ``min_delta`` > 0: a value that beats ``best`` by less than ``min_delta`` becomes the
    best checkpoint without resetting the patience count.
    """

    def __init__(self, *, metric: str = "AP", patience: Optional[int] = None, min_delta: float = 0.0,
                 mode: Optional[str] = None, where: str = "train.early_stop") -> None:
        key = ALIASES.get(metric, metric)
        if key not in ALIASES.values() and key not in VAL_KEYS:
            raise ValueError(f"{where}.metric={metric!r} is not a metric the trainer computes: one of "
                             f"{sorted(ALIASES)} or {list(VAL_KEYS)}")
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
            raise ValueError(f"{where}.patience={patience!r} must be an integer >= 1 (the number of evaluations "
                             f"in a row without improvement before training stops)")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or not min_delta >= 0:
            raise ValueError(f"{where}.min_delta={min_delta!r} must be a number >= 0")
        mode = mode or ("min" if key.startswith("val/") else "max")
        if mode not in ("min", "max"):
            raise ValueError(f"{where}.mode={mode!r} must be 'min' or 'max'")
        self.key, self.patience, self.min_delta, self.mode = key, patience, float(min_delta), mode
        self.sign = 1.0 if mode == "max" else -1.0
        self.best = -math.inf * self.sign
        self.best_iter = -1
        self.reference = self.best
        self.bad_evals = 0

    @classmethod
    def from_config(cls, train: Mapping[str, Any]) -> "BestMetric":
        """``train.early_stop`` (None: track AP for ``model_best.pth``, never stop), checked against the
        periods that compute its metric."""
        node = train.get("early_stop")
        if node is None:
            return cls(metric="AP")
        if not isinstance(node, Mapping):
            raise ValueError(f"train.early_stop must be a dict(metric=, patience=, min_delta=) or None, got {node!r}")
        unknown = sorted(set(node) - set(OPTIONS))
        if unknown:
            raise ValueError(f"train.early_stop: unknown option(s) {unknown}; it takes {list(OPTIONS)}")
        if "patience" not in node:
            raise ValueError("train.early_stop needs patience=N (evaluations without improvement before stopping)")
        best = cls(**node)
        period_key = "val_loss_period" if best.key.startswith("val/") else "eval_period"
        if not int(train.get(period_key) or 0) > 0:
            raise ValueError(f"train.early_stop watches {best.key}, which is computed every train.{period_key} "
                             f"iterations; set train.{period_key} > 0 (it is {train.get(period_key)!r})")
        return best

    def update(self, value: float, iteration: int) -> bool:
        """Record the metric's ``value`` at ``iteration``; True when it is the best so far."""
        improved = self.sign * value > self.sign * self.best
        if improved:
            self.best, self.best_iter = float(value), int(iteration)
        if self.sign * value > self.sign * self.reference + self.min_delta:
            self.reference, self.bad_evals = float(value), 0
        else:
            self.bad_evals += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience

    def state_dict(self) -> Dict[str, Any]:
        return {"key": self.key, "best": self.best, "best_iter": self.best_iter, "reference": self.reference,
                "bad_evals": self.bad_evals}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["key"] != self.key:  # the config now watches another metric: start its record afresh
            return
        self.best, self.best_iter = float(state["best"]), int(state["best_iter"])
        self.reference, self.bad_evals = float(state["reference"]), int(state["bad_evals"])
