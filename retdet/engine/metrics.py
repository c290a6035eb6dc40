"""Training metrics: windowed medians for the console log; every value for metrics.json and TensorBoard."""
from __future__ import annotations

import json
import os
import statistics
from collections import defaultdict, deque
from typing import Callable, Dict, List, Mapping, Optional

from retdet.utils import comm


class MetricsLog:
    """Windowed medians for the console, every value for metrics.json (JSON lines), and
    TensorBoard when it is installed."""

    def __init__(self, output_dir: Optional[str], window: int = 20, *, start_iter: int = 0) -> None:
        self.window = window
        self.history: Dict[str, deque] = defaultdict(lambda: deque(maxlen=window))
        self.json_path = os.path.join(output_dir, "metrics.json") if output_dir and comm.is_main_process() else None
        if self.json_path and os.path.exists(self.json_path):
            self._drop_records_from(start_iter)
        # called with (iteration, values) for every record written (the hooks' after_metrics)
        self.listeners: List[Callable[[int, Mapping[str, float]], None]] = []
        self.tb = None
        if self.json_path:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step: TensorBoard hides what a killed run logged past the resume point
                self.tb = SummaryWriter(os.path.join(output_dir, "tensorboard"), purge_step=start_iter or None)
            except ImportError:  # TensorBoard is optional
                self.tb = None

    def _drop_records_from(self, start_iter: int) -> None:
        """A new run (start_iter 0) starts a new record; a resumed one keeps the records before its
        checkpoint and drops those a killed run wrote after it (they are about to be written again)."""
        kept = []
        with open(self.json_path) as f:
            for line in f:
                try:
                    if int(json.loads(line)["iteration"]) < start_iter:
                        kept.append(line if line.endswith("\n") else line + "\n")
                except (ValueError, KeyError, TypeError):  # a line cut short by the kill
                    continue
        tmp = self.json_path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, self.json_path)

    def put(self, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            self.history[k].append(float(v))

    def median(self, key: str) -> float:
        return statistics.median(self.history[key]) if self.history[key] else float("nan")

    def latest(self, key: str) -> float:
        return self.history[key][-1] if self.history[key] else float("nan")

    def write(self, iteration: int, values: Mapping[str, float]) -> None:
        if not self.json_path:
            return
        with open(self.json_path, "a") as f:
            f.write(json.dumps({"iteration": iteration, **{k: float(v) for k, v in values.items()}}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, iteration)
        for listener in self.listeners:
            listener(iteration, values)
