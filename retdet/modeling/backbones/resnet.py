"""ResNet-18/34/50/101/152 backbones on top of torchvision.models.resnet.

Parameter names are torchvision's (conv1, bn1, layer1..layer4), so torchvision ImageNet and
RetinaNet checkpoints load with a prefix change only. Features: res2..res5 (strides 4..32).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from retdet.layers.conv_bn import conv_norm
from retdet.layers.norm import freeze_module, get_norm
from retdet.registry import BACKBONES
from retdet.structures import ShapeSpec

from .base import Backbone

_STAGES = ["stem", "res2", "res3", "res4", "res5"]
_BASIC_DEPTHS = (18, 34)


@BACKBONES.register()
class ResNet(Backbone):
    """torchvision ResNet as a detection backbone.

    Args:
        depth: 18, 34, 50, 101 or 152.
        norm: "FrozenBN" (default), "BN", "SyncBN" or "GN".
        freeze_at: stages frozen (no gradient, BN frozen): 0 none, 1 the stem, 2 stem + res2, ...
            5 everything.
        out_features: which of res2..res5 to return.
    """

    def __init__(
        self,
        *,
        depth: int = 50,
        norm: Optional[str] = "FrozenBN",
        freeze_at: int = 2,
        out_features: Sequence[str] = ("res3", "res4", "res5"),
    ) -> None:
        super().__init__()
        builders = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34,
                    50: torchvision.models.resnet50, 101: torchvision.models.resnet101,
                    152: torchvision.models.resnet152}
        if depth not in builders:
            raise ValueError(f"ResNet depth must be one of {sorted(builders)}, got {depth}")
        unknown = [f for f in out_features if f not in _STAGES[1:]]
        if unknown or not out_features:
            raise ValueError(f"ResNet out_features must be a non-empty subset of res2..res5, got {list(out_features)}")
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at must be in 0..5, got {freeze_at}")
        net = builders[depth](weights=None, norm_layer=get_norm(norm))
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.depth, self.freeze_at = depth, freeze_at
        self.out_features: List[str] = list(out_features)
        width = 64 if depth in _BASIC_DEPTHS else 256
        self._shapes: Dict[str, ShapeSpec] = {
            f"res{i + 2}": ShapeSpec(channels=width * 2**i, stride=4 * 2**i) for i in range(4)
        }
        if freeze_at >= 1:
            self.conv1.requires_grad_(False)
            self.bn1 = freeze_module(self.bn1)
        for i in range(1, freeze_at):
            freeze_module(getattr(self, f"layer{i}"))

    def forward(self, images: Tensor) -> Dict[str, Tensor]:
        """(N, 3, H, W) -> {"res2": (N, C2, H/4, W/4), ..., "res5": (N, C5, H/32, W/32)} (requested ones)."""
        x = self.maxpool(conv_norm(images, self.conv1, self.bn1).relu_())
        outputs = {}
        last = self.out_features[-1]
        for name, layer in zip(("res2", "res3", "res4", "res5"), (self.layer1, self.layer2, self.layer3, self.layer4)):
            for block in layer:
                x = _block_forward(block, x)
            if name in self.out_features:
                outputs[name] = x
            if name == last:
                break
        return outputs


def _block_forward(block: nn.Module, x: Tensor) -> Tensor:
    """torchvision's BasicBlock/Bottleneck forward, with frozen BNs folded into their convolutions
    (retdet.layers.conv_bn): the same function, without the elementwise BN passes."""
    if isinstance(block, Bottleneck):
        out = conv_norm(x, block.conv1, block.bn1).relu_()
        out = conv_norm(out, block.conv2, block.bn2).relu_()
        out = conv_norm(out, block.conv3, block.bn3)
    elif isinstance(block, BasicBlock):
        out = conv_norm(x, block.conv1, block.bn1).relu_()
        out = conv_norm(out, block.conv2, block.bn2)
    else:
        return block(x)
    identity = x if block.downsample is None else conv_norm(x, block.downsample[0], block.downsample[1])
    return (out + identity).relu_()
