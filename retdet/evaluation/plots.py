"""Pictures of an evaluation: per-class precision/recall curves and example detections."""
from __future__ import annotations

from typing import Any, List, Sequence

import numpy as np


def plot_pr_curves(coco_eval, class_names: Sequence[str], category_ids: Sequence[int], path: str) -> str:
    """Precision vs recall per class at IoU 0.5 and 0.75 (all areas, 100 detections) -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    fig.savefig(path, dpi=120)  # each 3.2 x 2.8 in panel is 384 x 336 px; 9 pt text is 15 px
    plt.close(fig)
    return path


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
