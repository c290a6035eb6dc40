"""Drawing boxes with class names (and scores) on images, for data previews and detections."""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

_PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
            (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
            (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203)]


def draw_boxes(image: np.ndarray, boxes: np.ndarray, labels: Sequence[int], class_names: Sequence[str],
               scores: Optional[Sequence[float]] = None, ignore_boxes: Optional[np.ndarray] = None) -> np.ndarray:
    """A copy of the (H, W, 3) BGR ``image`` with each box outlined in its class colour and labelled."""
    out = np.ascontiguousarray(image.copy())
    thickness = max(1, round(min(out.shape[:2]) / 300))
    for i, (box, label) in enumerate(zip(np.asarray(boxes).reshape(-1, 4), labels)):
        colour = _PALETTE[int(label) % len(_PALETTE)]
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thickness)
        text = class_names[int(label)] if int(label) < len(class_names) else str(int(label))
        if scores is not None:
            text += f" {float(scores[i]):.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        ty = max(y0, th + 2)
        cv2.rectangle(out, (x0, ty - th - 2), (x0 + tw + 2, ty), colour, -1)
        cv2.putText(out, text, (x0 + 1, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    for box in np.asarray(ignore_boxes if ignore_boxes is not None else np.zeros((0, 4))).reshape(-1, 4):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (128, 128, 128), 1, lineType=cv2.LINE_4)
    return out


def image_grid(images: Sequence[np.ndarray], columns: int = 4, cell: int = 320) -> np.ndarray:
    """Tile images (each fitted into cell x cell) into one picture."""
    tiles = []
    for im in images:
        scale = cell / max(im.shape[:2])
        resized = cv2.resize(im, (max(1, int(im.shape[1] * scale)), max(1, int(im.shape[0] * scale))))
        tile = np.full((cell, cell, 3), 255, np.uint8)
        tile[: resized.shape[0], : resized.shape[1]] = resized
        tiles.append(tile)
    while len(tiles) % columns:
        tiles.append(np.full((cell, cell, 3), 255, np.uint8))
    rows = [np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    return np.vstack(rows)
