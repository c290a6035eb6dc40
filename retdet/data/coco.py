"""Reading COCO-format annotations into clean per-image records, validating every field on the way.

A malformed file is a :class:`DatasetFormatError` naming the file, the image or annotation (by id,
or by position when it has no id) and the field; nothing non-finite or non-numeric reaches a record.
What a user would rather go on with (an annotation whose image is not in the file, a box of zero
size, a box leaving its image) is dropped or clipped, counted in ``DatasetInfo.stats`` and logged.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter, defaultdict
from typing import Any, Dict, List, Mapping

import numpy as np
from iopath.common.file_io import PathManager

from .records import DatasetFormatError, DatasetInfo, ImageRecord

logger = logging.getLogger("retdet")
_paths = PathManager()

# Larger sides are taken for a corrupted number rather than an image (a gigapixel scan is 2**16 wide).
MAX_IMAGE_SIDE = 1 << 20


def load_coco_json(json_file: str, image_root: str, *, name: str = "", hint: str = "") -> DatasetInfo:
    """Load a COCO-format json into records.

    Category ids map to contiguous labels by sorted id. Boxes are converted to xyxy and clipped to
    the image; boxes of zero or negative size (after clipping) are dropped and counted; crowd
    annotations become ignore regions. Images without annotations are kept (as negatives).
    Annotations whose ``image_id`` has no image are skipped and counted.
    """
    if not _paths.exists(json_file):
        raise FileNotFoundError(
            f"dataset {name or json_file!r}: annotation file not found: {os.path.abspath(json_file)}. "
            + (hint or "Check the path given to register_coco / the config's dataloader.register.")
        )
    if not _paths.isdir(image_root):
        raise FileNotFoundError(f"dataset {name!r}: image folder not found: {os.path.abspath(image_root)}. "
                                + (hint or "Check the image_root given to register_coco."))
    check = _Checker(json_file)
    return load_coco_dict(check.read_json(), image_root, name=name, source=json_file, json_file=json_file)


def load_coco_dict(data: Mapping[str, Any], image_root: str, *, name: str = "", source: str = "",
                   json_file: str = "", source_format: str = "coco") -> DatasetInfo:
    """Records from COCO-format ``data`` already in memory (e.g. a VOC or YOLO dataset converted by
    retdet.data.voc / retdet.data.yolo), with the same checks as a json file; ``source`` names it in
    errors. Without a ``json_file``, the returned DatasetInfo keeps ``data`` as its ground truth
    for the evaluator."""
    check = _Checker(source or json_file or name)
    categories = check.categories(data)
    images = check.images(data)
    cat_ids = sorted(categories)
    label_of = {cid: i for i, cid in enumerate(cat_ids)}
    stats: Counter = Counter()
    anns_of: Dict[int, List[Mapping[str, Any]]] = defaultdict(list)
    for ann in check.annotations(data, label_of):
        if ann["image_id"] not in images:
            stats["annotations_without_image"] += 1
            continue
        anns_of[ann["image_id"]].append(ann)
    records = []
    for image_id in sorted(images):
        info = images[image_id]
        h, w = info["height"], info["width"]
        boxes, labels, ignore = [], [], []
        for ann in anns_of.get(image_id, ()):
            x, y, bw, bh = ann["bbox"]
            box = [x, y, x + bw, y + bh]
            clipped = [min(max(box[0], 0), w), min(max(box[1], 0), h), min(max(box[2], 0), w), min(max(box[3], 0), h)]
            if clipped != box:
                stats["clipped_boxes"] += 1
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                stats["dropped_degenerate_boxes"] += 1
                continue
            if ann["iscrowd"]:
                ignore.append(clipped)
                stats["crowd_regions"] += 1
                continue
            boxes.append(clipped)
            labels.append(label_of[ann["category_id"]])
        if not boxes:
            stats["images_without_boxes"] += 1
        records.append(ImageRecord(
            file_name=os.path.join(image_root, info["file_name"]), image_id=image_id, height=h, width=w,
            boxes=np.asarray(boxes, np.float32).reshape(-1, 4), labels=np.asarray(labels, np.int64),
            ignore_boxes=np.asarray(ignore, np.float32).reshape(-1, 4),
        ))
    if stats.get("dropped_degenerate_boxes") or stats.get("clipped_boxes"):
        logger.warning("dataset %s: clipped %d boxes to their image, dropped %d of zero or negative size",
                       name, stats.get("clipped_boxes", 0), stats.get("dropped_degenerate_boxes", 0))
    if stats.get("annotations_without_image"):
        logger.warning("dataset %s (%s): skipped %d annotations whose image_id names no image in the file", name,
                       source, stats["annotations_without_image"])
    return DatasetInfo(name=name, records=records, class_names=[categories[c] for c in cat_ids],
                       label_to_category_id=cat_ids, json_file=json_file, image_root=image_root, stats=dict(stats),
                       coco=None if json_file else data, source_format=source_format)


class _Checker:
    """Field checks that raise :class:`DatasetFormatError` with the file and the record's position."""

    def __init__(self, json_file: str) -> None:
        self.json_file = json_file

    def fail(self, where: str, problem: str) -> DatasetFormatError:
        return DatasetFormatError(f"{self.json_file}: {where}: {problem}")

    def read_json(self) -> Mapping[str, Any]:
        try:
            with _paths.open(self.json_file, "r", encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetFormatError(f"{self.json_file}: not a valid JSON file ({e})") from None
        if not isinstance(data, dict):
            raise self.fail("top level", f"expected a JSON object with 'images', 'annotations' and 'categories', "
                                         f"found {type(data).__name__}")
        for key in ("images", "categories"):
            if key not in data:
                raise self.fail("top level", f"no '{key}' list")
        for key in ("images", "annotations", "categories"):
            if key in data and not isinstance(data[key], list):
                raise self.fail(f"'{key}'", f"expected a list, found {type(data[key]).__name__}")
        return data

    def entries(self, data: Mapping[str, Any], key: str):
        """(description, entry) for each entry of ``data[key]``; an entry must be an object."""
        for i, entry in enumerate(data.get(key, [])):
            if not isinstance(entry, dict):
                raise self.fail(f"{key}[{i}]", f"expected an object, found {entry!r}")
            what = {"images": "image", "annotations": "annotation", "categories": "category"}[key]
            yield (f"{what} id {entry['id']!r} ({key}[{i}])" if "id" in entry else f"{key}[{i}]"), entry

    def field(self, entry: Mapping[str, Any], key: str, where: str) -> Any:
        if key not in entry:
            raise self.fail(where, f"no '{key}' field")
        return entry[key]

    def integer(self, entry: Mapping[str, Any], key: str, where: str) -> int:
        value = self.field(entry, key, where)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"'{key}' must be an integer, found {value!r}")
        return value

    def number(self, value: Any, where: str, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, f"{what} must be a number, found {value!r}")
        try:
            result = float(value)
        except OverflowError:  # an integer too large for a float
            result = math.inf
        if not math.isfinite(result):
            raise self.fail(where, f"{what} must be finite, found {value!r}")
        return result

    def categories(self, data: Mapping[str, Any]) -> Dict[int, str]:
        """category id -> name."""
        names: Dict[int, str] = {}
        for where, cat in self.entries(data, "categories"):
            cid = self.integer(cat, "id", where)
            if cid in names:
                raise self.fail(where, f"duplicate category id {cid}")
            name = self.field(cat, "name", where)
            if not isinstance(name, str):
                raise self.fail(where, f"'name' must be a string, found {name!r}")
            names[cid] = name
        if not names:
            raise self.fail("'categories'", "the list is empty: a detection dataset needs at least one category")
        return names

    def images(self, data: Mapping[str, Any]) -> Dict[int, Dict[str, Any]]:
        """image id -> {file_name, height, width}, checked."""
        images: Dict[int, Dict[str, Any]] = {}
        for where, img in self.entries(data, "images"):
            image_id = self.integer(img, "id", where)
            if image_id in images:
                raise self.fail(where, f"duplicate image id {image_id} (also {images[image_id]['file_name']!r})")
            file_name = self.field(img, "file_name", where)
            if not isinstance(file_name, str) or not file_name.strip():
                raise self.fail(where, f"'file_name' must be a non-empty string, found {file_name!r}")
            size = {}
            for key in ("height", "width"):
                value = self.number(self.field(img, key, where), where, f"'{key}'")
                if value != int(value) or not 0 < value <= MAX_IMAGE_SIDE:
                    raise self.fail(where, f"'{key}' must be a whole number of pixels in 1..{MAX_IMAGE_SIDE}, "
                                           f"found {img[key]!r}")
                size[key] = int(value)
            images[image_id] = dict(file_name=file_name, **size)
        return images

    def annotations(self, data: Mapping[str, Any], label_of: Mapping[int, int]):
        """Each annotation as {image_id, category_id, bbox (4 floats), iscrowd}, checked."""
        seen = set()
        for where, ann in self.entries(data, "annotations"):
            ann_id = self.integer(ann, "id", where)  # the evaluator (pycocotools) indexes annotations by id
            if ann_id in seen:
                raise self.fail(where, f"duplicate annotation id {ann_id}")
            seen.add(ann_id)
            image_id = self.integer(ann, "image_id", where)
            where = f"{where} of image {image_id}"
            category_id = self.integer(ann, "category_id", where)
            if category_id not in label_of:
                raise self.fail(where, f"unknown category_id {category_id} (categories: {sorted(label_of)})")
            bbox = self.field(ann, "bbox", where)
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise self.fail(where, f"'bbox' must be [x, y, width, height], found {bbox!r}")
            bbox = [self.number(v, where, f"'bbox' value {i}") for i, v in enumerate(bbox)]
            iscrowd = ann.get("iscrowd", 0)
            if iscrowd not in (0, 1) or isinstance(iscrowd, float):
                raise self.fail(where, f"'iscrowd' must be 0 or 1, found {iscrowd!r}")
            yield dict(image_id=image_id, category_id=category_id, bbox=bbox, iscrowd=bool(iscrowd))
