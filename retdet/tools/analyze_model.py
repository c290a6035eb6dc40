"""Parameters and FLOPs of a config's detector, per module (fvcore).

    python tools/analyze_model.py --config configs/retinanet_R50_FPN_1x.py [--input-size 800x1216] [--depth 3]

FLOPs are those of the network (backbone, neck, head) on one image of --input-size, counted by
fvcore (one fused multiply-add = one flop); pre- and post-processing are not counted.
"""
import torch

from retdet.engine.defaults import build_model_from_config, load_tool_config, tool_argument_parser
from retdet.modeling import DetectorNetwork
from retdet.utils.logger import format_table
from retdet.utils.model_analysis import count_parameters, flop_analysis
from retdet.tools.benchmark import parse_hw


def main(argv=None) -> None:
    parser = tool_argument_parser(__doc__, weights="optional",
                                  weights_help="a checkpoint (a pruned one counts its narrower layers); default: "
                                               "the config's initial weights")
    parser.add_argument("--input-size", type=parse_hw, default=(800, 1216), help="HxW (default 800x1216)")
    parser.add_argument("--depth", type=int, default=3, help="module depth of the per-module tables")
    args = parser.parse_args(argv)
    from fvcore.nn import flop_count_table, parameter_count_table

    cfg = load_tool_config(args)
    model = build_model_from_config(cfg, args.weights, device="cpu")
    h, w = args.input_size
    network = DetectorNetwork(model)
    analysis = flop_analysis(network, torch.zeros(1, 3, h, w))
    params = count_parameters(model)
    print(f"\nParameters of {args.config} (per module)")
    print(parameter_count_table(model, max_depth=args.depth))
    print(f"\nFLOPs of the network on one {h}x{w} image (per module; 'model.' is the detector)")
    print(flop_count_table(analysis, max_depth=args.depth + 1))
    by_part = analysis.by_module()
    rows = [(part, by_part.get(f"model.{part}", 0) / 1e9) for part in ("backbone", "neck", "head")]
    rows.append(("total", analysis.total() / 1e9))
    print(f"\nSummary: {params['total'] / 1e6:.2f} M parameters ({params['trainable'] / 1e6:.2f} M trainable)")
    print(format_table(rows, ["part", f"GFLOPs at {h}x{w}"], floatfmt=".2f"))


if __name__ == "__main__":
    main()
