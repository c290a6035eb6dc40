"""Reading images: bytes through iopath, decoding with OpenCV (EXIF orientation applied)."""
from __future__ import annotations

import cv2
import numpy as np
from iopath.common.file_io import PathManager

_paths = PathManager()

# File endings taken for images where a folder is listed (demo input, VOC JPEGImages/, YOLO images/).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(RuntimeError):
    """An image that is missing or cannot be decoded; the message names the file."""


def read_image(path: str, input_format: str = "BGR") -> np.ndarray:
    """(H, W, 3) uint8 image in ``input_format`` ("BGR" or "RGB"), EXIF orientation applied."""
    try:
        with _paths.open(path, "rb") as f:
            data = f.read()
    except (FileNotFoundError, OSError) as e:
        raise ImageReadError(f"cannot read image {path}: {e}") from e
    # IMREAD_COLOR applies the EXIF orientation tag (OpenCV's default for JPEG).
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise ImageReadError(f"cannot decode image {path} ({len(data)} bytes): corrupt or not an image")
    if input_format == "RGB":
        image = image[:, :, ::-1]
    elif input_format != "BGR":
        raise ValueError(f"input_format must be 'BGR' or 'RGB', got {input_format!r}")
    return np.ascontiguousarray(image)
