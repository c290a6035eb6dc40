"""Post-training int8 quantization of a detector's network (backbone, FPN, head).

Anchors, box decoding and NMS stay in float32 and in retdet's own code: the quantized network only
replaces :meth:`RetinaNet.network`. The stack is ONNX Runtime's static quantization (QDQ format,
per-channel weights), see :mod:`retdet.quantization.onnxruntime_backend`; the artifact it writes
(:mod:`retdet.quantization.artifact`) runs in ONNX Runtime or OpenVINO and loads without unpickling.
"""
from .artifact import (
    ARTIFACT_FILE, METADATA_FILE, QuantizedArtifactError, attach_quantized, is_quantized_artifact, read_metadata,
)
from .calibration import calibration_images, calibration_tensors
from .runtimes import RUNTIMES, build_runtime

__all__ = [
    "ARTIFACT_FILE", "METADATA_FILE", "QuantizedArtifactError", "attach_quantized", "is_quantized_artifact",
    "read_metadata", "calibration_images", "calibration_tensors", "RUNTIMES", "build_runtime",
]
