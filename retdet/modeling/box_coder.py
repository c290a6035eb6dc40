"""Box regression targets: (dx, dy, dw, dh) deltas between anchors and boxes."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from retdet.registry import BOX_CODERS

_DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


@BOX_CODERS.register()
class DeltaXYWHBoxCoder:
    """The R-CNN box parameterisation.

    encode(anchors, boxes): dx = wx (bx - ax) / aw, dy = wy (by - ay) / ah, dw = ww log(bw / aw),
    dh = wh log(bh / ah), from centres (x, y) and sizes (w, h). decode inverts it, clamping dw and dh
    at ``scale_clamp`` so exp() cannot overflow (and at ``-scale_clamp`` too with ``clamp_both``,
    as MMDetection's coder does; Detectron2 and torchvision clamp from above only).

    Both work in float32 whatever the input dtype: under autocast, half precision would put
    boxes of a large image several pixels off.
    """

    def __init__(self, *, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), scale_clamp: float = _DEFAULT_SCALE_CLAMP,
                 clamp_both: bool = False):
        if len(weights) != 4:
            raise ValueError(f"box coder weights must be 4 numbers, got {weights}")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = float(scale_clamp)
        self.clamp_both = bool(clamp_both)

    def encode(self, anchors: Tensor, boxes: Tensor) -> Tensor:
        """(R, 4) anchors, (R, 4) boxes -> (R, 4) deltas."""
        anchors, boxes = anchors.float(), boxes.float()
        aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
        ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        bx, by = boxes[:, 0] + 0.5 * bw, boxes[:, 1] + 0.5 * bh
        wx, wy, ww, wh = self.weights
        return torch.stack(
            [wx * (bx - ax) / aw, wy * (by - ay) / ah, ww * torch.log(bw / aw), wh * torch.log(bh / ah)], dim=1
        )

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """(R, 4) deltas, (R, 4) anchors -> (R, 4) xyxy boxes, float32."""
        with torch.autocast(device_type=deltas.device.type, enabled=False):
            deltas, anchors = deltas.float(), anchors.float()
            aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
            ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
            wx, wy, ww, wh = self.weights
            dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
            low = -self.scale_clamp if self.clamp_both else None
            dw = torch.clamp(deltas[:, 2] / ww, min=low, max=self.scale_clamp)
            dh = torch.clamp(deltas[:, 3] / wh, min=low, max=self.scale_clamp)
            cx, cy = dx * aw + ax, dy * ah + ay
            half_w, half_h = 0.5 * (torch.exp(dw) * aw), 0.5 * (torch.exp(dh) * ah)
            return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1)
