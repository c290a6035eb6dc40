"""What every backbone provides: named feature maps and their shapes."""
from __future__ import annotations

from typing import Dict, List

from torch import Tensor, nn

from retdet.structures import ShapeSpec


class Backbone(nn.Module):
    """A module mapping (N, 3, H, W) images to named feature maps.

    Subclasses set ``self.out_features`` (names, shallow to deep) and ``self._shapes``
    (name -> ShapeSpec) and return ``{name: (N, C, H / stride, W / stride)}`` from forward.
    """

    out_features: List[str]
    _shapes: Dict[str, ShapeSpec]

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {name: self._shapes[name] for name in self.out_features}

    def forward(self, images: Tensor) -> Dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError
