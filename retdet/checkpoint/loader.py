"""Loading a (converted) checkpoint into a model, with a clear report."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

from iopath.common.file_io import PathManager
from torch import Tensor, nn

from retdet.utils.logger import format_table

from .integrity import load_checkpoint_file

_paths = PathManager()


@dataclass
class IncompatibleKeys:
    missing: List[str] = field(default_factory=list)      # in the model, not in the checkpoint
    unexpected: List[str] = field(default_factory=list)   # in the checkpoint, not in the model

    def table(self) -> str:
        rows = [("missing (kept at init)", k) for k in self.missing] + [("unexpected (ignored)", k) for k in self.unexpected]
        return format_table(rows, ["status", "key"]) if rows else "all keys matched"


def read_checkpoint(path: str) -> Tuple[Mapping[str, Tensor], Optional[Dict[str, List[int]]]]:
    """(state dict, pruned widths or None) from ``path`` (any iopath path), loaded with
    weights_only=True after checking the checksum recorded beside it (a corrupt file raises
    CorruptCheckpointError naming it).

    Accepts a bare state dict or a training checkpoint holding it under "model" (and, for a pruned
    network, its layer widths under "pruned_widths": see retdet/pruning/widths.py).
    """
    from retdet.pruning.widths import widths_in_checkpoint

    if not _paths.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    data = load_checkpoint_file(_paths.get_local_path(path))
    widths = widths_in_checkpoint(data)
    if isinstance(data, Mapping) and "model" in data and isinstance(data["model"], Mapping):
        data = data["model"]
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a state dict, found {type(data).__name__}")
    return data, widths


def read_state_dict(path: str) -> Mapping[str, Tensor]:
    """The state dict of :func:`read_checkpoint`."""
    return read_checkpoint(path)[0]


def load_weights(model: nn.Module, path: str, *, logger: logging.Logger = None) -> IncompatibleKeys:
    """Load ``path`` into ``model`` non-strictly; report missing/unexpected keys as a table.

    A key whose shape differs from the model's is an error naming the key and both shapes (a
    silent skip would leave a randomly initialised layer behind).

    An int8 folder made by tools/quantize.py (or its .onnx file) is accepted too: the model's network
    then runs from it (see retdet/quantization/artifact.py); nothing is unpickled. A pruned checkpoint
    (tools/prune.py) first narrows the model's layers to its recorded widths.
    """
    from retdet.pruning.widths import apply_widths

    from retdet.quantization.artifact import attach_quantized, is_quantized_artifact

    if is_quantized_artifact(path):
        attach_quantized(model, path, logger=logger)
        return IncompatibleKeys()
    state, widths = read_checkpoint(path)
    if widths:
        replaced = apply_widths(model, widths, source=path)
        (logger or logging.getLogger("retdet")).info("%s is a pruned network: %d layers narrowed to its widths",
                                                     path, replaced)
    own = model.state_dict()
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        lines = "\n".join(f"  {k}: checkpoint {a} vs model {b}" for k, a, b in mismatched)
        raise ValueError(f"{path}: {len(mismatched)} tensor(s) have a different shape than the model's "
                         f"(wrong config, e.g. num_classes?):\n{lines}")
    result = model.load_state_dict(state, strict=False)
    keys = IncompatibleKeys(missing=list(result.missing_keys), unexpected=list(result.unexpected_keys))
    (logger or logging.getLogger("retdet")).info("Loaded %s\n%s", path, keys.table())
    return keys
