from dataclasses import dataclass


@dataclass(frozen=True)
class ShapeSpec:
    """A feature map's channels and stride (input pixels per feature pixel)."""

    channels: int
    stride: int
