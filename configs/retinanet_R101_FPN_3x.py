# RetinaNet R101-FPN, 3x schedule (270k iterations, steps at 210k and 250k).
from .retinanet_R50_FPN_1x import dataloader, imports, lr_scheduler, model, optimizer, train

model.backbone.depth = 101
lr_scheduler.milestones = [210000, 250000]
train.max_iter = 270000
train.output_dir = "./output/retinanet_R101_FPN_3x"
