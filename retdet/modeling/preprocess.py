"""Turning per-image inputs into one normalised, padded batch tensor."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn


@dataclass
class ImageBatch:
    """tensor: (N, 3, Hp, Wp) normalised and zero-padded; image_sizes: each image's (h, w) before padding."""

    tensor: Tensor
    image_sizes: List[Tuple[int, int]]


class Preprocessor(nn.Module):
    """(image - pixel_mean) / pixel_std, channel order, padding to a multiple of size_divisibility.

    Args:
        pixel_mean, pixel_std: per channel, in the input's 0..255 scale and in ``input_format`` order.
        input_format: "BGR" or "RGB": the order images arrive in (the data pipeline's channel order).
            Pretrained weights expect a particular order; configs set the matching mean/std.
        size_divisibility: pad height and width up to a multiple of this. The detector passes these
            values (its arguments hold the only defaults); code padding for a built model
            (retdet/export.py's prepare_input) reads them here.

    ``memory_format``: the batch's layout, set by the detector to its network's (an NHWC batch for an
    NHWC network saves a layout copy of the whole batch).
    """

    def __init__(self, *, pixel_mean: Sequence[float], pixel_std: Sequence[float], input_format: str,
                 size_divisibility: int, memory_format: torch.memory_format = torch.contiguous_format) -> None:
        super().__init__()
        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"input_format must be 'BGR' or 'RGB', got {input_format!r}")
        if len(pixel_mean) != 3 or len(pixel_std) != 3:
            raise ValueError("pixel_mean and pixel_std need 3 values each")
        self.input_format = input_format
        self.size_divisibility = int(size_divisibility)
        self.memory_format = memory_format
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1), False)

    def forward(self, images: Sequence[Tensor]) -> ImageBatch:
        if len(images) == 0:
            raise ValueError("empty batch")
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        div = max(self.size_divisibility, 1)
        max_h = -(-max(h for h, _ in sizes) // div) * div
        max_w = -(-max(w for _, w in sizes) // div) * div
        device = self.pixel_mean.device
        batch = torch.empty(len(images), 3, max_h, max_w, device=device, memory_format=self.memory_format).zero_()
        for i, im in enumerate(images):
            if im.dim() != 3 or im.shape[0] != 3:
                raise ValueError(f"image {i}: expected (3, H, W), got shape {tuple(im.shape)}")
            h, w = sizes[i]
            batch[i, :, :h, :w] = (im.to(device, torch.float32) - self.pixel_mean) / self.pixel_std
        return ImageBatch(tensor=batch, image_sizes=sizes)
