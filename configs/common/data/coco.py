# COCO 2017 detection data: resize by shortest edge with multi-scale training, flip.
dataloader = dict(
    train=dict(
        dataset=dict(names=["coco_2017_train"], filter_empty=True),
        transforms=[
            # short side 640..800 in steps of 32, long side at most 1333
            dict(type="ResizeShortestEdge", short_edge_length=(640, 672, 704, 736, 768, 800), max_size=1333),
            dict(type="RandomFlip", prob=0.5),
        ],
        total_batch_size=16,
        num_workers=4,
        aspect_ratio_grouping=True,
        # the training order: every image once per epoch. For imbalanced classes:
        # dict(type="RepeatFactorSampler", repeat_thresh=0.001) or dict(type="ClassAwareSampler")
        # (retdet/data/samplers.py)
        sampler=dict(type="TrainingSampler"),
        # decoded images kept in memory up to this many MB per loader process (0: read each time);
        # for small datasets trained for many epochs (configs/quickstart.py)
        cache_images_mb=0,
    ),
    test=dict(
        dataset=dict(names=["coco_2017_val"], filter_empty=False),
        transforms=[dict(type="ResizeShortestEdge", short_edge_length=800, max_size=1333)],
        batch_size=1,
        num_workers=4,
    ),
    evaluator=dict(type="COCOEvaluator"),
)
