"""Speed benchmarks, printed as tables of ours against a reference measured in the same run.

    python tools/benchmark.py --config configs/retinanet_R50_FPN_1x.py --task inference --compare torchvision
    python tools/benchmark.py --config configs/retinanet_R50_FPN_1x.py --task inference --compare torchvision --int8
    python tools/benchmark.py --config configs/retinanet_R50_FPN_1x.py --task train --compare torchvision
    python tools/benchmark.py --config configs/quickstart.py --task data
    python tools/benchmark.py --task ops
    python tools/benchmark.py --config configs/retinanet_R50_FPN_1x.py --task roofline --compare torchvision
    python tools/benchmark.py --task eval --images 5000     (faster-coco-eval vs pycocotools)
    python tools/benchmark.py --task errors --images 5000   (tools/analyze_errors.py vs a pycocotools evaluation)

inference: images/s, latency median and p90, a per-stage breakdown (preprocessing, backbone+FPN,
    head, post-processing) on random images of --input-size (default 800x1216) at --batch-size
    (default 1); --int8 adds our int8 network (see tools/quantize.py) to the same timing loop. train: one SGD step (forward with losses, backward, update) at --batch-size
    (default 2) of --input-size (default 512x512): iterations/s, images/s, peak memory, and the data
    time of the config's own training loader when its dataset is available, and the first
    --fresh-steps steps of freshly initialised models at lr 0 against that steady state (a step's
    cost must not depend on the weights' values; see fresh_weights_steps). Both print parameters
    and FLOPs (fvcore). --compare torchvision builds torchvision's RetinaNet like the config (see
    retdet/benchmarks/model.py) and times it interleaved with ours.
roofline: the GFLOP/s one large 3x3 convolution attains on this machine (float32 in NCHW and NHWC,
    int8 in ONNX Runtime), then inference (1x800x1216) and a training step (batch 2 of 512x512, or
    --input-size, which then sets both) as achieved GFLOP/s, their fraction of that figure and their time split by layer
    kind and stage (retdet/benchmarks/roofline.py).
data: images/s of the config's training loader. ops: the fused focal loss and NMS against
    torchvision.ops, and the Winograd 3x3 convolutions against F.conv2d per R50-FPN layer shape
    (retdet/benchmarks/ops.py).
Times are medians (the machines are noisy). --json writes
    {"task", "device", "config", "results": [{"name", "ours", "ref", "unit", "speedup"}]}
where speedup is ours/ref for rates and ref/ours for times (> 1: ours is faster) and null where
there is no reference.
"""
import argparse
import json
import os

import torch

from retdet.engine.defaults import load_tool_config, tool_argument_parser
from retdet.utils.logger import format_table


def parse_hw(text: str):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-size must look like 800x1216 (HxW), got {text!r}")
    return h, w


def _load(args):
    if not args.config:
        raise SystemExit(f"--task {args.task} needs --config")
    return load_tool_config(args)


def run_ops(args) -> list:
    from retdet.benchmarks.ops import run_op_benchmarks

    results = run_op_benchmarks(device=args.device, runs=args.iters or 20, warmup=args.warmup, only=args.cases)
    return [{"name": f"{r['name']}: {r['case']}", "ours": r["ours_ms"], "ref": r["ref_ms"], "unit": "ms",
             "speedup": r["speedup"]} for r in results]


def run_data(args) -> list:
    from retdet.benchmarks.data import data_throughput

    r = data_throughput(_load(args), iters=args.iters or 60)
    return [{"name": f"{r['name']}, {r['workers']} workers, batch {r['batch_size']}", "ours": r["images_per_s"],
             "ref": None, "unit": "images/s", "speedup": None}]


def run_eval(args) -> list:
    from retdet.benchmarks.evaluation import evaluation_benchmark

    return evaluation_benchmark(num_images=args.images, runs=args.iters or 3)


def run_errors(args) -> list:
    from retdet.benchmarks.evaluation import error_analysis_benchmark

    return error_analysis_benchmark(num_images=args.images, runs=args.iters or 3)


def run_model(args) -> list:
    from retdet.benchmarks.data import data_throughput
    from retdet.benchmarks.model import inference_benchmark, train_benchmark

    cfg = _load(args)
    train = args.task == "train"
    h, w = args.input_size or ((512, 512) if train else (800, 1216))
    batch = args.batch_size or (2 if train else 1)
    kwargs = dict(device=torch.device(args.device), batch_size=batch, height=h, width=w, iters=args.iters or 10,
                  warmup=args.warmup, amp=args.amp, compare=args.compare == "torchvision")
    if not train:
        return inference_benchmark(cfg.model, weights=args.weights, int8=args.int8,
                                   variants=_variants(args, cfg), **kwargs)
    rows = train_benchmark(cfg.model, fresh_steps=args.fresh_steps, **kwargs)
    try:
        r = data_throughput(cfg, iters=30, warmup=3)
        rows.insert(3, {"name": f"data time per batch ({r['name']}, batch {r['batch_size']})",
                        "ours": r["ms_per_batch"], "ref": None, "unit": "ms", "speedup": None})
    except (FileNotFoundError, KeyError, OSError) as e:
        print(f"data time not measured: the config's training data is not available here ({e})")
    return rows


def run_roofline(args) -> list:
    from retdet.benchmarks.model import roofline_benchmark

    cfg = _load(args)
    sizes = dict(infer_size=args.input_size, train_size=args.input_size) if args.input_size else {}
    return roofline_benchmark(cfg, device=torch.device(args.device), iters=args.iters or 6,
                              compare=args.compare == "torchvision", train_batch=args.batch_size or 2, **sizes)


def _variants(args, cfg) -> dict:
    """--variant NAME=WEIGHTS[@CONFIG] -> {NAME: (model config, WEIGHTS)}; CONFIG defaults to --config."""
    variants = {}
    for spec in args.variant:
        name, sep, rest = spec.partition("=")
        weights, _, config = rest.partition("@")
        if not sep or not name or not weights:
            raise SystemExit(f"--variant {spec!r}: expected NAME=WEIGHTS or NAME=WEIGHTS@CONFIG")
        if not os.path.exists(weights):
            raise SystemExit(f"--variant {name}: checkpoint not found: {weights}")
        own = load_tool_config(args, config=config, overrides=()) if config else cfg
        variants[name] = (own.model, weights)
    return variants


def main(argv=None) -> None:
    parser = tool_argument_parser(__doc__, config="optional", weights="optional",
                                  weights_help="inference: a checkpoint for our model (default: random)")
    parser.add_argument("--task", choices=["train", "inference", "data", "ops", "eval", "errors", "roofline"],
                        required=True)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--iters", "--runs", type=int, default=None,
                        help="timed iterations (train/inference 10, data 60 batches, ops 20 runs, eval and errors 3 runs)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--input-size", type=parse_hw, default=None, help="HxW of the random input images")
    parser.add_argument("--amp", action="store_true", help="autocast: float16 on CUDA (grad scaler), bfloat16 on CPU")
    parser.add_argument("--compare", choices=["torchvision"], default=None)
    parser.add_argument("--int8", nargs="?", const="calibrate", default=None, metavar="DIR",
                        help="inference: also time our int8 network, from DIR (tools/quantize.py's output) or, "
                             "without DIR, quantized here on the benchmark images (speed only)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=WEIGHTS[@CONFIG]",
                        help="inference: also time this checkpoint (e.g. a pruned or distilled model; its own "
                             "config after @) against ours in the same loop (repeatable)")
    parser.add_argument("--fresh-steps", type=int, default=4,
                        help="train: also time this many steps of freshly initialised models at lr 0 (0: skip)")
    parser.add_argument("--images", type=int, default=5000, help="eval, errors: images of the synthetic results")
    parser.add_argument("--cases", nargs="*", default=None, help="ops: only cases whose name contains one of these")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    if (args.int8 or args.weights or args.variant) and args.task != "inference":
        parser.error("--int8, --weights and --variant apply to --task inference")
    if args.compare and args.task not in ("train", "inference", "roofline"):
        parser.error(f"--compare applies to --task train, inference and roofline, not {args.task}")
    results = {"ops": run_ops, "data": run_data, "train": run_model, "inference": run_model,
               "eval": run_eval, "errors": run_errors, "roofline": run_roofline}[args.task](args)

    threads = f"{torch.get_num_threads()} CPU threads" if args.device == "cpu" else torch.cuda.get_device_name()
    ref_name = {"ops": "torchvision", "eval": "pycocotools", "errors": "pycocotools"}.get(args.task, "torchvision" if args.compare else "reference")
    print(f"\n{args.task} on {args.device} ({threads}){', AMP' if args.amp else ''}: medians")
    rows = [(r["name"], r["ours"], r["ref"], r["unit"], "" if r["speedup"] is None else f"{r['speedup']:.2f}x")
            for r in results]
    print(format_table(rows, ["", "retdet", ref_name, "unit", "speedup"], floatfmt=".2f"))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        report = {"task": args.task, "device": args.device, "config": args.config, "results": results}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
