"""Process-group helpers that also work when torch.distributed is not initialised."""
from __future__ import annotations

from typing import Any, Dict, List

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    if is_distributed() and get_world_size() > 1:
        dist.barrier()


def all_gather_object(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order (a one-element list without distribution)."""
    if not is_distributed() or get_world_size() == 1:
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks (``t`` itself without distribution)."""
    if not is_distributed() or get_world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


def reduce_mean_dict(values: Dict[str, float]) -> Dict[str, float]:
    """The mean of each (float) value over ranks, for logging."""
    if not is_distributed() or get_world_size() == 1:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / get_world_size() for k, v in zip(keys, t.tolist())}
