# Detectron2's retinanet_R_50_FPN_1x expressed with retdet parts, so its model-zoo weights
# (tools/convert_weights.py --source detectron2-retinanet) give its detections. What retdet's default
# R50 model already shares with it: BGR input in 0..255 with mean [103.53, 116.28, 123.675] and std 1,
# padding to 32, P6 = conv(C5) and P7 = conv(relu(P6)), anchors 32..512 x 2^(0, 1/3, 2/3) x {0.5, 1, 2}
# in size-major order centred at i * stride without rounding, deltas with unit weights clamped from
# above at log(1000/16), the focal loss, smooth L1 (beta 0.1) and the EMA loss normaliser.
# What differs, set below: the MSRA ResNet's stride sits in each stage's first 1x1 convolution; at
# test time NMS runs on unclipped boxes, which are clipped after rescaling to the original image, and
# empty boxes are then dropped. For R101 (retinanet_R_101_FPN_3x): model.backbone.depth=101.
# Not reproduced: Detectron2 resizes with PIL's bilinear filter, retdet with OpenCV's (a sub-pixel
# difference in the input image, not in the model).
from ..common.data.coco import dataloader
from ..common.models.retinanet import model
from ..common.schedules.schedule_1x import lr_scheduler, optimizer, train

model.backbone.stride_in_1x1 = True
model.postprocess.clip_before_nms = False
model.postprocess.drop_empty = "after_nms"
model.compile = False
