# RetinaNet R50-FPN with AdamW for 10 epochs (converted to iterations through the dataset size and
# total batch), cosine decay, and flip + rotation + scale-jitter augmentation.
from .retinanet_R50_FPN_1x import dataloader, imports, model, train

optimizer = dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05, weight_decay_norm=0.0,
                 weight_decay_bias=0.0)
lr_scheduler = dict(type="CosineLR", final_factor=0.01, warmup_iters=1000, warmup_factor=0.001)
dataloader.train.transforms = [
    dict(type="ScaleJitterCrop", output_size=(1024, 1024), scale_range=(0.5, 1.5)),
    dict(type="RandomRotation", angle=(-10, 10), prob=0.5),
    dict(type="RandomFlip", prob=0.5),
]
train.max_iter = 0
train.max_epochs = 10
train.clip_grad = 1.0
train.output_dir = "./output/retinanet_R50_FPN_adamw_10e"
