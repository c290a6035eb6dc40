"""Samplers: infinite, seeded training streams (uniform, repeat-factor, class-aware), batching by aspect
ratio, and an inference shard.

A training sampler yields ``(index, seed)`` forever. Epoch e is a list of image indices drawn from
``seed + e`` alone, so every rank computes the same list; each position carries its own augmentation
seed, and rank r takes positions r, r + world_size, ... The stream is therefore a pure function of
(seed, rank, world_size): deterministic, each epoch shared disjointly by the ranks, and resumable by
skipping items (GroupedBatchSampler's ``start_batch``).

The training samplers register in ``SAMPLERS`` and are chosen by ``dataloader.train.sampler``;
``build_train_loader`` builds them with the per-image labels (``image_labels``: (M_i,) int64 contiguous
labels per image, in dataset order), ``seed``, ``rank`` and ``world_size``.
"""
from __future__ import annotations

import itertools
import math
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Sampler

from retdet.registry import SAMPLERS

__all__ = ["EpochSampler", "TrainingSampler", "RepeatFactorSampler", "ClassAwareSampler", "GroupedBatchSampler",
           "InferenceSampler", "category_repeat_factors", "image_repeat_factors"]


class EpochSampler(Sampler):
    """Base of the training samplers: a subclass says which indices make an epoch (:meth:`epoch_indices`);
    this class adds the augmentation seeds, splits each epoch between ranks and repeats forever."""

    def __init__(self, *, epoch_length: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"{type(self).__name__}: rank {rank} is not in [0, {world_size})")
        # an epoch shorter than the ranks would leave the last ranks without a single item, forever
        if epoch_length < world_size:
            raise ValueError(f"{type(self).__name__}: an epoch of {epoch_length} image(s) cannot be shared by "
                             f"{world_size} workers")
        self.seed, self.rank, self.world_size = int(seed), rank, world_size

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        """(L,) int64 image indices of one epoch, in training order, drawn from ``generator`` only."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        for epoch in itertools.count():
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = self.epoch_indices(g)
            seeds = torch.randint(0, 2**31 - 1, (len(order),), generator=g)
            for pos in range(self.rank, len(order), self.world_size):
                yield int(order[pos]), int(seeds[pos])

    def summary(self, class_names: Sequence[str]) -> str:
        """One line for the training log: what this sampler does to the class balance."""
        return type(self).__name__


def _num_images(image_labels: Union[int, Sequence[np.ndarray]]) -> int:
    return image_labels if isinstance(image_labels, int) else len(image_labels)


@SAMPLERS.register()
class TrainingSampler(EpochSampler):
    """Every image once per epoch: epoch e is a permutation drawn from ``seed + e`` (or the identity
    without shuffle).

    Args:
        image_labels: the per-image labels every sampler is built with (only their number matters
            here), or the number of images.
    """

    def __init__(self, image_labels: Union[int, Sequence[np.ndarray]], *, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.size, self.shuffle = _num_images(image_labels), shuffle
        if self.size <= 0:
            raise ValueError("TrainingSampler needs a non-empty dataset")
        super().__init__(epoch_length=self.size, seed=seed, rank=rank, world_size=world_size)

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(self.size, generator=generator) if self.shuffle else torch.arange(self.size)


def category_repeat_factors(image_labels: Sequence[np.ndarray], repeat_thresh: float) -> Dict[int, float]:
    """LVIS's per-category repeat factor r_c = max(1, sqrt(t / f_c)), f_c the fraction of all images
    (those without boxes included) in which category c appears. {label: r_c} for the labels present."""
    images_with: Dict[int, int] = {}
    for labels in image_labels:
        for c in np.unique(labels).tolist():
            images_with[c] = images_with.get(c, 0) + 1
    n = len(image_labels)
    return {c: max(1.0, math.sqrt(repeat_thresh / (k / n))) for c, k in sorted(images_with.items())}


def image_repeat_factors(image_labels: Sequence[np.ndarray], category_factors: Dict[int, float]) -> torch.Tensor:
    """(N,) float64: each image's largest category factor; 1 for an image without boxes."""
    return torch.tensor([max((category_factors[c] for c in np.unique(labels).tolist()), default=1.0)
                         for labels in image_labels], dtype=torch.float64)


@SAMPLERS.register()
class RepeatFactorSampler(EpochSampler):
    """Repeat-factor sampling (Gupta et al. 2019, LVIS): images of rare categories appear more often.

    Category c gets r_c = max(1, sqrt(repeat_thresh / f_c)), f_c the fraction of training images that
    contain it; an image gets r_i, the largest r_c of its categories (1 without boxes). Epoch e holds
    image i floor(r_i) times, plus once more with probability frac(r_i) (drawn from ``seed + e``),
    shuffled: over many epochs image i appears r_i times per epoch on average, and an epoch is
    sum(r_i) images long on average.

    ``repeat_thresh`` in (0, 1]: categories in fewer than that fraction of the images are repeated.
    LVIS's 0.001 suits its 1203 categories; a dataset of a few classes needs a larger one (a class in
    10% of the images is repeated sqrt(5) = 2.2 times with 0.5).
    """

    def __init__(self, image_labels: Sequence[np.ndarray], *, repeat_thresh: float = 0.001, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if isinstance(repeat_thresh, bool) or not isinstance(repeat_thresh, (int, float)) \
                or not 0.0 < repeat_thresh <= 1.0:
            raise ValueError(f"repeat_thresh must be a number in (0, 1] (a fraction of the training images), "
                             f"got {repeat_thresh!r}")
        if len(image_labels) == 0:
            raise ValueError("RepeatFactorSampler needs a non-empty dataset")
        self.repeat_thresh = float(repeat_thresh)
        self.category_factors = category_repeat_factors(image_labels, self.repeat_thresh)
        self.image_factors = image_repeat_factors(image_labels, self.category_factors)
        super().__init__(epoch_length=len(image_labels), seed=seed, rank=rank, world_size=world_size)

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        whole = self.image_factors.floor()
        extra = torch.rand(len(whole), generator=generator, dtype=torch.float64) < (self.image_factors - whole)
        repeats = (whole.long() + extra.long()).numpy()
        # numpy's repeat: torch.repeat_interleave runs multi-threaded, and a few ms per epoch on busy cores
        indices = torch.from_numpy(np.repeat(np.arange(len(repeats), dtype=np.int64), repeats))
        return indices[torch.randperm(len(indices), generator=generator)]

    def summary(self, class_names: Sequence[str]) -> str:
        factors = ", ".join(f"{class_names[c]} {r:.2f}" for c, r in self.category_factors.items())
        r = self.image_factors
        return (f"RepeatFactorSampler(repeat_thresh={self.repeat_thresh:g}): category repeat factors {factors}; "
                f"image repeat factors {float(r.min()):.2f} to {float(r.max()):.2f} ({int((r >= 2).sum())} of {len(r)} "
                f"images at least 2), an epoch is {float(r.sum()):.1f} images on average")


@SAMPLERS.register()
class ClassAwareSampler(EpochSampler):
    """Class-aware sampling (Shen et al. 2016, "Relay Backpropagation"): each draw picks a class
    uniformly among those with boxes, then uniformly an image that contains it. Images without boxes
    are never drawn.

    Args:
        epoch_size: draws per epoch (default: the number of images, so an epoch is as long as
            TrainingSampler's and ``train.max_epochs`` keeps its meaning).
    """

    def __init__(self, image_labels: Sequence[np.ndarray], *, epoch_size: Optional[int] = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if epoch_size is not None and (isinstance(epoch_size, bool) or not isinstance(epoch_size, int)
                                       or epoch_size < 1):
            raise ValueError(f"epoch_size must be a positive integer or None, got {epoch_size!r}")
        members: Dict[int, List[int]] = {}
        for i, labels in enumerate(image_labels):
            for c in np.unique(labels).tolist():
                members.setdefault(c, []).append(i)
        if not members:
            raise ValueError(f"ClassAwareSampler draws images by the classes of their boxes, and none of the "
                             f"{len(image_labels)} training images has a box")
        self.classes = sorted(members)  # (C',) labels that have images
        self.counts = torch.tensor([len(members[c]) for c in self.classes])  # (C',) images per class
        self.offsets = torch.cumsum(self.counts, 0) - self.counts  # (C',) where each class starts in members
        self.members = torch.tensor([i for c in self.classes for i in members[c]])  # (sum counts,) image indices
        self.epoch_size = len(image_labels) if epoch_size is None else epoch_size
        super().__init__(epoch_length=self.epoch_size, seed=seed, rank=rank, world_size=world_size)

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        cls = torch.randint(0, len(self.classes), (self.epoch_size,), generator=generator)
        u = torch.rand(self.epoch_size, generator=generator, dtype=torch.float64)
        # floor(u * count) is uniform over the class's images; the clamp guards u * count rounding up to count
        pick = torch.minimum((u * self.counts[cls]).long(), self.counts[cls] - 1)
        return self.members[self.offsets[cls] + pick]

    def summary(self, class_names: Sequence[str]) -> str:
        drawn = ", ".join(f"{class_names[c]} ({int(k)} images)" for c, k in zip(self.classes, self.counts))
        absent = [n for c, n in enumerate(class_names) if c not in self.classes]
        never = f"; never drawn (no boxes): {', '.join(absent)}" if absent else ""
        return (f"ClassAwareSampler: each draw a class uniformly among {drawn}, then an image of it; "
                f"{self.epoch_size} draws per epoch{never}")


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
