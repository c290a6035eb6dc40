"""Checkpoints: writing them (atomically, with a checksum) and choosing one to resume from; loading
weights into a model with a report; converting torchvision, Detectron2 and MMDetection checkpoints."""
from .checkpointer import Checkpointer, CheckpointWriteError, RNGState
from .convert import convert_torchvision_backbone, convert_torchvision_retinanet
from .integrity import CorruptCheckpointError, checkpoint_problem, load_checkpoint_file
from .loader import IncompatibleKeys, load_weights

__all__ = ["CheckpointWriteError", "Checkpointer", "CorruptCheckpointError", "IncompatibleKeys", "RNGState",
           "checkpoint_problem", "convert_torchvision_backbone", "convert_torchvision_retinanet",
           "load_checkpoint_file", "load_weights"]
