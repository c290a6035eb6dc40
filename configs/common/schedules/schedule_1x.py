# The "1x" schedule: 90k iterations at total batch 16, lr 0.01 (linear scaling rule: lr = 0.01 * batch / 16),
# decayed x0.1 at 60k and 80k, 1000 warm-up iterations.
optimizer = dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=1e-4, weight_decay_norm=0.0, weight_decay_bias=0.0)
lr_scheduler = dict(type="MultiStepLR", milestones=[60000, 80000], gamma=0.1, warmup_iters=1000, warmup_factor=0.001)
train = dict(
    max_iter=90000,
    amp=dict(enabled=False, dtype="float16"),
    clip_grad=None,
    checkpoint_period=5000,
    keep_last=3,
    eval_period=0,
    eval_at_end=True,  # evaluate once after the last iteration
    log_period=20,
    seed=0,
    output_dir="./output/retinanet_R50_FPN_1x",
    init_checkpoint="",
    # micro-batches of dataloader.train.total_batch_size per optimizer step: the update of an N times larger
    # batch (BatchNorm statistics excepted: see docs/training.md)
    accumulate=1,
    # True: bit-identical reruns (torch's deterministic algorithms; nondeterministic ops listed); "strict": those are errors
    deterministic=False,
    val_loss_period=0,  # every N iterations: the losses on dataloader.test (val/* in metrics.json)
    # e.g. dict(metric="AP", patience=5, min_delta=0.1) or dict(metric="val_loss", patience=3): stop when the metric
    # has not improved for `patience` evaluations (model_best.pth follows the metric); None: never stop early
    early_stop=None,
    # finish the step, save a checkpoint and exit with status 75 on these (what schedulers send before a kill)
    preempt_signals=["SIGTERM", "SIGUSR1"],
)
