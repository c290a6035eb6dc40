"""Backbones (registered in retdet.registry.BACKBONES)."""
from .base import Backbone
from .efficientnet import EfficientNet
from .resnet import ResNet

__all__ = ["Backbone", "EfficientNet", "ResNet"]
