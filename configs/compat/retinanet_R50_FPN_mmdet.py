# MMDetection's retinanet_r50_fpn_1x_coco (2.x and 3.x) expressed with retdet parts, so its weights
# (tools/convert_weights.py --source mmdet-retinanet) give its detections. Where it differs from
# retdet's default (Detectron2-like) R50 model:
#   - RGB input normalised with ImageNet's mean/std (its data preprocessor's to_rgb / bgr_to_rgb);
#   - P7 = conv(P6), no ReLU between (its FPN's relu_before_extra_convs=False);
#   - anchors in ratio-major order (its base anchors loop ratios outside, scales inside);
#   - box deltas clamped at +-log(1000/16) (its wh_ratio_clip), boxes clipped before NMS;
#   - training: L1 box loss normalised by the batch's foreground count.
# Its ResNet is torchvision's ("pytorch" style: stride in the 3x3; BN in eval mode = FrozenBN) and
# its anchors (base size = stride, octave_base_scale 4, 3 scales per octave, centres at i * stride,
# no rounding) and test settings (score > 0.05, 1000 per level, NMS 0.5, 100 per image) equal ours.
# 3.x drops boxes of zero size before NMS; 2.x does not (drop_empty=None): the difference only
# touches boxes clipped to nothing.
from ..common.data.coco import dataloader
from ..common.models.retinanet import model
from ..common.schedules.schedule_1x import lr_scheduler, optimizer, train

model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"
model.neck.relu_before_p7 = False
model.anchor_generator.order = "ratio_major"
model.box_coder.clamp_both = True
model.postprocess.drop_empty = "before_nms"
model.box_loss = dict(type="L1Loss")
model.loss_normalizer = dict(mode="batch")
model.compile = False
