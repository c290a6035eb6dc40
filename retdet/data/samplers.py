"""Samplers: an infinite, seeded training stream, batching by aspect ratio, and an inference shard."""
from __future__ import annotations

import itertools
from typing import Iterator, List, Sequence, Tuple

import torch
from torch.utils.data import Sampler


class TrainingSampler(Sampler):
    """Infinite stream of ``(index, seed)`` for one rank.

    Epoch e is a permutation drawn from ``seed + e`` (or the identity without shuffle), with one
    augmentation seed per position; rank r takes positions r, r + world_size, ... So the stream is a
    pure function of (seed, rank, world_size): deterministic, and resumable by skipping items.
    """

    def __init__(self, size: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if size <= 0:
            raise ValueError("TrainingSampler needs a non-empty dataset")
        self.size, self.shuffle, self.seed = size, shuffle, int(seed)
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        for epoch in itertools.count():
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
            seeds = torch.randint(0, 2**31 - 1, (self.size,), generator=g)
            for pos in range(self.rank, self.size, self.world_size):
                yield int(order[pos]), int(seeds[pos])


class GroupedBatchSampler(Sampler):
    """Batches of ``(index, seed)`` whose images share an orientation (landscape or portrait), so
    padding wastes little; or plain consecutive batches without grouping.

    ``start_batch`` skips that many batches (replaying the index stream only: no image is loaded),
    which is how a resumed run continues with the same data order.
    """

    def __init__(self, sampler: Sampler, landscape: Sequence[bool], batch_size: int, *, group: bool = True,
                 start_batch: int = 0) -> None:
        self.sampler, self.landscape = sampler, list(landscape)
        self.batch_size, self.group, self.start_batch = batch_size, group, start_batch

    def _batches(self) -> Iterator[List[Tuple[int, int]]]:
        buckets: List[List[Tuple[int, int]]] = [[], []]
        for item in self.sampler:
            bucket = buckets[int(self.landscape[item[0]]) if self.group else 0]
            bucket.append(item)
            if len(bucket) == self.batch_size:
                yield list(bucket)
                bucket.clear()

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        return itertools.islice(self._batches(), self.start_batch, None)


class InferenceSampler(Sampler):
    """Each index exactly once across ranks: rank r gets a contiguous shard (as even as possible)."""

    def __init__(self, size: int, *, rank: int = 0, world_size: int = 1) -> None:
        per, extra = divmod(size, world_size)
        self.start = rank * per + min(rank, extra)
        self.end = self.start + per + (1 if rank < extra else 0)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        return ((i, 0) for i in range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start
