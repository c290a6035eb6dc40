"""Dataset records: one per image, boxes already clean (clipped, valid), plus the class maps."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np


class DatasetFormatError(ValueError):
    """A dataset's annotation file cannot be used as it stands. The message names the file, the
    image or annotation (id, or position in its list) and the field."""


@dataclass
class ImageRecord:
    """One image's annotations.

    boxes: (M, 4) float32 xyxy in stored-image pixels (clipped, positive size); labels: (M,) int64
    contiguous labels; ignore_boxes: (I, 4) crowd regions.
    """

    file_name: str
    image_id: int
    height: int
    width: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    ignore_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))


@dataclass
class DatasetInfo:
    """A loaded dataset: its records, class names (by contiguous label), and the id maps.

    ``stats`` counts what loading cleaned up (e.g. "dropped_degenerate_boxes", "clipped_boxes").
    The evaluator's ground truth is ``json_file``, or for datasets converted in memory (VOC, YOLO)
    ``coco``, the COCO-format dict; ``source_format`` says what the labels were ("coco", "voc",
    "yolo"; VOC adds its own mAP to the evaluation).
    """

    name: str
    records: List[ImageRecord]
    class_names: List[str]
    label_to_category_id: List[int]
    json_file: str = ""
    image_root: str = ""
    stats: Dict[str, int] = field(default_factory=dict)
    coco: Optional[Dict[str, Any]] = None
    source_format: str = "coco"

    @property
    def category_id_to_label(self) -> Dict[int, int]:
        return {cid: i for i, cid in enumerate(self.label_to_category_id)}

    @property
    def num_boxes(self) -> int:
        return int(sum(len(r.boxes) for r in self.records))

    def __len__(self) -> int:
        return len(self.records)
