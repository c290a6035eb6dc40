"""A map-style dataset: record -> decoded, augmented ImageSample.

Items are addressed by ``(index, seed)`` (what the samplers yield): the seed drives every random
choice of the augmentation, so a given sampler position always gives the same sample, whichever
worker loads it, and a resumed run sees the same data as an uninterrupted one.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from retdet.structures import ImageSample

from .image_io import ImageReadError, read_image
from .records import DatasetInfo, ImageRecord
from .transforms import AugSample, apply_transforms

logger = logging.getLogger("retdet")


class DetectionDataset(Dataset):
    """Args:
        info: the dataset's records and classes.
        transforms: built transforms, applied in order.
        input_format: "BGR" or "RGB" channel order of the images given to the model.
        skip_bad_images: a missing or corrupt image is skipped (counted, logged once each) and
            the next record is used instead; otherwise it raises an error naming the file.
        cache_images_mb: keep decoded images in memory, up to this many MB (0: none), so that a
            small dataset seen for many epochs is read and decoded once (decoding was 60% of the
            quickstart's loading time). Each loader process keeps its own. The cached arrays are
            read-only: a transform must make a new image, never write into the one it is given.
    """

    def __init__(self, info: DatasetInfo, transforms: Sequence[Callable] = (), *, input_format: str = "BGR",
                 skip_bad_images: bool = False, cache_images_mb: float = 0) -> None:
        self.info, self.transforms = info, list(transforms)
        self.input_format, self.skip_bad_images = input_format, skip_bad_images
        self.skipped: List[str] = []
        if cache_images_mb < 0:
            raise ValueError(f"cache_images_mb must be >= 0 (0: no cache), got {cache_images_mb}")
        self._cache: Dict[int, np.ndarray] = {}
        self._cache_left = int(cache_images_mb * 2**20)

    def __len__(self) -> int:
        return len(self.info.records)

    def load(self, index: int) -> AugSample:
        """Record ``index`` decoded, not augmented."""
        record: ImageRecord = self.info.records[index]
        image = self._cache.get(index)
        if image is None:
            image = read_image(record.file_name, self.input_format)
            if image.shape[:2] != (record.height, record.width):
                raise ImageReadError(
                    f"{record.file_name}: decoded size {image.shape[:2]} differs from the annotation's "
                    f"({record.height}, {record.width}); a wrong EXIF orientation or a wrong annotation file?")
            if image.nbytes <= self._cache_left:
                image.flags.writeable = False
                self._cache[index] = image
                self._cache_left -= image.nbytes
        return AugSample(image=image, boxes=record.boxes.copy(), labels=record.labels.copy(),
                         ignore_boxes=record.ignore_boxes.copy(), image_id=record.image_id, file_name=record.file_name)

    def _load_checked(self, index: int) -> Tuple[int, AugSample]:
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            try:
                return i, self.load(i)
            except ImageReadError as e:
                if not self.skip_bad_images:
                    raise
                if self.info.records[i].file_name not in self.skipped:
                    self.skipped.append(self.info.records[i].file_name)
                    logger.warning("skipping unreadable image (%d so far): %s", len(self.skipped), e)
        raise ImageReadError(f"dataset {self.info.name}: no readable image at all")

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> ImageSample:
        index, seed = key if isinstance(key, tuple) else (key, key)
        rng = np.random.default_rng([int(seed), int(index)])
        _, sample = self._load_checked(int(index))
        original_size = sample.size

        def source(r: np.random.Generator) -> AugSample:
            return self._load_checked(int(r.integers(len(self))))[1]

        sample = apply_transforms(self.transforms, sample, rng, source)
        return ImageSample(
            image=torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1))),
            original_size=original_size,
            gt_boxes=torch.from_numpy(sample.boxes.astype(np.float32)).reshape(-1, 4),
            gt_labels=torch.from_numpy(sample.labels.astype(np.int64)),
            ignore_boxes=torch.from_numpy(sample.ignore_boxes.astype(np.float32)).reshape(-1, 4),
            image_id=sample.image_id,
        )
