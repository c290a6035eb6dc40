"""Running tools/train_net.py on Slurm through submitit (optional: ``pip install 'retdet[slurm]'``).

    python tools/train_net.py --config FILE --slurm PARTITION --nodes 2 --gpus-per-node 8 --timeout 4320

submits one task per GPU (``--tasks-per-node`` for CPU partitions). Each task reads its rank, the
world size and the first node's address from the Slurm environment (submitit's
TorchDistributedEnvironment: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK) and runs the
same train_net command, whose launcher then joins that process group (as under torchrun).

Preemption and time limits: Slurm signals the job before it stops it (SIGTERM on preemption;
submitit asks for SIGUSR2 ``signal_delay_s`` before the time limit). The trainer treats both as its
preemption signals: every task finishes its step, rank 0 saves a checkpoint there, and the tasks
leave with status 75. Rank 0 then hands over to submitit's requeue (its checkpoint() gives the same
command with --resume), and the requeued job continues exactly where the checkpoint is.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any, List, Optional, Sequence

logger = logging.getLogger("retdet")

# train_net flags that only concern the submission, with whether they take a value
SUBMISSION_FLAGS = {"--slurm": True, "--nodes": True, "--gpus-per-node": True, "--tasks-per-node": True,
                    "--cpus-per-task": True, "--timeout": True, "--slurm-folder": True, "--slurm-cluster": True,
                    "--slurm-wait": False, "--num-gpus": True}


def require_submitit() -> Any:
    try:
        import submitit
    except ImportError as e:
        raise ImportError("--slurm needs submitit: pip install 'retdet[slurm]' (or submitit==1.5.4)") from e
    return submitit


def job_argv(argv: Sequence[str]) -> List[str]:
    """train_net's arguments without the submission flags: what each task runs."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        flag = arg.split("=", 1)[0]
        if flag in SUBMISSION_FLAGS:
            skip = SUBMISSION_FLAGS[flag] and "=" not in arg
            continue
        out.append(arg)
    return out


def in_submitit_job() -> bool:
    """True inside a task that submitit started (Slurm or its local executor)."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


def requeue_signal() -> int:
    """The signal submitit uses for "checkpoint and requeue" (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return int(getattr(signal, name if name.startswith("SIG") else "SIG" + name))


class SlurmTrainJob:
    """The submitted callable: one per task. ``argv`` is train_net's command without submission flags."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)

    def __call__(self) -> Optional[str]:
        submitit = require_submitit()
        from retdet.engine.preemption import PREEMPTED_EXIT_CODE
        from retdet.tools.train_net import main

        env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        print(f"retdet: Slurm task rank {env.rank}/{env.world_size} (local {env.local_rank}), process group at "
              f"{env.master_addr}:{env.master_port}", flush=True)
        try:
            main(self.argv)
        except SystemExit as e:
            if e.code != PREEMPTED_EXIT_CODE:
                raise
            # Checkpoint saved by the trainer. submitit's own handler requeues (it is back in place now
            # that training has ended): rank 0 signals itself, the other ranks simply end.
            if env.rank == 0:
                os.kill(os.getpid(), requeue_signal())
                for _ in range(100):  # its handler runs between bytecodes and exits the process
                    time.sleep(0.1)
                raise RuntimeError("preempted, but submitit's requeue handler did not take over") from e
            return "preempted"
        return "done"

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit calls this before requeueing: the same run, resumed from its last checkpoint."""
        submitit = require_submitit()
        argv = self.argv if "--resume" in self.argv else self.argv + ["--resume"]
        return submitit.helpers.DelayedSubmission(SlurmTrainJob(argv))


def submit(argv: Sequence[str], args: Any, output_dir: str) -> Any:
    """Submit ``argv`` (train_net's full command line) as a Slurm job; returns the submitit job."""
    submitit = require_submitit()
    folder = args.slurm_folder or os.path.join(output_dir, "slurm")
    # Each requeue after a time limit resumes from a checkpoint, so a long schedule may take many jobs
    # (submitit's default allows 3).
    executor = submitit.AutoExecutor(folder=folder, cluster=args.slurm_cluster, slurm_max_num_timeout=100)
    tasks = args.tasks_per_node or max(args.gpus_per_node, 1)
    executor.update_parameters(
        name=os.path.basename(os.path.normpath(output_dir)) or "retdet", nodes=args.nodes, tasks_per_node=tasks,
        gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task, timeout_min=args.timeout,
        slurm_partition=args.slurm, slurm_signal_delay_s=120,
    )
    job = executor.submit(SlurmTrainJob(job_argv(argv)))
    print(f"submitted job {job.job_id} to {args.slurm_cluster} partition {args.slurm}: {args.nodes} node(s) x "
          f"{tasks} task(s); logs in {folder}; the run's output in {output_dir}", flush=True)
    return job

