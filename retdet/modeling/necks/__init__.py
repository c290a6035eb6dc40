"""Necks (registered in retdet.registry.NECKS)."""
from .fpn import FPN

__all__ = ["FPN"]
