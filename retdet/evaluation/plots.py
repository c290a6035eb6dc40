"""Pictures of an evaluation: per-class precision/recall curves, example detections, the error breakdown,
the confusion matrix and the anchor coverage."""
from __future__ import annotations

from typing import Any, List, Mapping, Sequence

import numpy as np


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display on servers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str, dpi: int = 120) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def plot_pr_curves(coco_eval, class_names: Sequence[str], category_ids: Sequence[int], path: str) -> str:
    """Precision vs recall per class at IoU 0.5 and 0.75 (all areas, 100 detections) -> PNG."""
    plt = pyplot()

    precision = coco_eval.eval["precision"]
    recall = coco_eval.params.recThrs
    iou_index = {0.5: 0, 0.75: int(np.argmin(np.abs(coco_eval.params.iouThrs - 0.75)))}
    cols = min(4, len(class_names))
    rows = int(np.ceil(len(class_names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for k, (name, cid) in enumerate(zip(class_names, category_ids)):
        ax = axes[k // cols][k % cols]
        c = coco_eval.params.catIds.index(cid)
        for iou, t in iou_index.items():
            p = precision[t, :, c, 0, -1]
            valid = p > -1
            ap = p[valid].mean() * 100 if valid.any() else float("nan")
            ax.plot(recall[valid], p[valid], label=f"IoU {iou}: AP {ap:.1f}")
        ax.set_title(name, fontsize=11)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall", fontsize=9)
        ax.set_ylabel("precision", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=9, loc="lower left")
    for k in range(len(class_names), rows * cols):
        axes[k // cols][k % cols].axis("off")
    return save_figure(fig, path)  # at 120 dpi each 3.2 x 2.8 in panel is 384 x 336 px; 9 pt text is 15 px


def plot_examples(examples: List[Any], class_names: Sequence[str], path: str, score_threshold: float = 0.3,
                  input_format: str = "BGR", cell: int = 400) -> str:
    """A grid of validation images (each fitted into ``cell`` px) with their detections above
    ``score_threshold`` -> PNG."""
    import cv2

    from retdet.utils.visualize import draw_boxes, fit_to_cell, image_grid

    tiles = []
    for image, boxes, labels, scores, original_size in examples:
        img = np.ascontiguousarray(image.transpose(1, 2, 0))
        if input_format == "RGB":
            img = img[:, :, ::-1]
        # detections are in original-image pixels: bring them to the shown (resized) image
        h, w = img.shape[:2]
        oh, ow = original_size or (h, w)
        scale = np.array([w / ow, h / oh, w / ow, h / oh], np.float32)
        keep = scores >= score_threshold
        # Shrink to the tile first, then draw: labels and lines keep their size in the grid.
        tile, tile_boxes = fit_to_cell(img, boxes[keep] * scale, cell)
        tiles.append(draw_boxes(tile, tile_boxes, labels[keep].tolist(), class_names, scores=scores[keep]))
    if not tiles:
        tiles = [np.full((64, 64, 3), 255, np.uint8)]
    cv2.imwrite(path, image_grid(tiles, columns=4, cell=cell))
    return path


def plot_error_breakdown(b: Mapping[str, Any], path: str) -> str:
    """The AP gained by fixing each error kind (retdet.evaluation.error_analysis.error_breakdown) -> PNG."""
    from .error_analysis import ERROR_KINDS, ERROR_NAMES, SPECIAL_KINDS

    plt = pyplot()
    kinds = list(ERROR_KINDS) + list(SPECIAL_KINDS)
    values = [b["dap"][k] for k in kinds]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    colours = ["#d95f02"] * len(ERROR_KINDS) + ["#7570b3"] * len(SPECIAL_KINDS)
    ax.barh([ERROR_NAMES[k] for k in kinds][::-1], values[::-1], color=colours[::-1])
    for y, v in enumerate(values[::-1]):
        ax.text(v, y, f" {v:.2f}", va="center", fontsize=9)
    ax.set_xlabel(f"AP{int(round(b['iou'] * 100))} gained by fixing it (base {b['ap']:.2f})", fontsize=10)
    ax.set_xlim(0, max(values + [1.0]) * 1.18)
    ax.tick_params(labelsize=9)
    return save_figure(fig, path)


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], iou: float, score_threshold: float,
                          path: str) -> str:
    """A (K + 1, K + 1) confusion matrix (background last), coloured by the share of each row -> PNG."""
    plt = pyplot()
    labels = list(names) + ["background"]
    rows = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    size = min(12.0, 2.0 + 0.55 * len(labels))
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if len(labels) <= 30:  # beyond that the numbers do not fit in the cells
        for i in range(len(labels)):
            for j in range(len(labels)):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=90 if len(labels) > 6 else 0, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("prediction", fontsize=10)
    ax.set_ylabel("ground truth", fontsize=10)
    ax.set_title(f"IoU {iou}, score >= {score_threshold} (colour: share of the row)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path)


def plot_anchor_coverage(wh: np.ndarray, cov: Mapping[str, np.ndarray], fg_iou: float, path: str) -> str:
    """Box width against height (log scales) for (B, 2) ``wh``, coloured by best anchor IoU
    (retdet.evaluation.anchor_coverage.exact_coverage), unmatchable boxes marked -> PNG."""
    plt = pyplot()
    wh = np.maximum(wh, 0.5)
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    sc = ax.scatter(wh[:, 0], wh[:, 1], c=cov["best_iou"], cmap="viridis", vmin=0, vmax=1, s=6, alpha=0.6)
    none = cov["positives"] == 0
    if none.any():
        ax.scatter(wh[none, 0], wh[none, 1], marker="x", c="red", s=18, label=f"unmatchable ({int(none.sum())})")
    weak = (cov["best_iou"] < fg_iou) & ~none
    ax.scatter([], [], c="white", label=f"best IoU < {fg_iou}: {int(weak.sum())} of {len(wh)}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("box width (model-input px)")
    ax.set_ylabel("box height (model-input px)")
    ax.legend(fontsize=9, loc="upper left")
    fig.colorbar(sc, ax=ax, label="best anchor IoU")
    return save_figure(fig, path, dpi=110)
