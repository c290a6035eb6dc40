"""Training options: deterministic runs, gradient accumulation, the validation loss and early stopping."""
import json
import os

import pytest
import torch

from retdet.config import load_config
from retdet.engine import HookBase, Trainer
from retdet.modeling import build_model

from .helpers.training import SAME_SIZE, TINY, losses_by_iteration

HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers")


def train(tmp_path, name, overrides, resume=False):
    """A TINY run in ``tmp_path/name``: (trainer, {iteration: total_loss})."""
    out = str(tmp_path / name)
    trainer = Trainer(load_config(TINY, overrides), output_dir=out, resume=resume)
    trainer.train()
    return trainer, losses_by_iteration(out)


def records(folder, key):
    return {r["iteration"]: r[key] for r in map(json.loads, open(os.path.join(folder, "metrics.json"))) if key in r}


# ---- train.deterministic ----------------------------------------------------------------------------

# two data workers, multi-scale resize and flips: every source of randomness a run has
AUGMENTED = ["train.deterministic=True", "train.max_iter=3", "train.checkpoint_period=0",
             "dataloader.train.num_workers=2"]


def _same_run(a, b):
    (ta, la), (tb, lb) = a, b
    weights_a, weights_b = ta.detector.state_dict(), tb.detector.state_dict()
    return la == lb and all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_deterministic_runs_are_bit_identical(tmp_path):
    first = train(tmp_path, "a", AUGMENTED)
    assert sorted(first[1]) == [0, 1, 2]
    assert not (tmp_path / "a" / "nondeterministic_ops.txt").exists()  # on the CPU every op has a deterministic kernel
    assert _same_run(first, train(tmp_path, "b", AUGMENTED))
    assert not torch.are_deterministic_algorithms_enabled(), "torch's global setting is restored after training"
    # the comparison catches a nondeterministic source: an augmentation drawing from the OS's entropy
    unseeded = AUGMENTED + ["dataloader.train.num_workers=0", "train.max_iter=2",
                            f"imports=['{os.path.join(HELPERS, 'unseeded_transform.py')}']",
                            "dataloader.train.transforms=[dict(type='ResizeShortestEdge', short_edge_length=96, "
                            "max_size=160), dict(type='UnseededBrightness')]"]
    assert not _same_run(train(tmp_path, "c", unseeded), train(tmp_path, "d", unseeded))


def test_deterministic_mode_lists_nondeterministic_ops(tmp_path, retdet_log):
    hooks = [f"imports=['{os.path.join(HELPERS, 'user_hooks.py')}']", "+train.hooks=[dict(type='RunNondeterministicOp')]",
             "train.max_iter=2", "train.checkpoint_period=0"]
    train(tmp_path, "warn", hooks + ["train.deterministic=True"])
    assert (tmp_path / "warn" / "nondeterministic_ops.txt").read_text() == "put_\n"
    assert sum("put_" in m and "deterministic implementation" in m for m in retdet_log) == 1  # listed once
    with pytest.raises(RuntimeError, match="put_ does not have a deterministic implementation"):
        train(tmp_path, "strict", hooks + ["train.deterministic='strict'"])
    assert not torch.are_deterministic_algorithms_enabled()
    train(tmp_path, "off", hooks)  # without the mode nothing is listed
    assert not (tmp_path / "off" / "nondeterministic_ops.txt").exists()


# ---- train.accumulate ---------------------------------------------------------------------------------

class FirstUpdate(HookBase):
    """Records each weight's change by the first optimizer step."""

    def before_train(self):
        self.initial = {k: v.clone() for k, v in self.trainer.detector.state_dict().items()}

    def after_step(self):
        if self.trainer.iter == 0:
            self.update = {k: v - self.initial[k] for k, v in self.trainer.detector.state_dict().items()
                           if v.dtype.is_floating_point}


def updates(tmp_path, name, overrides):
    """{iteration: total_loss} and {name: the first step's change of the weights} of a TINY run."""
    trainer = Trainer(load_config(TINY, overrides), output_dir=str(tmp_path / name))
    hook = FirstUpdate()
    hook.trainer = trainer
    trainer.hooks.append(hook)
    trainer.train()
    return losses_by_iteration(str(tmp_path / name)), hook.update


@pytest.mark.parametrize("mode", ["ema", "batch", "per_image"])
def test_accumulated_micro_batches_equal_one_large_batch(tmp_path, mode):
    # one image size: a large batch then pads exactly as its micro-batches do (GroupNorm: no batch statistics)
    common = [SAME_SIZE, "train.max_iter=3", "train.checkpoint_period=0", f"model.loss_normalizer.mode='{mode}'"]
    large_losses, large = updates(tmp_path, "large", common + ["dataloader.train.total_batch_size=4"])
    small_losses, small = updates(tmp_path, "small", common + ["dataloader.train.total_batch_size=2",
                                                               "train.accumulate=2"])
    assert sorted(large_losses) == sorted(small_losses) == [0, 1, 2]
    # 1 and 2 also check the normaliser's and the schedule's state across steps (an EMA updated per
    # micro-batch would be several percent off); their tolerance allows the roundings amplified below
    for it in large_losses:
        assert small_losses[it] == pytest.approx(large_losses[it], rel=1e-6 if it == 0 else 1e-4), f"iteration {it}"
    # The first update, within float tolerance: a convolution's gradient summed over 4 images or 2 + 2
    # rounds differently (~1e-5 of the largest element in conv1, the longest sum), and a weight near 1
    # (GroupNorm's) moves in steps of 1.2e-7. Later updates are left out: this small network amplifies
    # those roundings chaotically (1e-3 of conv1's gradient by the second step, 1e-2 by the third, in
    # "batch" mode), in either arm alike.
    for k, update in large.items():
        assert (small[k] - update).abs().max() <= 1e-4 * update.abs().max() + 2.5e-7, k
    # not a tautology: one micro-batch alone is a different update
    half_losses, half = updates(tmp_path, "half", common + ["dataloader.train.total_batch_size=2"])
    assert half_losses[0] != pytest.approx(large_losses[0], rel=1e-3)
    k = "head.cls_score.weight"
    assert (half[k] - large[k]).abs().max() > 0.05 * large[k].abs().max()


def test_accumulation_resumes_exactly(tmp_path):
    common = ["dataloader.train.total_batch_size=2", "train.accumulate=2", "train.checkpoint_period=0"]
    _, full = train(tmp_path, "full", common)
    train(tmp_path, "cut", common + ["+train.hooks=[dict(type='StopAtIteration', iteration=2)]"])
    _, resumed = train(tmp_path, "cut", common, resume=True)
    assert sorted(resumed) == list(range(6))
    assert resumed == full  # the same micro-batches, in the same order, after the resume


# ---- the validation loss --------------------------------------------------------------------------------

def test_validation_loss_sums_over_the_set(tmp_path):
    from retdet.data import build_test_loader
    from retdet.evaluation.validation_loss import validation_loss

    cfg = load_config(TINY, ["model.loss_normalizer.mode='batch'"])
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    ema_before = model.loss_normalizer.ema.clone()
    values = validation_loss(cfg, model)
    assert model.training and torch.equal(model.loss_normalizer.ema, ema_before)
    # independently: each batch's normalised training loss (eval mode) times its own foreground count
    loader, _ = build_test_loader(cfg.dataloader.test, input_format="BGR")
    model.eval()
    sums, count = {"loss_cls": 0.0, "loss_box_reg": 0.0}, 0
    with torch.no_grad():
        for batch in loader:
            losses = model.forward_training(batch)
            gt_labels, _ = model.label_anchors(torch.cat(model.dense_outputs(batch).anchors), batch)
            fg = int(((gt_labels >= 0) & (gt_labels < model.num_classes)).sum())
            for k in sums:
                sums[k] += float(losses[k]) * max(fg, 1)
            count += fg
    assert count > 100
    for k in sums:
        assert values[f"val/{k}"] == pytest.approx(sums[k] / count, rel=1e-5)
    assert values["val/total_loss"] == pytest.approx(values["val/loss_cls"] + values["val/loss_box_reg"])


def test_val_loss_period_writes_records(tmp_path):
    train(tmp_path, "run", ["train.max_iter=3", "train.checkpoint_period=0", "train.val_loss_period=2"])
    got = records(str(tmp_path / "run"), "val/total_loss")
    assert sorted(got) == [1, 2] and all(0 < v < 100 for v in got.values())  # every 2 and at the end


# ---- early stopping -------------------------------------------------------------------------------------

# min_delta huge: only the first evaluation counts as an improvement, so the stop comes after patience more
NEVER_BETTER = "train.early_stop=dict(metric='val_loss', patience={}, min_delta=1e9)"


def test_early_stop_on_val_loss_keeps_the_best(tmp_path):
    trainer, losses = train(tmp_path, "run", ["train.val_loss_period=1", "train.checkpoint_period=0",
                                              NEVER_BETTER.format(2)])
    assert sorted(losses) == [0, 1, 2]  # stopped after two evaluations without improvement
    run = tmp_path / "run"
    vals = records(str(run), "val/total_loss")
    best_iter = min(vals, key=vals.get)
    assert trainer.best.best_iter == best_iter and trainer.best.best == pytest.approx(vals[best_iter])
    assert torch.load(run / "model_best.pth", weights_only=True)["iteration"] == best_iter
    assert (run / "last_checkpoint").read_text() == "model_0000002.pth"


def test_early_stop_on_ap(tmp_path):
    _, losses = train(tmp_path, "run", ["train.eval_period=2", "train.checkpoint_period=0",
                                        "train.early_stop=dict(metric='AP50', patience=1, min_delta=1e9)"])
    assert sorted(losses) == [0, 1, 2, 3]
    assert sorted(records(str(tmp_path / "run"), "bbox/AP50")) == [1, 3]


def test_early_stop_state_survives_a_resume(tmp_path):
    common = ["train.val_loss_period=1", "train.checkpoint_period=1", NEVER_BETTER.format(2)]
    uninterrupted, losses = train(tmp_path, "full", common)
    assert sorted(losses) == [0, 1, 2]
    # cut after iteration 0 (its reference value set). With the count lost, the resumed run would find
    # an improvement at 1 and stop only after 3.
    train(tmp_path, "cut", common + ["+train.hooks=[dict(type='StopAtIteration', iteration=0)]"])
    resumed, resumed_losses = train(tmp_path, "cut", common, resume=True)
    assert resumed_losses == losses
    assert resumed.best.state_dict() == uninterrupted.best.state_dict()
    # an early-stopped run has nothing more to do
    again, _ = train(tmp_path, "cut", common, resume=True)
    assert again.iter == again.start_iter == 3


# ---- bad values: clear errors before the first step -------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("train.early_stop=dict(metric='AP', patience=0)", r"train.early_stop.patience=0 must be an integer >= 1"),
    ("train.early_stop=dict(metric='AP')", r"train.early_stop needs patience=N"),
    ("train.early_stop=dict(metric='AP', patience=2, min_delta=-1)", r"min_delta=-1 must be a number >= 0"),
    ("train.early_stop=dict(metric='mAP', patience=2)", r"metric='mAP' is not a metric .*'AP50'"),
    ("train.early_stop=dict(metric='AP', patience=2, wait=3)", r"unknown option\(s\) \['wait'\]"),
    ("train.early_stop=dict(metric='AP', patience=2)", r"set train.eval_period > 0"),
    ("train.early_stop=dict(metric='val_loss', patience=2)", r"set train.val_loss_period > 0"),
    ("train.accumulate=0", r"train.accumulate=0 must be an integer >= 1"),
    ("train.deterministic='yes'", r"train.deterministic='yes' must be False, True .* or 'strict'"),
    ("train.val_loss_period=-1", r"train.val_loss_period=-1 must be an integer >= 0"),
])
def test_bad_training_options_fail_before_the_first_step(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        Trainer(load_config(TINY, [override]), output_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run" / "metrics.json").exists()
