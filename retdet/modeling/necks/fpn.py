"""Feature Pyramid Network (Lin et al. 2017) producing P3-P7 for RetinaNet."""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from retdet.layers.conv_bn import conv_norm
from retdet.layers.norm import get_norm
from retdet.registry import NECKS
from retdet.structures import ShapeSpec

TOP_BLOCKS = ("p6p7_from_c5", "p6p7_from_p5", None)


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int, norm: Optional[str]) -> nn.Module:
    """Conv (+ norm). Without a norm the conv has a bias; with one it does not (the norm's shift is the bias)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                     bias=norm is None)
    nn.init.kaiming_uniform_(conv.weight, a=1)  # "c2_xavier_fill", as Detectron2 and torchvision
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    make_norm = get_norm(norm)
    return conv if make_norm is None else nn.Sequential(conv, make_norm(out_channels))


@NECKS.register()
class FPN(nn.Module):
    """Top-down pyramid with lateral connections, plus P6/P7 for RetinaNet.

    Args:
        input_shape: the backbone's output shapes (given by the detector when it builds the neck).
        in_features: backbone features used, shallow to deep (e.g. res3, res4, res5 -> P3, P4, P5).
        out_channels: channels of every output level.
        top_block: "p6p7_from_c5" (P6 = conv(C5), Detectron2/MMDetection and torchvision v2),
            "p6p7_from_p5" (P6 = conv(P5), torchvision v1), or None (no P6/P7).
        norm: None, "GN", "BN", ... on the lateral and output convs.
        relu_before_p7: P7 = conv(relu(P6)) (the paper, Detectron2, torchvision); False gives
            P7 = conv(P6), MMDetection's RetinaNet (its relu_before_extra_convs=False).

    forward: {name: (N, C_i, H_i, W_i)} -> {"p3": (N, out, H/8, W/8), ..., "p7": (N, out, H/128, W/128)}.
    """

    def __init__(
        self,
        *,
        input_shape: Mapping[str, ShapeSpec],
        in_features: Sequence[str] = ("res3", "res4", "res5"),
        out_channels: int = 256,
        top_block: Optional[str] = "p6p7_from_c5",
        norm: Optional[str] = None,
        relu_before_p7: bool = True,
    ) -> None:
        super().__init__()
        if top_block not in TOP_BLOCKS:
            raise ValueError(f"FPN top_block must be one of {TOP_BLOCKS}, got {top_block!r}")
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(f"FPN in_features {missing} are not backbone outputs {list(input_shape)}")
        self.in_features = list(in_features)
        self.out_channels = out_channels
        self.top_block = top_block
        self.relu_before_p7 = relu_before_p7
        self.lateral_convs = nn.ModuleList(_conv(input_shape[f].channels, out_channels, 1, 1, norm) for f in in_features)
        self.output_convs = nn.ModuleList(_conv(out_channels, out_channels, 3, 1, norm) for _ in in_features)
        strides = [input_shape[f].stride for f in in_features]
        levels = [int(s).bit_length() - 1 for s in strides]  # stride 8 -> P3
        self.out_features: List[str] = [f"p{lvl}" for lvl in levels]
        self._shapes: Dict[str, ShapeSpec] = {f"p{lvl}": ShapeSpec(out_channels, 2**lvl) for lvl in levels}
        if top_block is not None:
            p6_in = input_shape[in_features[-1]].channels if top_block == "p6p7_from_c5" else out_channels
            self.p6 = _conv(p6_in, out_channels, 3, 2, None)
            self.p7 = _conv(out_channels, out_channels, 3, 2, None)
            for lvl in (levels[-1] + 1, levels[-1] + 2):
                self.out_features.append(f"p{lvl}")
                self._shapes[f"p{lvl}"] = ShapeSpec(out_channels, 2**lvl)

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return dict(self._shapes)

    def forward(self, features: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        inputs = [features[f] for f in self.in_features]
        last_inner = self.lateral_convs[-1](inputs[-1])
        # Through conv_norm, which may run a 3x3 output conv as Winograd (a conv + norm module is called).
        results = [conv_norm(last_inner, self.output_convs[-1], None)]
        for i in range(len(inputs) - 2, -1, -1):
            # Upsample to the lateral's exact size (not x2), so odd sizes line up; the sum runs inside
            # the lateral convolution where no gradient is needed (retdet.layers.conv_bn).
            # (A lateral is a 1x1 stride-1 convolution: its output has its input's size.)
            top_down = F.interpolate(last_inner, size=inputs[i].shape[-2:], mode="nearest")
            last_inner = conv_norm(inputs[i], self.lateral_convs[i], None, residual=top_down)
            results.insert(0, conv_norm(last_inner, self.output_convs[i], None))
        if self.top_block is not None:
            p6 = self.p6(inputs[-1] if self.top_block == "p6p7_from_c5" else results[-1])
            results.extend([p6, self.p7(F.relu(p6) if self.relu_before_p7 else p6)])
        return dict(zip(self.out_features, results))
