"""Loads the compiled extension (retdet._C) once, or says clearly that it is missing.

Without it, every op in retdet.ops runs its pure-PyTorch reference: correct, slower. Set
``RETDET_DISABLE_EXTENSION=1`` to force that path (the tests do, to check it).
"""
from __future__ import annotations

import os
import warnings
from typing import Optional

import torch  # noqa: F401  (loads libc10/libtorch, which retdet._C links against)

_C = None
_LOAD_ERROR: Optional[str] = None

if os.environ.get("RETDET_DISABLE_EXTENSION", "0") == "1":
    _LOAD_ERROR = "disabled by RETDET_DISABLE_EXTENSION=1"
else:
    try:
        from retdet import _C  # noqa: F811  (registers the torch.ops.retdet kernels)
    except ImportError as e:  # not built, or built against another torch
        _LOAD_ERROR = f"{type(e).__name__}: {e}"

_warned = False


def has_extension() -> bool:
    """Whether the compiled ops are loaded."""
    return _C is not None


def extension_has_cuda() -> bool:
    """Whether the loaded extension has its CUDA kernels."""
    return _C is not None and bool(_C.compiled_with_cuda())


def load_error() -> Optional[str]:
    return _LOAD_ERROR


def warn_fallback() -> None:
    """Warn once per process that ops fall back to pure PyTorch."""
    global _warned
    if _warned or _C is not None:
        return
    _warned = True
    warnings.warn(
        f"retdet's compiled ops are not available ({_LOAD_ERROR}); using the pure-PyTorch references, "
        "which are slower. Build them with `pip install --no-build-isolation -e .` (or `make install`).",
        RuntimeWarning,
        stacklevel=3,
    )
