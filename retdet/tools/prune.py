"""Structured pruning of a trained detector: whole channels out of the backbone, FPN and head.

    python tools/prune.py --config configs/bccd_R18_FPN.py --weights output/bccd_R18_FPN/model_final.pth \
        --ratio 0.3 --output output/bccd_pruned [--importance l1|l2|taylor|norm_scale|YOURS] \
        [--round-to 8] [--grad-batches 8] [--import my_module] [--evaluate]

--ratio is the fraction of channels removed from every prunable group of layers (FLOPs fall by about
(1 - ratio)^2; 0.3 removes ~50% on configs/bccd_R18_FPN.py). Channels are chosen by the registered
importance criterion (retdet/pruning/importance.py); torch-pruning's dependency graph keeps residual
additions, FPN laterals and the shared head consistent. --output gets model_pruned.pth (the dense
smaller network's weights plus its layer widths, loadable with weights_only=True), config.py and
pruning.json. Fine-tune it like any checkpoint:

    python tools/train_net.py --config configs/bccd_R18_FPN.py train.init_checkpoint=DIR/model_pruned.pth ...

and evaluate, benchmark or export it with --weights DIR/model_pruned.pth and the same config.
"""
import json
import os
import sys
import time

from retdet.engine.defaults import build_model_from_config, load_tool_config, tool_argument_parser


def parse_args(argv=None):
    parser = tool_argument_parser(__doc__, weights="required", weights_help="the trained checkpoint to prune")
    parser.add_argument("--output", required=True, help="folder for model_pruned.pth, config.py and pruning.json")
    parser.add_argument("--ratio", type=float, required=True, help="fraction of channels removed per layer group")
    parser.add_argument("--importance", default="l1", help="registered criterion (default l1)")
    parser.add_argument("--round-to", type=int, default=8, help="kept widths are multiples of this (default 8; 0: any)")
    parser.add_argument("--grad-batches", type=int, default=8,
                        help="training batches whose loss gradients feed a gradient criterion (default 8)")
    parser.add_argument("--evaluate", action="store_true", help="evaluate before and after (no fine-tuning)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.ratio < 1.0:
        parser.error(f"--ratio must be in [0, 1), got {args.ratio}")
    return args


def example_input(cfg, model):
    """(1, 3, H, W): a training image through the test transforms, normalised and padded by the model
    (the dependency graph is traced and FLOPs are counted at its size)."""
    from retdet.quantization.calibration import calibration_images, calibration_tensors

    return calibration_tensors(model, calibration_images(cfg, 1))[0]


def training_batches(cfg, count: int):
    """The first ``count`` batches of the config's training loader (seed train.seed)."""
    from retdet.data import build_train_loader, register_from_config

    register_from_config(cfg.dataloader.get("register", []))
    loader, _ = build_train_loader(cfg.dataloader.train, input_format=cfg.model.get("input_format", "BGR"),
                                   seed=int(cfg.train.get("seed", 0)))
    batches, it = [], iter(loader)
    for _ in range(count):
        batches.append(next(it))
    return batches


def main(argv=None) -> int:
    from retdet.config import save_config
    from retdet.checkpoint import Checkpointer
    from retdet.evaluation.evaluate import evaluate
    from retdet.pruning.pruner import prune_model
    from retdet.registry import PRUNING_IMPORTANCES
    from retdet.utils.logger import format_table, setup_logger

    args = parse_args(argv)
    logger = setup_logger(name="retdet")
    cfg = load_tool_config(args)  # --import: a module registering your own criterion
    if not os.path.exists(args.weights):
        raise SystemExit(f"--weights {args.weights}: checkpoint not found")
    criterion = PRUNING_IMPORTANCES.get(args.importance)  # an unknown name fails here, listing the known ones
    model = build_model_from_config(cfg, args.weights, device="cpu", logger=logger)
    results = {}
    if args.evaluate:
        results["dense"] = evaluate(cfg, model, output_dir=os.path.join(args.output, "eval_dense"))
    batches = training_batches(cfg, args.grad_batches) if getattr(criterion, "needs_gradients", False) else None
    start = time.perf_counter()
    report = prune_model(model, ratio=args.ratio, example=example_input(cfg, model), importance=args.importance,
                         batches=batches, round_to=args.round_to or None)
    model.eval()
    logger.info("Pruned %s (ratio %.2f, importance %s) in %.1f s:\n%s", args.weights, args.ratio, args.importance,
                time.perf_counter() - start,
                format_table(report.rows(), ["", "dense", "pruned", "pruned / dense"]))
    os.makedirs(args.output, exist_ok=True)
    Checkpointer(model, args.output).save("model_pruned")
    save_config(cfg, args.output)
    summary = {"weights": os.path.abspath(args.weights), "config": os.path.abspath(args.config),
               "overrides": list(args.opts), "ratio": args.ratio, "importance": args.importance,
               "round_to": args.round_to, **{k: v for k, v in vars(report).items() if k not in ("importance", "ratio")}}
    if args.evaluate:
        results["pruned (no fine-tuning)"] = evaluate(cfg, model, output_dir=os.path.join(args.output, "eval_pruned"))
        rows = [[name, f"{r['bbox']['AP']:.2f}", f"{r['bbox']['AP50']:.2f}"] for name, r in results.items()]
        logger.info("AP on %s:\n%s", cfg.dataloader.test.dataset.names, format_table(rows, ["model", "AP", "AP50"]))
        summary["evaluation"] = {k: v["bbox"] for k, v in results.items()}
    with open(os.path.join(args.output, "pruning.json"), "w") as f:
        json.dump(summary, f, indent=2)
    logger.info("Wrote %s; fine-tune with: tools/train_net.py --config %s train.init_checkpoint=%s", args.output,
                args.config, os.path.join(args.output, "model_pruned.pth"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
