# RetinaNet R50-FPN, 1x schedule on COCO 2017 (the paper's baseline).
from .common.data.coco import dataloader
from .common.models.retinanet import model
from .common.schedules.schedule_1x import lr_scheduler, optimizer, train

imports = []  # your own modules to import (they register components), e.g. ["my_project.my_heads"]
