"""Knowledge distillation: a student detector trained from a frozen teacher (``train.distill``)."""
from .distiller import Distiller, build_distiller, build_teacher, check_compatible
from .losses import DistillInputs, DistillLoss, FeatureImitationLoss, LogitDistillLoss

__all__ = ["DistillInputs", "DistillLoss", "Distiller", "FeatureImitationLoss", "LogitDistillLoss", "build_distiller",
           "build_teacher", "check_compatible"]
