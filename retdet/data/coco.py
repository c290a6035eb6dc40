"""Reading COCO-format annotations (pycocotools) into clean per-image records."""
from __future__ import annotations

import contextlib
import io
import logging
import os
from collections import Counter

import numpy as np
from iopath.common.file_io import PathManager

from .records import DatasetInfo, ImageRecord

logger = logging.getLogger("retdet")
_paths = PathManager()


def load_coco_json(json_file: str, image_root: str, *, name: str = "", hint: str = "") -> DatasetInfo:
    """Load a COCO-format json into records.

    Category ids map to contiguous labels by sorted id. Boxes are converted to xyxy and clipped to
    the image; boxes of zero or negative size (after clipping) are dropped and counted; crowd
    annotations become ignore regions. Images without annotations are kept (as negatives).
    """
    from pycocotools.coco import COCO

    if not _paths.exists(json_file):
        raise FileNotFoundError(
            f"dataset {name or json_file!r}: annotation file not found: {os.path.abspath(json_file)}. "
            + (hint or "Check the path given to register_coco / the config's dataloader.register.")
        )
    if not _paths.isdir(image_root):
        raise FileNotFoundError(f"dataset {name!r}: image folder not found: {os.path.abspath(image_root)}. "
                                + (hint or "Check the image_root given to register_coco."))
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco = COCO(_paths.get_local_path(json_file))
    cat_ids = sorted(coco.getCatIds())
    label_of = {cid: i for i, cid in enumerate(cat_ids)}
    class_names = [coco.loadCats(cid)[0]["name"] for cid in cat_ids]
    stats: Counter = Counter()
    records = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        h, w = int(info["height"]), int(info["width"])
        boxes, labels, ignore = [], [], []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            box = [x, y, x + bw, y + bh]
            clipped = [min(max(box[0], 0), w), min(max(box[1], 0), h), min(max(box[2], 0), w), min(max(box[3], 0), h)]
            if clipped != box:
                stats["clipped_boxes"] += 1
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                stats["dropped_degenerate_boxes"] += 1
                continue
            if ann.get("iscrowd", 0):
                ignore.append(clipped)
                stats["crowd_regions"] += 1
                continue
            if ann["category_id"] not in label_of:
                raise ValueError(f"{json_file}: annotation {ann.get('id')} has unknown category_id {ann['category_id']}")
            boxes.append(clipped)
            labels.append(label_of[ann["category_id"]])
        if not boxes:
            stats["images_without_boxes"] += 1
        records.append(ImageRecord(
            file_name=os.path.join(image_root, info["file_name"]), image_id=int(image_id), height=h, width=w,
            boxes=np.asarray(boxes, np.float32).reshape(-1, 4), labels=np.asarray(labels, np.int64),
            ignore_boxes=np.asarray(ignore, np.float32).reshape(-1, 4),
        ))
    if stats.get("dropped_degenerate_boxes") or stats.get("clipped_boxes"):
        logger.warning("dataset %s: clipped %d boxes to their image, dropped %d of zero or negative size",
                       name, stats.get("clipped_boxes", 0), stats.get("dropped_degenerate_boxes", 0))
    return DatasetInfo(name=name, records=records, class_names=class_names, label_to_category_id=cat_ids,
                       json_file=json_file, image_root=image_root, stats=dict(stats))
