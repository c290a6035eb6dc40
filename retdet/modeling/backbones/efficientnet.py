"""EfficientNet-B0..B3 backbones on top of torchvision.models.efficientnet, tapped at strides 8/16/32."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torchvision
from torch import Tensor

from retdet.layers.norm import freeze_module, get_norm
from retdet.registry import BACKBONES
from retdet.structures import ShapeSpec

from .base import Backbone

# torchvision's `features` stages: 0 stem (/2), 1 (/2), 2 (/4), 3 (/8), 4 (/16), 5 (/16), 6 (/32),
# 7 (/32), 8 the 1x1 head conv. The last stage at each stride is the tap.
_TAPS = {"stride8": 3, "stride16": 5, "stride32": 7}


@BACKBONES.register()
class EfficientNet(Backbone):
    """EfficientNet-B{variant} features at strides 8, 16, 32 (names "stride8", "stride16", "stride32").

    Args:
        variant: 0..3.
        norm: "BN" (default), "FrozenBN", "SyncBN" or "GN" (EfficientNet's BN eps 1e-3 is kept).
        freeze_at: the number of leading `features` stages frozen (0: none).
        out_features: a subset of the three taps.
    """

    def __init__(
        self,
        *,
        variant: int = 0,
        norm: Optional[str] = "BN",
        freeze_at: int = 0,
        out_features: Sequence[str] = ("stride8", "stride16", "stride32"),
    ) -> None:
        super().__init__()
        builders = {0: torchvision.models.efficientnet_b0, 1: torchvision.models.efficientnet_b1,
                    2: torchvision.models.efficientnet_b2, 3: torchvision.models.efficientnet_b3}
        if variant not in builders:
            raise ValueError(f"EfficientNet variant must be one of {sorted(builders)}, got {variant}")
        if not out_features or any(f not in _TAPS for f in out_features):
            raise ValueError(f"EfficientNet out_features must be a non-empty subset of {list(_TAPS)}")
        net = builders[variant](weights=None, norm_layer=get_norm(norm, eps=1e-3))
        last = max(_TAPS[f] for f in out_features)
        self.features = net.features[: last + 1]
        for i in range(min(freeze_at, len(self.features))):
            self.features[i] = freeze_module(self.features[i])
        self.out_features: List[str] = sorted(out_features, key=lambda f: _TAPS[f])
        # Channels from a dry run (in eval mode: BN statistics untouched), right for every variant.
        self.features.eval()
        with torch.no_grad():
            x, channels = torch.zeros(1, 3, 64, 64), {}
            for i, stage in enumerate(self.features):
                x = stage(x)
                channels[i] = x.shape[1]
        self.features.train()
        self._shapes: Dict[str, ShapeSpec] = {
            name: ShapeSpec(channels=channels[i], stride=int(name[len("stride"):])) for name, i in _TAPS.items()
            if i <= last
        }

    def forward(self, images: Tensor) -> Dict[str, Tensor]:
        outputs, x = {}, images
        taps = {_TAPS[f]: f for f in self.out_features}
        for i, stage in enumerate(self.features):
            x = stage(x)
            if i in taps:
                outputs[taps[i]] = x
        return outputs
