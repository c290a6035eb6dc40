"""Renaming torchvision state dicts to retdet's module names.

torchvision RetinaNet (retinanet_resnet50_fpn and _v2)   retdet
    backbone.body.*                                      backbone.*   (ResNet keeps torchvision's names)
    backbone.fpn.inner_blocks.{i}.0.*                    neck.lateral_convs.{i}.*
    backbone.fpn.layer_blocks.{i}.0.*                    neck.output_convs.{i}.*
    backbone.fpn.extra_blocks.p6/p7.*                    neck.p6/p7.*
    head.classification_head.conv.*                      head.cls_subnet.*   (same (conv, [norm], relu) blocks)
    head.classification_head.cls_logits.*                head.cls_score.*
    head.regression_head.conv.*                          head.bbox_subnet.*
    head.regression_head.bbox_reg.*                      head.bbox_pred.*
ImageNet classifiers: ResNet ``*`` -> ``backbone.*`` (fc dropped); EfficientNet ``features.*`` ->
``backbone.features.*`` (classifier dropped).
"""
from __future__ import annotations

import re
from typing import Dict, Mapping

from torch import Tensor

_RETINANET_RULES = [
    (r"^backbone\.body\.", "backbone."),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.0\.", r"neck.lateral_convs.\1."),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.0\.", r"neck.output_convs.\1."),
    (r"^backbone\.fpn\.extra_blocks\.(p6|p7)\.", r"neck.\1."),
    (r"^head\.classification_head\.conv\.", "head.cls_subnet."),
    (r"^head\.classification_head\.cls_logits\.", "head.cls_score."),
    (r"^head\.regression_head\.conv\.", "head.bbox_subnet."),
    (r"^head\.regression_head\.bbox_reg\.", "head.bbox_pred."),
]


def _old_head_layout(key: str) -> str:
    """torchvision < 0.13 head keys ``conv.{2k}.weight`` -> ``conv.{k}.0.weight``."""
    m = re.match(r"^(head\.(?:classification|regression)_head\.conv\.)(\d+)\.(weight|bias)$", key)
    if m and int(m.group(2)) % 2 == 0:
        return f"{m.group(1)}{int(m.group(2)) // 2}.0.{m.group(3)}"
    return key


def convert_torchvision_retinanet(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """A torchvision RetinaNet state dict with retdet's key names. Unknown keys raise."""
    out: Dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue  # BN bookkeeping; FrozenBN has none
        new = _old_head_layout(key)
        for pattern, repl in _RETINANET_RULES:
            new, n = re.subn(pattern, repl, new)
            if n:
                break
        else:
            raise KeyError(f"convert_torchvision_retinanet: unexpected key {key!r}; is this a torchvision RetinaNet "
                           "checkpoint (retinanet_resnet50_fpn or _v2)?")
        out[new] = value
    return out


def convert_torchvision_backbone(state_dict: Mapping[str, Tensor], arch: str) -> Dict[str, Tensor]:
    """An ImageNet ResNet/EfficientNet state dict -> ``backbone.*`` keys for initialising a detector."""
    if arch not in ("resnet", "efficientnet"):
        raise ValueError(f"arch must be 'resnet' or 'efficientnet', got {arch!r}")
    drop = ("fc.",) if arch == "resnet" else ("classifier.",)
    out = {}
    for key, value in state_dict.items():
        if key.startswith(drop) or key.endswith("num_batches_tracked"):
            continue
        if arch == "efficientnet" and not key.startswith("features."):
            raise KeyError(f"convert_torchvision_backbone: unexpected EfficientNet key {key!r}")
        out["backbone." + key] = value
    return out
