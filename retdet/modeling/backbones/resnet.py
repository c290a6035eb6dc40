"""ResNet-18/34/50/101/152 backbones built from torchvision.models.resnet's blocks.

Parameter names and shapes are torchvision's (conv1, bn1, layer1..layer4) at the default width, so
torchvision ImageNet and RetinaNet checkpoints load with a prefix change only. A narrower ``width``
(channels of the stem and of the first stage's blocks; every stage doubles it) gives the cheap
from-scratch models that a CPU can train in minutes. Features: res2..res5 (strides 4..32).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from retdet.layers.conv_bn import conv_norm
from retdet.layers.norm import freeze_module, get_norm
from retdet.registry import BACKBONES
from retdet.structures import ShapeSpec

from .base import Backbone

_STAGES = ["stem", "res2", "res3", "res4", "res5"]
_BLOCKS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3]),
           101: (Bottleneck, [3, 4, 23, 3]), 152: (Bottleneck, [3, 8, 36, 3])}


@BACKBONES.register()
class ResNet(Backbone):
    """ResNet (torchvision's blocks and parameter names) as a detection backbone.

    Args:
        depth: 18, 34, 50, 101 or 152.
        norm: "FrozenBN" (default), "BN", "SyncBN" or "GN".
        freeze_at: stages frozen (no gradient, BN frozen): 0 none, 1 the stem, 2 stem + res2, ...
            5 everything.
        out_features: which of res2..res5 to return.
        width: channels of the stem and of res2's blocks (64 in every published ResNet); stage i has
            width * 2**i (times 4 at a bottleneck's output).
        stride_in_1x1: a bottleneck that downsamples does it in its first 1x1 convolution instead of
            the 3x3 (the original MSRA/Caffe2 ResNet, and Detectron2's weights trained from it);
            torchvision and MMDetection ("pytorch" style) use the 3x3. Same parameters, other outputs.
        zero_init_residual: each block's last norm starts with zero scale, so every block starts as
            the identity (Goyal et al. 2017; torchvision's option of the same name): for training
            from scratch. Weights loaded from a checkpoint replace it.
    """

    def __init__(
        self,
        *,
        depth: int = 50,
        norm: Optional[str] = "FrozenBN",
        freeze_at: int = 2,
        out_features: Sequence[str] = ("res3", "res4", "res5"),
        width: int = 64,
        stride_in_1x1: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if depth not in _BLOCKS:
            raise ValueError(f"ResNet depth must be one of {sorted(_BLOCKS)}, got {depth}")
        unknown = [f for f in out_features if f not in _STAGES[1:]]
        if unknown or not out_features:
            raise ValueError(f"ResNet out_features must be a non-empty subset of res2..res5, got {list(out_features)}")
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at must be in 0..5, got {freeze_at}")
        if width < 8 or width % 8:
            raise ValueError(f"ResNet width must be a positive multiple of 8, got {width}")
        block, counts = _BLOCKS[depth]
        norm_layer = get_norm(norm)
        if norm_layer is None:
            raise ValueError("ResNet needs a norm (its blocks are built around one): FrozenBN, BN, SyncBN or GN")
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = width
        for i, n in enumerate(counts):
            stage = _make_stage(block, channels, width * 2**i, n, 1 if i == 0 else 2, norm_layer)
            if stride_in_1x1 and block is Bottleneck:
                first = stage[0]
                first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1)
            setattr(self, f"layer{i + 1}", stage)
            channels = width * 2**i * block.expansion
        _init_like_torchvision(self, zero_init_residual)
        self.depth, self.freeze_at, self.width, self.stride_in_1x1 = depth, freeze_at, width, stride_in_1x1
        self.out_features: List[str] = list(out_features)
        self._shapes: Dict[str, ShapeSpec] = {
            f"res{i + 2}": ShapeSpec(channels=width * 2**i * block.expansion, stride=4 * 2**i) for i in range(4)
        }
        if freeze_at >= 1:
            self.conv1.requires_grad_(False)
            self.bn1 = freeze_module(self.bn1)
        for i in range(1, freeze_at):
            freeze_module(getattr(self, f"layer{i}"))

    def forward(self, images: Tensor) -> Dict[str, Tensor]:
        """(N, 3, H, W) -> {"res2": (N, C2, H/4, W/4), ..., "res5": (N, C5, H/32, W/32)} (requested ones)."""
        x = self.maxpool(conv_norm(images, self.conv1, self.bn1, relu=True))
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


def _make_stage(block: type, in_channels: int, planes: int, count: int, stride: int, norm_layer) -> nn.Sequential:
    """``count`` blocks; the first changes stride/channels through a 1x1 projection (torchvision's layout)."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(conv1x1(in_channels, out_channels, stride), norm_layer(out_channels))
    blocks = [block(in_channels, planes, stride, downsample, norm_layer=norm_layer)]
    blocks += [block(out_channels, planes, norm_layer=norm_layer) for _ in range(1, count)]
    return nn.Sequential(*blocks)


def _init_like_torchvision(net: nn.Module, zero_init_residual: bool = False) -> None:
    """torchvision's ResNet initialisation: He (fan-out) convolutions, unit-scale zero-shift norms;
    with ``zero_init_residual``, zero-scale last norms in the blocks."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    if zero_init_residual:
        for m in net.modules():
            last = m.bn3 if isinstance(m, Bottleneck) else m.bn2 if isinstance(m, BasicBlock) else None
            if last is not None and getattr(last, "weight", None) is not None:
                nn.init.zeros_(last.weight)


def _block_forward(block: nn.Module, x: Tensor) -> Tensor:
    """torchvision's BasicBlock/Bottleneck forward, with frozen BNs folded into their convolutions
    and, without gradients, the ReLUs and the residual sum fused into them (retdet.layers.conv_bn):
    the same function, without the elementwise passes."""
    if isinstance(block, Bottleneck):
        out = conv_norm(x, block.conv1, block.bn1, relu=True)
        out = conv_norm(out, block.conv2, block.bn2, relu=True)
        last = (block.conv3, block.bn3)
    elif isinstance(block, BasicBlock):
        out = conv_norm(x, block.conv1, block.bn1, relu=True)
        last = (block.conv2, block.bn2)
    else:
        return block(x)
    identity = x if block.downsample is None else conv_norm(x, block.downsample[0], block.downsample[1])
    return conv_norm(out, *last, relu=True, residual=identity)  # relu(bn(conv(out)) + identity)
