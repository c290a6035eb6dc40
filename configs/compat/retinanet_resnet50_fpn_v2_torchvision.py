# torchvision's retinanet_resnet50_fpn_v2: v1 plus P6 from C5, GroupNorm in the head, GIoU box loss.
from .retinanet_resnet50_fpn_torchvision import model

model.neck.top_block = "p6p7_from_c5"
model.head.norm = "GN"
model.box_loss = dict(type="GIoULoss")
model.size_divisibility = 128  # see above
