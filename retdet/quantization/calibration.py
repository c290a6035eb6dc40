"""Calibration images: drawn from the config's training set, through its test-time transforms.

The draw is a seeded permutation of the training records, so the same seed gives the same images in
the same order, and the quantization ranges computed from them are reproducible.
"""
from __future__ import annotations

from typing import List, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from retdet.data.build import build_transforms
from retdet.data.image_io import read_image
from retdet.data.transforms import test_resize


def calibration_images(cfg: Mapping, num_images: int, *, seed: int = 0) -> List[Tensor]:
    """``num_images`` (3, H, W) float32 images in 0..255 and the model's channel order, resized by
    ``dataloader.test.transforms``; fewer when the training set has fewer images."""
    from retdet.data import get_dataset, register_from_config

    if num_images < 1:
        raise ValueError(f"--calib-images must be at least 1 (got {num_images}): the activation ranges are "
                         f"measured on calibration images")
    names = list(cfg.dataloader.train.dataset.names)
    try:
        register_from_config(cfg.dataloader.get("register", []))
        records = [r for name in names for r in get_dataset(name).records]
    except (KeyError, FileNotFoundError, OSError) as e:
        raise FileNotFoundError(f"calibration reads the config's training set dataloader.train.dataset.names="
                                f"{names}, which is not available here: {e}") from None
    if not records:
        raise ValueError(f"dataloader.train.dataset.names={names} has no images to calibrate on")
    order = np.random.default_rng(seed).permutation(len(records))[:num_images]
    transforms = build_transforms(cfg.dataloader.get("test", {}).get("transforms", []))
    fmt = cfg.model.get("input_format", "BGR")
    images = []
    for i in order:
        resized = test_resize(transforms, read_image(records[i].file_name, fmt))
        images.append(torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).float())
    return images


@torch.no_grad()
def calibration_tensors(model: nn.Module, images: List[Tensor]) -> List[Tensor]:
    """The network's inputs for ``images``: (1, 3, Hp, Wp) each, normalised and padded by the model."""
    return [model.preprocess([image]).tensor.contiguous() for image in images]
