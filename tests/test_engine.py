"""Training and evaluation: schedules, checkpoints, exact resume, 2 workers == 1, NaN stop, COCO numbers."""
import contextlib
import io
import json
import math
import os

import numpy as np
import pytest
import torch

from retdet.config import load_config
from retdet.engine import NonFiniteLossError, Trainer
from retdet.engine.optim import build_lr_scheduler, build_optimizer, param_groups
from retdet.modeling import build_model

from .helpers.training import TINY, USER_HOOKS, losses_by_iteration, train_net


# ---- optimiser and schedule ---------------------------------------------------------------------

def test_no_weight_decay_on_norm_and_bias():
    model = build_model(load_config(TINY).model)
    groups = {g["weight_decay"]: g["params"] for g in param_groups(model, weight_decay=1e-4)}
    decayed = {id(p) for p in groups[1e-4]}
    assert id(model.head.cls_score.weight) in decayed and id(model.head.cls_score.bias) not in decayed
    assert all(id(p) not in decayed for p in model.backbone.layer1[0].bn1.parameters())


def test_warmup_multistep_and_cosine_values():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = build_lr_scheduler(dict(type="MultiStepLR", milestones=[4, 6], gamma=0.1, warmup_iters=2,
                                    warmup_factor=0.5), opt, max_iter=8)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.05, 0.075, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_lr_scheduler(dict(type="CosineLR", warmup_iters=0, final_factor=0.0), opt, max_iter=4)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0])


def test_adamw_builds():
    model = build_model(load_config(TINY).model)
    opt = build_optimizer(dict(type="AdamW", lr=1e-4, weight_decay=0.05), model)
    assert isinstance(opt, torch.optim.AdamW) and {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.05}


# ---- the trainer in-process -----------------------------------------------------------------------

def test_nan_loss_stops_with_a_clear_message(tmp_path):
    from .helpers import user_hooks  # noqa: F401  (registers InjectNaN)

    cfg = load_config(TINY, ["+train.hooks=[dict(type='InjectNaN', iteration=4)]", "train.max_iter=6"])
    trainer = Trainer(cfg, output_dir=str(tmp_path))
    with pytest.raises(NonFiniteLossError) as err:
        trainer.train()
    msg = str(err.value)
    assert "iteration 4" in msg and "loss_cls=nan" in msg and "model_0000002.pth" in msg


def test_checkpoints_keep_last_and_pointer(tmp_path):
    cfg = load_config(TINY, ["train.max_iter=7", "train.checkpoint_period=2", "train.keep_last=2"])
    Trainer(cfg, output_dir=str(tmp_path)).train()
    files = sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth"))
    assert files == ["model_0000003.pth", "model_0000005.pth", "model_final.pth"]
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".sha256")) == [f + ".sha256" for f in files]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
    state = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert state["iteration"] == 6 and {"model", "optimizer", "scheduler", "scaler", "rng"} <= set(state)


# ---- command line: fail fast, eval-only, resume, two workers --------------------------------------

def test_unknown_config_key_fails_before_any_work(tmp_path):
    out = train_net("--config", TINY, "--output-dir", str(tmp_path / "run"), "model.head.num_conv=2", expect_ok=False,
                    in_process=True)
    assert out.returncode != 0 and "unknown config key 'model.head.num_conv'" in out.stderr
    assert "Did you mean 'model.head.num_convs'" in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_kill_and_resume_logs_the_same_losses(tmp_path):
    hooks_file = USER_HOOKS
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    train_net("--config", TINY, "--output-dir", full, in_process=True)
    # killed after iteration 4, two iterations past its checkpoint at 2: those records are written again
    out = train_net("--config", TINY, "--output-dir", killed, "--import", hooks_file,
                    "+train.hooks=[dict(type='KillAtIteration', iteration=4)]", expect_ok=False)
    assert out.returncode == -9  # SIGKILL
    assert open(os.path.join(killed, "last_checkpoint")).read() == "model_0000002.pth"
    train_net("--config", TINY, "--output-dir", killed, "--resume", in_process=True)
    a, b = losses_by_iteration(full), losses_by_iteration(killed)
    assert sorted(a) == list(range(6)) and sorted(b) == list(range(6))
    records = [json.loads(line)["iteration"] for line in open(os.path.join(killed, "metrics.json"))]
    assert records == list(range(6)), "a resumed run drops the killed run's records past its checkpoint"
    for it in range(3, 6):
        assert b[it] == pytest.approx(a[it], rel=1e-6, abs=1e-7), f"iteration {it}"


@pytest.mark.slow
def test_two_gloo_workers_match_one_process(tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    # One image size for all: padding (and so the anchors and GroupNorm statistics) is then the
    # same whether 4 images share a batch or 2 + 2 are split over two workers.
    same_size = "dataloader.train.transforms=[dict(type='ScaleJitterCrop', output_size=(128, 128), scale_range=(1.0, 1.0))]"
    args = ["--config", TINY, "train.max_iter=3", "train.checkpoint_period=0", same_size]
    train_net(*args, "--output-dir", one, in_process=True)
    train_net(*args, "--output-dir", two, "--num-gpus", "2")
    a, b = losses_by_iteration(one), losses_by_iteration(two)
    assert sorted(a) == sorted(b) == [0, 1, 2]
    for it in a:
        assert b[it] == pytest.approx(a[it], rel=1e-4), f"iteration {it}"


def test_eval_only_on_a_saved_checkpoint(tmp_path):
    run = str(tmp_path / "run")
    train_net("--config", TINY, "--output-dir", run, "train.max_iter=2", in_process=True)
    out = train_net("--config", TINY, "--output-dir", run, "--eval-only", "--weights", os.path.join(run, "model_final.pth"),
                    in_process=True)
    assert "Evaluation on synthetic_shapes_val (120 images)" in out.stdout
    assert os.path.exists(os.path.join(run, "eval", "coco_results.json")) or "no detections" in out.stdout


# ---- the evaluator against pycocotools directly --------------------------------------------------

def test_evaluator_numbers_equal_cocoeval(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from retdet.data import get_dataset, register_coco
    from retdet.evaluation import METRICS, COCOEvaluator
    from retdet.structures import Detections, ImageSample

    from .conftest import SHARED

    bccd = os.path.join(SHARED, "datasets", "bccd")
    register_coco("bccd_val_eval_t", os.path.join(bccd, "annotations", "instances_val.json"),
                  os.path.join(bccd, "images"), overwrite=True)
    info = get_dataset("bccd_val_eval_t")
    evaluator = COCOEvaluator(dataset=info, output_dir=str(tmp_path))
    rng = np.random.default_rng(0)
    for r in info.records:  # noisy copies of the ground truth, some misses and false positives
        keep = rng.random(len(r.boxes)) < 0.8
        boxes = r.boxes[keep] + rng.normal(0, 4, (int(keep.sum()), 4)).astype(np.float32)
        labels = r.labels[keep]
        fp = rng.uniform(0, 400, (3, 2)).astype(np.float32)
        boxes = np.concatenate([boxes, np.concatenate([fp, fp + 60], 1)])
        labels = np.concatenate([labels, rng.integers(0, 3, 3)])
        scores = rng.random(len(boxes)).astype(np.float32)
        order = np.argsort(-scores)
        det = Detections(boxes=torch.from_numpy(boxes[order]), scores=torch.from_numpy(scores[order]),
                         labels=torch.from_numpy(labels[order]))
        sample = ImageSample(image=torch.zeros(3, 8, 8, dtype=torch.uint8), image_id=r.image_id,
                             original_size=(r.height, r.width))
        evaluator.process([sample], [det])
    evaluator.process([sample], [det])  # an image reported twice is counted once
    ours = evaluator.evaluate()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(info.json_file)
        coco_eval = COCOeval(gt, gt.loadRes(str(tmp_path / "coco_results.json")), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    for name, value in zip(METRICS, coco_eval.stats):
        assert ours["bbox"][name] == pytest.approx(value * 100, abs=1e-9), name
    assert 10 < ours["bbox"]["AP50"] < 100
    assert set(ours["per_class"]) == {"RBC", "WBC", "Platelets"}
    assert os.path.exists(tmp_path / "pr_curves.png") and os.path.exists(tmp_path / "detections.png")


@pytest.mark.slow
def test_a_failing_worker_stops_all_with_its_traceback(tmp_path):
    hooks_file = USER_HOOKS
    out = train_net("--config", TINY, "--output-dir", str(tmp_path / "run"), "--num-gpus", "2", "--import", hooks_file,
                    "+train.hooks=[dict(type='FailOnRank', rank=1, iteration=1)]", expect_ok=False, timeout=300)
    assert out.returncode != 0
    assert "deliberate failure on rank 1" in out.stderr and "Traceback" in out.stderr


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_amp_and_ema_training_steps(tmp_path, dtype):
    cfg = load_config(TINY, ["train.max_iter=2", "train.checkpoint_period=0",
                             f"train.amp=dict(enabled=True, dtype='{dtype}')", "+train.ema=dict(enabled=True)"])
    trainer = Trainer(cfg, output_dir=str(tmp_path))
    trainer.train()
    assert trainer.ema.updates == 2
    state = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert "ema" in state and "scaler" in state
    changed = [k for k, v in trainer.ema.module.state_dict().items()
               if v.dtype.is_floating_point and not torch.equal(v, state["model"][k])]
    assert changed  # the average differs from the raw weights


def test_max_epochs_converts_to_iterations():
    from retdet.engine.trainer import resolve_max_iter

    cfg = load_config(TINY, ["+train.max_epochs=2", "dataloader.train.total_batch_size=8"])
    assert resolve_max_iter(cfg) == math.ceil(2 * 120 / 8)


# ---- the class count against the data -------------------------------------------------------------

def test_a_class_count_that_disagrees_with_the_data_fails_before_training(tmp_path):
    cfg = load_config(TINY, ["model.head.num_classes=3"])
    with pytest.raises(ValueError, match=r"the model has 3 classes \(model.head.num_classes\) but dataloader.train "
                                         r"dataset 'synthetic_shapes_val' .* has 4 categories: \['circle', .*\]. "
                                         r"Set model.head.num_classes=4, or .*\"from_dataset\""):
        Trainer(cfg, output_dir=str(tmp_path))
    assert not (tmp_path / "metrics.json").exists()


def test_the_test_set_class_count_is_checked_too(tmp_path):
    from .conftest import SHARED

    bccd = os.path.join(SHARED, "datasets", "bccd")
    cfg = load_config(TINY, [f"+dataloader.register=[dict(name='bccd_val_classes_t', image_root='{bccd}/images', "
                             f"json_file='{bccd}/annotations/instances_val.json')]",
                             "dataloader.test.dataset.names=['bccd_val_classes_t']", "train.eval_at_end=True"])
    with pytest.raises(ValueError, match=r"4 classes .* but dataloader.test dataset 'bccd_val_classes_t' .* has 3 "
                                         r"categories: \['RBC', 'WBC', 'Platelets'\]"):
        Trainer(cfg, output_dir=str(tmp_path))


def test_num_classes_from_dataset(tmp_path):
    cfg = load_config(TINY, ["model.head.num_classes='from_dataset'", "train.max_iter=1"])
    with pytest.raises(ValueError, match=r'"from_dataset" is taken from the training set by .*resolve_num_classes'):
        build_model(cfg.model)
    trainer = Trainer(cfg, output_dir=str(tmp_path))
    assert cfg.model.head.num_classes == 4 and trainer.model.num_classes == 4
    assert trainer.model.head.cls_score.out_channels == 4 * 9


def test_resource_monitor_records_memory_and_descriptors(tmp_path):
    cfg = load_config(TINY, ["train.max_iter=4", "train.checkpoint_period=0",
                             "+train.hooks=[dict(type='ResourceMonitor', period=2)]"])
    Trainer(cfg, output_dir=str(tmp_path)).train()
    samples = [json.loads(line) for line in open(tmp_path / "metrics.json") if "rss_mb" in line]
    assert [s["iteration"] for s in samples] == [1, 3]
    for s in samples:
        assert 100 < s["rss_mb"] < 20000 and 3 <= s["open_fds"] < 1000 and s["children_rss_mb"] >= 0
