"""Training: the Trainer, hooks, optimisers and schedules, checkpoints, launching workers."""
from .checkpoint import Checkpointer, RNGState
from .hooks import HookBase
from .launch import launch
from .optim import build_lr_scheduler, build_optimizer
from .trainer import NonFiniteLossError, Trainer, evaluate

__all__ = ["Checkpointer", "HookBase", "NonFiniteLossError", "RNGState", "Trainer", "build_lr_scheduler",
           "build_optimizer", "evaluate", "launch"]
