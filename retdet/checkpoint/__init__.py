"""Loading weights into a model, and converting torchvision checkpoints to retdet's names."""
from .convert import convert_torchvision_backbone, convert_torchvision_retinanet
from .integrity import CorruptCheckpointError, checkpoint_problem, load_checkpoint_file
from .loader import IncompatibleKeys, load_weights

__all__ = ["CorruptCheckpointError", "IncompatibleKeys", "checkpoint_problem", "convert_torchvision_backbone",
           "convert_torchvision_retinanet", "load_checkpoint_file", "load_weights"]
