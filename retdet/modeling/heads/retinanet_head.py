"""RetinaNet's classification and box-regression subnets, shared across pyramid levels."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

from torch import Tensor, nn

from retdet.layers.conv_bn import conv_norm
from retdet.layers.norm import get_norm
from retdet.registry import HEADS


def _subnet(channels: int, num_convs: int, norm: Optional[str]) -> nn.Sequential:
    layers = []
    make_norm = get_norm(norm)
    for _ in range(num_convs):
        conv = nn.Conv2d(channels, channels, 3, padding=1, bias=make_norm is None)
        nn.init.normal_(conv.weight, std=0.01)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        block = [conv] if make_norm is None else [conv, make_norm(channels)]
        layers.append(nn.Sequential(*block, nn.ReLU(inplace=True)))
    return nn.Sequential(*layers)


@HEADS.register()
class RetinaNetHead(nn.Module):
    """Two small FCNs applied to every pyramid level.

    Args:
        in_channels: channels of the pyramid levels (given by the detector).
        num_anchors: anchors per location (given by the detector).
        num_classes: K, object classes (no background class).
        num_convs: 3x3 conv + ReLU layers in each subnet before its predictor.
        norm: None or e.g. "GN" after each subnet conv (the norm is shared across levels).
        prior_prob: initial foreground probability of every anchor (bias init of the classifier).

    forward: per-level (N, C, Hi, Wi) -> (per-level class logits (N, A*K, Hi, Wi),
    per-level box deltas (N, A*4, Hi, Wi)): raw tensors; the detector reshapes them.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        num_convs: int = 4,
        norm: Optional[str] = None,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        if not 0 < prior_prob < 1:
            raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
        self.num_classes, self.num_anchors = num_classes, num_anchors
        self.cls_subnet = _subnet(in_channels, num_convs, norm)
        self.bbox_subnet = _subnet(in_channels, num_convs, norm)
        self.cls_score = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        # Start every anchor at foreground probability prior_prob, so the many easy negatives
        # do not swamp the loss in the first iterations (the paper's Sec. 3.3).
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: Sequence[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        logits = [conv_norm(_run_subnet(self.cls_subnet, f), self.cls_score, None) for f in features]
        deltas = [conv_norm(_run_subnet(self.bbox_subnet, f), self.bbox_pred, None) for f in features]
        return logits, deltas


def _run_subnet(subnet: nn.Sequential, x: Tensor) -> Tensor:
    """The subnet's layers in order; a conv + ReLU block (no norm) as one call of conv_norm, which
    fuses the ReLU into the convolution where no gradient is needed (retdet.layers.conv_bn)."""
    for block in subnet:
        x = conv_norm(x, block[0], None, relu=True) if len(block) == 2 else block(x)
    return x
