"""Preemption: the signals a scheduler sends before it kills a job (SIGTERM from Slurm, Kubernetes and
spot instances; SIGUSR1 from Slurm's ``--signal``) end training cleanly instead of killing it.

While :class:`PreemptionHandler` is active, such a signal only sets a flag. The trainer checks the
flag once per step (on every worker together, see ``Trainer.sync_step_flags``), finishes the step,
saves a checkpoint at that iteration and returns; ``tools/train_net.py`` then exits with
:data:`PREEMPTED_EXIT_CODE`, and ``--resume`` continues exactly from that checkpoint.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Union

logger = logging.getLogger("retdet")

# EX_TEMPFAIL of sysexits.h, "temporary failure; the user is invited to retry": a requeue script
# can tell "preempted, resume me" (75) from success (0) and failure (1, or a signal).
PREEMPTED_EXIT_CODE = 75

DEFAULT_SIGNALS = ("SIGTERM", "SIGUSR1")


def signal_numbers(names: Optional[Iterable[Union[str, int]]], *, key: str = "train.preempt_signals") -> List[int]:
    """``["SIGTERM", "USR1", 10]`` -> signal numbers; an unknown name is an error naming it."""
    numbers = []
    for name in names or ():
        try:
            if isinstance(name, int) and not isinstance(name, bool):
                sig = signal.Signals(name)
            else:
                text = str(name).upper()
                sig = signal.Signals[text if text.startswith("SIG") else "SIG" + text]
        except (KeyError, ValueError):
            raise ValueError(f"{key}: unknown signal {name!r}; use names like 'SIGTERM', 'SIGUSR1', 'SIGUSR2' "
                             f"(or [] to let signals kill the run)") from None
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(f"{key}: {sig.name} cannot be caught by any process")
        numbers.append(int(sig))
    return numbers


class PreemptionHandler:
    """A context manager: while active (in the main thread), the given signals set :attr:`received`
    instead of running their default action; the previous handlers come back on exit.

    Args:
        signals: names or numbers, e.g. ``["SIGTERM", "SIGUSR1"]``; empty turns preemption handling off.
    """

    def __init__(self, signals: Sequence[Union[str, int]] = DEFAULT_SIGNALS) -> None:
        self.signals = signal_numbers(signals)
        self.received: Optional[int] = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _on_signal(self, signum: int, frame) -> None:
        # Only set a flag: the interrupted code may hold locks (logging, the allocator, a collective).
        self.received = signum

    def __enter__(self) -> "PreemptionHandler":
        if self.signals and threading.current_thread() is not threading.main_thread():
            logger.warning("preemption signals can only be handled in the main thread: not handling %s",
                           [signal.Signals(s).name for s in self.signals])
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


@contextlib.contextmanager
def forwarding_signals(signals: Sequence[int], pids: Callable[[], Iterable[int]]) -> Iterator[None]:
    """In a launcher process: pass each of ``signals`` on to the worker processes ``pids()`` (a
    scheduler may signal only the process it started) instead of dying and orphaning them."""
    if not signals or threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, frame) -> None:
        for pid in pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

