"""The embedded default dataset: synthetic shapes on textured backgrounds, made by our own code.

Deterministic (same seed, same bytes), written once as COCO json + JPEG images to a cache folder
($RETDET_CACHE, default ~/.cache/retdet), so the quickstart trains with no download. Objects vary in
class, size (20 px to 60% of the short side), colour and aspect; they overlap and partly occlude each
other (a later object hides at most 30% of an earlier one), and they contrast with their background.
Each box is the bounding box of the object's *visible* pixels; objects less than half visible
(behind later objects or outside the image) are not annotated.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Dict, List, Tuple

import cv2
import numpy as np

CLASSES = ["circle", "square", "triangle", "cross"]
SPLITS: Dict[str, Tuple[int, int]] = {"train": (600, 0), "val": (120, 1)}  # images, seed
# v3: the visible fraction counts parts outside the image as hidden. v4: occlusion limited to
# MAX_HIDDEN per object, objects contrast with their background, at most MAX_SIZE of the short side.
VERSION = "v4"
MIN_VISIBLE = 0.5   # annotated objects show at least this fraction of their area
MAX_HIDDEN = 0.3    # a later object may cover at most this fraction of an earlier one's visible pixels
MIN_CONTRAST = 60.0  # sum over B, G, R of |object colour - mean background colour under it|
MIN_SIZE = 20.0
MAX_SIZE = 0.6      # of the image's short side
MAX_ATTEMPTS = 10   # placements tried per object before it is left out


def cache_root() -> str:
    return os.path.expanduser(os.environ.get("RETDET_CACHE", os.path.join("~", ".cache", "retdet")))


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.integers(0, 3)
    base = rng.integers(0, 256, size=3).astype(np.float32)
    if kind == 0:  # smooth noise texture
        small = rng.normal(0, 40, size=(h // 16 + 1, w // 16 + 1, 3)).astype(np.float32)
        img = base + cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    elif kind == 1:  # gradient
        t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        other = rng.integers(0, 256, size=3).astype(np.float32)
        img = np.broadcast_to(base * (1 - t) + other * t, (h, w, 3)).copy()
    else:  # stripes
        period = int(rng.integers(6, 24))
        stripes = ((np.arange(w) // period) % 2).astype(np.float32)[None, :, None]
        img = np.broadcast_to(base + stripes * rng.normal(0, 50, size=3), (h, w, 3)).copy()
    img += rng.normal(0, 8, size=(h, w, 3))  # pixel noise
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw(mask: np.ndarray, cls: int, cx: float, cy: float, size: float, aspect: float, angle: float) -> None:
    """Rasterise one shape into ``mask`` (uint8, 255 inside)."""
    half_w, half_h = size * aspect / 2, size / aspect / 2
    if cls == 0:
        cv2.ellipse(mask, (int(cx), int(cy)), (max(int(half_w), 2), max(int(half_h), 2)), angle, 0, 360, 255, -1)
        return
    if cls == 1:
        corners = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
    elif cls == 2:
        corners = np.array([[0, -half_h], [half_w, half_h], [-half_w, half_h]])
    else:
        a, b = half_w, half_h
        t, u = a / 3, b / 3
        corners = np.array([[-t, -b], [t, -b], [t, -u], [a, -u], [a, u], [t, u], [t, b], [-t, b], [-t, u], [-a, u],
                            [-a, -u], [-t, -u]])
    r = np.deg2rad(angle)
    rot = np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])
    pts = (corners @ rot.T + [cx, cy]).round().astype(np.int32)
    cv2.fillPoly(mask, [pts], 255)


def render_image(rng: np.random.Generator, h: int, w: int) -> Tuple[np.ndarray, List[Tuple[List[float], int]]]:
    """One BGR image and its [(xywh box, class index)] annotations."""
    img = _background(rng, h, w)
    owner = np.full((h, w), -1, np.int32)  # which object each pixel shows
    objects = []
    for k in range(int(rng.integers(1, 7))):
        for _attempt in range(MAX_ATTEMPTS):
            cls = int(rng.integers(0, len(CLASSES)))
            size = float(np.exp(rng.uniform(np.log(MIN_SIZE), np.log(MAX_SIZE * min(h, w)))))
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            aspect = float(rng.uniform(0.7, 1.4))
            angle = float(rng.uniform(-30, 30)) if cls != 0 else float(rng.uniform(0, 180))
            colour = rng.integers(0, 256, size=3)
            # Draw on a canvas with a margin, so the area counts the parts outside the image too:
            # a shape cut by the border loses what tells it apart (a cut cross looks like a bar).
            margin = int(size) + 2
            canvas = np.zeros((h + 2 * margin, w + 2 * margin), np.uint8)
            _draw(canvas, cls, cx + margin, cy + margin, size, aspect, angle)
            full_area = int(np.count_nonzero(canvas))
            inside = canvas[margin:margin + h, margin:margin + w] > 0
            if inside.sum() < max(20, MIN_VISIBLE * full_area):
                continue  # mostly outside the image: try another placement
            # Occlusion stays partial: the new object may hide at most MAX_HIDDEN of what each
            # earlier object still shows, so every annotated shape keeps its outline readable.
            covered = np.bincount(owner[inside & (owner >= 0)], minlength=k)
            shown = np.bincount(owner[owner >= 0], minlength=k)
            if np.any(covered > MAX_HIDDEN * np.maximum(shown, 1)):
                continue
            # And it must stand out from what it is drawn on.
            if np.abs(img[inside].astype(np.float32).mean(axis=0) - colour).sum() < MIN_CONTRAST:
                continue
            shade = np.clip(colour + rng.normal(0, 10, size=(int(inside.sum()), 3)), 0, 255)
            img[inside] = shade.astype(np.uint8)
            owner[inside] = k
            objects.append((k, cls, full_area))
            break
    annotations = []
    for k, cls, area in objects:
        ys, xs = np.nonzero(owner == k)
        if len(xs) < MIN_VISIBLE * area or len(xs) == 0:
            continue  # mostly hidden behind later objects
        x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
        annotations.append(([x0, y0, x1 - x0, y1 - y0], cls))
    return img, annotations


def render_mosaic(rng: np.random.Generator, grid: int) -> Tuple[np.ndarray, List[Tuple[List[float], int]]]:
    """A grid x grid mosaic of rendered images of one size (a large image of small objects)."""
    h, w = int(rng.integers(224, 321)), int(rng.integers(224, 321))
    img = np.zeros((h * grid, w * grid, 3), np.uint8)
    annotations = []
    for r in range(grid):
        for c in range(grid):
            cell, anns = render_image(rng, h, w)
            img[r * h:(r + 1) * h, c * w:(c + 1) * w] = cell
            annotations += [([x + c * w, y + r * h, bw, bh], cls) for (x, y, bw, bh), cls in anns]
    return img, annotations


def generate_synthetic_shapes(out_dir: str, num_images: int, seed: int, grid: int = 1) -> str:
    """Write ``num_images`` images and ``annotations.json`` into ``out_dir``; returns the json path.
    ``grid`` > 1: each image is a grid x grid mosaic of the usual images (objects as small, image larger)."""
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])  # per image: any subset regenerates identically
        if grid > 1:
            img, anns = render_mosaic(rng, grid)
            h, w = img.shape[:2]
        else:
            h, w = int(rng.integers(224, 321)), int(rng.integers(224, 321))
            img, anns = render_image(rng, h, w)
        name = f"{i:06d}.jpg"
        ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        with open(os.path.join(image_dir, name), "wb") as f:
            f.write(data.tobytes())
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for box, cls in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cls + 1, "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
    coco = {"info": {"description": f"retdet synthetic shapes {VERSION}, seed {seed}"}, "images": images,
            "annotations": annotations,
            "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)]}
    json_file = os.path.join(out_dir, "annotations.json")
    with open(json_file, "w") as f:
        json.dump(coco, f)
    return json_file


def ensure_synthetic_shapes(split: str) -> Tuple[str, str]:
    """(json_file, image_root) of a split, generating it into the cache on first use."""
    if split not in SPLITS:
        raise KeyError(f"synthetic shapes split must be one of {sorted(SPLITS)}, got {split!r}")
    num_images, seed = SPLITS[split]
    out_dir = os.path.join(cache_root(), f"synthetic_shapes_{VERSION}", split)
    done = os.path.join(out_dir, "DONE")
    if not os.path.exists(done):
        # Generate into a private folder, then rename: concurrent workers never see half a dataset.
        tmp = f"{out_dir}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        generate_synthetic_shapes(tmp, num_images, seed)
        open(os.path.join(tmp, "DONE"), "w").close()
        os.makedirs(os.path.dirname(out_dir), exist_ok=True)
        try:
            os.replace(tmp, out_dir) if not os.path.exists(out_dir) else shutil.rmtree(tmp)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
    return os.path.join(out_dir, "annotations.json"), os.path.join(out_dir, "images")


def main(argv=None) -> None:
    """``python -m retdet.data.synthetic --output DIR [--num-images N] [--seed S] [--grid K]``: write a
    COCO-format dataset (DIR/annotations.json, DIR/images/) - e.g. to try the custom-dataset guide;
    ``--grid K``: K x K mosaics, large images of small objects (docs/inference.md).
    ``--cache``: fill the cache with the registered splits instead (synthetic_shapes_train/val), as
    their first use would (the Makefile does it while the ops compile)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--output")
    target.add_argument("--cache", action="store_true")
    parser.add_argument("--num-images", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", type=int, default=1)
    args = parser.parse_args(argv)
    if args.cache:
        for split in SPLITS:
            json_file, _ = ensure_synthetic_shapes(split)
            print(f"synthetic_shapes_{split}: {json_file}")
        return
    if args.grid < 1:
        parser.error(f"--grid must be >= 1, got {args.grid}")
    json_file = generate_synthetic_shapes(args.output, args.num_images, args.seed, grid=args.grid)
    print(f"wrote {args.num_images} images and {json_file}")


if __name__ == "__main__":
    main()
