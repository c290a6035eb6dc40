"""``train.deterministic``: the same run twice gives the same losses and weights, bit for bit.

What is already deterministic without it: the initial weights (``train.seed``), the data order and
every augmentation (each sample's random generator is seeded by the sampler's per-position seed and
the image index, retdet/data/dataset.py, whichever worker loads it), the data workers' Python and
NumPy generators (seeded from the loader's seeded generator), and our own kernels (the focal loss
and NMS add their partial sums in a fixed order, no float atomics).

What the mode adds: the Python, NumPy and torch generators seeded in the training process,
``torch.use_deterministic_algorithms`` (deterministic kernels where torch has a choice; on CUDA
also cuDNN's deterministic algorithms without autotuning, and ``CUBLAS_WORKSPACE_CONFIG`` for
cuBLAS), and a list of the ops that ran but have no deterministic implementation. True: those ops
warn and are listed once in the log and in ``nondeterministic_ops.txt``; "strict": the first one is
an error naming it. Cost: see docs/training.md.
"""
from __future__ import annotations

import logging
import os
import random
import re
import warnings
from typing import List, Optional, Union

import numpy as np
import torch

logger = logging.getLogger("retdet")

# how torch words the warning of an op without a deterministic implementation (warn_only=True)
_NONDETERMINISTIC = re.compile(r"^(.*?) does not have a deterministic implementation")
CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs to be deterministic (CUDA's documentation)


def check_deterministic_option(value: object) -> Union[bool, str]:
    if value in (False, True, "strict"):
        return value
    raise ValueError(f"train.deterministic={value!r} must be False, True (nondeterministic ops are listed) or "
                     f"'strict' (they are errors)")


def seed_all(seed: int) -> None:
    """Python, NumPy and torch (all devices) generators of this process."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class DeterministicMode:
    """A context manager around the training loop; :meth:`step` around each step collects the ops
    that have no deterministic implementation. Restores torch's global settings on exit."""

    def __init__(self, mode: Union[bool, str], *, output_dir: Optional[str] = None) -> None:
        self.mode = check_deterministic_option(mode)
        self.output_dir = output_dir
        self.ops: List[str] = []

    @property
    def enabled(self) -> bool:
        return self.mode is not False

    def __enter__(self) -> "DeterministicMode":
        if not self.enabled:
            return self
        self._saved = (torch.are_deterministic_algorithms_enabled(),
                       torch.is_deterministic_algorithms_warn_only_enabled(),
                       torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
        # cuBLAS reads it when its handle is made: before the first matrix product on the GPU
        if "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
        torch.use_deterministic_algorithms(True, warn_only=self.mode != "strict")
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        return self

    def __exit__(self, *exc) -> None:
        if not self.enabled:
            return
        algorithms, warn_only, cudnn_deterministic, cudnn_benchmark = self._saved
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_deterministic, cudnn_benchmark

    def step(self) -> "_StepWatch":
        return _StepWatch(self)

    def record(self, messages: List[str]) -> None:
        new = []
        for message in messages:
            match = _NONDETERMINISTIC.match(message)
            if match and match.group(1) not in self.ops:
                self.ops.append(match.group(1))
                new.append(match.group(1))
        if not new:
            return
        logger.warning("train.deterministic: these ops ran without a deterministic implementation, so runs may "
                       "still differ: %s (train.deterministic='strict' makes them errors)", ", ".join(new))
        if self.output_dir:
            with open(os.path.join(self.output_dir, "nondeterministic_ops.txt"), "w") as f:
                f.write("".join(op + "\n" for op in self.ops))


class _StepWatch:
    """Records torch's nondeterminism warnings raised inside one step (and lets other warnings through)."""

    def __init__(self, mode: DeterministicMode) -> None:
        self.mode = mode

    def __enter__(self) -> None:
        if not self.mode.enabled:
            return
        self._catch = warnings.catch_warnings(record=True)
        self._caught = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc) -> None:
        if not self.mode.enabled:
            return
        self._catch.__exit__(*exc)
        ours = [str(w.message) for w in self._caught if _NONDETERMINISTIC.match(str(w.message))]
        for w in self._caught:  # everything else is shown as usual
            if not _NONDETERMINISTIC.match(str(w.message)):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.mode.record(ours)
