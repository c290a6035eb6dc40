"""Post-training static int8 quantization of a trained detector's network.

    python tools/quantize.py --config configs/bccd_R18_FPN.py --weights output/bccd_R18_FPN/model_final.pth \
        --output output/bccd_int8 [--calib-images 32] [--backend onnxruntime|openvino] \
        [--observer minmax|entropy|percentile] [--fp32-layers head.cls_score,...] [--evaluate]

The backbone, FPN and head are calibrated on --calib-images images drawn (--seed) from the config's
training set through its test-time transforms, then quantized by ONNX Runtime's static quantizer:
int8 weights per output channel, uint8 activations per tensor (QDQ format). Anchors, box decoding
and NMS stay float32. --output gets network_int8.onnx and quantization.json; pass that folder as
--weights to tools/train_net.py --eval-only, tools/demo.py, tools/benchmark.py and tools/export.py,
with the same --config. --evaluate also evaluates float32 and int8 on the config's test set and
prints them side by side (written to --output/evaluation.json).
"""
import json
import os
import sys
import time

from retdet.engine.defaults import build_model_from_config, load_tool_config, tool_argument_parser
from retdet.quantization.onnxruntime_backend import OBSERVERS
from retdet.quantization.runtimes import RUNTIMES

# The observer measured best on BCCD and the quickstart model (docs/deployment.md).
DEFAULT_OBSERVER = "minmax"


def parse_args(argv=None):
    parser = tool_argument_parser(__doc__, weights="required", weights_help="the float32 checkpoint to quantize")
    parser.add_argument("--output", required=True, help="folder for network_int8.onnx and quantization.json")
    parser.add_argument("--calib-images", type=int, default=32, help="calibration images (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="which training images calibrate (default 0)")
    parser.add_argument("--backend", default="onnxruntime",
                        help=f"runtime recorded for the int8 network: {', '.join(RUNTIMES)} (default onnxruntime)")
    parser.add_argument("--observer", default=DEFAULT_OBSERVER,
                        help=f"activation ranges: {', '.join(OBSERVERS)} (default {DEFAULT_OBSERVER})")
    parser.add_argument("--fp32-layers", default="",
                        help="comma-separated module paths kept in float32, e.g. head.cls_score,head.bbox_pred")
    parser.add_argument("--reduce-range", action="store_true",
                        help="7-bit weights (for CPUs without VNNI whose int8 dot products can saturate)")
    parser.add_argument("--evaluate", action="store_true", help="evaluate float32 and int8 on the test set")
    args = parser.parse_args(argv)
    if args.backend not in RUNTIMES:
        parser.error(f"--backend {args.backend!r} is not supported: choose one of {', '.join(RUNTIMES)}")
    if args.observer not in OBSERVERS:
        parser.error(f"--observer {args.observer!r} is not supported: choose one of {', '.join(OBSERVERS)}")
    if args.calib_images < 1:
        parser.error(f"--calib-images must be at least 1 (got {args.calib_images}): the activation ranges are "
                     f"measured on calibration images")
    return args


def side_by_side(results: dict) -> str:
    from retdet.utils.logger import format_table

    metrics = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    rows = [[name] + [f"{r['bbox'][m]:.2f}" for m in metrics] for name, r in results.items()]
    fp32, int8 = results.get("float32"), results.get("int8")
    if fp32 and int8:
        rows.append(["int8 - float32"] + [f"{int8['bbox'][m] - fp32['bbox'][m]:+.2f}" for m in metrics])
    return format_table(rows, ["precision"] + metrics)


def main(argv=None) -> int:
    from retdet.config import save_config
    from retdet.evaluation.evaluate import evaluate
    from retdet.quantization import ARTIFACT_FILE
    from retdet.quantization.artifact import is_quantized_artifact, write_metadata
    from retdet.quantization.calibration import calibration_images, calibration_tensors
    from retdet.quantization.onnxruntime_backend import quantize_network
    from retdet.utils.logger import setup_logger

    args = parse_args(argv)
    logger = setup_logger(name="retdet")
    cfg = load_tool_config(args)
    if not os.path.exists(args.weights):
        raise SystemExit(f"--weights {args.weights}: checkpoint not found")
    if is_quantized_artifact(args.weights):
        raise SystemExit(f"--weights {args.weights} is already an int8 model: quantize the float32 checkpoint")
    model = build_model_from_config(cfg, args.weights, device="cpu", logger=logger)
    fp32_layers = [m.strip() for m in args.fp32_layers.split(",") if m.strip()]
    start = time.perf_counter()
    images = calibration_images(cfg, args.calib_images, seed=args.seed)
    os.makedirs(args.output, exist_ok=True)
    onnx_path = os.path.join(args.output, ARTIFACT_FILE)
    report = quantize_network(model, calibration_tensors(model, images), onnx_path, observer=args.observer,
                              reduce_range=args.reduce_range, fp32_layers=fp32_layers, logger=logger)
    write_metadata(args.output, model, backend=args.backend, config=os.path.abspath(args.config),
                   overrides=list(args.opts), weights=os.path.abspath(args.weights), calib_images=len(images),
                   seed=args.seed, weights_bytes=os.path.getsize(args.weights), **report)
    save_config(cfg, args.output)
    logger.info("int8 network written to %s in %.0f s: %.2f MB (float32 graph %.2f MB, %.2fx smaller)", onnx_path,
                time.perf_counter() - start, report["int8_onnx_bytes"] / 2**20, report["fp32_onnx_bytes"] / 2**20,
                report["fp32_onnx_bytes"] / report["int8_onnx_bytes"])
    if args.evaluate:
        results = {"float32": evaluate(cfg, model, output_dir=os.path.join(args.output, "eval_fp32"))}
        quantized = build_model_from_config(cfg, args.output, device="cpu", logger=logger)
        results["int8"] = evaluate(cfg, quantized, output_dir=os.path.join(args.output, "eval_int8"))
        logger.info("float32 and int8 on %s:\n%s", cfg.dataloader.test.dataset.names, side_by_side(results))
        with open(os.path.join(args.output, "evaluation.json"), "w") as f:
            json.dump({k: v["bbox"] for k, v in results.items()}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
