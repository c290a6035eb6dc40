"""Training: the Trainer, hooks, optimisers and schedules, launching workers (checkpoints: retdet.checkpoint)."""
from . import trackers  # noqa: F401  (registers MLflowTracker, WandbTracker; mlflow/wandb load only when one is built)
from .hooks import HookBase
from .launch import launch
from .optim import build_lr_scheduler, build_optimizer
from .trainer import NonFiniteLossError, Trainer

__all__ = ["HookBase", "NonFiniteLossError", "Trainer", "build_lr_scheduler", "build_optimizer", "launch"]
