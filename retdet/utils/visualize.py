"""Drawing boxes with class names (and scores) on images, for data previews and detections."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

_PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
            (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
            (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203)]


def label_style(height: int, width: int) -> Tuple[float, int, int]:
    """(font scale, text thickness, box line width) for an image of this size: label text about
    1.6% of the longer side, and never below 11 px, so a label reads the same on a 320 px grid tile
    and on a 1920 px frame."""
    text_px = max(11.0, 0.016 * max(height, width))
    (_, unit_h), _ = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)
    scale = text_px / unit_h
    return scale, max(1, round(text_px / 14)), max(1, round(text_px / 9))


def palette_colour(label: int) -> Tuple[int, int, int]:
    """The BGR colour of class ``label`` in every picture."""
    return _PALETTE[int(label) % len(_PALETTE)]


def draw_boxes(image: np.ndarray, boxes: np.ndarray, labels: Sequence[int], class_names: Sequence[str],
               scores: Optional[Sequence[float]] = None, ignore_boxes: Optional[np.ndarray] = None) -> np.ndarray:
    """A copy of the (H, W, 3) BGR ``image`` with each box outlined in its class colour and labelled.

    Text and lines scale with the image (``label_style``): draw on the image at the size it will be
    shown (``fit_to_cell`` first for a grid), not on a large image that is shrunk afterwards."""
    out = np.ascontiguousarray(image.copy())
    font_scale, text_thickness, thickness = label_style(*out.shape[:2])
    for i, (box, label) in enumerate(zip(np.asarray(boxes).reshape(-1, 4), labels)):
        colour = palette_colour(label)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thickness)
        text = class_names[int(label)] if int(label) < len(class_names) else str(int(label))
        if scores is not None:
            text += f" {float(scores[i]):.2f}"
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_thickness)
        pad = max(2, th // 5)
        ty = max(y0, th + baseline + pad)  # the label sits on the box's top edge, inside the image
        cv2.rectangle(out, (x0, ty - th - baseline - pad), (x0 + tw + 2 * pad, ty), colour, -1)
        cv2.putText(out, text, (x0 + pad, ty - baseline - pad // 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), text_thickness, cv2.LINE_AA)
    for box in np.asarray(ignore_boxes if ignore_boxes is not None else np.zeros((0, 4))).reshape(-1, 4):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (128, 128, 128), max(1, thickness // 2), lineType=cv2.LINE_4)
    return out


def fit_to_cell(image: np.ndarray, boxes: np.ndarray, cell: int = 320) -> Tuple[np.ndarray, np.ndarray]:
    """(image resized so its longer side is ``cell``, (R, 4) xyxy boxes scaled alike): for drawing
    grid tiles at their shown size."""
    scale = cell / max(image.shape[:2])
    size = (max(1, int(round(image.shape[1] * scale))), max(1, int(round(image.shape[0] * scale))))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return resized, np.asarray(boxes, np.float32).reshape(-1, 4) * scale


def image_grid(images: Sequence[np.ndarray], columns: int = 4, cell: int = 320) -> np.ndarray:
    """Tile images (each fitted into cell x cell; draw on ``fit_to_cell`` output so that labels are
    not shrunk) into one picture."""
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
