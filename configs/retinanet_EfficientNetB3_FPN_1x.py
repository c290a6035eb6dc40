# RetinaNet with an EfficientNet-B3 backbone (strides 8/16/32 into the FPN), 1x schedule.
from .retinanet_R50_FPN_1x import dataloader, imports, lr_scheduler, model, optimizer, train

model.backbone = dict(type="EfficientNet", variant=3, norm="FrozenBN", freeze_at=2,
                      out_features=["stride8", "stride16", "stride32"])
model.neck.in_features = ["stride8", "stride16", "stride32"]
model.pixel_mean = [123.675, 116.28, 103.53]  # torchvision ImageNet weights: RGB in 0..1, normalised
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"
train.output_dir = "./output/retinanet_EfficientNetB3_FPN_1x"
