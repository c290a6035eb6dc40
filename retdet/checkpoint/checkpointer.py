"""Checkpoints: fvcore's Checkpointer, written atomically with a checksum, verified and loaded with
weights_only=True, plus the random-number-generator states needed for an exact resume."""
from __future__ import annotations

import logging
import os
import random
import shutil
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer as _FvcoreCheckpointer

from retdet.pruning.widths import WIDTHS_KEY

from .integrity import (CorruptCheckpointError, checkpoint_problem, checksum_line, checksum_path, load_checkpoint_file,
                        sha256_file)

logger = logging.getLogger("retdet")


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, permissions); nothing that was there is replaced."""


class Checkpointer(_FvcoreCheckpointer):
    """fvcore's Checkpointer, made safe against faults:

    - a checkpoint (and the ``last_checkpoint`` pointer) is written to a temporary file and renamed,
      so a run killed mid-write never leaves a truncated checkpoint under a checkpoint's name, and a
      failed write (disk full, permissions) replaces nothing and raises :class:`CheckpointWriteError`;
    - each checkpoint gets a SHA-256 beside it (``NAME.pth.sha256``), checked on load;
    - :meth:`find_resume_checkpoint` skips a corrupt newest checkpoint for the newest intact one;
    - :meth:`prune_old` keeps the newest periodic checkpoints and removes older ones with their checksums;
    - files are read with ``weights_only=True`` (no arbitrary code on load).
    """

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data: Dict[str, Any] = {"model": self.model.state_dict()}
        widths = self.model.pruned_widths
        if widths:  # a pruned network: its layer widths travel with its weights (retdet/pruning/widths.py)
            data[WIDTHS_KEY] = widths
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        path = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", path)
        try:
            self._write(path, data)
        except (OSError, RuntimeError) as e:  # torch's writer reports a failed write as a RuntimeError
            raise self._write_error(path, e) from e
        self.tag_last_checkpoint(os.path.basename(path))

    @staticmethod
    def _write(path: str, data: Dict[str, Any]) -> None:
        # The checksum is in place before the checkpoint gets its name: a crash in between can only
        # make an old file of that name look corrupt (and be skipped), never let a bad file pass.
        def record_checksum(tmp: str) -> None:
            digest = sha256_file(tmp)
            _atomic_write(checksum_path(path), lambda f: f.write(checksum_line(digest, path)))

        _atomic_write(path, lambda f: torch.save(data, f), before_rename=record_checksum)

    def _write_error(self, path: str, error: BaseException) -> CheckpointWriteError:
        previous = self.get_checkpoint_file() if self.has_checkpoint() else "none yet"
        try:  # torch's writer hides the OS error (ENOSPC, EFBIG) behind its own message
            free = f"{shutil.disk_usage(self.save_dir).free / 2**30:.2f} GiB free on its disk"
        except OSError:
            free = "free space unknown"
        return CheckpointWriteError(
            f"could not write checkpoint {path} ({free}): {type(error).__name__}: {error}. Nothing was replaced: "
            f"the earlier checkpoints and last_checkpoint ({previous}) are as they were. Free disk space or fix the "
            f"folder's permissions, then continue the run with --resume.")

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        try:
            _atomic_write(path, lambda f: f.write(last_filename_basename.encode()))
        except OSError as e:
            raise self._write_error(path, e) from e

    def _load_file(self, f: str) -> Dict[str, Any]:
        return load_checkpoint_file(f)

    # ---- choosing what to resume from ------------------------------------------------------------

    def candidates(self) -> List[str]:
        """The folder's checkpoints, newest first: the one ``last_checkpoint`` names, then
        ``model_final.pth``, then ``model_NNNNNNN.pth`` by iteration, then any other (e.g.
        ``model_best.pth``) by modification time."""
        if not self.save_dir or not os.path.isdir(self.save_dir):
            return []
        named = [self.get_checkpoint_file()] if self.has_checkpoint() else []

        def age(f: str):
            stem = f[:-len(".pth")]
            if stem == "model_final":
                return (0, 0.0)
            if stem.startswith("model_") and stem[6:].isdigit():
                return (1, -int(stem[6:]))
            return (2, -os.path.getmtime(os.path.join(self.save_dir, f)))

        files = sorted((f for f in os.listdir(self.save_dir) if f.endswith(".pth")), key=age)
        ordered = named + [os.path.join(self.save_dir, f) for f in files]
        return list(dict.fromkeys(os.path.normpath(p) for p in ordered))

    def find_resume_checkpoint(self) -> Optional[str]:
        """The newest intact checkpoint in the folder (None when there is none at all). A corrupt or
        missing newer one is skipped with a warning naming it; when every one is corrupt, raises
        :class:`CorruptCheckpointError` listing them."""
        problems = []
        for path in self.candidates():
            problem = checkpoint_problem(path)
            if problem is None:
                if problems:
                    logger.warning("Using %s, the newest intact checkpoint", path)
                return path
            logger.warning("Skipping checkpoint %s: %s", path, problem)
            problems.append(f"{path}: {problem}")
        if problems:
            listing = "\n  ".join(problems)
            raise CorruptCheckpointError(self.save_dir, listing, (
                f"no intact checkpoint in {self.save_dir} to continue from:\n  {listing}\nStart the run afresh "
                f"(without --resume), or give an intact copy with train.init_checkpoint / --weights."))
        return None

    # ---- retention -------------------------------------------------------------------------------

    def prune_old(self, keep: int) -> None:
        """Remove all but the newest ``keep`` periodic checkpoints (``model_0NNNNNN.pth``), each with its
        checksum; other names (``model_final``, ``model_best``) stay. ``keep`` <= 0 keeps every one."""
        if not self.save_dir or not self.save_to_disk or keep <= 0:
            return
        periodic = sorted(f for f in os.listdir(self.save_dir) if f.startswith("model_0") and f.endswith(".pth"))
        for old in periodic[:-keep]:
            path = os.path.join(self.save_dir, old)
            for f in (path, checksum_path(path)):
                if os.path.exists(f):
                    os.remove(f)


def _atomic_write(path: str, write: Callable[[Any], Any],
                  before_rename: Optional[Callable[[str], None]] = None) -> None:
    """``write(f)`` into a temporary file, then rename it to ``path``; on any failure the temporary
    file is removed and ``path`` is untouched. ``before_rename(tmp)`` runs on the complete file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_rename is not None:
            before_rename(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class RNGState:
    """Python, NumPy, torch (and CUDA) generator states, as a checkpointable (tensors and ints only,
    so weights_only loading accepts them)."""

    def state_dict(self) -> Dict[str, Any]:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "python": random.getstate(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached": float(cached)},
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
