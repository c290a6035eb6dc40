# A seconds-long training setup for the engine tests: quickstart, scaled down.
from ...configs.quickstart import dataloader, imports, model, train

model.neck.out_channels = 32
model.head.num_convs = 1
model.backbone.norm = "GN"  # no batch statistics (1 process == 2 processes exactly), yet normalised
model.backbone.width = 32  # GroupNorm's 32 groups need 32 channels or more
dataloader.train.dataset.names = ["synthetic_shapes_val"]
dataloader.train.transforms = [dict(type="ResizeShortestEdge", short_edge_length=(96, 112), max_size=160),
                               dict(type="RandomFlip", prob=0.5)]
dataloader.train.num_workers = 0
dataloader.train.aspect_ratio_grouping = False
dataloader.test.transforms = [dict(type="ResizeShortestEdge", short_edge_length=96, max_size=160)]
dataloader.test.num_workers = 0
# SGD: AdamW divides by the gradient's running RMS, which magnifies float rounding differences of
# near-zero gradients (all-reduce order) far beyond float tolerance in the 1-vs-2-worker comparison.
optimizer = dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=1e-4)
lr_scheduler = dict(type="MultiStepLR", milestones=[4], gamma=0.1, warmup_iters=2, warmup_factor=0.1)
train.max_iter = 6
train.checkpoint_period = 3
train.log_period = 1
train.eval_at_end = False
