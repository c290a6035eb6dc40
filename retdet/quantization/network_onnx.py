"""The detector's network (backbone -> FPN -> head) alone, as an ONNX graph.

    inputs:  images (N, 3, Hp, Wp) float32, normalised and padded as the model's preprocessing makes them
    outputs: logits_0..logits_{L-1} (N, A*K, H_l, W_l), deltas_0..deltas_{L-1} (N, A*4, H_l, W_l)

Batch, height and width are dynamic. This is the part that is quantized; anchors, decoding and NMS
read its outputs in retdet's own float32 code (or, for deployment, in the exported post-processing).
"""
from __future__ import annotations

import re
import warnings
from typing import List, Sequence

import torch
from torch import Tensor, nn

from retdet.modeling import DetectorNetwork


def output_names(num_levels: int) -> List[str]:
    return [f"logits_{i}" for i in range(num_levels)] + [f"deltas_{i}" for i in range(num_levels)]


def export_network(model: nn.Module, example: Tensor, path: str) -> List[str]:
    """Write ``model.network`` to ``path`` (opset 17); returns the output names. Node names carry the
    module path (``/head/cls_score_2/Conv``), which is how layers are kept in float32 by name."""
    network = DetectorNetwork(model).eval()  # eval mode for the model too
    with torch.no_grad():
        num_levels = len(network(example)) // 2
    names = output_names(num_levels)
    dynamic = {"images": {0: "batch", 2: "height", 3: "width"}}
    dynamic.update({n: {0: "batch", 2: f"h_{n[-1]}", 3: f"w_{n[-1]}"} for n in names})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(network, (example,), path, dynamo=False, opset_version=17,
                          input_names=["images"], output_names=names, dynamic_axes=dynamic)
    return names


def nodes_under(model_proto, modules: Sequence[str]) -> List[str]:
    """Names of the graph's nodes that belong to the given module paths (e.g. ``head.cls_score``).
    The exporter names a node by its module scope, numbering repeated calls of a module (the head
    runs once per level): ``/head/cls_score/Conv``, ``/head/cls_score_1/Conv``, ..."""
    found, missing = [], []
    for m in modules:
        parts = [re.escape(p) + r"(_\d+)?" for p in m.strip(".").split(".")]
        pattern = re.compile("^/" + "/".join(parts) + "/")
        hits = [n.name for n in model_proto.graph.node if pattern.match(n.name)]
        (found.extend(hits) if hits else missing.append(m))
    if missing:
        scopes = sorted({re.sub(r"_\d+$", "", "/".join(n.name.split("/")[1:3]))
                         for n in model_proto.graph.node if n.op_type == "Conv"})
        raise ValueError(f"--fp32-layers: no layer named {missing} in the network; its convolutions' scopes "
                         f"include {[s.replace('/', '.') for s in scopes[:12]]}")
    return found
