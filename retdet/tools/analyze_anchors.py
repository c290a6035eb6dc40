"""Do the anchors fit the objects? Coverage of the training set's boxes by the config's anchors, and a
search for better sizes and aspect ratios (no model needed).

    python tools/analyze_anchors.py --config configs/quickstart.py [--optimize] [--output DIR]

For every training box at every training scale: the best IoU any anchor reaches and the positives the
config's matcher gives it, as tables by box size and aspect ratio, with the boxes that get no positive
("unmatchable") and those with only low-quality ones. --optimize searches the anchors
(retdet/evaluation/anchor_search.py), prints the coverage before and after and the overrides that
select the result, e.g. for tools/train_net.py. Tables and plots go to --output (default: the config's
train.output_dir/anchors).
"""
import json
import os

from retdet.engine.defaults import load_tool_config, tool_argument_parser
from retdet.utils.logger import format_table

COLUMNS = ["boxes", "mean best IoU", "% best IoU >= fg", "% low-quality only", "% unmatchable", "positives/box"]
KEYS = ["boxes", "mean_best_iou", "matched", "low_quality_only", "unmatchable", "positives_per_box"]


def table(rows, first):
    return format_table([[r["bin"]] + [r[k] for k in KEYS] for r in rows], [first] + COLUMNS,
                        floatfmt=["", "", ".3f", ".1f", ".1f", ".1f", ".2f"])


def main(argv=None) -> None:
    parser = tool_argument_parser(__doc__)
    parser.add_argument("--optimize", action="store_true", help="search anchor sizes and aspect ratios")
    parser.add_argument("--generations", type=int, default=600, help="evolutionary search steps (default 600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="folder for anchors.md, anchors.json and the plots")
    args = parser.parse_args(argv)
    if args.generations < 1:
        parser.error(f"--generations must be >= 1, got {args.generations}")
    from retdet.data import merge_datasets, register_from_config
    from retdet.evaluation import anchor_coverage as ac
    from retdet.evaluation.anchor_search import AnchorFitness, AnchorSetting, search_anchors
    from retdet.evaluation.plots import plot_anchor_coverage
    from retdet import modeling  # noqa: F401  (registers the anchor generators and matchers)
    from retdet.registry import ANCHOR_GENERATORS, MATCHERS, build

    cfg = load_tool_config(args)
    register_from_config(cfg.dataloader.get("register", []))
    train = cfg.dataloader.train
    dataset = merge_datasets(list(train.dataset.names), filter_empty=True)
    generator = build(cfg.model.anchor_generator, ANCHOR_GENERATORS, where="model.anchor_generator")
    matcher = build(cfg.model.matcher, MATCHERS, where="model.matcher")
    fg_iou = float(matcher.thresholds[-2])
    data = ac.training_boxes(dataset.records, train.get("transforms", []), cfg.model.get("size_divisibility", 32))
    output = args.output or os.path.join(cfg.train.output_dir, "anchors")
    os.makedirs(output, exist_ok=True)
    print(f"{len(data.boxes)} boxes: {dataset.num_boxes} boxes of {len(dataset)} training images at short sides "
          f"{data.scales}; matcher foreground IoU {fg_iou}")
    before = ac.exact_coverage(generator, matcher, data)
    report = {"config": args.config, "scales": data.scales, "fg_iou": fg_iou, "boxes": len(data.boxes),
              "anchors": {"sizes": generator.sizes, "aspect_ratios": generator.aspect_ratios},
              "coverage": ac.coverage_table(data, before, fg_iou)}
    sections = [("the config's anchors", report["coverage"])]
    if args.optimize:
        start = AnchorSetting([list(s) for s in generator.sizes], list(generator.aspect_ratios))
        fitness = AnchorFitness(data, generator.strides, generator.offset, fg_iou, order=generator.order,
                                round_cell=generator.round_cell)
        found = search_anchors(fitness, start, generations=args.generations, seed=args.seed)
        best = found["setting"]
        tuned = build(dict(cfg.model.anchor_generator, sizes=best.sizes, aspect_ratios=best.aspect_ratios),
                      ANCHOR_GENERATORS, where="model.anchor_generator")
        after = ac.exact_coverage(tuned, matcher, data)
        report["optimized"] = {"sizes": best.sizes, "aspect_ratios": best.aspect_ratios,
                               "fitness": found["fitness"], "start_fitness": found["start_fitness"],
                               "kmeans_fitness": found["kmeans_fitness"], "overrides": best.overrides(),
                               "coverage": ac.coverage_table(data, after, fg_iou)}
        sections.append(("the optimised anchors", report["optimized"]["coverage"]))
    lines = []
    for title, cov in sections:
        lines += [f"## Coverage by {title}", "", table(cov["all"], "boxes"), "", table(cov["by_size"], "sqrt(area) px"),
                  "", table(cov["by_ratio"], "height/width"), ""]
    if args.optimize:
        o = report["optimized"]
        lines += [f"Fitness (matched fraction + 0.5 x mean best IoU): config {o['start_fitness']:.4f}, k-means "
                  f"start {o['kmeans_fitness']:.4f}, optimised {o['fitness']:.4f}.", "",
                  "Overrides:", "", "    " + " ".join(o["overrides"]), ""]
    plot = plot_anchor_coverage(data.wh, before, fg_iou, os.path.join(output, "anchor_coverage.png"))
    lines += [f"![coverage]({os.path.basename(plot)})", ""]
    text = "\n".join(lines)
    with open(os.path.join(output, "anchors.md"), "w") as f:
        f.write(f"# Anchor coverage: {args.config}\n\n" + text)
    with open(os.path.join(output, "anchors.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(text)
    print(f"written: {output}/anchors.md, anchors.json, {os.path.basename(plot)}")


if __name__ == "__main__":
    main()
