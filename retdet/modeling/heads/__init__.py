"""Heads (registered in retdet.registry.HEADS)."""
from .retinanet_head import RetinaNetHead

__all__ = ["RetinaNetHead"]
