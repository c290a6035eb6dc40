"""Pascal VOC folders as datasets: converted to COCO format in memory, then read like any COCO set.

    root/Annotations/{id}.xml      size (width, height) and objects (name, difficult, bndbox)
    root/JPEGImages/{id}.jpg
    root/ImageSets/Main/{split}.txt  one id per line

Boxes: the devkit's 1-based inclusive pixel indices (xmin, ymin, xmax, ymax) become the continuous
box (xmin - 1, ymin - 1, xmax, ymax), as Detectron2 reads them. "difficult" objects become ignore
regions (COCO's iscrowd): not trained on as foreground or background, and ignored by both the
COCO and the VOC metrics. Then the COCO reader's checks apply (boxes clipped to the image, empty
ones dropped and counted).
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, Sequence

from .coco import load_coco_dict
from .image_io import IMAGE_EXTENSIONS
from .records import DatasetFormatError, DatasetInfo

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


def _text(node: ET.Element, path: str, where: str) -> str:
    found = node.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise DatasetFormatError(f"{where}: no <{path}>")
    return found.text.strip()


def _number(node: ET.Element, path: str, where: str) -> float:
    text = _text(node, path, where)
    try:
        return float(text)
    except ValueError:
        raise DatasetFormatError(f"{where}: <{path}> must be a number, found {text!r}") from None


def _image_file(root: str, image_id: str, xml_file: str) -> str:
    for ext in IMAGE_EXTENSIONS:
        if os.path.isfile(os.path.join(root, "JPEGImages", image_id + ext)):
            return os.path.join("JPEGImages", image_id + ext)
    raise DatasetFormatError(f"{xml_file}: its image is missing: no {os.path.join(root, 'JPEGImages', image_id)}"
                             f"{{{','.join(IMAGE_EXTENSIONS)}}} (a label file without an image)")


def voc_to_coco(root: str, split: str, class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The COCO-format dict of VOC ``split`` under ``root`` (file names relative to ``root``)."""
    names = list(class_names or VOC_CLASSES)
    if len(set(names)) != len(names):
        raise ValueError(f"VOC class names must be unique, got {names}")
    list_file = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(list_file):
        have = sorted(f[:-4] for f in os.listdir(os.path.dirname(list_file))) if os.path.isdir(
            os.path.dirname(list_file)) else []
        raise FileNotFoundError(f"VOC split file not found: {os.path.abspath(list_file)} (a VOC root holds Annotations/, "
                                f"JPEGImages/ and ImageSets/Main/{{split}}.txt; splits here: {have or 'none'})")
    with open(list_file) as f:
        ids = [line.split()[0] for line in f if line.strip()]
    category = {n: i + 1 for i, n in enumerate(names)}
    images: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    for number, image_id in enumerate(ids, start=1):
        xml_file = os.path.join(root, "Annotations", image_id + ".xml")
        if not os.path.isfile(xml_file):
            raise FileNotFoundError(f"{list_file}: lists {image_id!r} but {xml_file} does not exist")
        try:
            tree = ET.parse(xml_file).getroot()
        except ET.ParseError as e:
            raise DatasetFormatError(f"{xml_file}: not valid XML ({e})") from None
        width, height = _number(tree, "size/width", xml_file), _number(tree, "size/height", xml_file)
        images.append({"id": number, "file_name": _image_file(root, image_id, xml_file), "width": width,
                       "height": height, "voc_id": image_id})
        for k, obj in enumerate(tree.findall("object")):
            where = f"{xml_file}: object {k}"
            name = _text(obj, "name", where)
            if name not in category:
                raise DatasetFormatError(f"{where}: class {name!r} is not one of the dataset's {len(names)} classes "
                                         f"{names}; pass class_names=[...] to register_voc for other classes")
            difficult = obj.find("difficult")
            x0, y0 = _number(obj, "bndbox/xmin", where) - 1, _number(obj, "bndbox/ymin", where) - 1
            x1, y1 = _number(obj, "bndbox/xmax", where), _number(obj, "bndbox/ymax", where)
            annotations.append({"id": len(annotations) + 1, "image_id": number, "category_id": category[name],
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": max(x1 - x0, 0) * max(y1 - y0, 0),
                                "iscrowd": int(difficult is not None and (difficult.text or "0").strip() == "1")})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}


def load_voc(root: str, split: str, *, class_names: Optional[Sequence[str]] = None, name: str = "") -> DatasetInfo:
    """A VOC split as a DatasetInfo (its COCO form kept for the evaluator, with VOC's own mAP)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset {name!r}: VOC root not found: {os.path.abspath(root)}")
    data = voc_to_coco(root, split, class_names)
    return load_coco_dict(data, root, name=name, source=os.path.join(root, "ImageSets", "Main", f"{split}.txt"),
                          source_format="voc")
