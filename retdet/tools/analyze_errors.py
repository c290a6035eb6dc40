"""Why a detector misses: the AP lost to each kind of error, a confusion matrix, per-class precision and
recall, and the images with the most errors, on the config's test set.

    python tools/analyze_errors.py --config configs/quickstart.py --results output/quickstart/eval/coco_results.json
    python tools/analyze_errors.py --config configs/quickstart.py --weights output/quickstart/model_final.pth

--results scores a COCO results file (tools/train_net.py --eval-only writes eval/coco_results.json);
--weights runs the model over the test set first. The report (report.md, report.json, errors.png,
confusion_matrix.png, worst_images.png) goes to --output (default: the results file's folder/analysis,
or the config's train.output_dir/analysis). The error kinds are defined in
retdet/evaluation/error_analysis.py, the confusion matrix in retdet/evaluation/confusion_matrix.py.
"""
import os

from retdet.engine.defaults import build_model_from_config, load_tool_config, tool_argument_parser


def main(argv=None) -> None:
    parser = tool_argument_parser(__doc__, weights="optional",
                                  weights_help="a checkpoint to run over the test set (instead of --results)")
    parser.add_argument("--results", help="a COCO results json of the config's test set")
    parser.add_argument("--output", help="the report folder")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU of a correct detection (default 0.5)")
    parser.add_argument("--bg-iou", type=float, default=0.1,
                        help="below this IoU with every box a detection is background (default 0.1)")
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="detections shown in the confusion matrix and the gallery (default 0.3)")
    parser.add_argument("--num-images", type=int, default=8, help="images in the gallery (default 8)")
    parser.add_argument("--backend", choices=["pycocotools", "faster_coco_eval"], default=None,
                        help="the per-class AP's COCO backend (default: the config's dataloader.evaluator.backend)")
    args = parser.parse_args(argv)
    if (args.results is None) == (args.weights is None):
        parser.error("give exactly one of --results (a COCO results json) and --weights (a checkpoint to run)")
    from retdet.data import get_dataset, register_from_config
    from retdet.evaluation.error_report import write_error_report

    cfg = load_tool_config(args)
    register_from_config(cfg.dataloader.get("register", []))
    names = list(cfg.dataloader.test.dataset.names)
    if len(names) != 1:
        raise ValueError(f"dataloader.test.dataset.names is {names}: the analysis needs one test set "
                         "(override it: dataloader.test.dataset.names=[name])")
    dataset = get_dataset(names[0])
    ground_truth = dataset.coco if dataset.coco is not None else dataset.json_file
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.results)) if args.results
                                         else cfg.train.output_dir, "analysis")
    results = args.results
    if args.weights:
        from retdet.evaluation.evaluate import evaluate

        model = build_model_from_config(cfg, args.weights)
        evaluate(cfg, model, output_dir=output)
        results = os.path.join(output, "coco_results.json")
    backend = args.backend or cfg.dataloader.get("evaluator", {}).get("backend", "pycocotools")
    summary = write_error_report(ground_truth, results, output, image_root=dataset.image_root or None, iou=args.iou,
                                 bg_iou=args.bg_iou, score_threshold=args.score_threshold,
                                 num_images=args.num_images, backend=backend, title=f"{args.config} on {names[0]}")
    e = summary["errors"]
    print(f"AP{int(round(args.iou * 100))} {e['ap']:.2f}; dAP " +
          ", ".join(f"{k} {v:.2f}" for k, v in e["dap"].items()))
    print(f"report: {os.path.join(output, 'report.md')}")


if __name__ == "__main__":
    main()
