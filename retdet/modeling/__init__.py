"""The model's parts. Importing this module registers all of them."""
from . import backbones, heads, necks  # noqa: F401  (register)
from .anchor_generator import AnchorGenerator
from .box_coder import DeltaXYWHBoxCoder
from .losses import GIoULoss, L1Loss, LossNormalizer, SigmoidFocalLoss, SmoothL1Loss
from .matcher import Matcher
from .postprocess import RetinaNetPostProcess
from .preprocess import ImageBatch, Preprocessor
from .retinanet import RetinaNet, permute_to_N_HWA_K

__all__ = [
    "AnchorGenerator", "DeltaXYWHBoxCoder", "GIoULoss", "ImageBatch", "L1Loss", "LossNormalizer", "Matcher",
    "Preprocessor", "RetinaNet", "RetinaNetPostProcess", "SigmoidFocalLoss", "SmoothL1Loss", "build_model",
    "permute_to_N_HWA_K",
]


def build_model(model_cfg):
    """The detector a config's ``model`` node describes."""
    from retdet.registry import DETECTORS, build

    return build(model_cfg, DETECTORS, where="model")
