"""The compiled ops' Python side: fused sigmoid focal loss and batched NMS, with pure-PyTorch
references used by the tests and as the fallback when the extension is not built."""
from ._extension import extension_has_cuda, has_extension
from .focal_loss import sigmoid_focal_loss, sigmoid_focal_loss_reference
from .nms import batched_nms, batched_nms_reference

__all__ = [
    "batched_nms",
    "batched_nms_reference",
    "extension_has_cuda",
    "has_extension",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_reference",
]
