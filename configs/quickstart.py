# Quickstart: a small RetinaNet (R18, 128-channel FPN) trained briefly on the embedded synthetic
# dataset, which our own code generates on first use (no download).
from .common.models.retinanet import model
from .common.schedules.schedule_1x import lr_scheduler, optimizer, train

imports = []

model.backbone.depth = 18
model.backbone.freeze_at = 0
model.backbone.norm = "BN"  # trained from scratch: batch statistics, not frozen ones
model.neck.out_channels = 128
model.head.num_classes = 4
model.head.num_convs = 2

dataloader = dict(
    train=dict(
        dataset=dict(names=["synthetic_shapes_train"], filter_empty=True),
        transforms=[
            dict(type="ResizeShortestEdge", short_edge_length=(224, 256, 288), max_size=384),
            dict(type="RandomFlip", prob=0.5),
        ],
        total_batch_size=4,
        num_workers=2,
        aspect_ratio_grouping=True,
    ),
    test=dict(
        dataset=dict(names=["synthetic_shapes_val"], filter_empty=False),
        transforms=[dict(type="ResizeShortestEdge", short_edge_length=256, max_size=384)],
        batch_size=1,
        num_workers=2,
    ),
    evaluator=dict(type="COCOEvaluator"),
)

optimizer.lr = 0.01 * 4 / 16  # linear scaling rule for total batch 4
lr_scheduler.milestones = [1500, 1800]
lr_scheduler.warmup_iters = 100
train.max_iter = 2000
train.checkpoint_period = 500
train.eval_period = 500
train.output_dir = "./output/quickstart"
