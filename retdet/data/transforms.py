"""Box-aware augmentations, registered by name and composed from config.

Each transform is called as ``t(sample, rng, source)`` and returns the new sample:
    sample: AugSample (HWC uint8 image, xyxy boxes, labels, ignore regions);
    rng: numpy Generator (all randomness comes from it, so a seed replays an augmentation);
    source: for multi-image transforms (Mosaic, MixUp, CutMix), ``source(rng)`` returns another
        sample of the dataset, loaded but not yet augmented.
Geometry changes move boxes with the pixels; boxes that end up mostly outside the image (less than
``min_visible`` of their area left) are dropped, the rest clipped.
:func:`test_resize` puts a raw image through the test-time transforms (Predictor, int8 calibration, export).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from retdet.registry import TRANSFORMS

Source = Optional[Callable[[np.random.Generator], "AugSample"]]


@dataclass
class AugSample:
    image: np.ndarray                                   # (H, W, 3) uint8
    boxes: np.ndarray                                   # (M, 4) float32 xyxy
    labels: np.ndarray                                  # (M,) int64
    ignore_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    image_id: Optional[int] = None
    file_name: str = ""

    @property
    def size(self) -> Tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def clip_and_filter(boxes: np.ndarray, labels: np.ndarray, h: int, w: int,
                    min_visible: float = 0.0, reference_area: Optional[np.ndarray] = None):
    """Clip boxes to the image; keep those with positive size and >= min_visible of their area
    (``reference_area``, default the unclipped area) left."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4).astype(np.float32), labels
    ref = _area(boxes) if reference_area is None else reference_area
    clipped = boxes.copy()
    clipped[:, 0::2] = np.clip(clipped[:, 0::2], 0, w)
    clipped[:, 1::2] = np.clip(clipped[:, 1::2], 0, h)
    area = _area(clipped)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1]) & (area >= min_visible * ref)
    return clipped[keep].astype(np.float32), labels[keep]


def _affine_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """xyxy boxes -> the xyxy boxes around their four transformed corners."""
    if len(boxes) == 0:
        return boxes
    x0, y0, x1, y1 = boxes.T
    corners = np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x0, y1], 1), np.stack([x1, y1], 1)], 1)
    pts = corners @ matrix[:, :2].T + matrix[:, 2]
    return np.concatenate([pts.min(1), pts.max(1)], 1).astype(np.float32)


def _scale(sample: AugSample, new_h: int, new_w: int) -> AugSample:
    h, w = sample.size
    if (new_h, new_w) == (h, w):
        return sample
    image = cv2.resize(sample.image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    factor = np.array([new_w / w, new_h / h, new_w / w, new_h / h], np.float32)
    return replace(sample, image=image, boxes=sample.boxes * factor, ignore_boxes=sample.ignore_boxes * factor)


def _crop(sample: AugSample, y0: int, x0: int, h: int, w: int, min_visible: float) -> AugSample:
    """Crop (or, where the window leaves the image, zero-pad) to the window at (y0, x0) of size (h, w)."""
    H, W = sample.size
    out = np.zeros((h, w, 3), np.uint8)
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + h, H), min(x0 + w, W)
    if ye > ys and xe > xs:
        out[ys - y0:ye - y0, xs - x0:xe - x0] = sample.image[ys:ye, xs:xe]
    shift = np.array([x0, y0, x0, y0], np.float32)
    boxes, labels = clip_and_filter(sample.boxes - shift, sample.labels, h, w, min_visible,
                                    reference_area=_area(sample.boxes))
    ignore, _ = clip_and_filter(sample.ignore_boxes - shift, np.zeros(len(sample.ignore_boxes)), h, w)
    return replace(sample, image=out, boxes=boxes, labels=labels, ignore_boxes=ignore)


# ---- geometric ----------------------------------------------------------------------------------

@TRANSFORMS.register()
class ResizeShortestEdge:
    """Resize so the short side is ``short_edge_length`` (a random choice when a list, or a random
    value in [min, max] with sample_style="range"), capped so the long side is <= max_size."""

    def __init__(self, *, short_edge_length: Union[int, Sequence[int]], max_size: int = 1333,
                 sample_style: str = "choice") -> None:
        lengths = [short_edge_length] if isinstance(short_edge_length, int) else list(short_edge_length)
        if sample_style not in ("choice", "range") or (sample_style == "range" and len(lengths) != 2):
            raise ValueError("ResizeShortestEdge: sample_style 'choice', or 'range' with [min, max]")
        self.lengths, self.max_size, self.sample_style = lengths, max_size, sample_style

    def output_size(self, h: int, w: int, short: int) -> Tuple[int, int]:
        scale = min(short / min(h, w), self.max_size / max(h, w))
        return int(round(h * scale)), int(round(w * scale))

    def __call__(self, sample: AugSample, rng: np.random.Generator, source: Source = None) -> AugSample:
        if self.sample_style == "range":
            short = int(rng.integers(self.lengths[0], self.lengths[1] + 1))
        else:
            short = int(self.lengths[rng.integers(len(self.lengths))]) if len(self.lengths) > 1 else self.lengths[0]
        return _scale(sample, *self.output_size(*sample.size, short))


@TRANSFORMS.register()
class RandomFlip:
    """Flip horizontally (or vertically) with probability ``prob``."""

    def __init__(self, *, prob: float = 0.5, horizontal: bool = True) -> None:
        self.prob, self.horizontal = prob, horizontal

    def __call__(self, sample: AugSample, rng: np.random.Generator, source: Source = None) -> AugSample:
        if rng.random() >= self.prob:
            return sample
        h, w = sample.size

        def flip(b: np.ndarray) -> np.ndarray:
            b = b.copy()
            if self.horizontal:
                b[:, [0, 2]] = w - b[:, [2, 0]]
            else:
                b[:, [1, 3]] = h - b[:, [3, 1]]
            return b

        image = np.ascontiguousarray(sample.image[:, ::-1] if self.horizontal else sample.image[::-1])
        return replace(sample, image=image, boxes=flip(sample.boxes), ignore_boxes=flip(sample.ignore_boxes))


@TRANSFORMS.register()
class RandomRotation:
    """Rotate about the centre by an angle in ``angle`` degrees (same canvas size); boxes enclose the
    rotated corners and are clipped (a rotated box's enclosing box is larger than the object: keep
    angles small for tight boxes)."""

    def __init__(self, *, angle: Sequence[float] = (-10.0, 10.0), prob: float = 0.5, min_visible: float = 0.3) -> None:
        self.angle, self.prob, self.min_visible = tuple(angle), prob, min_visible

    def __call__(self, sample: AugSample, rng: np.random.Generator, source: Source = None) -> AugSample:
        if rng.random() >= self.prob:
            return sample
        h, w = sample.size
        deg = float(rng.uniform(*self.angle))
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
        image = cv2.warpAffine(sample.image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        rotated = _affine_boxes(sample.boxes, matrix)
        boxes, labels = clip_and_filter(rotated, sample.labels, h, w, self.min_visible)
        ignore, _ = clip_and_filter(_affine_boxes(sample.ignore_boxes, matrix), np.zeros(len(sample.ignore_boxes)), h, w)
        return replace(sample, image=image, boxes=boxes, labels=labels, ignore_boxes=ignore)


@TRANSFORMS.register()
class ScaleJitterCrop:
    """Large-scale jitter: scale the image to fit ``output_size`` times a random factor in
    ``scale_range``, then take a random ``output_size`` crop (zero-padded where smaller)."""

    def __init__(self, *, output_size: Sequence[int] = (1024, 1024), scale_range: Sequence[float] = (0.1, 2.0),
                 min_visible: float = 0.3) -> None:
        self.output_size = (int(output_size[0]), int(output_size[1]))
        self.scale_range, self.min_visible = tuple(scale_range), min_visible

    def __call__(self, sample: AugSample, rng: np.random.Generator, source: Source = None) -> AugSample:
        oh, ow = self.output_size
        h, w = sample.size
        scale = float(rng.uniform(*self.scale_range)) * min(oh / h, ow / w)
        sample = _scale(sample, max(int(round(h * scale)), 1), max(int(round(w * scale)), 1))
        h, w = sample.size
        y0 = int(rng.integers(0, h - oh + 1)) if h > oh else 0
        x0 = int(rng.integers(0, w - ow + 1)) if w > ow else 0
        return _crop(sample, y0, x0, oh, ow, self.min_visible)


# ---- photometric --------------------------------------------------------------------------------

@TRANSFORMS.register()
class ColorJitter:
    """Random brightness, contrast and saturation factors in [1 - x, 1 + x]; boxes unchanged."""

    def __init__(self, *, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2,
                 prob: float = 0.8) -> None:
        self.brightness, self.contrast, self.saturation, self.prob = brightness, contrast, saturation, prob

    def __call__(self, sample: AugSample, rng: np.random.Generator, source: Source = None) -> AugSample:
        if rng.random() >= self.prob:
            return sample
        img = sample.image.astype(np.float32)
        img *= rng.uniform(1 - self.brightness, 1 + self.brightness)
        mean = img.mean()
        img = (img - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
        gray = img.mean(axis=2, keepdims=True)
        img = (img - gray) * rng.uniform(1 - self.saturation, 1 + self.saturation) + gray
        return replace(sample, image=np.clip(img, 0, 255).astype(np.uint8))


# ---- multi-image --------------------------------------------------------------------------------

def _need_source(source: Source, name: str) -> Callable[[np.random.Generator], AugSample]:
    if source is None:
        raise ValueError(f"{name} needs other images of the dataset; use it in a training pipeline")
    return source


@TRANSFORMS.register()
class Mosaic:
    """Four images (this one and three random ones) in a 2 x 2 grid around a random centre, cropped
    to ``output_size``; boxes keep >= min_visible of their area or are dropped."""

    def __init__(self, *, output_size: Sequence[int] = (640, 640), prob: float = 0.5, min_visible: float = 0.3) -> None:
        self.output_size = (int(output_size[0]), int(output_size[1]))
        self.prob, self.min_visible = prob, min_visible

    def __call__(self, sample: AugSample, rng: np.random.Generator, source: Source = None) -> AugSample:
        if rng.random() >= self.prob:
            return sample
        get = _need_source(source, "Mosaic")
        oh, ow = self.output_size
        cy, cx = int(rng.uniform(0.25, 0.75) * oh), int(rng.uniform(0.25, 0.75) * ow)
        canvas = np.zeros((oh, ow, 3), np.uint8)
        boxes, labels, ignore = [], [], []
        quadrants = [(0, 0, cy, cx), (0, cx, cy, ow - cx), (cy, 0, oh - cy, cx), (cy, cx, oh - cy, ow - cx)]
        for k, (qy, qx, qh, qw) in enumerate(quadrants):
            part = sample if k == 0 else get(rng)
            if qh <= 0 or qw <= 0:
                continue
            # scale the image to cover its quadrant, then take the part next to the centre
            h, w = part.size
            s = max(qh / h, qw / w)
            part = _scale(part, max(int(np.ceil(h * s)), qh), max(int(np.ceil(w * s)), qw))
            h, w = part.size
            y0 = h - qh if qy == 0 else 0
            x0 = w - qw if qx == 0 else 0
            piece = _crop(part, y0, x0, qh, qw, self.min_visible)
            canvas[qy:qy + qh, qx:qx + qw] = piece.image
            offset = np.array([qx, qy, qx, qy], np.float32)
            boxes.append(piece.boxes + offset)
            labels.append(piece.labels)
            ignore.append(piece.ignore_boxes + offset)
        return replace(sample, image=canvas, boxes=np.concatenate(boxes).astype(np.float32),
                       labels=np.concatenate(labels), ignore_boxes=np.concatenate(ignore).astype(np.float32))


@TRANSFORMS.register()
class MixUp:
    """Blend with another image (resized to this one's size) by a Beta(alpha, alpha) weight; the
    boxes of both are kept (both objects stay visible, blended)."""

    def __init__(self, *, alpha: float = 8.0, prob: float = 0.5) -> None:
        self.alpha, self.prob = alpha, prob

    def __call__(self, sample: AugSample, rng: np.random.Generator, source: Source = None) -> AugSample:
        if rng.random() >= self.prob:
            return sample
        other = _scale(_need_source(source, "MixUp")(rng), *sample.size)
        lam = float(rng.beta(self.alpha, self.alpha))
        image = (sample.image.astype(np.float32) * lam + other.image.astype(np.float32) * (1 - lam))
        return replace(sample, image=np.clip(image + 0.5, 0, 255).astype(np.uint8),
                       boxes=np.concatenate([sample.boxes, other.boxes]).astype(np.float32),
                       labels=np.concatenate([sample.labels, other.labels]),
                       ignore_boxes=np.concatenate([sample.ignore_boxes, other.ignore_boxes]).astype(np.float32))


@TRANSFORMS.register()
class CutMix:
    """Paste a random rectangle of another image (resized to this one's size) at the same place.
    This image's boxes keep >= min_visible of their area outside the patch or are dropped; the other
    image's boxes are clipped to the patch and kept when >= min_visible of them is inside."""

    def __init__(self, *, prob: float = 0.5, area_range: Sequence[float] = (0.1, 0.5), min_visible: float = 0.3) -> None:
        self.prob, self.area_range, self.min_visible = prob, tuple(area_range), min_visible

    def __call__(self, sample: AugSample, rng: np.random.Generator, source: Source = None) -> AugSample:
        if rng.random() >= self.prob:
            return sample
        h, w = sample.size
        other = _scale(_need_source(source, "CutMix")(rng), h, w)
        frac = float(rng.uniform(*self.area_range))
        ph, pw = max(int(h * np.sqrt(frac)), 1), max(int(w * np.sqrt(frac)), 1)
        y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        image = sample.image.copy()
        image[y0:y0 + ph, x0:x0 + pw] = other.image[y0:y0 + ph, x0:x0 + pw]
        patch = np.array([[x0, y0, x0 + pw, y0 + ph]], np.float32)
        # visible part of this image's boxes: area minus the overlap with the patch
        b = sample.boxes
        iw = np.clip(np.minimum(b[:, 2], patch[0, 2]) - np.maximum(b[:, 0], patch[0, 0]), 0, None)
        ih = np.clip(np.minimum(b[:, 3], patch[0, 3]) - np.maximum(b[:, 1], patch[0, 1]), 0, None)
        keep = (_area(b) - iw * ih) >= self.min_visible * _area(b)
        inner = _crop(other, y0, x0, ph, pw, self.min_visible)
        shift = np.array([x0, y0, x0, y0], np.float32)
        return replace(sample, image=image,
                       boxes=np.concatenate([b[keep], inner.boxes + shift]).astype(np.float32),
                       labels=np.concatenate([sample.labels[keep], inner.labels]),
                       ignore_boxes=np.concatenate([sample.ignore_boxes, inner.ignore_boxes + shift]).astype(np.float32))


def apply_transforms(transforms: List[Callable], sample: AugSample, rng: np.random.Generator,
                     source: Source = None) -> AugSample:
    for t in transforms:
        sample = t(sample, rng, source)
    return sample


def test_resize(transforms: Sequence, image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) image through the (deterministic) test-time transforms."""
    sample = AugSample(image=np.ascontiguousarray(image), boxes=np.zeros((0, 4), np.float32),
                       labels=np.zeros(0, np.int64))
    return apply_transforms(list(transforms), sample, np.random.default_rng(0)).image
