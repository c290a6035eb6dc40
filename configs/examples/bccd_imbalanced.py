# BCCD with Platelets made rare (docs/training.md, "Sampling for imbalanced classes"): configs/bccd_R18_FPN.py
# trained on a copy of its training set that keeps 16 of the 162 images with Platelets (and all 130 others),
# evaluated on the full bccd_val. Make the annotation file first (images are not copied):
#   python -m retdet.data.imbalanced_split --json ../shared/datasets/bccd/annotations/instances_train.json \
#       --category Platelets --keep 0.1 --seed 0 --output output/bccd_imbalanced/instances_train.json
# then pick the sampler per run, e.g. dataloader.train.sampler="dict(type='RepeatFactorSampler', repeat_thresh=1.0)".
import os

from ..bccd_R18_FPN import _BCCD, dataloader, imports, lr_scheduler, model, optimizer, train

dataloader.register = dataloader.register + [
    dict(name="bccd_train_platelets10",
         json_file="output/bccd_imbalanced/instances_train.json",  # from the working directory, like output_dir
         image_root=os.path.join(_BCCD, "images")),
]
dataloader.train.dataset.names = ["bccd_train_platelets10"]
train.output_dir = "./output/bccd_imbalanced"
