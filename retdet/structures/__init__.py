"""Structured values passed between parts: per-image inputs and outputs, feature shapes."""
from .sample import Detections, ImageSample
from .shape_spec import ShapeSpec

__all__ = ["Detections", "ImageSample", "ShapeSpec"]
