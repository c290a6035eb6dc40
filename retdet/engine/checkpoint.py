"""Checkpoints: fvcore's Checkpointer, written atomically, loaded with weights_only=True, plus the
random-number-generator states needed for an exact resume."""
from __future__ import annotations

import os
import random
from typing import Any, Dict

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer as _FvcoreCheckpointer


class Checkpointer(_FvcoreCheckpointer):
    """fvcore's Checkpointer with two changes: a checkpoint (and the ``last_checkpoint`` pointer) is
    written to a temporary file and renamed, so a run killed mid-write never leaves a truncated
    checkpoint behind; files are read with ``weights_only=True`` (no arbitrary code on load)."""

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data: Dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        path = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", path)
        _atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(os.path.basename(path))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        _atomic_write(os.path.join(self.save_dir, "last_checkpoint"),
                      lambda f: f.write(last_filename_basename.encode()))

    def _load_file(self, f: str) -> Dict[str, Any]:
        if not os.path.isfile(f):
            raise FileNotFoundError(f"checkpoint not found: {f}")
        return torch.load(f, map_location="cpu", weights_only=True)


def _atomic_write(path: str, write) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
