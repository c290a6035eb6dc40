"""Write a Pascal VOC or YOLO dataset as a COCO json (the same conversion training uses in memory).

    python tools/convert_dataset.py --format voc --root VOCdevkit/VOC2007 --split test --output voc07_test.json
    python tools/convert_dataset.py --format yolo --root my_yolo --split val --names my_yolo/data.yaml \\
        --output my_yolo_val.json

File names in the json are relative to --root: register it with
``dataloader.register=[dict(name=..., json_file=OUTPUT, image_root=ROOT)]``. The labels are checked
as when training reads them (a label file without an image, an unknown class, coordinates out of
range are errors naming the file and line), and the result is read back through the COCO reader.
"""
import argparse
import json
import os
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> None:
    from retdet.data.coco import load_coco_json
    from retdet.data.voc import voc_to_coco
    from retdet.data.yolo import yolo_to_coco

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=["voc", "yolo"])
    parser.add_argument("--root", required=True, help="the VOC year folder (Annotations/, JPEGImages/, ImageSets/) "
                                                       "or the YOLO folder (images/, labels/)")
    parser.add_argument("--split", default=None, help="VOC: ImageSets/Main/{split}.txt (required); YOLO: the "
                                                      "subfolder of images/ and labels/ (if any)")
    parser.add_argument("--names", default=None,
                        help="class names: a file (one per line, or a data.yaml with names) or a comma-separated "
                             "list; YOLO: required; VOC: default the 20 VOC classes")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    if not os.path.isdir(args.root):
        raise SystemExit(f"--root {args.root}: no such folder")
    names = None
    if args.names:
        names = args.names if os.path.isfile(args.names) else [n.strip() for n in args.names.split(",") if n.strip()]
    if args.format == "voc":
        if not args.split:
            parser.error("--format voc needs --split (the name of a file in ImageSets/Main/)")
        from retdet.data.yolo import read_names

        data = voc_to_coco(args.root, args.split, read_names(names) if names is not None else None)
    else:
        if names is None:
            parser.error("--format yolo needs --names (YOLO label files hold class ids only)")
        data = yolo_to_coco(args.root, names, args.split)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(data, f)
    info = load_coco_json(args.output, args.root, name=os.path.basename(args.output))  # read back, checked
    print(f"wrote {args.output}: {len(info)} images, {info.num_boxes} boxes, {len(info.class_names)} classes "
          f"(image_root={args.root}); cleaned: {info.stats or 'nothing'}")


if __name__ == "__main__":
    main()
