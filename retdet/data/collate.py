"""Collating samples into one padded tensor (for tools that want a tensor batch, not the model)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from retdet.structures import ImageSample


@dataclass
class PaddedBatch:
    """images: (N, 3, Hp, Wp) uint8, zero-padded at the bottom/right to a multiple of size_divisibility;
    image_sizes: each (h, w) before padding; boxes/labels: per-image targets."""

    images: Tensor
    image_sizes: List[Tuple[int, int]]
    boxes: List[Tensor]
    labels: List[Tensor]


def collate_padded(samples: Sequence[ImageSample], size_divisibility: int = 32) -> PaddedBatch:
    sizes = [s.image_size for s in samples]
    div = max(size_divisibility, 1)
    hp = -(-max(h for h, _ in sizes) // div) * div
    wp = -(-max(w for _, w in sizes) // div) * div
    images = torch.zeros(len(samples), 3, hp, wp, dtype=samples[0].image.dtype)
    for i, s in enumerate(samples):
        images[i, :, : sizes[i][0], : sizes[i][1]] = s.image
    boxes = [s.gt_boxes if s.gt_boxes is not None else torch.zeros(0, 4) for s in samples]
    labels = [s.gt_labels if s.gt_labels is not None else torch.zeros(0, dtype=torch.long) for s in samples]
    return PaddedBatch(images=images, image_sizes=sizes, boxes=boxes, labels=labels)
