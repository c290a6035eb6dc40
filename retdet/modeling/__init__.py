"""The model's parts. Importing this module registers all of them."""
from . import backbones, heads, necks  # noqa: F401  (register)
from .anchor_generator import AnchorGenerator
from .box_coder import DeltaXYWHBoxCoder
from .losses import GIoULoss, L1Loss, LossNormalizer, SigmoidFocalLoss, SmoothL1Loss
from .matcher import Matcher
from .network_runner import DetectorNetwork, NetworkOutputs, NetworkRunner
from .postprocess import RetinaNetPostProcess
from .preprocess import ImageBatch, Preprocessor
from .retinanet import RetinaNet, permute_to_N_HWA_K

__all__ = [
    "AnchorGenerator", "DeltaXYWHBoxCoder", "DetectorNetwork", "GIoULoss", "ImageBatch", "L1Loss",
    "LossNormalizer", "Matcher", "NetworkOutputs", "NetworkRunner", "Preprocessor", "RetinaNet",
    "RetinaNetPostProcess", "SigmoidFocalLoss", "SmoothL1Loss", "build_model", "permute_to_N_HWA_K",
]


def build_model(model_cfg):
    """The detector a config's ``model`` node describes."""
    from retdet.registry import DETECTORS, build

    if isinstance(model_cfg.get("head"), dict) and model_cfg["head"].get("num_classes") == "from_dataset":
        raise ValueError('model.head.num_classes="from_dataset" is taken from the training set by '
                         "retdet.data.resolve_num_classes(cfg), which tools/train_net.py and the other tools call "
                         "before building the model; call it first, or give the number")
    return build(model_cfg, DETECTORS, where="model")
