"""Searching anchor sizes and aspect ratios that fit a training set's boxes.

The head predicts A = scales x ratios anchors per location, so the search keeps that count (and the
levels' strides) and moves: each level's base size, the octave scales shared by the levels
(``sizes[l] = [base_l * m for m in scales]``) and the aspect ratios. Fitness, on every training box at
every training scale (retdet.evaluation.anchor_coverage, exact best IoUs):

    matched fraction (best IoU >= the matcher's foreground threshold) + 0.5 * mean best IoU

so a setting first gives more boxes a well-placed positive, then places them better. Two starts, the
config's anchors and a k-means one (1-D k-means of log box size into one base size per level, of log
aspect ratio into the ratios), are each refined by an evolutionary search as published anchor
optimisers do (YOLOv5's): multiplicative Gaussian mutations, a mutant kept when it is fitter. Seeded:
the same data and seed give the same anchors. The config's setting is a candidate too, so the result
is never less fit than it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

from .anchor_coverage import TrainingBoxes, best_iou_nearest, grid_extent


@dataclass
class AnchorSetting:
    """sizes: per level, the anchor sizes (sqrt of area); aspect_ratios: height / width."""

    sizes: List[List[float]]
    aspect_ratios: List[float]

    def overrides(self) -> List[str]:
        """The command-line overrides that select this setting."""
        sizes = "[" + ",".join("[" + ",".join(f"{s:.1f}" for s in level) + "]" for level in self.sizes) + "]"
        ratios = "[" + ",".join(f"{r:.3f}" for r in self.aspect_ratios) + "]"
        return [f"model.anchor_generator.sizes={sizes}", f"model.anchor_generator.aspect_ratios={ratios}"]

    def rounded(self) -> "AnchorSetting":
        """As ``overrides`` prints it, so that what is measured is what the user sets."""
        return AnchorSetting([[round(s, 1) for s in level] for level in self.sizes],
                             [round(r, 3) for r in self.aspect_ratios])


def cell_anchors(setting: AnchorSetting, order: str = "size_major", round_cell: bool = False) -> List[np.ndarray]:
    """Per level, the (A, 4) anchors centred at 0, built by retdet.modeling.AnchorGenerator itself."""
    from retdet.modeling.anchor_generator import AnchorGenerator

    generator = AnchorGenerator(sizes=setting.sizes, aspect_ratios=setting.aspect_ratios,
                                strides=[1] * len(setting.sizes), order=order, round_cell=round_cell)
    return [generator.cell_anchors(level).numpy() for level in range(len(setting.sizes))]


class AnchorFitness:
    """Scores settings on ``data`` for anchors with ``strides``, grid ``offset`` and the generator's
    ``order`` and ``round_cell``."""

    def __init__(self, data: TrainingBoxes, strides: Sequence[int], offset: float, fg_iou: float, *,
                 order: str = "size_major", round_cell: bool = False) -> None:
        self.data, self.strides, self.offset, self.fg_iou = data, list(strides), float(offset), float(fg_iou)
        self.order, self.round_cell = order, round_cell
        self.grid = grid_extent(data, self.strides)

    def best_iou(self, setting: AnchorSetting) -> np.ndarray:
        return best_iou_nearest(cell_anchors(setting, self.order, self.round_cell), self.strides, self.offset,
                                self.data, self.grid)

    def __call__(self, setting: AnchorSetting) -> float:
        best = self.best_iou(setting)
        return float((best >= self.fg_iou).mean() + 0.5 * best.mean()) if len(best) else 0.0


def kmeans_1d(values: np.ndarray, k: int, iters: int = 50) -> np.ndarray:
    """k sorted cluster centres of 1-D ``values`` (Lloyd's algorithm from quantile starts)."""
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iters):
        assign = np.abs(values[:, None] - centres[None]).argmin(1)
        new = np.array([values[assign == j].mean() if (assign == j).any() else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def kmeans_setting(data: TrainingBoxes, levels: int, scales: Sequence[float], num_ratios: int) -> AnchorSetting:
    """One base size per level from k-means of log sqrt(area), ratios from k-means of log(h / w)."""
    wh = np.maximum(data.wh.astype(np.float64), 1e-3)
    size = np.log(np.sqrt(wh[:, 0] * wh[:, 1]))
    bases = np.exp(kmeans_1d(size, levels)) / math.sqrt(scales[-1] / scales[0])  # centre the octave on the cluster
    ratios = np.exp(kmeans_1d(np.log(wh[:, 1] / wh[:, 0]), num_ratios))
    return AnchorSetting([[float(b * m) for m in scales] for b in bases], [float(r) for r in ratios])


def _split(setting: AnchorSetting):
    """(base sizes (L,), octave scales (S,) with scales[0] = 1, ratios (R,)) of a setting."""
    sizes = np.asarray(setting.sizes, np.float64)
    bases = sizes[:, 0]
    scales = np.exp(np.mean(np.log(sizes / bases[:, None]), axis=0))
    return bases, scales, np.asarray(setting.aspect_ratios, np.float64)


def search_anchors(fitness: AnchorFitness, start: AnchorSetting, *, generations: int = 600, sigma: float = 0.1,
                   seed: int = 0) -> Dict[str, object]:
    """The fittest setting found from ``start`` and a k-means start; returns {"setting", "fitness",
    "start_fitness", "kmeans_fitness", "history" (best fitness per generation)}."""
    rng = np.random.default_rng(seed)
    start = start.rounded()
    bases, scales, ratios = _split(start)
    candidates = [start, kmeans_setting(fitness.data, len(bases), scales, len(ratios)).rounded()]
    scores = [fitness(c) for c in candidates]
    best, best_fit = candidates[int(np.argmax(scores))], max(scores)
    history = []
    for _ in range(generations):
        b, s, r = _split(best)
        theta = np.log(np.r_[b, s[1:], r])
        mask = rng.random(theta.shape) < 0.5
        mask[rng.integers(len(theta))] = True  # mutate at least one parameter
        theta = theta + mask * rng.normal(0, sigma, theta.shape)
        nb, ns, nr = np.exp(theta[:len(b)]), np.r_[1.0, np.exp(theta[len(b):len(b) + len(s) - 1])], \
            np.exp(theta[len(b) + len(s) - 1:])
        ns, nr = np.sort(ns), np.sort(nr)
        candidate = AnchorSetting([[float(x * m) for m in ns] for x in np.clip(nb, 2.0, 4096.0)],
                                  [float(x) for x in np.clip(nr, 0.05, 20.0)]).rounded()
        f = fitness(candidate)
        if f > best_fit:
            best, best_fit = candidate, f
        history.append(best_fit)
    return {"setting": best, "fitness": best_fit, "start_fitness": scores[0], "kmeans_fitness": scores[1],
            "history": history}
