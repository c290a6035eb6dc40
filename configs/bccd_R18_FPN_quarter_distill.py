# The quarter-width BCCD student (configs/bccd_R18_FPN_quarter.py) distilled from the full-width
# teacher (configs/bccd_R18_FPN.py, trained first): the focal-aware logit loss on every anchor and
# foreground-weighted FPN imitation through a learned 32 -> 128 adapter (retdet/distillation/).
import os

from .bccd_R18_FPN_quarter import dataloader, imports, lr_scheduler, model, optimizer, train

_CONFIGS = os.path.dirname(os.path.abspath(__file__))
train.distill = dict(
    teacher_config=os.path.join(_CONFIGS, "bccd_R18_FPN.py"),
    teacher_weights="./output/bccd_R18_FPN/model_final.pth",
    losses=[dict(type="LogitDistillLoss", weight=1.0, temperature=1.0, gamma=2.0),
            dict(type="FeatureImitationLoss", weight=1.0, background_weight=0.1, normalize=True)],
)
train.output_dir = "./output/bccd_R18_FPN_quarter_distill"
