"""Anchors: boxes of several sizes and aspect ratios centred on every feature-map location."""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from retdet.registry import ANCHOR_GENERATORS

Number = Union[int, float]


@ANCHOR_GENERATORS.register()
class AnchorGenerator(nn.Module):
    """Anchors for each pyramid level.

    Args:
        sizes: per level, either one base size (expanded by ``scales_per_octave``) or the list of
            sizes (sqrt of the anchor area). E.g. [32, 64, 128, 256, 512] with scales_per_octave=3
            gives 32 * 2^(0/3, 1/3, 2/3) on P3, and so on.
        aspect_ratios: height / width ratios, the same for every level.
        strides: each level's stride in input pixels.
        scales_per_octave: sizes per octave when ``sizes`` holds one number per level.
        offset: anchor centres at (i + offset) * stride; 0.0 (Detectron2, torchvision) or 0.5.
        order: "size_major" (Detectron2: for each size, each ratio) or "ratio_major"
            (torchvision: for each ratio, each size); this is the order of the A anchors per location.
        round_cell: round the cell anchors' corners to integers (as torchvision does).

    forward: a list of per-level feature maps (N, C, Hi, Wi) -> list of (Hi * Wi * A, 4) xyxy anchors,
    location-major (row, column, then anchor). Anchors are cached per level, size and device.
    """

    def __init__(
        self,
        *,
        sizes: Sequence[Union[Number, Sequence[Number]]] = (32, 64, 128, 256, 512),
        aspect_ratios: Sequence[Number] = (0.5, 1.0, 2.0),
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        scales_per_octave: int = 3,
        offset: float = 0.0,
        order: str = "size_major",
        round_cell: bool = False,
    ) -> None:
        super().__init__()
        if len(sizes) != len(strides):
            raise ValueError(f"AnchorGenerator: {len(sizes)} size entries but {len(strides)} strides")
        if order not in ("size_major", "ratio_major"):
            raise ValueError(f"AnchorGenerator order must be 'size_major' or 'ratio_major', got {order!r}")
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"AnchorGenerator offset must be in [0, 1), got {offset}")
        self.sizes: List[List[float]] = [
            [float(s) for s in size] if isinstance(size, (list, tuple))
            else [float(size) * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)]
            for size in sizes
        ]
        self.aspect_ratios = [float(r) for r in aspect_ratios]
        self.strides = [int(s) for s in strides]
        self.offset, self.order, self.round_cell = float(offset), order, round_cell
        counts = {len(s) * len(self.aspect_ratios) for s in self.sizes}
        if len(counts) != 1:
            raise ValueError("AnchorGenerator: every level needs the same number of anchors per location")
        self.num_anchors: int = counts.pop()
        self._cache: Dict[Tuple[int, int, int, str], Tensor] = {}

    def cell_anchors(self, level: int) -> Tensor:
        """(A, 4) anchors centred at (0, 0) for ``level``, in float32."""
        pairs = ([(s, r) for s in self.sizes[level] for r in self.aspect_ratios] if self.order == "size_major"
                 else [(s, r) for r in self.aspect_ratios for s in self.sizes[level]])
        boxes = []
        for size, ratio in pairs:
            w = size / math.sqrt(ratio)  # w * h = size^2, h / w = ratio
            h = size * math.sqrt(ratio)
            boxes.append([-w / 2, -h / 2, w / 2, h / 2])
        cell = torch.tensor(boxes, dtype=torch.float32)
        return cell.round() if self.round_cell else cell

    def grid_anchors(self, level: int, height: int, width: int, device: torch.device) -> Tensor:
        """(height * width * A, 4) anchors of ``level``, location-major; cached per size (not while
        tracing, where the sizes are symbolic and the graph must compute them)."""
        if torch.jit.is_tracing():
            return self._grid(level, height, width, device)
        key = (level, height, width, str(device))
        if key not in self._cache:
            self._cache[key] = self._grid(level, height, width, device)
        return self._cache[key]

    def _grid(self, level: int, height: int, width: int, device: torch.device) -> Tensor:
        stride = self.strides[level]
        xs = (torch.arange(width, dtype=torch.float32, device=device) + self.offset) * stride
        ys = (torch.arange(height, dtype=torch.float32, device=device) + self.offset) * stride
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([x, y, x, y], dim=-1).reshape(-1, 1, 4)
        return (shifts + self.cell_anchors(level).to(device)[None]).reshape(-1, 4)

    def forward(self, features: Sequence[Tensor]) -> List[Tensor]:
        if len(features) != len(self.strides):
            raise ValueError(f"AnchorGenerator has {len(self.strides)} levels but got {len(features)} feature maps")
        return [self.grid_anchors(i, f.shape[-2], f.shape[-1], f.device) for i, f in enumerate(features)]
