"""Write augmented training samples with their boxes and class names, to see what the model sees.

    python tools/visualize_data.py --config configs/quickstart.py --num 16 --output output/vis [--show-anchors]

--show-anchors also draws, thin and in each box's colour, the anchors the config's matcher makes
positive for that box (what trains the head on it); boxes that get none are listed.
"""
import os

import cv2
import numpy as np

from retdet.data import build_train_loader, register_from_config
from retdet.engine.defaults import load_tool_config, tool_argument_parser
from retdet.utils.visualize import draw_boxes, fit_to_cell, image_grid


def main(argv=None) -> None:
    parser = tool_argument_parser(__doc__)
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--output", required=True)
    parser.add_argument("--split", default="train", choices=["train", "test"])
    parser.add_argument("--show-anchors", action="store_true",
                        help="draw the positive anchors the matcher assigns to each box")
    args = parser.parse_args(argv)
    cfg = load_tool_config(args)
    register_from_config(cfg.dataloader.get("register", []))
    fmt = cfg.model.get("input_format", "BGR")
    loader_cfg = dict(cfg.dataloader[args.split], total_batch_size=1, num_workers=0)
    if args.split == "train":
        loader, dataset = build_train_loader(loader_cfg, input_format=fmt, seed=cfg.train.get("seed", 0))
    else:
        from retdet.data import build_test_loader

        loader, dataset = build_test_loader(loader_cfg, input_format=fmt)
    os.makedirs(args.output, exist_ok=True)
    names = dataset.info.class_names
    anchors_of = _anchor_assignment(cfg) if args.show_anchors else None
    drawn = []
    for i, batch in zip(range(args.num), loader):
        s = batch[0]
        image = s.image.permute(1, 2, 0).numpy()
        if fmt == "RGB":
            image = image[:, :, ::-1]
        gt, ignore = s.gt_boxes.numpy(), s.ignore_boxes.numpy()
        if anchors_of is not None:
            image = anchors_of(image, gt, s.gt_labels.tolist(), f"sample {i} (image {s.image_id})")
        out = draw_boxes(image, gt, s.gt_labels.tolist(), names, ignore_boxes=ignore)
        cv2.imwrite(os.path.join(args.output, f"sample_{i:03d}_img{s.image_id}.jpg"), out)
        # The grid's tiles are drawn at their shown size, so their labels stay readable.
        tile, tile_boxes = fit_to_cell(image, np.concatenate([gt.reshape(-1, 4), ignore.reshape(-1, 4)]))
        drawn.append(draw_boxes(tile, tile_boxes[: len(gt)], s.gt_labels.tolist(), names,
                                ignore_boxes=tile_boxes[len(gt):]))
    cv2.imwrite(os.path.join(args.output, "grid.jpg"), image_grid(drawn))
    print(f"wrote {len(drawn)} samples and grid.jpg to {args.output}")


def _anchor_assignment(cfg):
    """A function drawing each box's positive anchors on an image (and reporting boxes without any)."""
    from retdet import modeling  # noqa: F401  (registers the anchor generators and matchers)
    from retdet.evaluation.anchor_coverage import positive_anchors
    from retdet.registry import ANCHOR_GENERATORS, MATCHERS, build
    from retdet.utils.visualize import palette_colour

    generator = build(cfg.model.anchor_generator, ANCHOR_GENERATORS, where="model.anchor_generator")
    matcher = build(cfg.model.matcher, MATCHERS, where="model.matcher")
    div = cfg.model.get("size_divisibility", 32)

    def draw(image, boxes, labels, where):
        anchors, owner = positive_anchors(generator, matcher, boxes, image.shape[:2], div)
        out = np.ascontiguousarray(image.copy())
        for box, g in zip(anchors, owner):
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(out, (x0, y0), (x1, y1), palette_colour(labels[g]), 1, lineType=cv2.LINE_AA)
        counts = np.bincount(owner, minlength=len(boxes))
        print(f"{where}: positive anchors per box {counts.tolist()}"
              + (f"; boxes {np.flatnonzero(counts == 0).tolist()} get none" if (counts == 0).any() else ""))
        return out

    return draw


if __name__ == "__main__":
    main()
