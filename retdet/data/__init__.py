"""Data: datasets by name, image reading, augmentations, samplers and loaders."""
from . import transforms  # noqa: F401  (registers the transforms)
from .build import build_test_loader, build_train_loader, merge_datasets, register_from_config
from .catalog import (
    datasets_root,
    get_dataset,
    list_datasets,
    register_coco,
    register_dataset,
    register_voc,
    register_yolo,
)
from .classes import FROM_DATASET, check_num_classes, resolve_num_classes
from .dataset import DetectionDataset
from .image_io import ImageReadError, read_image
from .records import DatasetFormatError, DatasetInfo, ImageRecord
from .samplers import GroupedBatchSampler, InferenceSampler, TrainingSampler

__all__ = [
    "FROM_DATASET", "DatasetFormatError", "DatasetInfo", "DetectionDataset", "GroupedBatchSampler", "ImageReadError",
    "ImageRecord", "InferenceSampler", "TrainingSampler", "build_test_loader", "build_train_loader",
    "check_num_classes", "datasets_root", "get_dataset", "list_datasets", "merge_datasets",
    "read_image", "register_coco", "register_dataset", "register_from_config", "register_voc", "register_yolo",
    "resolve_num_classes",
]
