"""Renaming Detectron2 (and Caffe2 / MSRA) weights to retdet's module names.

Detectron2 RetinaNet (model zoo .pkl or a trainer's .pth)   retdet
    backbone.bottom_up.stem.conv1.weight                    backbone.conv1.weight
    backbone.bottom_up.stem.conv1.norm.*                    backbone.bn1.*
    backbone.bottom_up.res{s}.{b}.conv{j}.weight            backbone.layer{s-1}.{b}.conv{j}.weight
    backbone.bottom_up.res{s}.{b}.conv{j}.norm.*            backbone.layer{s-1}.{b}.bn{j}.*
    backbone.bottom_up.res{s}.{b}.shortcut.weight           backbone.layer{s-1}.{b}.downsample.0.weight
    backbone.bottom_up.res{s}.{b}.shortcut.norm.*           backbone.layer{s-1}.{b}.downsample.1.*
    backbone.fpn_lateral{3,4,5}.*                           neck.lateral_convs.{0,1,2}.*
    backbone.fpn_output{3,4,5}.*                            neck.output_convs.{0,1,2}.*
    backbone.top_block.p6/p7.*                              neck.p6/p7.*
    head.{cls,bbox}_subnet.{i}.*  (conv, [norm], relu)      head.{cls,bbox}_subnet.{block}.{0 conv | 1 norm}.*
    head.cls_score.*, head.bbox_pred.*                      the same
    pixel_mean, pixel_std, anchor buffers                   not weights: dropped (pixel values are checked
                                                            against the config by tools/convert_weights.py)

Caffe2 ImageNet ResNets (MSRA R-50.pkl / R-101.pkl, Detectron2's backbone initialisations)
    conv1_w, res_conv1_bn_{s,b}                             backbone.conv1.weight, backbone.bn1.{weight,bias}
    res{s}_{b}_branch2{a,b,c}_w, _bn_{s,b}                  backbone.layer{s-1}.{b}.conv{1,2,3}.weight, bn{1,2,3}.*
    res{s}_{b}_branch1_w, _bn_{s,b}                         backbone.layer{s-1}.{b}.downsample.{0,1}.*
    fc1000_*, *_momentum                                    dropped (classifier, optimiser state)
Caffe2 batch norms are stored as an affine (scale s, bias b) with the statistics folded in; they
become FrozenBN with running_mean 0 and running_var 1 - eps, Detectron2's initial values, which
its loader leaves in place: the norm is then exactly x * s + b.

Those MSRA networks (and Detectron2's models trained from them) put a bottleneck's stride in its
first 1x1 convolution: build them with ``model.backbone.stride_in_1x1=True`` (configs/compat/
retinanet_R50_FPN_detectron2.py does).
"""
from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Tuple

import torch
from torch import Tensor

from .rename import Report, rename_state
from .safe_load import arrays_to_tensors, read_pickle

_NOT_WEIGHTS = ("pixel_mean", "pixel_std")


def read_detectron2_file(path: str) -> Dict[str, Tensor]:
    """The state dict in a Detectron2 model-zoo ``.pkl`` ({"model": arrays, "__author__": ...}), a
    Caffe2 ``.pkl`` ({"blobs": arrays} or bare arrays), or a ``.pth`` (loaded with weights_only)."""
    if path.endswith(".pkl"):
        data: Any = read_pickle(path)
        if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
            data = data["model"]
        elif isinstance(data, Mapping) and isinstance(data.get("blobs"), Mapping):
            data = data["blobs"]
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a dict of arrays, found {type(data).__name__}")
        return arrays_to_tensors(data, path)
    from .loader import read_state_dict  # a .pth: {"model": state dict, ...} like ours

    return dict(read_state_dict(path))


def _resnet_block_key(rest: str, stage: int, block: int) -> str:
    """Detectron2 block-relative key ("conv2.norm.weight", "shortcut.weight") -> torchvision layout."""
    m = re.fullmatch(r"conv([123])\.(weight|norm\.(weight|bias|running_mean|running_var))", rest)
    if m:
        j = m.group(1)
        return f"layer{stage - 1}.{block}." + (f"conv{j}.weight" if m.group(2) == "weight" else f"bn{j}.{m.group(3)}")
    m = re.fullmatch(r"shortcut\.(weight|norm\.(weight|bias|running_mean|running_var))", rest)
    if m:
        return f"layer{stage - 1}.{block}." + ("downsample.0.weight" if m.group(1) == "weight"
                                               else f"downsample.1.{m.group(2)}")
    return ""


def _detectron2_resnet_key(key: str) -> str:
    """A Detectron2 ResNet key relative to the bottom-up backbone ("stem.conv1.weight", "res2.0.conv1.norm.bias")
    -> retdet's key relative to ``backbone.``; "" when it is not one."""
    m = re.fullmatch(r"stem\.conv1\.(weight|norm\.(weight|bias|running_mean|running_var))", key)
    if m:
        return "conv1.weight" if m.group(1) == "weight" else f"bn1.{m.group(2)}"
    m = re.fullmatch(r"res([2-5])\.(\d+)\.(.+)", key)
    return _resnet_block_key(m.group(3), int(m.group(1)), int(m.group(2))) if m else ""


def _head_key(key: str, step: int) -> str:
    """head.{cls,bbox}_subnet.{i}.* with ``step`` modules per block (conv, [norm], relu)."""
    m = re.fullmatch(r"head\.(cls|bbox)_subnet\.(\d+)\.(.+)", key)
    if not m:
        return key if key.split(".")[:2] in (["head", "cls_score"], ["head", "bbox_pred"]) else ""
    block, pos = divmod(int(m.group(2)), step)
    if pos >= 2:
        return ""  # a relu has no parameters: a key here is not Detectron2's RetinaNet head
    return f"head.{m.group(1)}_subnet.{block}.{pos}.{m.group(3)}"


def convert_detectron2_retinanet(state: Mapping[str, Tensor]) -> Tuple[Dict[str, Tensor], Report]:
    """A Detectron2 RetinaNet state dict -> (retdet state dict, report of every source key).
    An unknown key raises, naming it."""
    # With a norm in the head each block is (conv, norm, relu), else (conv, relu).
    step = 3 if "head.cls_subnet.1.weight" in state else 2
    fpn_norm = any(re.fullmatch(r"backbone\.fpn_\w+\.norm\.\w+", k) for k in state)

    def rename(key: str) -> str:
        if key in _NOT_WEIGHTS or key.startswith("anchor_generator."):
            return "(dropped: not a weight)"
        if key.startswith("backbone.bottom_up."):
            rel = _detectron2_resnet_key(key[len("backbone.bottom_up."):])
            return "backbone." + rel if rel else ""
        if key.startswith("head."):
            return _head_key(key, step)
        if (m := re.fullmatch(r"backbone\.fpn_(lateral|output)([3-5])\.(weight|bias|norm\..+)", key)):
            kind = "lateral_convs" if m.group(1) == "lateral" else "output_convs"
            param = m.group(3)
            if fpn_norm:  # (conv, norm) in a Sequential, as retdet's FPN builds it with a norm
                param = "1." + param[len("norm."):] if param.startswith("norm.") else "0." + param
            return f"neck.{kind}.{int(m.group(2)) - 3}.{param}"
        if (m := re.fullmatch(r"backbone\.top_block\.(p6|p7)\.(weight|bias)", key)):
            return f"neck.{m.group(1)}.{m.group(2)}"
        return ""

    return rename_state(state, rename, converter="convert_detectron2_retinanet",
                        expected="a Detectron2 RetinaNet checkpoint (ResNet + FPN, e.g. retinanet_R_50_FPN_1x)")


_FROZEN_BN_EPS = 1e-5  # retdet's and Detectron2's FrozenBN eps
_C2_BN = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}


def _caffe2_resnet_key(key: str) -> str:
    """A Caffe2 (MSRA) ResNet blob name -> retdet's key relative to ``backbone.``; "" when unknown."""
    if key == "conv1_w":
        return "conv1.weight"
    m = re.fullmatch(r"res_conv1_bn_(s|b|rm|riv)", key)
    if m:
        return f"bn1.{_C2_BN[m.group(1)]}"
    m = re.fullmatch(r"res([2-5])_(\d+)_branch(1|2a|2b|2c)_(w|bn_s|bn_b|bn_rm|bn_riv)", key)
    if not m:
        return ""
    stage, block, branch, param = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
    if branch == "1":
        conv, norm = "downsample.0", "downsample.1"
    else:
        j = "abc".index(branch[1]) + 1
        conv, norm = f"conv{j}", f"bn{j}"
    return f"layer{stage - 1}.{block}." + ("{}.weight".format(conv) if param == "w" else f"{norm}.{_C2_BN[param[3:]]}")


def convert_detectron2_resnet(state: Mapping[str, Tensor]) -> Tuple[Dict[str, Tensor], Report]:
    """A Detectron2 ImageNet ResNet (Caffe2 blob names, as MSRA's R-50.pkl, or Detectron2 names,
    with or without ``backbone.bottom_up.``) -> (``backbone.*`` state dict, report)."""

    def rename(key: str) -> str:
        if key.endswith("_momentum") or key.startswith(("fc1000", "linear.")) or key in ("fc.weight", "fc.bias"):
            return "(dropped: classifier or optimiser state)"
        rel = _caffe2_resnet_key(key) or _detectron2_resnet_key(re.sub(r"^(backbone\.bottom_up\.|backbone\.)", "", key))
        return "backbone." + rel if rel else ""

    out, report = rename_state(state, rename, converter="convert_detectron2_resnet",
                               expected="a Detectron2/Caffe2 ImageNet ResNet (e.g. MSRA R-50.pkl)")
    # Caffe2 norms carry no statistics (folded into s and b): mean 0, variance 1 - eps (see the docstring).
    for key in [k for k in out if k.endswith(".weight") and _is_norm(k)]:
        base = key[: -len("weight")]
        for stat, fill in (("running_mean", 0.0), ("running_var", 1.0 - _FROZEN_BN_EPS)):
            if base + stat not in out:
                out[base + stat] = torch.full_like(out[key], fill)
                report.append(("(none)", f"{base}{stat} = {fill:g} (Caffe2 norm: no statistics)"))
    return out, report


def _is_norm(key: str) -> bool:
    return bool(re.search(r"(^|\.)(bn\d|downsample\.1)\.weight$", key))
