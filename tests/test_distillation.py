"""Knowledge distillation (retdet/distillation, train.distill): the losses against hand-computed
values, the teacher kept out of the optimizer and checkpoints, user losses by name, clear errors,
and an exact resume."""
import math
import os

import pytest
import torch

from retdet.checkpoint import Checkpointer
from retdet.config import load_config
from retdet.distillation import DistillInputs, FeatureImitationLoss, LogitDistillLoss
from retdet.engine import Trainer
from retdet.modeling import build_model
from retdet.modeling.retinanet import DenseOutputs

from .helpers.training import TINY, USER_COMPRESSION as USER_MODULE, USER_HOOKS, losses_by_iteration, train_net
from .test_pruning import user_module  # noqa: F401  (fixture)



def _outputs(logits, features=()):
    return DenseOutputs(features=list(features), anchors=[], logits=list(logits), deltas=[], image_sizes=[])


# ---- the losses, against hand computation ---------------------------------------------------------

def test_logit_loss_equals_soft_target_cross_entropy_by_hand():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 6, 3, generator=g) * 3, torch.randn(2, 6, 3, generator=g) * 3
    labels = torch.tensor([[0, 3, 3, -1, 2, 3], [3, 3, 1, 3, 3, 3]])  # K = 3: 3 foreground anchors
    inputs = DistillInputs(student=_outputs([s[:, :4], s[:, 4:]]), teacher=_outputs([t[:, :4], t[:, 4:]]),
                           labels=labels, num_classes=3, num_anchors=1)
    for temperature, gamma in ((1.0, 0.0), (2.0, 2.0), (0.5, 1.0)):
        loss = LogitDistillLoss(student_channels=8, teacher_channels=8, weight=0.7, temperature=temperature,
                                gamma=gamma)(inputs)
        expected = 0.0
        for x, y in zip(s.double().flatten().tolist(), t.double().flatten().tolist()):
            p = 1 / (1 + math.exp(-y / temperature))
            q = 1 / (1 + math.exp(-x / temperature))
            expected += -(p * math.log(q) + (1 - p) * math.log(1 - q)) * abs(p - q) ** gamma
        expected *= 0.7 * temperature ** 2 / 3
        assert loss.item() == pytest.approx(expected, rel=1e-5), (temperature, gamma)


def test_logit_loss_is_zero_when_the_student_agrees_and_focal_aware():
    t = torch.randn(1, 50, 4)
    labels = torch.full((1, 50), 4)
    same = DistillInputs(student=_outputs([t.clone()]), teacher=_outputs([t]), labels=labels, num_classes=4,
                         num_anchors=1)
    assert LogitDistillLoss(student_channels=1, teacher_channels=1)(same).item() == pytest.approx(0.0, abs=1e-7)


def test_feature_imitation_by_hand_and_foreground_weighting():
    torch.manual_seed(0)
    loss_fn = FeatureImitationLoss(student_channels=2, teacher_channels=3, weight=2.0, background_weight=0.25,
                                   normalize=False)
    s, t = torch.randn(1, 2, 2, 3), torch.randn(1, 3, 2, 3)
    labels = torch.tensor([[1, 1, 0, 1, 1, 1]])  # one anchor per location, K = 1: location (0, 2) is foreground
    inputs = DistillInputs(student=_outputs([], [s]), teacher=_outputs([], [t]), labels=labels, num_classes=1,
                           num_anchors=1)
    w, b = loss_fn.adapter.weight.detach().view(3, 2).double(), loss_fn.adapter.bias.detach().double()
    err = ((torch.einsum("oc,chw->ohw", w, s[0].double()) + b.view(3, 1, 1) - t[0].double()) ** 2).mean(0)
    fg = torch.zeros(2, 3, dtype=torch.bool)
    fg[0, 2] = True
    expected = 2.0 * (err[fg].mean() + 0.25 * err[~fg].mean()) / 2  # halved, one level
    assert loss_fn(inputs).item() == pytest.approx(expected.item(), rel=1e-5)
    # an adapter that reproduces the teacher exactly gives zero
    exact = FeatureImitationLoss(student_channels=3, teacher_channels=3, normalize=True)
    with torch.no_grad():
        exact.adapter.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        exact.adapter.bias.zero_()
    same = DistillInputs(student=_outputs([], [t]), teacher=_outputs([], [t * 3 + 1]), labels=labels, num_classes=1,
                         num_anchors=1)
    assert exact(same).item() == pytest.approx(0.0, abs=1e-6)  # normalised: scale and shift do not matter


# ---- training with a teacher ------------------------------------------------------------------------

WIDE = "['model.neck.out_channels=64']"  # the teacher: tiny_train with a 64-channel FPN and head


def _save_teacher(folder, *overrides):
    torch.manual_seed(123)
    model = build_model(load_config(TINY, list(overrides)).model)
    Checkpointer(model, str(folder)).save("model_final")
    return str(folder / "model_final.pth")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A wider tiny_train model with its own random weights, saved like a trained teacher."""
    return _save_teacher(tmp_path_factory.mktemp("teacher"), "model.neck.out_channels=64")


def _distill(teacher_weights, losses="[dict(type='LogitDistillLoss'), dict(type='FeatureImitationLoss')]",
             overrides=WIDE):
    return [f"+train.distill=dict(teacher_config='{TINY}', teacher_weights='{teacher_weights}', "
            f"teacher_overrides={overrides}, losses={losses})"]


def test_the_teacher_is_frozen_outside_the_optimizer_and_the_checkpoint(teacher, tmp_path):
    # the teacher's config is built with its overrides: without them its checkpoint does not fit
    with pytest.raises(ValueError, match=r"different shape"):
        Trainer(load_config(TINY, _distill(teacher, overrides="[]")), output_dir=str(tmp_path / "bad"))
    # a narrower student: the FeatureImitationLoss adapter maps 32 -> 64 channels
    cfg = load_config(TINY, ["train.max_iter=2", *_distill(teacher)])
    trainer = Trainer(cfg, output_dir=str(tmp_path / "run"))
    teacher_model = trainer.distiller.teacher
    before = {k: v.clone() for k, v in teacher_model.state_dict().items()}
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimized for p in teacher_model.parameters())
    assert all(id(p) in optimized for p in trainer.distiller.losses.parameters())  # the adapter trains
    trainer.train()
    assert not teacher_model.training
    for k, v in teacher_model.state_dict().items():
        assert torch.equal(v, before[k]), k
    ckpt = torch.load(str(tmp_path / "run" / "model_final.pth"), map_location="cpu", weights_only=True)
    student_keys = set(build_model(load_config(TINY).model).state_dict())
    assert set(ckpt["model"]) == student_keys  # a plain detector checkpoint: no teacher, no adapter
    assert any("adapter" in k for k in ckpt["distill"])


def test_a_user_registered_loss_by_name_and_the_teacher_under_amp(user_module, teacher, tmp_path):  # noqa: F811
    cfg = load_config(TINY, ["train.max_iter=2", f"imports=['{USER_MODULE}']",
                             "train.amp.enabled=True", "train.amp.dtype=bfloat16",
                             *_distill(teacher, losses="[dict(type='MeanLogitGapForTest', weight=0.5)]")])
    trainer = Trainer(cfg, output_dir=str(tmp_path / "run"))
    trainer.train()
    assert "loss_distill_MeanLogitGap" in trainer.metrics.history
    assert user_module.CALLS["teacher_dtypes"] == {torch.bfloat16}  # the teacher ran under the step's autocast


def test_a_teacher_with_other_classes_is_a_clear_error(tmp_path):
    other = _save_teacher(tmp_path, "model.head.num_classes=5")
    cfg = load_config(TINY, _distill(other, overrides="['model.head.num_classes=5']"))
    with pytest.raises(ValueError, match=r"the teacher has 5 classes and the student 4"):
        Trainer(cfg, output_dir=str(tmp_path / "run"))


def test_a_missing_teacher_checkpoint_is_named(tmp_path):
    missing = str(tmp_path / "nowhere" / "model_final.pth")
    cfg = load_config(TINY, _distill(missing))
    with pytest.raises(FileNotFoundError, match=r"train.distill.teacher_weights: checkpoint not found: .*nowhere"):
        Trainer(cfg, output_dir=str(tmp_path / "run"))


def test_unknown_distill_keys_and_losses_are_named(teacher, tmp_path):
    cfg = load_config(TINY, _distill(teacher))
    cfg.train.distill.temperature = 2.0
    with pytest.raises(ValueError, match=r"train.distill: unknown key\(s\) \['temperature'\]"):
        Trainer(cfg, output_dir=str(tmp_path / "a"))
    cfg = load_config(TINY, _distill(teacher, losses="[dict(type='LogitDistilLoss')]"))
    with pytest.raises(KeyError, match=r"Did you mean: 'LogitDistillLoss'"):
        Trainer(cfg, output_dir=str(tmp_path / "b"))


@pytest.mark.slow
def test_kill_and_resume_of_a_distillation_run_logs_the_same_losses(teacher, tmp_path):
    hooks_file = USER_HOOKS
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    distill = _distill(teacher)
    train_net("--config", TINY, "--output-dir", full, *distill, in_process=True)
    out = train_net("--config", TINY, "--output-dir", killed, "--import", hooks_file, *distill,
                    "+train.hooks=[dict(type='KillAtIteration', iteration=4)]", expect_ok=False)
    assert out.returncode == -9
    train_net("--config", TINY, "--output-dir", killed, "--resume", *distill, in_process=True)
    a, b = losses_by_iteration(full), losses_by_iteration(killed)
    assert sorted(a) == sorted(b) == list(range(6))
    for it in range(3, 6):
        assert b[it] == pytest.approx(a[it], rel=1e-6, abs=1e-7), f"iteration {it}"
    rows = [__import__("json").loads(line) for line in open(os.path.join(killed, "metrics.json"))]
    assert all("loss_distill_FeatureImitationLoss" in r for r in rows if "total_loss" in r)
