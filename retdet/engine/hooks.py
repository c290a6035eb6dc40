"""Training hooks: called around every iteration. Register your own in retdet.registry.HOOKS and
list them in ``train.hooks`` (e.g. ``[dict(type="MyHook", every=100)]``)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, List, Mapping

from retdet.registry import HOOKS

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer


class HookBase:
    """Override any of these. ``self.trainer`` is set before ``before_train``; ``trainer.iter`` is
    the current iteration (0-based).

    ``after_metrics`` and ``after_eval`` are called on the main process only (rank 0): what an
    experiment tracker logs (retdet/engine/trackers.py)."""

    trainer: "Trainer"

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_metrics(self, iteration: int, values: Mapping[str, float]) -> None:
        """Every record written to metrics.json (losses, lr, evaluation numbers, validation loss...)."""

    def after_eval(self, results: Mapping[str, Any], eval_dir: str) -> None:
        """After each evaluation: ``results`` as :func:`retdet.evaluation.evaluate.evaluate` returns
        them (``results["bbox"]["AP"]``, ``results["per_class"]``...); ``eval_dir`` holds its files
        (coco_results.json, pr_curves.png, detections.png)."""


@HOOKS.register()
class StopAtIteration(HookBase):
    """Ends training after iteration ``iteration`` (a shorter run of the same schedule)."""

    def __init__(self, *, iteration: int) -> None:
        self.iteration = iteration

    def after_step(self) -> None:
        if self.trainer.iter >= self.iteration:
            self.trainer.stop_requested = True


def _rss_mb(pid: str = "self") -> float:
    """Resident memory of a process in MB (Linux /proc; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def _children() -> List[str]:
    pids: List[str] = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                pids += f.read().split()
    except OSError:
        pass
    return pids


@HOOKS.register()
class ResourceMonitor(HookBase):
    """Every ``period`` iterations, writes this process's resident memory, that of its children (the
    data-loader workers) and its open file descriptors to metrics.json (``rss_mb``,
    ``children_rss_mb``, ``open_fds``): what a leak check over a long run reads (tools/soak.py)."""

    def __init__(self, *, period: int = 100) -> None:
        self.period = period

    def after_step(self) -> None:
        if (self.trainer.iter + 1) % self.period:
            return
        try:
            fds = float(len(os.listdir("/proc/self/fd")))
        except OSError:
            fds = float("nan")
        self.trainer.metrics.write(self.trainer.iter, {
            "rss_mb": _rss_mb(), "children_rss_mb": sum(_rss_mb(p) for p in _children()), "open_fds": fds})
