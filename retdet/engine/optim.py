"""Optimisers (no weight decay on norm layers and biases) and iteration-based LR schedules."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Sequence

import torch
from torch import nn

from retdet.registry import LR_SCHEDULERS, OPTIMIZERS, build

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(model: nn.Module, *, weight_decay: float, weight_decay_norm: float = 0.0,
                 weight_decay_bias: float = 0.0) -> List[Dict[str, Any]]:
    """Trainable parameters in groups: norm-layer parameters and biases get their own weight decay."""
    groups: Dict[float, List[nn.Parameter]] = {}
    seen = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(module, _NORM_TYPES) or type(module).__name__ == "FrozenBatchNorm2d":
                wd = weight_decay_norm
            elif name == "bias":
                wd = weight_decay_bias
            else:
                wd = weight_decay
            groups.setdefault(wd, []).append(p)
    return [{"params": ps, "weight_decay": wd} for wd, ps in sorted(groups.items())]


@OPTIMIZERS.register("SGD")
def sgd(model: nn.Module, *, lr: float, momentum: float = 0.9, weight_decay: float = 1e-4, weight_decay_norm: float = 0.0,
        weight_decay_bias: float = 0.0, nesterov: bool = False) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay=weight_decay, weight_decay_norm=weight_decay_norm,
                          weight_decay_bias=weight_decay_bias)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)


@OPTIMIZERS.register("AdamW")
def adamw(model: nn.Module, *, lr: float, betas: Sequence[float] = (0.9, 0.999), weight_decay: float = 0.05,
          weight_decay_norm: float = 0.0, weight_decay_bias: float = 0.0, eps: float = 1e-8,
          fused: bool = True) -> torch.optim.Optimizer:
    """fused: one kernel per step for all parameters (CPU and CUDA) instead of a dozen ops per tensor."""
    groups = param_groups(model, weight_decay=weight_decay, weight_decay_norm=weight_decay_norm,
                          weight_decay_bias=weight_decay_bias)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused or None)


def build_optimizer(cfg: Mapping, model: nn.Module) -> torch.optim.Optimizer:
    return build(cfg, OPTIMIZERS, where="optimizer", model=model)


class _WarmupSchedule:
    """Multiplier of the base LR at an iteration: linear warm-up from warmup_factor, then decay."""

    def __init__(self, warmup_iters: int, warmup_factor: float) -> None:
        self.warmup_iters, self.warmup_factor = int(warmup_iters), float(warmup_factor)

    def warmup(self, it: int) -> float:
        if it >= self.warmup_iters:
            return 1.0
        alpha = it / max(self.warmup_iters, 1)
        return self.warmup_factor * (1 - alpha) + alpha

    def decay(self, it: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, it: int) -> float:
        return self.warmup(it) * self.decay(it)


@LR_SCHEDULERS.register("MultiStepLR")
class MultiStep(_WarmupSchedule):
    """lr x gamma^(number of milestones passed), after the warm-up."""

    def __init__(self, *, milestones: Sequence[int], gamma: float = 0.1, warmup_iters: int = 1000,
                 warmup_factor: float = 0.001, max_iter: int = 0) -> None:
        super().__init__(warmup_iters, warmup_factor)
        if list(milestones) != sorted(milestones):
            raise ValueError(f"MultiStepLR milestones must increase, got {list(milestones)}")
        self.milestones, self.gamma = list(milestones), gamma

    def decay(self, it: int) -> float:
        return self.gamma ** sum(it >= m for m in self.milestones)


@LR_SCHEDULERS.register("CosineLR")
class Cosine(_WarmupSchedule):
    """Half a cosine from 1 to ``final_factor`` over ``max_iter``, after the warm-up."""

    def __init__(self, *, max_iter: int, final_factor: float = 0.0, warmup_iters: int = 1000,
                 warmup_factor: float = 0.001) -> None:
        super().__init__(warmup_iters, warmup_factor)
        self.max_iter, self.final_factor = int(max_iter), float(final_factor)

    def decay(self, it: int) -> float:
        t = min(it, self.max_iter) / max(self.max_iter, 1)
        return self.final_factor + (1 - self.final_factor) * 0.5 * (1 + math.cos(math.pi * t))


def build_lr_scheduler(cfg: Mapping, optimizer: torch.optim.Optimizer, max_iter: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per iteration; ``max_iter`` is passed to schedules that take it."""
    cfg = dict(cfg)
    from retdet.registry import lookup

    cls = lookup(cfg["type"], LR_SCHEDULERS)
    import inspect

    if "max_iter" in inspect.signature(cls).parameters and "max_iter" not in cfg:
        cfg["max_iter"] = max_iter
    schedule = build(cfg, LR_SCHEDULERS, where="lr_scheduler")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
