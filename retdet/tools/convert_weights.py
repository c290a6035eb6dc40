"""Convert torchvision checkpoints into retdet checkpoints.

    python tools/convert_weights.py --source torchvision-retinanet --input tv.pth --output retdet.pth
    python tools/convert_weights.py --source torchvision-resnet --input resnet50.pth --output r50_backbone.pth
    python tools/convert_weights.py --source torchvision-efficientnet --input effb0.pth --output effb0_backbone.pth

Load the result with `train.init_checkpoint=PATH` (missing/unexpected keys are reported as a table).
Nothing is downloaded: give a file you have.
"""
import argparse
import os

import torch

from retdet.checkpoint import convert_torchvision_backbone, convert_torchvision_retinanet
from retdet.checkpoint.loader import read_state_dict


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True,
                        choices=["torchvision-retinanet", "torchvision-resnet", "torchvision-efficientnet"])
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    state = read_state_dict(args.input)
    if args.source == "torchvision-retinanet":
        converted = convert_torchvision_retinanet(state)
    else:
        converted = convert_torchvision_backbone(state, args.source.split("-", 1)[1])
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save({"model": converted, "converted_from": args.source}, args.output)
    print(f"wrote {args.output}: {len(converted)} tensors ({args.source})")


if __name__ == "__main__":
    main()
