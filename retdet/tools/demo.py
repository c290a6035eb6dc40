"""Run a trained detector on images, a folder of images, or a video.

    python tools/demo.py --config configs/quickstart.py --weights output/quickstart/model_final.pth \
        --input path/to/image.jpg|path/to/folder|path/to/video.mp4 --output demo_out [--score-thresh 0.3]

Writes each image with its boxes, class names and scores drawn (a video: an annotated copy,
<name>_detections.mp4) and one COCO-format results json (results.json: image_id, category_id,
bbox as [x, y, w, h], score) with an images.json mapping image ids to files (or frame numbers).
Folders and videos show progress with an ETA.

--tiles TILE[,OVERLAP] runs large images as overlapping TILE-pixel windows at their own resolution (no
test resize) plus the whole image shrunk to one tile (model.tiling; docs/inference.md); --tta adds the
mirrored view (model.test_time_aug). Both can also be set as config overrides.
"""
import argparse
import json
import logging
import os
import time

import cv2
import numpy as np

from retdet.data.image_io import IMAGE_EXTENSIONS, ImageReadError, read_image
from retdet.engine.defaults import build_model_from_config, load_tool_config, tool_argument_parser
from retdet.engine.predictor import Predictor, dataset_classes
from retdet.utils.logger import setup_logger
from retdet.utils.visualize import draw_boxes

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class Progress:
    """Logs 'done/total, rate, ETA' at most every few seconds (and at the end)."""

    def __init__(self, total: int, what: str, logger: logging.Logger, every_s: float = 5.0) -> None:
        self.total, self.what, self.logger, self.every_s = total, what, logger, every_s
        self.start = self.last = time.perf_counter()

    def step(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last < self.every_s and done != self.total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if self.total > 0 and rate > 0 else 0.0
        total = self.total if self.total > 0 else "?"
        self.logger.info("%s %d/%s, %.2f/s, ETA %ds", self.what, done, total, rate, eta)


def coco_results(dets, image_id: int, category_ids, score_thresh: float) -> list:
    out = []
    for box, score, label in zip(dets.boxes.tolist(), dets.scores.tolist(), dets.labels.tolist()):
        if score >= score_thresh:
            x0, y0, x1, y1 = box
            out.append({"image_id": image_id, "category_id": int(category_ids[label]),
                        "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
    return out


def draw(image: np.ndarray, dets, class_names, score_thresh: float) -> np.ndarray:
    keep = dets.scores >= score_thresh
    return draw_boxes(image, dets.boxes[keep].cpu().numpy(), dets.labels[keep].tolist(), class_names,
                      dets.scores[keep].tolist())


def parse_tiles(text: str) -> tuple:
    """"TILE" or "TILE,OVERLAP" (pixels) -> (tile, overlap)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected TILE or TILE,OVERLAP in pixels, got {text!r}")
    return values[0], values[1] if len(values) == 2 else values[0] // 4


def list_images(folder: str) -> list:
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise SystemExit(f"--input {folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    return [os.path.join(folder, f) for f in files]


def main(argv=None) -> None:
    parser = tool_argument_parser(__doc__, weights="required")
    parser.add_argument("--input", required=True, help="an image, a folder of images, or a video")
    parser.add_argument("--output", required=True, help="folder for the drawn images and results json")
    parser.add_argument("--score-thresh", type=float, default=0.3, help="draw and report detections above this")
    parser.add_argument("--tiles", type=parse_tiles, default=None, metavar="TILE[,OVERLAP]",
                        help="tiled inference at the images' own size: TILE px windows, OVERLAP px shared "
                             "(default TILE/4), plus the whole image shrunk to one tile")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation: also the mirrored image")
    args = parser.parse_args(argv)
    logger = setup_logger(name="retdet")
    if not os.path.exists(args.input):
        raise SystemExit(f"--input {args.input}: no such file or folder")

    cfg = load_tool_config(args)
    if args.tiles:
        cfg.model.tiling = dict(tile=args.tiles[0], overlap=args.tiles[1], full_image=True)
        cfg.dataloader.test.transforms = []  # windows at the image's own resolution
    if args.tta:
        cfg.model.test_time_aug = dict(flips=[False, True])
    model = build_model_from_config(cfg, args.weights, logger=logger)
    predictor = Predictor(cfg, model)
    class_names, category_ids = dataset_classes(cfg)
    os.makedirs(args.output, exist_ok=True)
    results, images = [], []

    if os.path.isfile(args.input) and args.input.lower().endswith(VIDEO_EXTENSIONS):
        capture = cv2.VideoCapture(args.input)
        if not capture.isOpened():
            raise SystemExit(f"--input {args.input}: OpenCV cannot open this video")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        out_path = os.path.join(args.output, os.path.splitext(os.path.basename(args.input))[0] + "_detections.mp4")
        writer, progress, frame_id = None, Progress(total, "frames", logger), 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frame_id += 1
            dets = predictor([frame])[0]
            drawn = draw(frame, dets, class_names, args.score_thresh)
            if writer is None:
                writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, drawn.shape[1::-1])
            writer.write(drawn)
            results += coco_results(dets, frame_id, category_ids, args.score_thresh)
            images.append({"id": frame_id, "file_name": f"{args.input}#frame{frame_id}"})
            progress.step(frame_id)
        capture.release()
        if writer is None:
            raise SystemExit(f"--input {args.input}: no frame could be decoded")
        writer.release()
        logger.info("annotated video: %s (%d frames)", out_path, frame_id)
    else:
        files = list_images(args.input) if os.path.isdir(args.input) else [args.input]
        progress, skipped = Progress(len(files), "images", logger), 0
        for image_id, path in enumerate(files, start=1):
            try:
                image = read_image(path, "BGR")
            except ImageReadError as e:
                logger.warning("skipped: %s", e)
                skipped += 1
                continue
            dets = predictor([image])[0]
            out_path = os.path.join(args.output, os.path.basename(path))
            if not out_path.lower().endswith((".jpg", ".jpeg", ".png")):
                out_path = os.path.splitext(out_path)[0] + ".png"
            cv2.imwrite(out_path, draw(image, dets, class_names, args.score_thresh))
            results += coco_results(dets, image_id, category_ids, args.score_thresh)
            images.append({"id": image_id, "file_name": path, "height": image.shape[0], "width": image.shape[1]})
            progress.step(image_id)
        logger.info("%d drawn images in %s (%d unreadable, skipped)", len(images), args.output, skipped)
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(results, f)
    with open(os.path.join(args.output, "images.json"), "w") as f:
        json.dump({"images": images, "categories": [{"id": c, "name": n} for c, n in zip(category_ids, class_names)]},
                  f, indent=1)
    logger.info("%d detections >= %.2f in %s", len(results), args.score_thresh,
                os.path.join(args.output, "results.json"))


if __name__ == "__main__":
    main()
