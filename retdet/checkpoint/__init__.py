"""Loading weights into a model, and converting torchvision checkpoints to retdet's names."""
from .convert import convert_torchvision_backbone, convert_torchvision_retinanet
from .loader import IncompatibleKeys, load_weights

__all__ = ["IncompatibleKeys", "convert_torchvision_backbone", "convert_torchvision_retinanet", "load_weights"]
