"""One-call inference on raw images: a config's model, its test-time resize, its class names."""
from __future__ import annotations

import logging
from typing import List, Mapping, Optional, Sequence

import numpy as np
import torch

from retdet.data.build import build_transforms
from retdet.data.transforms import test_resize
from retdet.structures import Detections, ImageSample

logger = logging.getLogger("retdet")


def dataset_classes(cfg: Mapping) -> tuple:
    """(class names, COCO category id per label) of the config's test dataset; generic ones (with a
    warning) when that dataset is not available here."""
    from retdet.data import get_dataset, register_from_config

    num_classes = int(cfg.model.head.num_classes)
    try:
        register_from_config(cfg.dataloader.get("register", []))
        info = get_dataset(cfg.dataloader.test.dataset.names[0])
        if len(info.class_names) == num_classes:
            return list(info.class_names), list(info.label_to_category_id)
        logger.warning("dataset %s has %d classes, the model %d: using generic class names", info.name,
                       len(info.class_names), num_classes)
    except (KeyError, FileNotFoundError, OSError, AttributeError) as e:
        logger.warning("class names unavailable (%s): using 'class N' and category ids N + 1", e)
    return [f"class {i}" for i in range(num_classes)], list(range(1, num_classes + 1))


class Predictor:
    """``predictor(images)`` -> one Detections per image, boxes in the image's own pixels.

    Args:
        cfg: a resolved config; its ``dataloader.test.transforms`` give the test-time resize.
        model: the built model with its weights (eval mode is set here).
        input_format: the channel order of the arrays given to ``__call__`` ("BGR": OpenCV's).
    """

    def __init__(self, cfg: Mapping, model: torch.nn.Module, *, input_format: str = "BGR") -> None:
        self.model = model.eval()
        test = cfg.get("dataloader", {}).get("test", {})
        if "transforms" not in test:
            logger.warning("the config has no dataloader.test.transforms: images go in at their own size")
        self.transforms = build_transforms(test.get("transforms", []))
        self.input_format = input_format
        self.model_format = cfg.model.get("input_format", "BGR")
        self.device = next(model.parameters()).device

    def to_sample(self, image: np.ndarray, image_id: Optional[int] = None) -> ImageSample:
        """(H, W, 3) uint8 array -> the model's input sample (resized, channel order converted)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        if self.input_format != self.model_format:
            image = image[:, :, ::-1]
        resized = test_resize(self.transforms, image)
        tensor = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).to(self.device)
        return ImageSample(image=tensor, image_id=image_id, original_size=tuple(image.shape[:2]))

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> List[Detections]:
        return self.model([self.to_sample(im, i) for i, im in enumerate(images)])
