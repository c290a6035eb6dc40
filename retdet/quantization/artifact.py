"""The int8 artifact: a folder the tools accept wherever they accept a float32 checkpoint.

    DIR/network_int8.onnx   the quantized network (QDQ ONNX: protobuf, nothing to unpickle)
    DIR/quantization.json   how it was made (config, weights, backend, observer, calibration, sizes)

``--weights DIR`` (or ``DIR/network_int8.onnx``) makes :func:`retdet.checkpoint.load_weights` call
:func:`attach_quantized`: the model built from the config keeps its anchors, box coder and
post-processing, and its network runs in the artifact's runtime.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Optional

from torch import nn

from .runtimes import build_runtime

ARTIFACT_FILE = "network_int8.onnx"
METADATA_FILE = "quantization.json"
FORMAT = "retdet-int8-network"


class QuantizedArtifactError(ValueError):
    pass


def _folder(path: str) -> str:
    return path if os.path.isdir(path) else os.path.dirname(path) or "."


def is_quantized_artifact(path: str) -> bool:
    """A folder holding quantization.json, or an .onnx file inside one."""
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, METADATA_FILE))
    return path.endswith(".onnx") and os.path.isfile(os.path.join(_folder(path), METADATA_FILE))


def read_metadata(path: str) -> Dict[str, Any]:
    meta_path = os.path.join(_folder(path), METADATA_FILE)
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"{path}: not a quantized model folder (no {METADATA_FILE}); make one with "
                                f"tools/quantize.py")
    with open(meta_path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise QuantizedArtifactError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def head_signature(model: nn.Module) -> Dict[str, int]:
    """What an int8 network must share with the model it runs in: its head's outputs per location."""
    return {"num_classes": int(model.head.num_classes), "num_anchors": int(model.anchor_generator.num_anchors)}


def write_metadata(folder: str, model: nn.Module, *, backend: str = "onnxruntime", **fields: Any) -> str:
    """quantization.json for the int8 network in ``folder``, made from ``model`` (whose head
    signature is recorded and checked on loading), with ``fields`` (how it was made)."""
    path = os.path.join(folder, METADATA_FILE)
    with open(path, "w") as f:
        json.dump({"format": FORMAT, "backend": backend, **head_signature(model), **fields}, f, indent=2)
    return path


def attach_quantized(model: nn.Module, path: str, *, backend: Optional[str] = None,
                     logger: Optional[logging.Logger] = None) -> Dict[str, Any]:
    """Run ``model``'s network from the int8 artifact at ``path`` (a folder or its .onnx file).

    The artifact must have been made for the same head (number of classes and anchors): a mismatch is
    an error naming both. ``backend`` overrides the runtime recorded in quantization.json.
    """
    meta = read_metadata(path)
    onnx_path = path if path.endswith(".onnx") else os.path.join(path, ARTIFACT_FILE)
    if not os.path.isfile(onnx_path):
        raise FileNotFoundError(f"{onnx_path}: the quantized network is missing from its folder")
    ours = head_signature(model)
    theirs = {k: meta.get(k) for k in ours}
    if ours != theirs:
        raise QuantizedArtifactError(f"{path} was quantized for {theirs}, but the config builds {ours}: "
                                     f"use the config it was made with ({meta.get('config')})")
    backend = backend or meta.get("backend", "onnxruntime")
    # The artifact path is what retdet/export.py puts into the deployment graph.
    model.runner.set_runtime(build_runtime(backend, onnx_path), description=f"int8 {backend}: {onnx_path}",
                             artifact=onnx_path)
    (logger or logging.getLogger("retdet")).info(
        "Loaded int8 network %s (%s runtime, %s observer, %d calibration images)", onnx_path, backend,
        meta.get("observer"), meta.get("calib_images", 0))
    return meta
