"""Parameter and FLOP counts of a detector's network (fvcore), as tables."""
from __future__ import annotations

import logging
from typing import Dict, Tuple

import torch
from torch import Tensor, nn


class DetectorNetwork(nn.Module):
    """The detector's network alone: a normalised (N, 3, H, W) batch -> per-level logits and deltas.

    Pre- and post-processing are not convolutions and take no FLOPs worth counting; tracing them
    would only add data-dependent control flow.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        logits, deltas = self.model.head(self.model.features(images))
        return tuple(logits) + tuple(deltas)


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


def flop_table(network: nn.Module, images: Tensor, max_depth: int = 3) -> str:
    """fvcore's per-module table: parameters and GFLOPs for modules down to ``max_depth``."""
    from fvcore.nn import flop_count_table

    return flop_count_table(flop_analysis(network, images), max_depth=max_depth)
