"""Parameter and FLOP counts of a detector's network (fvcore; the network alone is
:class:`retdet.modeling.DetectorNetwork`)."""
from __future__ import annotations

import logging
from typing import Dict

import torch
from torch import Tensor, nn


def flop_analysis(network: nn.Module, images: Tensor):
    """fvcore's FlopCountAnalysis (one fused multiply-add = one flop) with its warnings silenced."""
    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    # every module's own mode is restored (a fresh wrapper is in training mode, its model may not be)
    modes = [(m, m.training) for m in network.modules()]
    network.eval()
    try:
        with torch.no_grad():
            analysis = FlopCountAnalysis(network, (images,))
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            analysis.total()  # runs the trace now, in eval mode
    finally:
        for m, mode in modes:
            m.training = mode
    return analysis


def count_parameters(model: nn.Module) -> Dict[str, int]:
    params = list(model.parameters())
    return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}
