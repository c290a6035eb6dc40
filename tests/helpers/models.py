"""Models for inference tests."""
import torch


def detecting_model(config: str, overrides=(), seed: int = 0):
    """A config's model with random weights that detect things: the head scaled so that many anchors
    pass the score threshold (NMS has work to do) with distinct, unsaturated scores (no ties to order
    arbitrarily). In eval mode."""
    from retdet.config import load_config
    from retdet.modeling import build_model

    torch.manual_seed(seed)
    model = build_model(load_config(config, list(overrides)).model)
    with torch.no_grad():
        model.head.cls_score.bias.normal_(-4.0, 1.0)
        model.head.cls_score.weight.mul_(3)
        model.head.bbox_pred.weight.mul_(3)
    return model.eval()
