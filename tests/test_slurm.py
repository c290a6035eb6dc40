"""Slurm through submitit, with its LocalExecutor standing in for a cluster: the job's tasks form the
process group from the job environment, and a preempted job saves, is requeued with --resume and
continues exactly."""
import os
import signal
import subprocess
import time

import pytest

from retdet.engine.slurm import SlurmTrainJob, job_argv
from retdet.tools.train_net import build_parser, main as train_main, run as train_run

from .helpers.training import ARGS, MAX_ITER, logged_iterations, losses_by_iteration

submitit = pytest.importorskip("submitit")

LOCAL = ["--slurm", "debug", "--slurm-cluster", "local", "--gpus-per-node", "0", "--cpus-per-task", "1",
         "--timeout", "15"]


def test_job_command_drops_the_submission_flags_and_requeues_with_resume():
    argv = ["--config", "c.py", "--slurm", "gpu", "--nodes=2", "--gpus-per-node", "8", "--timeout", "60",
            "--slurm-wait", "train.max_iter=5"]
    flags = build_parser().get_default("submission_flags")
    assert job_argv(argv, flags) == ["--config", "c.py", "train.max_iter=5"]
    again = SlurmTrainJob(job_argv(argv, flags), train_main).checkpoint()
    assert again.function.argv == ["--config", "c.py", "train.max_iter=5", "--resume"]
    assert again.function.checkpoint().function.argv.count("--resume") == 1


def test_process_group_from_the_slurm_environment(monkeypatch):
    """What each task exports for torch.distributed, from Slurm's variables (8 tasks on gpu[07-10])."""
    from submitit.helpers import TorchDistributedEnvironment

    monkeypatch.setattr(os, "environ", dict(os.environ))  # export() writes os.environ: keep it to this test
    for key, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "1234", "SLURM_NTASKS": "8", "SLURM_PROCID": "5",
                       "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[07-10]", "SLURM_JOB_NUM_NODES": "4",
                       "SLURM_NODEID": "2"}.items():
        monkeypatch.setenv(key, value)
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    assert (os.environ["MASTER_ADDR"], os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == \
        ("gpu07", "5", "8", "1")
    from retdet.engine.launch import launched_by_torchrun

    assert launched_by_torchrun()  # so train_net's launcher joins this group


@pytest.mark.slow
def test_preempted_job_is_requeued_and_continues_exactly(tmp_path, uninterrupted_runs):
    """Two tasks (gloo): SIGUSR2 (submitit's signal before the time limit) to both, as Slurm sends it,
    mid-run: both finish the step, rank 0 saves, the job is requeued with --resume and ends with the
    losses of an uninterrupted 2-process run, one metrics record per iteration."""
    run = str(tmp_path / "run")
    job = train_run([*ARGS, "--output-dir", run, *LOCAL, "--tasks-per-node", "2"])
    deadline = time.time() + 300
    while max(logged_iterations(run), default=-1) < 2:
        assert time.time() < deadline and not job.done(), "the job ended or stalled before iteration 2"
        time.sleep(0.05)
    tasks = subprocess.run(["pgrep", "-P", str(job._process.pid)], capture_output=True, text=True).stdout.split()
    assert len(tasks) == 2
    for pid in tasks:
        os.kill(int(pid), signal.SIGUSR2)
    assert job.results() == ["done", "done"]  # the requeued tasks' results
    log = open(os.path.join(run, "log.txt")).read()
    assert "Preempted (SIGUSR2)" in log and "Resum" in log
    assert sorted(logged_iterations(run)) == list(range(MAX_ITER)), "one metrics record per iteration"
    reference, resumed = uninterrupted_runs(2), losses_by_iteration(run)
    for it in range(MAX_ITER):
        assert resumed[it] == pytest.approx(reference[it], rel=1e-6, abs=1e-7), f"iteration {it}"
    submitit_log = open(os.path.join(run, "slurm", f"{job.job_id}_0_log.out")).read()
    assert "Requeued job" in submitit_log, submitit_log[-2000:]
