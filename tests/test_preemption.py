"""Preemption: a real SIGTERM/SIGUSR1 sent to a real training process (one process, and the launcher of
two gloo workers) makes it finish the step, save a checkpoint at that iteration and exit with status
75; --resume then logs the same losses as an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time

import pytest

from retdet.checkpoint import checkpoint_problem
from retdet.engine.preemption import PREEMPTED_EXIT_CODE, PreemptionHandler, signal_numbers

from .conftest import ROOT
from .helpers.training import ARGS, MAX_ITER, TINY, logged_iterations, losses_by_iteration, train_net


def train_until_signalled(output_dir, sig, *extra, after_iteration=2, timeout=300):
    """Start a training run, send ``sig`` to its process once it has logged ``after_iteration``."""
    log = open(os.path.join(os.path.dirname(output_dir), os.path.basename(output_dir) + ".out"), "w+")
    proc = subprocess.Popen([sys.executable, "tools/train_net.py", *ARGS, "--output-dir", output_dir, *extra], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    deadline = time.time() + timeout
    while max(logged_iterations(output_dir), default=-1) < after_iteration:
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            log.seek(0)
            pytest.fail(f"training ended or stalled before iteration {after_iteration}:\n{log.read()[-3000:]}")
        time.sleep(0.02)
    os.kill(proc.pid, sig)
    returncode = proc.wait(timeout=timeout)
    log.seek(0)
    return returncode, log.read()


def check_preempted_then_resume(tmp_path, sig, reference, *extra):
    run = str(tmp_path / "run")
    returncode, output = train_until_signalled(run, sig, *extra)
    assert returncode == PREEMPTED_EXIT_CODE, output[-3000:]
    assert f"Preempted ({signal.Signals(sig).name})" in output
    name = open(os.path.join(run, "last_checkpoint")).read()
    stopped_at = int(name[len("model_"):-len(".pth")])
    assert 2 <= stopped_at < MAX_ITER - 1, name  # stopped early, after the step it was in
    assert checkpoint_problem(os.path.join(run, name)) is None
    assert sorted(logged_iterations(run)) == list(range(stopped_at + 1))
    train_net(*ARGS, "--output-dir", run, "--resume", *extra, in_process=not extra)  # 2 workers: spawned
    iterations = logged_iterations(run)
    assert sorted(iterations) == list(range(MAX_ITER)), "one metrics record per iteration"
    resumed = losses_by_iteration(run)
    for it in range(MAX_ITER):
        assert resumed[it] == pytest.approx(reference[it], rel=1e-6, abs=1e-7), f"iteration {it}"
    return stopped_at


@pytest.mark.slow
def test_sigterm_saves_and_resume_continues_exactly(tmp_path, uninterrupted_runs):
    check_preempted_then_resume(tmp_path, signal.SIGTERM, uninterrupted_runs(1))


@pytest.mark.slow
def test_sigusr1_to_the_launcher_of_two_workers(tmp_path, uninterrupted_runs):
    """The signal goes to the launcher only (as `kill PID` or Kubernetes would send it): it passes it
    on, both workers stop after the same step, and a 2-worker resume matches an uninterrupted 2-worker run."""
    check_preempted_then_resume(tmp_path, signal.SIGUSR1, uninterrupted_runs(2), "--num-gpus", "2")


def test_signal_names_and_handler():
    assert signal_numbers(["SIGTERM", "usr1", int(signal.SIGUSR2)]) == [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2]
    with pytest.raises(ValueError, match=r"train.preempt_signals: unknown signal 'SIGFOO'"):
        signal_numbers(["SIGFOO"])
    with pytest.raises(ValueError, match="SIGKILL cannot be caught"):
        signal_numbers(["SIGKILL"])
    before = signal.getsignal(signal.SIGUSR2)
    with PreemptionHandler(["SIGUSR2"]) as handler:
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.01)
        assert handler.requested and handler.received == signal.SIGUSR2
    assert signal.getsignal(signal.SIGUSR2) == before  # restored


def test_unknown_signal_in_config_fails_before_any_work(tmp_path):
    out = train_net("--config", TINY, "--output-dir", str(tmp_path / "run"), "train.preempt_signals=['SIGTREM']",
                    expect_ok=False, in_process=True)
    assert out.returncode != 0 and "unknown signal 'SIGTREM'" in out.stderr
    assert not (tmp_path / "run").exists()
