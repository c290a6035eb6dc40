"""A researcher's own hooks, loaded by tests through --import (as a user's module would be)."""
import math
import os
import signal

import torch

from retdet.engine import HookBase
from retdet.registry import HOOKS


@HOOKS.register()
class KillAtIteration(HookBase):
    """SIGKILLs this process once iteration ``iteration`` has finished (after its checkpoint)."""

    def __init__(self, *, iteration: int) -> None:
        self.iteration = iteration

    def before_step(self) -> None:
        if self.trainer.iter == self.iteration + 1:
            os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register()
class InjectNaN(HookBase):
    """Turns the classifier's bias into NaN before iteration ``iteration``."""

    def __init__(self, *, iteration: int) -> None:
        self.iteration = iteration

    def before_step(self) -> None:
        if self.trainer.iter == self.iteration:
            from retdet.engine.trainer import unwrap

            with torch.no_grad():
                unwrap(self.trainer.model).head.cls_score.bias.fill_(math.nan)


@HOOKS.register()
class FailOnRank(HookBase):
    """Raises on worker ``rank`` at iteration ``iteration`` (the others would wait in a collective)."""

    def __init__(self, *, rank: int, iteration: int = 1) -> None:
        self.rank, self.iteration = rank, iteration

    def before_step(self) -> None:
        from retdet.utils import comm

        if comm.get_rank() == self.rank and self.trainer.iter == self.iteration:
            raise RuntimeError(f"deliberate failure on rank {self.rank}")


@HOOKS.register()
class RunNondeterministicOp(HookBase):
    """Runs ``Tensor.put_`` (torch has no deterministic CPU kernel for it) before every step."""

    def before_step(self) -> None:
        torch.zeros(4).put_(torch.tensor([1, 1]), torch.tensor([1.0, 2.0]))
