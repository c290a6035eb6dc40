# RetinaNet R101-FPN, 1x: the R50 experiment with a deeper backbone.
from .retinanet_R50_FPN_1x import dataloader, imports, lr_scheduler, model, optimizer, train

model.backbone.depth = 101
train.output_dir = "./output/retinanet_R101_FPN_1x"
