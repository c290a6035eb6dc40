"""Test-time augmentation and tiled inference: the detector run on several views of each image, the
views' detections mapped back and merged (retdet/modeling/merge_detections.py).

    model.test_time_aug = dict(flips=[False, True], scales=[0.8, 1.0, 1.2], merge="nms")
    model.tiling = dict(tile=512, overlap=128, full_image=True)

Both work wherever the model infers (``--eval-only``, tools/demo.py, the Predictor), on the images the
test pipeline gives it: the test resize comes first, so ``tile`` and ``overlap`` are in model-input
pixels (for large images, make the test resize keep them large). The exported graphs (retdet/export.py)
hold the single-view model only; exporting a model with either set is an error.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from retdet.structures import Detections, ImageSample

from .merge_detections import check_merge, merge_detections

Detect = Callable[[Sequence[ImageSample]], List[Detections]]  # boxes in each sample's input pixels


def resize_image(image: Tensor, size: Tuple[int, int]) -> Tensor:
    """A (C, H, W) image resized to ``size`` (h, w): OpenCV's area filter when shrinking a uint8 CPU image
    (as the data pipeline resizes, no float copy of a large image), else bilinear."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    if image.dtype == torch.uint8 and image.device.type == "cpu":
        shrink = size[0] < image.shape[-2]
        out = cv2.resize(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), (size[1], size[0]),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return torch.from_numpy(out.reshape(size[0], size[1], -1)).permute(2, 0, 1)
    return F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]


def flip_boxes(boxes: Tensor, width: float) -> Tensor:
    """(R, 4) xyxy boxes of an image ``width`` wide, mirrored left-right (x -> width - x)."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def _positive(value, where: str):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{where} must be a positive number, got {value!r}")
    return value


def merge_options(merge: str, iou_threshold: Optional[float], max_detections: Optional[int],
                  where: str) -> Tuple[str, Optional[float], Optional[int]]:
    """The merge settings shared by views and tiles, checked (None: the post-processing's value)."""
    return (check_merge(merge, where),
            None if iou_threshold is None else float(_positive(iou_threshold, f"{where}.iou_threshold")),
            None if max_detections is None else int(_positive(max_detections, f"{where}.max_detections")))


class TestTimeAugmentation:
    """Every (scale, flip) view of each image: scaled by ``scale`` (of the test-resized size), mirrored
    left-right when ``flip``; boxes mapped back to the unaugmented input, merged.

    Args:
        flips: e.g. [False, True].
        scales: factors of the test-time size, e.g. [0.8, 1.0, 1.2].
        merge: "nms" (class-wise, our batched NMS) or "wbf" (weighted box fusion).
        iou_threshold: the merge's IoU (default: the post-processing's NMS threshold; 0.55 for wbf).
        max_detections: kept per image (default: the post-processing's).

    A single view (1.0, no flip) is plain inference, bit for bit.
    """

    __test__ = False  # not a pytest class

    def __init__(self, *, flips: Sequence[bool] = (False,), scales: Sequence[float] = (1.0,), merge: str = "nms",
                 iou_threshold: Optional[float] = None, max_detections: Optional[int] = None,
                 where: str = "model.test_time_aug") -> None:
        if not isinstance(flips, (list, tuple)) or not flips or any(not isinstance(f, bool) for f in flips):
            raise ValueError(f"{where}.flips must be a non-empty list of True/False, got {flips!r}")
        if not isinstance(scales, (list, tuple)) or not scales:
            raise ValueError(f"{where}.scales must be a non-empty list of positive factors, got {scales!r}")
        self.scales = [float(_positive(s, f"{where}.scales")) for s in scales]
        self.flips = list(flips)
        self.merge, self.iou_threshold, self.max_detections = merge_options(merge, iou_threshold, max_detections,
                                                                            where)
        self.views = [(s, f) for s in self.scales for f in self.flips]

    def detect(self, model, samples: Sequence[ImageSample], detect: Detect) -> List[Detections]:
        """``detect`` (the model's single-view detections) on every view, merged per image."""
        if self.views == [(1.0, False)]:
            return detect(samples)
        pooled: List[List[Detections]] = [[] for _ in samples]
        for scale, flip in self.views:
            views = []
            for s in samples:
                h, w = s.image_size
                image = resize_image(s.image, (max(1, round(h * scale)), max(1, round(w * scale))))
                views.append(ImageSample(image=image.flip(-1) if flip else image))
            for i, (s, v, d) in enumerate(zip(samples, views, detect(views))):
                (h, w), (vh, vw) = s.image_size, v.image_size
                boxes = flip_boxes(d.boxes, vw) if flip else d.boxes
                factor = torch.tensor([w / vw, h / vh, w / vw, h / vh], dtype=boxes.dtype, device=boxes.device)
                pooled[i].append(Detections(boxes=boxes * factor, scores=d.scores, labels=d.labels))
        return [merge_views(model, p, self.merge, self.iou_threshold, self.max_detections, len(self.views))
                for p in pooled]


def merge_views(model, dets: Sequence[Detections], merge: str, iou_threshold: Optional[float],
                max_detections: Optional[int], num_views: int) -> Detections:
    post = model.postprocess
    iou = iou_threshold if iou_threshold is not None else (0.55 if merge == "wbf" else post.nms_threshold)
    boxes, scores, labels = merge_detections(
        torch.cat([d.boxes for d in dets]), torch.cat([d.scores for d in dets]), torch.cat([d.labels for d in dets]),
        merge=merge, iou_threshold=iou, max_detections=max_detections or post.max_detections, num_views=num_views)
    return Detections(boxes=boxes, scores=scores, labels=labels)


class TiledInference:
    """Overlapping ``tile`` x ``tile`` windows of each image (spread evenly, the last at the far border),
    plus with ``full_image`` the whole image shrunk to fit one tile; the network only ever sees
    tile-sized inputs, so memory stays bounded however large the image.

    A detection of a tile that touches one of the tile's edges inside the image is dropped: it is
    likely an object cut by the window. An object smaller than ``overlap`` lies whole in some window;
    a larger one may be cut in all of them, and the full-image view is there for those: it keeps only
    its detections larger than ``overlap`` (its small ones, found at a lower resolution, would only
    compete with the windows' better boxes). Everything left is merged.

    Args:
        tile: window side in model-input pixels (> 0).
        overlap: pixels shared by neighbouring windows (0 <= overlap < tile).
        full_image: also run the whole image, shrunk to fit a tile.
        merge, iou_threshold, max_detections: as TestTimeAugmentation's.
        batch_size: windows per network call.
    """

    def __init__(self, *, tile: int, overlap: int = 0, full_image: bool = True, merge: str = "nms",
                 iou_threshold: Optional[float] = None, max_detections: Optional[int] = None, batch_size: int = 4,
                 where: str = "model.tiling") -> None:
        if not isinstance(tile, int) or isinstance(tile, bool) or tile <= 0:
            raise ValueError(f"{where}.tile must be a positive number of pixels, got {tile!r}")
        if not isinstance(overlap, int) or isinstance(overlap, bool) or overlap < 0 or overlap >= tile:
            raise ValueError(f"{where}.overlap must be a number of pixels in [0, tile={tile}), got {overlap!r}")
        if not isinstance(full_image, bool):
            raise ValueError(f"{where}.full_image must be True or False, got {full_image!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"{where}.batch_size must be a positive integer, got {batch_size!r}")
        self.tile, self.overlap, self.full_image, self.batch_size = tile, overlap, full_image, batch_size
        self.merge, self.iou_threshold, self.max_detections = merge_options(merge, iou_threshold, max_detections,
                                                                            where)

    def starts(self, length: int) -> List[int]:
        """Window starts along a side of ``length`` px: the fewest windows that cover it with neighbours
        sharing at least ``overlap`` px, spread evenly from 0 to the far border."""
        if length <= self.tile:
            return [0]
        n = math.ceil((length - self.overlap) / (self.tile - self.overlap))
        return [i * (length - self.tile) // (n - 1) for i in range(n)]

    def windows(self, height: int, width: int) -> List[Tuple[int, int, int, int]]:
        """(y0, x0, y1, x1) of every window of an image."""
        return [(y, x, min(y + self.tile, height), min(x + self.tile, width))
                for y in self.starts(height) for x in self.starts(width)]

    def detect(self, model, samples: Sequence[ImageSample], detect: Detect) -> List[Detections]:
        """Per image: its windows' and (optionally) full view's detections, in the image's input pixels."""
        out = []
        for s in samples:
            h, w = s.image_size
            windows = self.windows(h, w)
            views: List[Detections] = []
            for k in range(0, len(windows), self.batch_size):
                chunk = windows[k:k + self.batch_size]
                crops = [ImageSample(image=s.image[:, y0:y1, x0:x1]) for y0, x0, y1, x1 in chunk]
                for (y0, x0, y1, x1), d in zip(chunk, detect(crops)):
                    keep = ~cut_by_window(d.boxes, (y0, x0, y1, x1), (h, w))
                    shift = torch.tensor([x0, y0, x0, y0], dtype=d.boxes.dtype, device=d.boxes.device)
                    views.append(Detections(boxes=d.boxes[keep] + shift, scores=d.scores[keep], labels=d.labels[keep]))
            if self.full_image and len(windows) > 1:
                scale = min(1.0, self.tile / max(h, w))
                small = resize_image(s.image, (max(1, round(h * scale)), max(1, round(w * scale))))
                d = detect([ImageSample(image=small)])[0]
                sh, sw = small.shape[-2:]
                factor = torch.tensor([w / sw, h / sh, w / sw, h / sh], dtype=d.boxes.dtype, device=d.boxes.device)
                boxes = d.boxes * factor
                large = (boxes[:, 2:] - boxes[:, :2]).max(dim=1).values > self.overlap
                views.append(Detections(boxes=boxes[large], scores=d.scores[large], labels=d.labels[large]))
            if len(views) == 1:
                out.append(views[0])
            else:
                out.append(merge_views(model, views, self.merge, self.iou_threshold, self.max_detections,
                                       num_views=1))
        return out


def cut_by_window(boxes: Tensor, window: Tuple[int, int, int, int], image_size: Tuple[int, int],
                  margin: float = 1.0) -> Tensor:
    """(R,) bool: the (R, 4) xyxy boxes (in the window's pixels) that reach within ``margin`` px of an edge
    of ``window`` (y0, x0, y1, x1) that lies inside the image (not on its border)."""
    y0, x0, y1, x1 = window
    h, w = image_size
    cut = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    if x0 > 0:
        cut |= boxes[:, 0] <= margin
    if y0 > 0:
        cut |= boxes[:, 1] <= margin
    if x1 < w:
        cut |= boxes[:, 2] >= (x1 - x0) - margin
    if y1 < h:
        cut |= boxes[:, 3] >= (y1 - y0) - margin
    return cut
