"""Convert other frameworks' checkpoints into retdet checkpoints.

    python tools/convert_weights.py --source torchvision-retinanet --input tv.pth --output retdet.pth
    python tools/convert_weights.py --source torchvision-resnet --input resnet50.pth --output r50_backbone.pth
    python tools/convert_weights.py --source torchvision-efficientnet --input effb0.pth --output effb0_backbone.pth
    python tools/convert_weights.py --source detectron2-retinanet --input model_final_5bd44e.pkl --output d2.pth
    python tools/convert_weights.py --source detectron2-resnet --input R-50.pkl --output r50_msra_backbone.pth
    python tools/convert_weights.py --source mmdet-retinanet --input retinanet_r50_fpn_1x_coco.pth --output mm.pth

The Detectron2 and MMDetection sources print a report of every source key and what it became, and
check the result against the model their --config builds (default: the matching configs/compat/
file; add overrides such as model.backbone.depth=101 after the flags): a missing or unexpected key, a
shape that differs or pixel statistics that differ from the config's are errors. Detectron2 .pkl
files are read without unpickling code (numpy arrays only); MMDetection's .pth with torch's
weights-only reader, its non-weight entries (MMEngine objects) never imported.

Load the result with --weights (inference) or train.init_checkpoint=PATH (training). Nothing is
downloaded: give a file you have.
"""
import os
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from retdet.checkpoint import convert_torchvision_backbone, convert_torchvision_retinanet
from retdet.checkpoint.detectron2 import (
    convert_detectron2_resnet,
    convert_detectron2_retinanet,
    read_detectron2_file,
)
from retdet.checkpoint.loader import read_state_dict
from retdet.checkpoint.mmdetection import convert_mmdet_retinanet, read_mmdet_file
from retdet.engine.defaults import build_model_from_config, load_tool_config, tool_argument_parser
from retdet.utils.logger import format_table

TORCHVISION = ["torchvision-retinanet", "torchvision-resnet", "torchvision-efficientnet"]
DEFAULT_CONFIGS = {
    "detectron2-retinanet": "configs/compat/retinanet_R50_FPN_detectron2.py",
    "detectron2-resnet": "configs/compat/retinanet_R50_FPN_detectron2.py",
    "mmdet-retinanet": "configs/compat/retinanet_R50_FPN_mmdet.py",
}
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ConversionError(ValueError):
    """The converted weights do not fit the model the config builds."""


NETWORK = ("backbone.", "neck.", "head.")  # the weights; the rest of a detector's state is training state


def check_against_model(converted: Mapping[str, Tensor], model_state: Mapping[str, Tensor], *,
                        prefixes: Tuple[str, ...] = NETWORK, source: str = "", config: str = "") -> None:
    """Every network key of the model (under ``prefixes``) present with its shape, and nothing else."""
    own = {k: v for k, v in model_state.items() if k.startswith(prefixes)}
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    shapes = [(k, tuple(converted[k].shape), tuple(own[k].shape)) for k in sorted(set(own) & set(converted))
              if tuple(converted[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        lines = [f"  missing (the model has it, the checkpoint not): {k}" for k in missing[:20]]
        lines += [f"  unexpected (the checkpoint has it, the model not): {k}" for k in unexpected[:20]]
        lines += [f"  {k}: checkpoint {a} vs model {b}" for k, a, b in shapes[:20]]
        raise ConversionError(
            f"{source} weights do not match the model of {config} ({len(missing)} missing, {len(unexpected)} "
            f"unexpected, {len(shapes)} of another shape):\n" + "\n".join(lines) +
            "\nIs it the right config (depth: model.backbone.depth=101; classes: model.head.num_classes=N)?")


def check_pixel_stats(source_state: Mapping[str, Tensor], cfg_model, *, source: str, config: str) -> None:
    """A Detectron2 checkpoint that stores pixel_mean/pixel_std must agree with the config's."""
    for key in ("pixel_mean", "pixel_std"):
        if key in source_state:
            theirs = [float(v) for v in source_state[key].flatten()]
            ours = [float(v) for v in cfg_model[key]]
            if len(theirs) != 3 or any(abs(a - b) > 1e-3 for a, b in zip(theirs, ours)):
                raise ConversionError(f"{source}: the checkpoint's {key} {theirs} differs from {config}'s "
                                      f"model.{key} {ours}; set model.{key}={theirs} (and the matching input format)")


def convert(source: str, path: str) -> Tuple[Dict[str, Tensor], List[Tuple[str, str]], Dict[str, Tensor], List[str]]:
    """(converted state, report rows, the source state, globals replaced while reading)."""
    if source in TORCHVISION:
        state = read_state_dict(path)
        out = (convert_torchvision_retinanet(state) if source == "torchvision-retinanet"
               else convert_torchvision_backbone(state, source.split("-", 1)[1]))
        return out, [], dict(state), []
    if source.startswith("detectron2-"):
        state = read_detectron2_file(path)
        fn = convert_detectron2_retinanet if source == "detectron2-retinanet" else convert_detectron2_resnet
        out, report = fn(state)
        return out, report, state, []
    state, replaced = read_mmdet_file(path)
    out, report = convert_mmdet_retinanet(state)
    return out, report, state, replaced


def main(argv: Optional[List[str]] = None) -> None:
    parser = tool_argument_parser(__doc__, config=None)
    parser.add_argument("--source", required=True, choices=TORCHVISION + list(DEFAULT_CONFIGS))
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--config", default=None,
                        help="the retdet config the weights are for (checked strictly); default for the Detectron2 "
                             "and MMDetection sources: " + ", ".join(sorted(set(DEFAULT_CONFIGS.values()))))
    parser.add_argument("--quiet", action="store_true", help="print a summary instead of every key")
    args = parser.parse_args(argv)
    from iopath.common.file_io import PathManager

    if not PathManager().exists(args.input):
        raise SystemExit(f"--input {args.input}: no such file")
    converted, report, source_state, replaced = convert(args.source, args.input)

    config = args.config or DEFAULT_CONFIGS.get(args.source)
    if config is not None:
        if not os.path.exists(config) and os.path.exists(os.path.join(_REPO, config)):
            config = os.path.join(_REPO, config)
        cfg = load_tool_config(args, config=config, overrides=args.opts)
        check_pixel_stats(source_state, cfg.model, source=args.source, config=config)
        model_state = build_model_from_config(cfg, device="cpu").state_dict()
        check_against_model(converted, model_state, prefixes=("backbone.",) if args.source.endswith("-resnet") else NETWORK,
                            source=args.source, config=config)
    if report and not args.quiet:
        print(format_table(report, [f"{args.source} key", "retdet key"]))
    if replaced:
        print(f"not loaded (non-weight objects, replaced by inert stand-ins): {', '.join(replaced)}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save({"model": converted, "converted_from": args.source}, args.output)
    what = "the backbone of " if args.source.endswith("-resnet") else ""
    checked = f"; matches {what}{config} exactly" if config else ""
    print(f"wrote {args.output}: {len(converted)} tensors ({args.source}{checked})")


if __name__ == "__main__":
    main()
