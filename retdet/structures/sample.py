"""The model's per-image input and output."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch
from torch import Tensor


@dataclass
class ImageSample:
    """One image for the detector, already resized by the data pipeline.

    Attributes:
        image: (C, H, W) pixels in 0..255 (uint8 or float), channels in the model's input_format.
        original_size: (height, width) of the image as stored, before resizing; detections are
            rescaled to it. None: the image's own size.
        gt_boxes: (M, 4) float xyxy boxes in ``image`` pixels (training).
        gt_labels: (M,) int64 contiguous class labels in [0, num_classes) (training).
        ignore_boxes: (I, 4) regions (e.g. COCO crowd boxes) whose anchors are neither positive nor
            negative.
        image_id: dataset image id, carried to the detections.
    """

    image: Tensor
    original_size: Optional[Tuple[int, int]] = None
    gt_boxes: Optional[Tensor] = None
    gt_labels: Optional[Tensor] = None
    ignore_boxes: Optional[Tensor] = None
    image_id: Optional[int] = None

    @property
    def image_size(self) -> Tuple[int, int]:
        return int(self.image.shape[-2]), int(self.image.shape[-1])


@dataclass
class Detections:
    """Detections of one image, in original-image pixels.

    Attributes:
        boxes: (D, 4) float32 xyxy.
        scores: (D,) float32, decreasing.
        labels: (D,) int64 contiguous class labels.
        image_id: the input's image_id.
    """

    boxes: Tensor = field(default_factory=lambda: torch.zeros(0, 4))
    scores: Tensor = field(default_factory=lambda: torch.zeros(0))
    labels: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    image_id: Optional[int] = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])
