"""Export a trained detector, post-processing included, and check it against the eager model.

    python tools/export.py --config configs/quickstart.py --weights output/quickstart/model_final.pth \
        --format torchscript|onnx [--output DIR] [--check-images IMG_OR_DIR]

Writes model.pt (TorchScript) or model.onnx. --weights may be an int8 folder from tools/quantize.py:
it exports to ONNX only, as model_int8.onnx (the QDQ network with the float32 post-processing),
checked against the int8 model run by retdet (same tolerances). Inputs and outputs are described in retdet/export.py
(inputs: a resized, padded image and its valid size; outputs: boxes, scores, labels). The exported
model is then run on the check images (default: 4 images of the config's test set) next to the
eager model, and the detections must agree (same labels, boxes within 1e-2 px, scores within 1e-4);
a mismatch exits non-zero. ONNX checks run with onnxruntime (pip install onnxruntime).
"""
import logging
import os
import sys

import numpy as np
import torch

from retdet.data.image_io import read_image
from retdet.engine.defaults import build_model_from_config, load_tool_config, tool_argument_parser
from retdet.export import FORMATS, export_model, prepare_input
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


def match_detections(eager, exported, box_tol: float = 1e-2, score_tol: float = 1e-4, ties: bool = False):
    """One-to-one pairing of exported with eager detections: (exported indices without a partner,
    eager indices without a partner, number paired by score only). A pair has the same label, scores
    within score_tol and boxes within box_tol px, so equal scores may come in either order.

    ``ties``: an int8 network's scores take few distinct values, so neighbouring anchors often share
    a score; which of them top-k and NMS keep depends on the implementation's order (PyTorch and ONNX
    Runtime can break ties differently). Detections left over after the exact pairing are then paired
    by label and equal score alone (the box is another of the equally scored candidates), or, at the
    lowest score of the list, by equal score alone (a tie cut by max_detections)."""
    boxes, scores, labels = (np.asarray(v) for v in exported)
    ref_boxes, ref_scores, ref_labels = (t.cpu().numpy() for t in (eager.boxes, eager.scores, eager.labels))
    unused, unmatched = np.ones(len(ref_boxes), bool), []
    for i in np.argsort(-scores, kind="stable"):
        fits = (unused & (ref_labels == labels[i]) & (np.abs(ref_scores - scores[i]) <= score_tol)
                & (np.abs(ref_boxes - boxes[i]).max(axis=1, initial=0) <= box_tol))
        if fits.any():
            unused[np.flatnonzero(fits)[0]] = False
        else:
            unmatched.append(i)
    swapped = 0
    if ties:
        left = []
        for i in unmatched:
            fits = unused & (ref_labels == labels[i]) & (np.abs(ref_scores - scores[i]) <= 1e-6)
            if not fits.any() and len(ref_scores) and scores[i] <= ref_scores.min() + 1e-6:
                # a tie at the max_detections cut: the other list kept another of the equal lowest scores
                fits = unused & (np.abs(ref_scores - scores[i]) <= 1e-6)
            if fits.any():
                unused[np.flatnonzero(fits)[0]] = False
                swapped += 1
            else:
                left.append(i)
        unmatched = left
    return unmatched, list(np.flatnonzero(unused)), swapped


def compare(eager, exported, name: str, box_tol: float = 1e-2, score_tol: float = 1e-4, ties: bool = False) -> str:
    """'' when the detections agree (see match_detections), else what differs."""
    boxes, scores, labels = (np.asarray(v) for v in exported)
    if len(boxes) != len(eager.boxes):
        return f"{name}: {len(boxes)} exported detections vs {len(eager.boxes)} eager"
    unmatched, _, _ = match_detections(eager, exported, box_tol, score_tol, ties)
    if unmatched:
        i = unmatched[0]
        return (f"{name}: exported detection {i} (label {labels[i]}, score {scores[i]:.5f}, box "
                f"{np.round(boxes[i], 2).tolist()}) has no eager match")
    return ""


def main(argv=None) -> int:
    logging.captureWarnings(True)
    parser = tool_argument_parser(__doc__, weights="required")
    parser.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    parser.add_argument("--output", default="export", help="output folder (default ./export)")
    parser.add_argument("--check-images", default=None, help="image or folder to compare on (default: test set)")
    args = parser.parse_args(argv)
    logger = setup_logger(name="retdet")
    if args.format not in FORMATS:
        parser.error(f"--format {args.format!r} is not supported: choose one of {', '.join(FORMATS)}")
    cfg = load_tool_config(args)
    model = build_model_from_config(cfg, args.weights, device="cpu", logger=logger)
    images = check_images(cfg, args.check_images)

    os.makedirs(args.output, exist_ok=True)
    int8 = model.runner.runtime is not None
    if int8 and args.format != "onnx":
        parser.error(f"--weights {args.weights} is an int8 model: it exports to ONNX (QDQ) only, use --format onnx")
    path = os.path.join(args.output, "model.pt" if args.format == "torchscript" else
                        "model_int8.onnx" if int8 else "model.onnx")
    image, size, _ = prepare_input(images[0][1], cfg, model)
    export_model(model, (image, size), path, args.format)
    logger.info("exported %s (%s, %.1f MB)", path, args.format, os.path.getsize(path) / 2**20)

    from retdet.engine.predictor import Predictor

    predictor, run = Predictor(cfg, model), exported_runner(path, args.format)
    reference = "the int8 model in PyTorch (its network in onnxruntime)" if int8 else "eager"
    failures, total, swaps = [], 0, 0
    for name, raw in images:
        image, size, scale = prepare_input(raw, cfg, model)
        boxes, scores, labels = run(image, size)
        eager = predictor([raw])[0]
        total += len(eager.boxes)
        exported = (np.asarray(boxes) * scale.numpy(), scores, labels)
        problem = compare(eager, exported, name, ties=int8)
        if problem:
            failures.append(problem)
        elif int8:
            swaps += match_detections(eager, exported, ties=True)[2]
    if failures:
        logger.error("exported model disagrees with %s:\n  %s", reference, "\n  ".join(failures))
        return 1
    logger.info("exported == %s on %d images (%d detections%s)", reference, len(images), total,
                f"; {swaps} of them another of equally scored boxes" if int8 else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
