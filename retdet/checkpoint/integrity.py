"""Checkpoint integrity: a SHA-256 recorded beside each checkpoint at save time, checked before loading.

``model_0000999.pth`` gets ``model_0000999.pth.sha256`` in ``sha256sum`` format, so
``sha256sum -c model_0000999.pth.sha256`` checks it by hand too. A checkpoint without one (older
runs, files from elsewhere) counts as intact when torch can read it whole.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from typing import Any, Optional

import torch

CHECKSUM_SUFFIX = ".sha256"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is truncated, altered or unreadable; the message names it and what to do."""

    def __init__(self, path: str, problem: str, message: Optional[str] = None) -> None:
        self.path, self.problem = path, problem
        super().__init__(message or f"checkpoint {path} is corrupt: {problem}. Use another checkpoint of the run "
                                    f"(its folder keeps the last few) or re-create this one.")


def sha256_file(path: str, *, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_path(path: str) -> str:
    return path + CHECKSUM_SUFFIX


def checksum_line(digest: str, path: str) -> bytes:
    """The ``sha256sum`` line for ``path`` (named relative to its folder, where the sidecar lives)."""
    return f"{digest}  {os.path.basename(path)}\n".encode()


def recorded_checksum(path: str) -> Optional[str]:
    """The digest recorded beside ``path``, or None when there is none (or it is unreadable)."""
    try:
        with open(checksum_path(path)) as f:
            digest = f.read().split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return digest if len(digest) == 64 else None


def checksum_problem(path: str) -> Optional[str]:
    """Why ``path`` differs from the checksum recorded beside it, or None (equal, or none recorded)."""
    expected = recorded_checksum(path)
    if expected is None:
        return None
    actual = sha256_file(path)
    if actual == expected:
        return None
    return (f"SHA-256 {actual[:12]}... differs from the {expected[:12]}... recorded when it was saved "
            f"({os.path.getsize(path)} bytes now): truncated or altered")


def load_checkpoint_file(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` after checking the recorded checksum; a truncated,
    altered or unreadable file raises :class:`CorruptCheckpointError` naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    problem = checksum_problem(path)
    if problem is None:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:
            if "weights_only" in str(e) and "Unsupported global" in str(e):
                raise  # intact, but holds objects weights_only refuses: torch's message says what to do
            problem = f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'empty file?'})"
    raise CorruptCheckpointError(path, problem)


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be used as a checkpoint, or None when it is intact (its recorded checksum
    matches; without one, torch reads the whole file)."""
    if not os.path.isfile(path):
        return "file not found"
    if recorded_checksum(path) is not None:
        return checksum_problem(path)
    try:
        load_checkpoint_file(path)
    except CorruptCheckpointError as e:
        return e.problem
    return None
