"""Export a trained detector, post-processing included, and check it against the eager model.

    python tools/export.py --config configs/quickstart.py --weights output/quickstart/model_final.pth \
        --format torchscript|onnx [--output DIR] [--check-images IMG_OR_DIR]

Writes model.pt (TorchScript) or model.onnx. Inputs and outputs are described in retdet/export.py
(inputs: a resized, padded image and its valid size; outputs: boxes, scores, labels). The exported
model is then run on the check images (default: 4 images of the config's test set) next to the
eager model, and the detections must agree (same labels, boxes within 1e-2 px, scores within 1e-4);
a mismatch exits non-zero. ONNX checks run with onnxruntime (pip install onnxruntime).
"""
import argparse
import logging
import os
import sys

import numpy as np
import torch

from retdet.checkpoint import load_weights
from retdet.config import load_config
from retdet.data import resolve_num_classes
from retdet.data.image_io import read_image
from retdet.export import FORMATS, export_model, prepare_input
from retdet.modeling import build_model
from retdet.utils.logger import setup_logger


def check_images(cfg, spec, count: int = 4) -> list:
    """(name, BGR image) pairs: the files in ``spec`` or the first images of the config's test set."""
    if spec:
        from retdet.tools.demo import list_images

        files = list_images(spec) if os.path.isdir(spec) else [spec]
    else:
        from retdet.data import get_dataset, register_from_config

        register_from_config(cfg.dataloader.get("register", []))
        info = get_dataset(cfg.dataloader.test.dataset.names[0])
        files = [r.file_name for r in info.records[:count]]
    return [(f, read_image(f, "BGR")) for f in files]


def exported_runner(path: str, fmt: str):
    if fmt == "torchscript":
        module = torch.jit.load(path)

        def run(image, size):
            with torch.no_grad():
                return tuple(t.numpy() for t in module(image, size))
        return run
    try:
        import onnxruntime
    except ImportError as e:
        raise SystemExit("checking an ONNX export needs onnxruntime: pip install onnxruntime") from e
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda image, size: tuple(session.run(None, dict(zip(names, (image.numpy(), size.numpy())))))


def compare(eager, exported, name: str, box_tol: float = 1e-2, score_tol: float = 1e-4) -> str:
    """'' when the detections agree, else what differs. Detections are paired one to one (same label,
    scores within score_tol, boxes within box_tol px), so equal scores may come in either order."""
    boxes, scores, labels = (np.asarray(v) for v in exported)
    ref_boxes, ref_scores, ref_labels = (t.cpu().numpy() for t in (eager.boxes, eager.scores, eager.labels))
    if len(boxes) != len(ref_boxes):
        return f"{name}: {len(boxes)} exported detections vs {len(ref_boxes)} eager"
    unused = np.ones(len(ref_boxes), bool)
    for i in np.argsort(-scores, kind="stable"):
        fits = (unused & (ref_labels == labels[i]) & (np.abs(ref_scores - scores[i]) <= score_tol)
                & (np.abs(ref_boxes - boxes[i]).max(axis=1, initial=0) <= box_tol))
        if not fits.any():
            return (f"{name}: exported detection {i} (label {labels[i]}, score {scores[i]:.5f}, box "
                    f"{np.round(boxes[i], 2).tolist()}) has no eager match")
        unused[np.flatnonzero(fits)[0]] = False
    return ""


def main(argv=None) -> int:
    logging.captureWarnings(True)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "--config-file", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    parser.add_argument("--output", default="export", help="output folder (default ./export)")
    parser.add_argument("--check-images", default=None, help="image or folder to compare on (default: test set)")
    parser.add_argument("opts", nargs="*", help="config overrides key.path=value")
    args = parser.parse_args(argv)
    logger = setup_logger(name="retdet")
    if args.format not in FORMATS:
        parser.error(f"--format {args.format!r} is not supported: choose one of {', '.join(FORMATS)}")
    cfg = load_config(args.config, args.opts)
    resolve_num_classes(cfg)  # model.head.num_classes="from_dataset"
    model = build_model(cfg.model).eval()
    load_weights(model, args.weights, logger=logger)
    images = check_images(cfg, args.check_images)

    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "model.pt" if args.format == "torchscript" else "model.onnx")
    image, size, _ = prepare_input(images[0][1], cfg)
    export_model(model, (image, size), path, args.format)
    logger.info("exported %s (%s, %.1f MB)", path, args.format, os.path.getsize(path) / 2**20)

    from retdet.engine.predictor import Predictor

    predictor, run = Predictor(cfg, model), exported_runner(path, args.format)
    failures, total = [], 0
    for name, raw in images:
        image, size, scale = prepare_input(raw, cfg)
        boxes, scores, labels = run(image, size)
        eager = predictor([raw])[0]
        total += len(eager.boxes)
        problem = compare(eager, (np.asarray(boxes) * scale.numpy(), scores, labels), name)
        if problem:
            failures.append(problem)
    if failures:
        logger.error("exported model disagrees with eager:\n  %s", "\n  ".join(failures))
        return 1
    logger.info("exported == eager on %d images (%d detections)", len(images), total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
