"""The validation loss: the training losses of a model on its config's test set, without training it."""
from __future__ import annotations

import contextlib
from typing import Dict, Mapping, Optional

import torch
from torch import nn

from retdet.data import build_test_loader, register_from_config
from retdet.utils import comm


@torch.no_grad()
def validation_loss(cfg: Mapping, model: nn.Module, *, amp_dtype: Optional[torch.dtype] = None) -> Dict[str, float]:
    """{"val/loss_cls", "val/loss_box_reg", "val/total_loss"} of ``model`` on ``dataloader.test``.

    The model runs in inference mode (frozen normalisation statistics, no loss-normaliser update)
    and each loss is its sum over every anchor of every image divided by the whole set's number of
    foreground anchors, so the value depends on neither the batch size nor the number of workers
    (each worker sums its shard, then the sums are added). ``model`` must provide
    ``summed_losses(samples)`` (RetinaNet does).
    """
    if not hasattr(model, "summed_losses"):
        raise TypeError(f"train.val_loss_period needs a detector with summed_losses(samples) -> (sums, "
                        f"num_foreground); {type(model).__name__} has none")
    register_from_config(cfg["dataloader"].get("register", []))
    loader, _ = build_test_loader(cfg["dataloader"]["test"], input_format=cfg["model"].get("input_format", "BGR"),
                                  rank=comm.get_rank(), world_size=comm.get_world_size())
    device = next(model.parameters()).device
    sums: Dict[str, torch.Tensor] = {}
    foreground = torch.zeros((), dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    try:
        for batch in loader:
            autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                        else contextlib.nullcontext())
            with autocast:
                summed, num_foreground = model.summed_losses(batch)
            for name, value in summed.items():
                sums[name] = sums.get(name, torch.zeros((), dtype=torch.float64, device=device)) + value.double()
            foreground += num_foreground.double()
    finally:
        model.train(was_training)
    names = sorted(sums)
    totals = comm.all_reduce_sum(torch.stack([sums[n] for n in names] + [foreground])).tolist()
    count = max(totals[-1], 1.0)
    values = {f"val/{n}": v / count for n, v in zip(names, totals[:-1])}
    values["val/total_loss"] = sum(values.values())
    return values
