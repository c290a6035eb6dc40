"""Starting worker processes: N per machine (NCCL on GPUs, gloo on CPU), several machines, or torchrun.

A worker that raises stops the run: the launcher terminates the other workers and re-raises with the
failed worker's traceback, instead of leaving them blocked in a collective.
"""
from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .preemption import forwarding_signals

logger = logging.getLogger("retdet")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def launch(main: Callable[..., Any], num_processes: int, *, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str = "auto", args: Sequence[Any] = (), timeout_minutes: int = 30,
           forward_signals: Sequence[int] = ()) -> None:
    """Run ``main(*args)`` in every worker.

    Under torchrun the process group comes from its environment. Otherwise, with one worker in
    total, ``main`` runs in this process; with more, ``num_processes`` workers are spawned here and
    join the others (``num_machines`` x ``num_processes`` in total) at ``dist_url``. The spawning
    process passes ``forward_signals`` on to its workers (the preemption signals), and a worker's
    ``SystemExit(code)`` becomes this process's exit status.
    """
    if launched_by_torchrun():
        _share_cpu_threads(int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        _init(dist_url="env://", world_size=int(os.environ["WORLD_SIZE"]), rank=int(os.environ["RANK"]),
              local_rank=int(os.environ["LOCAL_RANK"]), timeout_minutes=timeout_minutes)
        try:
            main(*args)
        finally:
            dist.destroy_process_group()
        return
    world_size = num_processes * num_machines
    if world_size == 1:
        main(*args)
        return
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url auto only works on one machine; give tcp://HOST:PORT of machine 0")
        dist_url = f"tcp://127.0.0.1:{_free_port()}"
    if torch.cuda.is_available() and num_processes > torch.cuda.device_count():
        raise ValueError(f"--num-gpus {num_processes} but only {torch.cuda.device_count()} GPUs are visible")
    context = mp.start_processes(_worker, nprocs=num_processes, join=False, start_method="spawn",
                                 args=(main, world_size, num_processes, machine_rank, dist_url, args, timeout_minutes))
    try:
        with forwarding_signals(forward_signals, lambda: [p.pid for p in context.processes if p.is_alive()]):
            while not context.join():
                pass
    except mp.ProcessExitedException as e:
        if e.exit_code is not None and e.exit_code > 0:  # sys.exit(code) in a worker, e.g. preempted
            logger.error("%s", e)
            raise SystemExit(e.exit_code) from None
        raise


def _init(*, dist_url: str, world_size: int, rank: int, local_rank: int, timeout_minutes: int) -> None:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group(_backend(), init_method=dist_url, world_size=world_size, rank=rank,
                            timeout=timedelta(minutes=timeout_minutes))
    dist.barrier()


def _share_cpu_threads(per_machine: int) -> None:
    """CPU workers share the machine's cores: each taking all of them (torch's default) makes the
    workers' thread pools fight over them, several times slower than splitting them."""
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // max(per_machine, 1)))


def _worker(local_rank: int, main, world_size: int, per_machine: int, machine_rank: int, dist_url: str, args,
            timeout_minutes: int) -> None:
    _share_cpu_threads(per_machine)
    _init(dist_url=dist_url, world_size=world_size, rank=machine_rank * per_machine + local_rank,
          local_rank=local_rank, timeout_minutes=timeout_minutes)
    try:
        main(*args)
    finally:
        dist.destroy_process_group()
