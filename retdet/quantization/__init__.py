"""Post-training int8 quantization of a detector's network (backbone, FPN, head).

Anchors, box decoding and NMS stay in float32 and in retdet's own code: the quantized network only
replaces :meth:`RetinaNet.network`. The stack is ONNX Runtime's static quantization (QDQ format,
per-channel weights), see :mod:`retdet.quantization.onnxruntime_backend`; the artifact it writes
(:mod:`retdet.quantization.artifact`) runs in ONNX Runtime or OpenVINO and loads without unpickling.

Only the artifact and its runtimes are imported here, so loading a checkpoint (which accepts an int8
folder) stays light; making one imports :mod:`.calibration` and :mod:`.onnxruntime_backend` directly.
"""
from .artifact import (
    ARTIFACT_FILE, METADATA_FILE, QuantizedArtifactError, attach_quantized, is_quantized_artifact, read_metadata,
)
from .runtimes import RUNTIMES, build_runtime

__all__ = [
    "ARTIFACT_FILE", "METADATA_FILE", "QuantizedArtifactError", "attach_quantized", "is_quantized_artifact",
    "read_metadata", "RUNTIMES", "build_runtime",
]
