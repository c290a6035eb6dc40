"""A worked example of a component in your own module (docs/custom_components.md).

LightRetinaNetHead: one conv tower shared by classification and box regression, instead of
RetinaNet's two (about half the head's FLOPs). It registers itself under its class name when this
file is imported; a config names the file in ``imports`` and selects it with ``type``.
"""
import math
from typing import List, Sequence, Tuple

from torch import Tensor, nn

from retdet.layers.norm import get_norm
from retdet.registry import HEADS


@HEADS.register()
class LightRetinaNetHead(nn.Module):
    """forward: per-level (N, C, Hi, Wi) -> (per-level logits (N, A*K, Hi, Wi), per-level deltas
    (N, A*4, Hi, Wi)), the contract every RetinaNet head keeps.

    Args:
        in_channels, num_anchors: given by the detector.
        num_classes: K.
        num_convs: shared 3x3 conv + norm + ReLU layers.
        norm: e.g. "GN" or None.
        prior_prob: initial foreground probability (classifier bias).
    """

    def __init__(self, *, in_channels: int, num_anchors: int, num_classes: int, num_convs: int = 2,
                 norm: str = "GN", prior_prob: float = 0.01) -> None:
        super().__init__()
        self.num_classes = num_classes
        make_norm = get_norm(norm)
        layers = []
        for _ in range(num_convs):
            layers.append(nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=make_norm is None))
            if make_norm is not None:
                layers.append(make_norm(in_channels))
            layers.append(nn.ReLU(inplace=True))
        self.tower = nn.Sequential(*layers)
        self.cls_score = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: Sequence[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        shared = [self.tower(f) for f in features]
        return [self.cls_score(x) for x in shared], [self.bbox_pred(x) for x in shared]
