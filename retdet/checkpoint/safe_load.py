"""Reading other frameworks' weight files without running code from them.

A pickle can name any importable callable, so ``pickle.load`` on a downloaded file runs whatever it
says. Two readers that never do:

- ``read_pickle``: numpy-array pickles (Detectron2 and Caffe2 ``.pkl``): numpy's array
  reconstruction and plain containers are allowed, anything else is refused, naming the global.
- ``read_torch_file``: ``torch.load(weights_only=True)``, where the objects a training framework
  stores beside the weights (MMEngine's log buffers, numpy arrays) load as inert stand-ins instead
  of failing the load: nothing of theirs is imported or called, and the weights are read by torch's
  own restricted unpickler.
"""
from __future__ import annotations

import pickle
from typing import Any, Dict, Mapping, Tuple

import numpy as np
import torch
from iopath.common.file_io import PathManager

_paths = PathManager()

# (module, name) pairs a numpy weight pickle needs; numpy 2 moved numpy.core to numpy._core.
_ALLOWED = {
    (core, name)
    for core in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
        ("_codecs", "encode")}  # protocol-2 pickles of bytes go through codecs.encode (harmless)


class RefusedGlobalError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list."""


class _ArraysOnly(pickle.Unpickler):
    def __init__(self, file, path: str) -> None:
        super().__init__(file, encoding="latin1")  # Caffe2-era files were written by Python 2
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise RefusedGlobalError(
            f"{self.path}: refused to load {module}.{name}: a weight pickle should hold only numpy arrays. "
            "If you trust this file, convert it to a state dict of tensors yourself and pass that instead.")


def read_pickle(path: str) -> Any:
    """The object in ``path`` (any iopath path), allowing numpy arrays and containers only."""
    if not _paths.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with _paths.open(path, "rb") as f:
        try:
            return _ArraysOnly(f, path).load()
        except RefusedGlobalError:
            raise
        except Exception as e:  # truncated or not a pickle at all
            raise ValueError(f"{path}: not a readable weight pickle ({type(e).__name__}: {e})") from e


def arrays_to_tensors(arrays: Mapping[str, Any], path: str = "") -> Dict[str, torch.Tensor]:
    """{name: numpy array (or tensor)} -> {name: tensor}; anything else is an error naming the key."""
    out = {}
    for key, value in arrays.items():
        if isinstance(value, np.ndarray):
            out[key] = torch.from_numpy(np.ascontiguousarray(value))
        elif isinstance(value, torch.Tensor):
            out[key] = value
        else:
            raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}, not an array")
    return out


class _Inert:
    """Stands in for a non-weight object of a checkpoint: takes any arguments and state, and does
    nothing with them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def read_torch_file(path: str) -> Tuple[Any, list]:
    """(the object in a torch checkpoint, names of the globals replaced by inert stand-ins).

    torch's own weights-only unpickler reads the file (an exact allow-list: tensors, containers,
    numbers); each other global the file names (framework classes, numpy objects, or anything a
    malicious file names, such as ``os.system``) is allowed only as an ``_Inert`` class of that
    name, so calling it does nothing. TorchScript archives and legacy files that need more are
    refused by torch."""
    if not _paths.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    local = _paths.get_local_path(path)
    try:
        unsafe = list(torch.serialization.get_unsafe_globals_in_checkpoint(local))
    except Exception:  # not a zip checkpoint: torch's weights-only reader decides alone
        unsafe = []
    stubs = [(type(name.rsplit(".", 1)[-1], (_Inert,), {"__module__": name.rsplit(".", 1)[0]}), name)
             for name in unsafe]
    try:
        with torch.serialization.safe_globals(stubs):
            data = torch.load(local, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch checkpoint, truncated, or state that only code could restore
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        reason = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), lines[0] if lines else "")
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {reason[:300]}). "
                         "If it holds weights, save its state_dict alone (torch.save(ckpt['state_dict'], ...)) "
                         "where the framework is installed, and convert that.") from e
    return data, sorted(unsafe)
