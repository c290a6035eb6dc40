"""Renaming MMDetection RetinaNet weights (2.x and 3.x) to retdet's module names.

MMDetection (``state_dict`` of its .pth)                 retdet
    backbone.conv1/bn1/layer{1-4}.*                      the same (its ResNet keeps torchvision's names)
    neck.lateral_convs.{i}.conv.*                        neck.lateral_convs.{i}.*
    neck.fpn_convs.{i}.conv.*, i < #laterals             neck.output_convs.{i}.*
    neck.fpn_convs.{#laterals, +1}.conv.*                neck.p6.*, neck.p7.*   (its extra convs)
    bbox_head.{cls,reg}_convs.{i}.conv.*                 head.{cls,bbox}_subnet.{i}.0.*
    bbox_head.{cls,reg}_convs.{i}.{gn,bn}.*              head.{cls,bbox}_subnet.{i}.1.*   (a head with a norm)
    bbox_head.retina_cls.*, bbox_head.retina_reg.*       head.cls_score.*, head.bbox_pred.*
    data_preprocessor.*                                  not weights: dropped

Its model differs from Detectron2's in ways the weights cannot show: configs/compat/
retinanet_R50_FPN_mmdet.py sets them (RGB input with ImageNet mean/std, stride in the 3x3
convolution, P7 = conv(P6) without a ReLU, its anchor order, box deltas clamped on both sides).
"""
from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Tuple

from torch import Tensor

from .rename import Report, rename_state
from .safe_load import read_torch_file


def read_mmdet_file(path: str) -> Tuple[Dict[str, Tensor], list]:
    """(state dict of an MMDetection checkpoint, globals its other entries needed, replaced by
    inert stand-ins: MMEngine's log buffers and configs are not imported)."""
    data: Any
    data, replaced = read_torch_file(path)
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected an MMDetection checkpoint ({{'state_dict': ..., 'meta': ...}}), "
                         f"found {type(data).__name__}")
    bad = [k for k, v in data.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{path}: entries {bad[:5]} of its state_dict are not tensors")
    return dict(data), replaced


def convert_mmdet_retinanet(state: Mapping[str, Tensor]) -> Tuple[Dict[str, Tensor], Report]:
    """An MMDetection RetinaNet state dict -> (retdet state dict, report of every source key).
    An unknown key raises, naming it."""
    laterals = {int(m.group(1)) for k in state for m in [re.match(r"neck\.lateral_convs\.(\d+)\.", k)] if m}
    n_lat = len(laterals)

    def rename(key: str) -> str:
        if key.startswith("data_preprocessor."):
            return "(dropped: not a weight)"
        if re.match(r"backbone\.(conv1|bn1|layer[1-4])\.", key):
            return key
        if (m := re.fullmatch(r"neck\.lateral_convs\.(\d+)\.conv\.(weight|bias)", key)):
            return f"neck.lateral_convs.{m.group(1)}.{m.group(2)}"
        if (m := re.fullmatch(r"neck\.fpn_convs\.(\d+)\.conv\.(weight|bias)", key)):
            i = int(m.group(1))
            target = f"output_convs.{i}" if i < n_lat else {n_lat: "p6", n_lat + 1: "p7"}.get(i, "")
            return f"neck.{target}.{m.group(2)}" if target else ""
        if (m := re.fullmatch(r"bbox_head\.(cls|reg)_convs\.(\d+)\.(conv|gn|bn)\.(\w+)", key)):
            subnet = "cls_subnet" if m.group(1) == "cls" else "bbox_subnet"
            return f"head.{subnet}.{m.group(2)}.{0 if m.group(3) == 'conv' else 1}.{m.group(4)}"
        if (m := re.fullmatch(r"bbox_head\.retina_(cls|reg)\.(weight|bias)", key)):
            return f"head.{'cls_score' if m.group(1) == 'cls' else 'bbox_pred'}.{m.group(2)}"
        return ""

    return rename_state(state, rename, converter="convert_mmdet_retinanet",
                        expected="an MMDetection RetinaNet checkpoint with a ResNet + FPN "
                                 "(e.g. retinanet_r50_fpn_1x_coco)")
