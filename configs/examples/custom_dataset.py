# Training on your own COCO-format dataset (docs/custom_dataset.md): register it under names, point
# the loaders at them, and give the head your number of categories.
from ..quickstart import dataloader, imports, lr_scheduler, model, optimizer, train

dataloader.register = [
    dict(name="my_shapes_train", json_file="datasets/my_shapes/train/annotations.json",
         image_root="datasets/my_shapes/train/images"),
    dict(name="my_shapes_val", json_file="datasets/my_shapes/val/annotations.json",
         image_root="datasets/my_shapes/val/images"),
]
dataloader.train.dataset.names = ["my_shapes_train"]
dataloader.test.dataset.names = ["my_shapes_val"]
model.head.num_classes = 4  # categories in the annotations
train.output_dir = "./output/my_shapes"
