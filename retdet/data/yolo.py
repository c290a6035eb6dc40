"""YOLO-format folders as datasets: converted to COCO format in memory, then read like any COCO set.

    root/images[/split]/NAME.jpg
    root/labels[/split]/NAME.txt     one object per line: class_id cx cy w h, normalised to 0..1
    class names: a list, a text file with one name per line (classes.txt, obj.names), or a
                 data.yaml with ``names`` (a list or {id: name})

An image without a label file is an image without objects (YOLO's convention); a label file
without an image, a class id outside the names, a malformed line or a coordinate outside 0..1
(pixels where fractions belong?) are errors naming the file and line. Boxes that reach past the
border are clipped by the COCO reader's checks, and counted.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Union

from .coco import load_coco_dict
from .image_io import IMAGE_EXTENSIONS
from .records import DatasetFormatError, DatasetInfo

# Annotation tools round: a coordinate a little outside 0..1 is a border box, not a wrong unit.
TOLERANCE = 0.01


def read_names(names: Union[str, Sequence[str]]) -> List[str]:
    """Class names from a list, a one-per-line text file or a data.yaml's ``names``."""
    if not isinstance(names, str):
        return [str(n) for n in names]
    if not os.path.isfile(names):
        raise FileNotFoundError(f"YOLO class names file not found: {os.path.abspath(names)}")
    if names.endswith((".yaml", ".yml")):
        import yaml

        with open(names) as f:
            data = yaml.safe_load(f) or {}
        value = data.get("names") if isinstance(data, dict) else None
        if isinstance(value, dict):  # {id: name}: the ids must be 0..n-1, the names' list positions
            try:
                ids = sorted(int(k) for k in value)
            except (TypeError, ValueError):
                raise DatasetFormatError(f"{names}: 'names' keys must be class ids 0..n-1, got {list(value)}") from None
            if ids != list(range(len(ids))):
                raise DatasetFormatError(f"{names}: 'names' ids must be 0..{len(ids) - 1} without gaps, got {ids}")
            value = [value[k] if k in value else value[str(k)] for k in ids]
        if not isinstance(value, list) or not value:
            raise DatasetFormatError(f"{names}: no 'names' list (or {{id: name}} map)")
        return [str(v) for v in value]
    with open(names) as f:
        return [line.strip() for line in f if line.strip()]


def _image_size(path: str) -> tuple:
    """(width, height) as the image is read for training (OpenCV turns it by its EXIF orientation),
    from the file's header (PIL reads only the header), else by decoding it."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            width, height = im.size
            # EXIF orientations 5-8 are quarter turns: the decoded image is height x width
            return (height, width) if im.getexif().get(0x0112, 1) in (5, 6, 7, 8) else (width, height)
    except ImportError:
        import cv2

        image = cv2.imread(path)
        if image is None:
            raise DatasetFormatError(f"{path}: not a readable image") from None
        return image.shape[1], image.shape[0]
    except Exception as e:
        raise DatasetFormatError(f"{path}: not a readable image ({e})") from None


def _folders(root: str, split: Optional[str]):
    images = os.path.join(root, "images", split) if split else os.path.join(root, "images")
    labels = os.path.join(root, "labels", split) if split else os.path.join(root, "labels")
    for folder in (images, labels):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"YOLO folder not found: {os.path.abspath(folder)} (a YOLO root holds "
                                    f"images/[split/] and labels/[split/])")
    return images, labels


def yolo_to_coco(root: str, names: Union[str, Sequence[str]], split: Optional[str] = None) -> Dict[str, Any]:
    """The COCO-format dict of the YOLO folder (file names relative to ``root``)."""
    class_names = read_names(names)
    if not class_names:
        raise ValueError("YOLO dataset: the class names list is empty")
    image_dir, label_dir = _folders(root, split)
    stems: Dict[str, str] = {}
    for f in sorted(os.listdir(image_dir)):
        if f.lower().endswith(IMAGE_EXTENSIONS):
            stem = os.path.splitext(f)[0]
            if stem in stems:
                raise DatasetFormatError(f"{image_dir}: {stems[stem]} and {f} would share the label file {stem}.txt; "
                                         "rename one")
            stems[stem] = f
    orphans = sorted(f for f in os.listdir(label_dir) if f.endswith(".txt") and f[:-4] not in stems
                     and f != "classes.txt")
    if orphans:
        raise DatasetFormatError(f"{os.path.join(label_dir, orphans[0])}: a label file without an image (no "
                                 f"{os.path.join(image_dir, orphans[0][:-4])}.*); {len(orphans)} such file(s)")
    images: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    for number, (stem, file_name) in enumerate(sorted(stems.items()), start=1):
        path = os.path.join(image_dir, file_name)
        width, height = _image_size(path)
        images.append({"id": number, "file_name": os.path.relpath(path, root), "width": width, "height": height})
        label_file = os.path.join(label_dir, stem + ".txt")
        if not os.path.isfile(label_file):
            continue  # no objects
        with open(label_file) as f:
            lines = f.read().splitlines()
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{label_file}:{line_no}"
            fields = line.split()
            if len(fields) != 5:
                raise DatasetFormatError(f"{where}: expected 'class_id cx cy w h' (5 fields; segmentation polygons "
                                         f"are not boxes), found {len(fields)} fields: {line[:80]!r}")
            try:
                cls = int(fields[0])
                cx, cy, w, h = (float(v) for v in fields[1:5])
            except ValueError:
                raise DatasetFormatError(f"{where}: expected an integer class id and 4 numbers, found {line!r}") \
                    from None
            if not 0 <= cls < len(class_names):
                raise DatasetFormatError(f"{where}: class id {cls} is out of range: the names list has "
                                         f"{len(class_names)} classes (0..{len(class_names) - 1})")
            for label, value in (("cx", cx), ("cy", cy), ("w", w), ("h", h)):
                if not -TOLERANCE <= value <= 1 + TOLERANCE:
                    raise DatasetFormatError(f"{where}: {label} = {value} is outside 0..1: YOLO coordinates are "
                                             f"fractions of the image size ({width}x{height}), not pixels")
            x0, y0 = (cx - w / 2) * width, (cy - h / 2) * height
            annotations.append({"id": len(annotations) + 1, "image_id": number, "category_id": cls + 1,
                                "bbox": [x0, y0, w * width, h * height], "area": w * width * h * height,
                                "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]}


def load_yolo(root: str, names: Union[str, Sequence[str]], split: Optional[str] = None, *,
              name: str = "") -> DatasetInfo:
    """A YOLO folder as a DatasetInfo (its COCO form kept for the evaluator)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset {name!r}: YOLO root not found: {os.path.abspath(root)}")
    data = yolo_to_coco(root, names, split)
    return load_coco_dict(data, root, name=name, source=os.path.join(root, "labels", split or ""),
                          source_format="yolo")
