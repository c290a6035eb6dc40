"""Counting subnormal floats produced by the ops of a piece of code.

A subnormal float (magnitude below ``torch.finfo(dtype).tiny``) costs a microcode assist on x86
CPUs in every operation that reads or makes it, so a network whose tensors fill with them runs
several times slower on the same shapes. ``SubnormalCounter`` finds where they come from; the
benchmark reports its count for a fresh model's training step, and the tests use it to keep the
training step free of them.

    with SubnormalCounter() as counter:
        loss = sum(model(batch).values()); loss.backward()
    print(counter.by_op.most_common(5))
"""
from __future__ import annotations

import collections
from typing import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["SubnormalCounter", "count_subnormal"]

_FLOATS = (torch.float32, torch.float64, torch.bfloat16)  # float16 computes in float32 on CPU


def count_subnormal(t: torch.Tensor) -> int:
    """Number of nonzero values of ``t`` below its dtype's smallest normal magnitude."""
    if t.dtype not in _FLOATS or t.numel() == 0:
        return 0
    return int(((t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)).sum())


class SubnormalCounter(TorchDispatchMode):
    """Counts the subnormal values in the outputs of every ATen op run inside the context.

    ``by_op``: op name -> subnormal values it returned (views count again: they are what the next
    op reads). ``total``: the sum over ops that compute (views and copies left out). Costs a scan of
    every output: for diagnosis and tests, not for timed code.
    """

    _MOVES = {"view", "_unsafe_view", "slice", "select", "permute", "transpose", "t", "expand", "reshape",
              "as_strided", "clone", "copy_", "detach", "alias", "unsqueeze", "squeeze", "split", "cat",
              "_to_copy", "contiguous", "split_with_sizes", "unbind", "flatten"}

    # Their outputs hold whatever memory was there before being written: not values yet.
    _UNINITIALISED = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}

    def __init__(self) -> None:
        super().__init__()
        self.by_op: Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ in self._UNINITIALISED:
            return out
        n = sum(count_subnormal(t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        if n:
            self.by_op[func.overloadpacket.__name__] += n
        return out

    @property
    def total(self) -> int:
        return sum(n for op, n in self.by_op.items() if op not in self._MOVES)
