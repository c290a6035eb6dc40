"""Do the anchors fit the objects? Coverage of a training set's boxes by a config's anchors.

Every ground-truth box is taken at the sizes the model trains on (each short side of the training
ResizeShortestEdge, which training picks at random; the other augmentations are left out), on the
padded image the anchor grid covers. For each (box, scale) it records the best IoU any anchor reaches,
and, with the config's own matcher (the same call the detector makes in training), how many anchors
become positives for it. A box with none is "unmatchable": it never trains the head. A box whose
only positives come from the matcher's low-quality rule (best IoU below the foreground threshold)
trains on poorly placed anchors.

``best_iou_nearest`` computes the best IoU without building the grid: for a fixed anchor shape the
overlap with a box along each axis is largest at the grid position nearest the box centre, so one
candidate per level and shape is exact. The anchor search (retdet.evaluation.anchor_search) scores
thousands of candidate settings with it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from retdet.structures.boxes import pairwise_iou

# Bins of the table, in model-input pixels: sqrt(box area), and aspect ratio height / width.
SIZE_BINS = (0, 16, 32, 64, 128, 256, math.inf)
RATIO_BINS = (0, 1 / 3, 1 / 2, 1 / 1.25, 1.25, 2, 3, math.inf)


@dataclass
class TrainingBoxes:
    """The training boxes at the model's input scale: boxes (B, 4) xyxy float32, and per box its
    sample (B,) int64 (an index into ``image_sizes``, the padded (H, W) of each (image, scale) pair)."""

    boxes: np.ndarray
    sample: np.ndarray
    image_sizes: List[Tuple[int, int]]
    scales: List[int]

    @property
    def wh(self) -> np.ndarray:
        return self.boxes[:, 2:] - self.boxes[:, :2]


def train_scales(transforms: Sequence[Mapping[str, Any]]) -> Tuple[List[int], int]:
    """(short sides, max size) of the training resize: every choice, or the ends and middle of a range;
    ([0], 0) (the stored size) without a ResizeShortestEdge."""
    for t in transforms:
        if t.get("type") == "ResizeShortestEdge":
            lengths = t["short_edge_length"]
            lengths = [lengths] if isinstance(lengths, int) else list(lengths)
            if t.get("sample_style", "choice") == "range":
                lengths = sorted({lengths[0], (lengths[0] + lengths[1]) // 2, lengths[1]})
            return [int(v) for v in lengths], int(t.get("max_size", 1333))
    return [0], 0


def training_boxes(records: Sequence[Any], transforms: Sequence[Mapping[str, Any]],
                   size_divisibility: int = 32) -> TrainingBoxes:
    """``records`` (retdet.data ImageRecords) at every training scale, as ResizeShortestEdge scales them."""
    from retdet.data.transforms import ResizeShortestEdge

    scales, max_size = train_scales(transforms)
    boxes, sample, sizes = [], [], []
    div = max(int(size_divisibility), 1)
    for short in scales:
        resize = ResizeShortestEdge(short_edge_length=short, max_size=max_size) if short else None
        for r in records:
            h, w = resize.output_size(r.height, r.width, short) if resize else (r.height, r.width)
            factor = np.array([w / r.width, h / r.height] * 2, np.float32)
            boxes.append(np.asarray(r.boxes, np.float32).reshape(-1, 4) * factor)
            sample.append(np.full(len(boxes[-1]), len(sizes), np.int64))
            sizes.append((int(math.ceil(h / div) * div), int(math.ceil(w / div) * div)))
    return TrainingBoxes(np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
                         np.concatenate(sample) if sample else np.zeros(0, np.int64), sizes, scales)


def feature_sizes(padded: Tuple[int, int], strides: Sequence[int]) -> List[Tuple[int, int]]:
    """(Hi, Wi) of each level for a padded input: every stride-2 layer (k3 s2 p1 convs, the stem, the
    pools) maps n to ceil(n / 2), so a level of stride s has ceil(H / s) rows."""
    return [(int(math.ceil(padded[0] / s)), int(math.ceil(padded[1] / s))) for s in strides]


def anchor_grid(generator, padded: Tuple[int, int]) -> torch.Tensor:
    """(R, 4) every anchor of a padded (H, W) input, in the detector's order (levels concatenated)."""
    return torch.cat([generator.grid_anchors(level, h, w, torch.device("cpu"))
                      for level, (h, w) in enumerate(feature_sizes(padded, generator.strides))])


def positive_anchors(generator, matcher, boxes: np.ndarray, image_size: Tuple[int, int],
                     size_divisibility: int = 32) -> Tuple[np.ndarray, np.ndarray]:
    """The anchors the matcher makes positive for (M, 4) xyxy ``boxes`` of an (H, W) model input:
    ((P, 4) anchors, (P,) the index of the box each one trains on)."""
    div = max(int(size_divisibility), 1)
    padded = (int(math.ceil(image_size[0] / div) * div), int(math.ceil(image_size[1] / div) * div))
    anchors = anchor_grid(generator, padded)
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    matched, labels = matcher(pairwise_iou(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), anchors))
    pos = labels == 1
    return anchors[pos].numpy(), matched[pos].numpy()


def exact_coverage(generator, matcher, data: TrainingBoxes) -> Dict[str, np.ndarray]:
    """Per box: ``best_iou`` (B,), ``positives`` (B,) the anchors the matcher makes positive for it, and
    ``strong`` (B,) those of them with IoU >= the matcher's foreground threshold."""
    fg = float(matcher.thresholds[-2])
    best = np.zeros(len(data.boxes), np.float32)
    positives = np.zeros(len(data.boxes), np.int64)
    strong = np.zeros(len(data.boxes), np.int64)
    grids: Dict[Tuple[int, int], torch.Tensor] = {}
    order = np.argsort(data.sample, kind="mergesort")
    bounds = np.searchsorted(data.sample[order], np.arange(len(data.image_sizes) + 1))
    for n, padded in enumerate(data.image_sizes):
        idx = order[bounds[n]:bounds[n + 1]]
        if not len(idx):
            continue
        if padded not in grids:
            grids[padded] = anchor_grid(generator, padded)
        iou = pairwise_iou(torch.from_numpy(data.boxes[idx]), grids[padded])
        matched, labels = matcher(iou)
        pos = labels == 1
        best[idx] = iou.max(dim=1).values.numpy()
        counts = torch.bincount(matched[pos], minlength=len(idx))
        positives[idx] = counts.numpy()
        strong_pos = pos & (iou.gather(0, matched[None]).squeeze(0) >= fg)
        strong[idx] = torch.bincount(matched[strong_pos], minlength=len(idx)).numpy()
    return {"best_iou": best, "positives": positives, "strong": strong}


def best_iou_nearest(cells: Sequence[np.ndarray], strides: Sequence[int], offset: float, data: TrainingBoxes,
                     grid: Optional[np.ndarray] = None) -> np.ndarray:
    """(B,) best IoU of each box with any anchor, from each level's (A, 4) cell anchors (centred at
    0) placed at the grid position nearest the box (module doc). ``grid``: (B, L, 2) rows and columns
    of each box's level grids (from ``grid_extent``; computed when None)."""
    boxes = data.boxes.astype(np.float64)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    area = bw * bh
    grid = grid_extent(data, strides) if grid is None else grid
    best = np.zeros(len(boxes))
    for level, (cell, s) in enumerate(zip(cells, strides)):
        cell = np.asarray(cell, np.float64)
        acx, acy = (cell[:, 0] + cell[:, 2]) / 2, (cell[:, 1] + cell[:, 3]) / 2
        aw, ah = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
        # nearest anchor centre per axis: (j + offset) * s + acx closest to cx, j inside the grid
        j = np.clip(np.round((cx[:, None] - acx[None]) / s - offset), 0, grid[:, level, 1:2] - 1)
        i = np.clip(np.round((cy[:, None] - acy[None]) / s - offset), 0, grid[:, level, 0:1] - 1)
        ax = (j + offset) * s + acx[None]
        ay = (i + offset) * s + acy[None]
        ox = np.clip(np.minimum(ax + aw / 2, boxes[:, 2:3]) - np.maximum(ax - aw / 2, boxes[:, 0:1]), 0, None)
        oy = np.clip(np.minimum(ay + ah / 2, boxes[:, 3:4]) - np.maximum(ay - ah / 2, boxes[:, 1:2]), 0, None)
        inter = ox * oy
        iou = inter / (area[:, None] + (aw * ah)[None] - inter)
        best = np.maximum(best, iou.max(1))
    return best


def grid_extent(data: TrainingBoxes, strides: Sequence[int]) -> np.ndarray:
    """(B, L, 2) the (rows, columns) of each level's grid on each box's padded image."""
    sizes = np.array([feature_sizes(p, strides) for p in data.image_sizes], np.float64).reshape(-1, len(strides), 2)
    return sizes[data.sample]


def coverage_table(data: TrainingBoxes, cov: Mapping[str, np.ndarray], fg_iou: float) -> Dict[str, List[Dict]]:
    """Rows by box size and by aspect ratio: boxes, mean best IoU, % with best IoU >= ``fg_iou``, % whose
    positives are only low-quality ones, % unmatchable (no positive), mean positives per box."""
    wh = data.wh
    size, ratio = np.sqrt(wh[:, 0] * wh[:, 1]), wh[:, 1] / np.maximum(wh[:, 0], 1e-6)

    def rows(values, bins, fmt):
        out = []
        for lo, hi in zip(bins[:-1], bins[1:]):
            sel = (values >= lo) & (values < hi)
            if sel.any():
                out.append(dict(bin=fmt(lo, hi), **_stats(cov, sel, fg_iou)))
        return out

    size_fmt = lambda lo, hi: f"{lo:g}-{hi:g}" if hi < math.inf else f">={lo:g}"  # noqa: E731
    ratio_fmt = lambda lo, hi: (f"<{hi:.2f}" if lo == 0 else f">={lo:.2f}" if hi == math.inf  # noqa: E731
                                else f"{lo:.2f}-{hi:.2f}")
    return {"by_size": rows(size, SIZE_BINS, size_fmt), "by_ratio": rows(ratio, RATIO_BINS, ratio_fmt),
            "all": [dict(bin="all", **_stats(cov, np.ones(len(size), bool), fg_iou))]}


def _stats(cov: Mapping[str, np.ndarray], sel: np.ndarray, fg_iou: float) -> Dict[str, float]:
    best, pos = cov["best_iou"][sel], cov["positives"][sel]
    return {"boxes": int(sel.sum()), "mean_best_iou": float(best.mean()),
            "matched": float((best >= fg_iou).mean() * 100),
            "low_quality_only": float(((pos > 0) & (cov["strong"][sel] == 0)).mean() * 100),
            "unmatchable": float((pos == 0).mean() * 100), "positives_per_box": float(pos.mean())}
