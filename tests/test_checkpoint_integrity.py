"""Checkpoint integrity: a corrupt newest checkpoint is skipped for the newest intact one (resume and
eval-only), a corrupt file given explicitly is a clear error, and a failing write replaces nothing."""
import os
import resource
import subprocess
import sys

import pytest
import torch

from retdet.checkpoint import CorruptCheckpointError, checkpoint_problem, load_weights
from retdet.config import load_config
from retdet.engine import Trainer
from retdet.modeling import build_model

from .conftest import ROOT
from .helpers.training import TINY, losses_by_iteration, train_net


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny run: model_0000002.pth (periodic) and model_final.pth (iteration 5)."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    Trainer(load_config(TINY), output_dir=str(out)).train()
    assert sorted(f for f in os.listdir(out) if f.endswith(".pth")) == ["model_0000002.pth", "model_final.pth"]
    return out


def copy_run(src, dst):
    dst.mkdir()
    for f in os.listdir(src):
        if os.path.isfile(src / f):
            (dst / f).write_bytes((src / f).read_bytes())
    return dst


def truncate(path, keep=0.5):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * keep)])


def flip_byte(path):
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF  # same size, still a readable zip: only the checksum can tell
    open(path, "wb").write(bytes(data))


def test_each_checkpoint_has_a_matching_sha256(run_dir):
    import hashlib

    for name in ("model_0000002.pth", "model_final.pth"):
        digest, listed = (run_dir / f"{name}.sha256").read_text().split()
        assert listed == name and digest == hashlib.sha256((run_dir / name).read_bytes()).hexdigest()
        assert checkpoint_problem(str(run_dir / name)) is None


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "truncated, no checksum file"])
def test_resume_skips_a_corrupt_newest_checkpoint(run_dir, tmp_path, damage, retdet_log):
    run = copy_run(run_dir, tmp_path / "run")
    final = run / "model_final.pth"
    if damage == "flipped byte":
        flip_byte(final)
    else:
        truncate(final)
    if damage.endswith("no checksum file"):  # a checkpoint from before checksums: torch must read it whole
        os.remove(run / "model_final.pth.sha256")
    assert (run / "last_checkpoint").read_text() == "model_final.pth"
    problem = checkpoint_problem(str(final))
    assert problem and ("SHA-256" in problem or "unreadable" in problem)
    trainer = Trainer(load_config(TINY), output_dir=str(run), resume=True)
    assert trainer.start_iter == 3  # continues after model_0000002.pth
    assert any("Skipping checkpoint" in m and "model_final.pth" in m for m in retdet_log)


def test_no_intact_checkpoint_is_an_error_listing_each(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    truncate(run / "model_final.pth")
    truncate(run / "model_0000002.pth", keep=0.0)
    with pytest.raises(CorruptCheckpointError, match=r"(?s)no intact checkpoint in .*run to continue from:.*"
                       r"model_final.pth: SHA-256.*model_0000002.pth: SHA-256.*\(0 bytes now\)"):
        Trainer(load_config(TINY), output_dir=str(run), resume=True)


def test_a_corrupt_file_given_explicitly_is_a_clear_error(run_dir, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes((run_dir / "model_final.pth").read_bytes()[:1000])
    model = build_model(load_config(TINY).model)
    with pytest.raises(CorruptCheckpointError, match=r"checkpoint .*bad.pth is corrupt: unreadable"):
        load_weights(model, str(bad))


def test_eval_only_falls_back_to_the_newest_intact_checkpoint(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    truncate(run / "model_final.pth")
    out = train_net("--config", TINY, "--output-dir", str(run), "--eval-only", in_process=True)
    assert "Skipping checkpoint" in out.stdout + out.stderr
    assert f"Loaded {run / 'model_0000002.pth'}" in out.stdout + out.stderr
    assert "Evaluation on synthetic_shapes_val" in out.stdout
    # named explicitly, the corrupt file is an error that names the intact alternative
    out = train_net("--config", TINY, "--output-dir", str(run), "--eval-only", "--weights", str(run / "model_final.pth"),
                    expect_ok=False, in_process=True)
    assert out.returncode != 0 and f"CorruptCheckpointError: checkpoint {run / 'model_final.pth'} is corrupt" in out.stderr
    assert f"pass --weights {run / 'model_0000002.pth'}" in out.stderr


def _limit_file_size():
    # A file may not grow past 4 MB (a checkpoint is ~24 MB, logs stay far below): the checkpoint
    # write fails with EFBIG, as on a full disk (Python ignores SIGXFSZ, so write() reports it).
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))


@pytest.mark.slow
def test_a_failing_checkpoint_write_replaces_nothing(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    for f in ("model_final.pth", "model_final.pth.sha256"):
        os.remove(run / f)
    (run / "last_checkpoint").write_text("model_0000002.pth")
    before = {f: (run / f).read_bytes() for f in os.listdir(run) if f.startswith(("model_", "last_checkpoint"))}
    out = subprocess.run([sys.executable, "tools/train_net.py", "--config", TINY, "--output-dir", str(run), "--resume"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, preexec_fn=_limit_file_size,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode != 0
    assert "CheckpointWriteError: could not write checkpoint" in out.stderr and "model_final.pth" in out.stderr
    assert "Nothing was replaced" in out.stderr and "(" + str(run / "model_0000002.pth") + ")" in out.stderr
    after = {f: (run / f).read_bytes() for f in os.listdir(run) if f.startswith(("model_", "last_checkpoint"))}
    assert after == before  # no new, partial or temporary file; the pointer unchanged
    assert sorted(losses_by_iteration(run)) == list(range(6))  # it did train up to the failing save


def test_checkpoint_loads_with_weights_only(run_dir):
    state = torch.load(run_dir / "model_final.pth", weights_only=True)
    assert state["iteration"] == 5
