# RetinaNet with a ResNet-50 + FPN (P3-P7), as in Lin et al. 2017. Experiment files import `model`
# from here and change what differs.
model = dict(
    type="RetinaNet",
    backbone=dict(type="ResNet", depth=50, width=64, norm="FrozenBN", freeze_at=2,
                  out_features=["res3", "res4", "res5"], stride_in_1x1=False),
    neck=dict(type="FPN", in_features=["res3", "res4", "res5"], out_channels=256, top_block="p6p7_from_c5",
              relu_before_p7=True),
    head=dict(type="RetinaNetHead", num_classes=80, num_convs=4, prior_prob=0.01, norm=None),
    anchor_generator=dict(
        type="AnchorGenerator",
        sizes=[32, 64, 128, 256, 512],
        scales_per_octave=3,
        aspect_ratios=[0.5, 1.0, 2.0],
        strides=[8, 16, 32, 64, 128],
        offset=0.0,
    ),
    matcher=dict(type="Matcher", thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=True),
    box_coder=dict(type="DeltaXYWHBoxCoder", weights=(1.0, 1.0, 1.0, 1.0), scale_clamp=4.135166556742356,
                   clamp_both=False),
    cls_loss=dict(type="SigmoidFocalLoss", alpha=0.25, gamma=2.0),
    box_loss=dict(type="SmoothL1Loss", beta=0.1),
    loss_normalizer=dict(mode="ema", momentum=0.9, initial=100.0),
    postprocess=dict(
        type="RetinaNetPostProcess", score_threshold=0.05, topk_per_level=1000, nms_threshold=0.5, max_detections=100,
        clip_before_nms=True, drop_empty=None,  # Detectron2: False, "after_nms" (configs/compat/)
    ),
    pixel_mean=[103.53, 116.28, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
    input_format="BGR",
    # Pad to the largest backbone stride only: P6/P7 come from stride-2 convs, which stay centred on
    # their anchors at any size (padding to 128 would add up to 18% pixels at 800x1216).
    size_divisibility=32,
    # NHWC or NCHW per mode, whichever runs faster on this CPU or GPU (retdet/layers/memory_format.py);
    # or "NHWC", "NCHW", dict(train="NCHW", inference="NHWC").
    memory_format="auto",
    # 3x3 convolutions: "auto" runs the large float32 ones on the CPU as Winograd F(4x4, 3x3), 4x fewer
    # multiplications (retdet/layers/winograd.py); "direct", "winograd_f2" or "winograd_f4" fixes one.
    conv_algorithm="auto",
    # True (or a dict of torch.compile arguments): backbone, FPN and head run under torch.compile,
    # for training and inference alike; compiled on the first forward (see RetinaNet.network).
    compile=False,
    # Inference on several views, merged (retdet/modeling/test_time_aug.py, docs/inference.md): e.g.
    # test_time_aug=dict(flips=[False, True], scales=[0.8, 1.0, 1.2]), tiling=dict(tile=512, overlap=128).
    test_time_aug=None,
    tiling=None,
)
