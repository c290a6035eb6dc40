# A quarter-width student of configs/bccd_R18_FPN.py (BCCD), trained alone: ResNet-18 at 16 channels
# (16..128) and a 32-channel FPN and head, same data, schedule and seed as the teacher. The baseline of
# configs/bccd_R18_FPN_quarter_distill.py (docs/deployment.md, "smaller models").
from .bccd_R18_FPN import dataloader, imports, lr_scheduler, model, optimizer, train

model.backbone.width = 16
model.neck.out_channels = 32
train.output_dir = "./output/bccd_R18_FPN_quarter"
