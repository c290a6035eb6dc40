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

import argparse
import logging
import os
import signal
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

logger = logging.getLogger("retdet")


def add_slurm_arguments(parser: argparse.ArgumentParser) -> Dict[str, bool]:
    """Add the submission flags to train_net's ``parser``; returns them (each option string, with whether
    it takes a value): what :func:`job_argv` removes from the command each task runs."""
    group = parser.add_argument_group("Slurm (submitit)")
    actions = [
        group.add_argument("--slurm", metavar="PARTITION", default=None,
                           help="submit this run to Slurm instead of running it"),
        group.add_argument("--nodes", type=int, default=1),
        group.add_argument("--gpus-per-node", type=int, default=8, help="GPUs and tasks per node (0: a CPU partition)"),
        group.add_argument("--tasks-per-node", type=int, default=None, help="default: --gpus-per-node (at least 1)"),
        group.add_argument("--cpus-per-task", type=int, default=8),
        group.add_argument("--timeout", type=int, default=4320, help="time limit in minutes (requeued when reached)"),
        group.add_argument("--slurm-folder", default=None, help="submitit's logs (default: OUTPUT_DIR/slurm)"),
        group.add_argument("--slurm-cluster", default="slurm", choices=["slurm", "local", "debug"],
                           help="submitit's executor (default: slurm; local runs the job on this machine, for tests)"),
        group.add_argument("--slurm-wait", action="store_true", help="wait for the job and show its result"),
    ]
    return option_flags(actions)


def option_flags(actions: Sequence[argparse.Action]) -> Dict[str, bool]:
    """{option string: takes a value} of argparse actions (a store_true flag takes none)."""
    return {opt: action.nargs != 0 for action in actions for opt in action.option_strings}


def require_submitit() -> Any:
    try:
        import submitit
    except ImportError as e:
        raise ImportError("--slurm needs submitit: pip install 'retdet[slurm]' (or submitit==1.5.4)") from e
    return submitit


def job_argv(argv: Sequence[str], flags: Mapping[str, bool]) -> List[str]:
    """train_net's arguments without the submission ``flags`` ({option: takes a value}): what each task runs."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        flag = arg.split("=", 1)[0]
        if flag in flags:
            skip = flags[flag] and "=" not in arg
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
    """The submitted callable: one per task. ``argv`` is train_net's command without submission flags;
    ``entry_point(argv)`` runs it (train_net's ``main``, passed in: the engine does not import the tools).
    It travels to the tasks by pickle, so it must be a module-level function."""

    def __init__(self, argv: Sequence[str], entry_point: Callable[[List[str]], Any]) -> None:
        self.argv, self.entry_point = list(argv), entry_point

    def __call__(self) -> Optional[str]:
        submitit = require_submitit()
        from retdet.engine.preemption import PREEMPTED_EXIT_CODE

        env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        print(f"retdet: Slurm task rank {env.rank}/{env.world_size} (local {env.local_rank}), process group at "
              f"{env.master_addr}:{env.master_port}", flush=True)
        try:
            self.entry_point(self.argv)
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
        return submitit.helpers.DelayedSubmission(SlurmTrainJob(argv, self.entry_point))


def submit(argv: Sequence[str], args: Any, output_dir: str, *, entry_point: Callable[[List[str]], Any],
           flags: Mapping[str, bool]) -> Any:
    """Submit ``argv`` (train_net's full command line) as a Slurm job whose tasks run ``entry_point`` on
    it without the submission ``flags``; returns the submitit job."""
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
    job = executor.submit(SlurmTrainJob(job_argv(argv, flags), entry_point))
    print(f"submitted job {job.job_id} to {args.slurm_cluster} partition {args.slurm}: {args.nodes} node(s) x "
          f"{tasks} task(s); logs in {folder}; the run's output in {output_dir}", flush=True)
    return job

