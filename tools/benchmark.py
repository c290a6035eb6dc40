#!/usr/bin/env python
"""Throughput benchmarks, each printed as a table against a reference measured in the same run.

    python tools/benchmark.py --task ops [--device cpu|cuda] [--runs 20] [--json PATH]
    python tools/benchmark.py --task data --config configs/quickstart.py [--iters 50] [--json PATH]

ops: the fused sigmoid focal loss (forward + backward) against torchvision.ops.sigmoid_focal_loss,
and batched NMS against torchvision.ops.batched_nms (outputs checked identical), on the cases of
retdet/benchmarks/ops.py. Times are medians of --runs runs after warm-up.
data: images/s of the config's training loader (with its worker count): the median over windows of
10 batches, after the first batches (worker start-up) are discarded.
"""
import argparse
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from retdet.utils.logger import format_table  # noqa: E402


def run_ops(args) -> dict:
    from retdet.benchmarks.ops import run_op_benchmarks

    results = run_op_benchmarks(device=args.device, runs=args.runs, warmup=args.warmup, only=args.cases)
    rows = [(r["name"], r["case"], r["ours_ms"], r["ref_ms"], f"{r['speedup']:.2f}x") for r in results]
    print(f"\nretdet ops vs torchvision on {args.device} ({torch.get_num_threads()} CPU threads), "
          f"median of {args.runs} runs")
    print(format_table(rows, ["op", "case", "ours ms", "torchvision ms", "speedup"], floatfmt=".2f"))
    return {"task": "ops", "device": args.device, "results": results}


def run_data(args) -> dict:
    from retdet.benchmarks.data import data_throughput

    if not args.config:
        raise SystemExit("--task data needs --config")
    result = data_throughput(args.config, iters=args.iters, opts=args.opts)
    print(format_table([(result["name"], result["workers"], result["batch_size"], result["images_per_s"])],
                       ["loader", "workers", "batch", "images/s (median)"], floatfmt=".1f"))
    return {"task": "data", "device": "cpu", "config": args.config, "results": [result]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["ops", "data"], required=True)
    parser.add_argument("--config", "--config-file", default=None)
    parser.add_argument("--iters", type=int, default=60, help="batches to time (data)")
    parser.add_argument("opts", nargs="*", help="config overrides key.path=value")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cases", nargs="*", default=None, help="only the cases whose name contains one of these")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    report = {"ops": run_ops, "data": run_data}[args.task](args)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
