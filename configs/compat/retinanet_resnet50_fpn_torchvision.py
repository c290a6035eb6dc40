# torchvision's retinanet_resnet50_fpn (v1) expressed with retdet parts, so converted torchvision
# weights give the same outputs (tests/test_torchvision_parity.py checks it):
#   P6 from P5, truncated-and-rounded anchor sizes in ratio-major order, L1 box loss, losses
#   normalised per image, 300 detections, RGB input normalised with ImageNet mean/std, 91 classes.
# Padding stays at 128 (torchvision pads to 32 and then derives strides from the padded size; at
# a multiple of 128 the two agree exactly).
from ..common.models.retinanet import model

model.backbone.freeze_at = 0
model.neck.top_block = "p6p7_from_p5"
model.head.num_classes = 91
model.anchor_generator = dict(
    type="AnchorGenerator",
    sizes=[[32, 40, 50], [64, 80, 101], [128, 161, 203], [256, 322, 406], [512, 645, 812]],
    aspect_ratios=[0.5, 1.0, 2.0],
    strides=[8, 16, 32, 64, 128],
    offset=0.0,
    order="ratio_major",
    round_cell=True,
)
model.box_loss = dict(type="L1Loss")
model.loss_normalizer = dict(mode="per_image")
model.postprocess.max_detections = 300
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"
model.size_divisibility = 128  # see above
