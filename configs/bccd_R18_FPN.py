# BCCD blood cells (../shared/datasets/bccd; for benchmarks and tests, not shipped): RetinaNet R18-FPN
# from scratch on a CPU (no pretrained weights offline). The dataset is registered from this config.
import os

from .quickstart import dataloader, imports, lr_scheduler, model, optimizer, train

_BCCD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "datasets", "bccd")

model.head.num_classes = 3
# The measured BCCD recipe (AP50 91.6): the full-width ResNet-18 and FPN and AdamW at 2e-3. The quickstart
# narrowed its network and changed its box loss for the 10-minute synthetic run.
model.backbone.width = 64
model.neck.out_channels = 128
model.box_loss = dict(type="SmoothL1Loss", beta=0.1)
optimizer.lr = 0.002
model.anchor_generator.sizes = [16, 32, 64, 128, 256]

# The quickstart's loaders (batch 4, 2 workers) on BCCD's ~640x480 images at half size, flipped both ways.
dataloader.register = [
    dict(name="bccd_train", json_file=os.path.join(_BCCD, "annotations", "instances_train.json"),
         image_root=os.path.join(_BCCD, "images")),
    dict(name="bccd_val", json_file=os.path.join(_BCCD, "annotations", "instances_val.json"),
         image_root=os.path.join(_BCCD, "images")),
]
dataloader.train.dataset.names = ["bccd_train"]
dataloader.train.transforms = [
    dict(type="ResizeShortestEdge", short_edge_length=(288, 320, 352), max_size=480),
    dict(type="RandomFlip", prob=0.5),
    dict(type="RandomFlip", prob=0.5, horizontal=False),
]
dataloader.test.dataset.names = ["bccd_val"]
dataloader.test.transforms = [dict(type="ResizeShortestEdge", short_edge_length=320, max_size=480)]

# quickstart's AdamW + cosine schedule, over ~25 CPU minutes (about 20 epochs of the 292 images)
train.max_iter = 1500
train.checkpoint_period = 500
train.output_dir = "./output/bccd_R18_FPN"
