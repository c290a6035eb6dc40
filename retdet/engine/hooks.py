"""Training hooks: called around every iteration. Register your own in retdet.registry.HOOKS and
list them in ``train.hooks`` (e.g. ``[dict(type="MyHook", every=100)]``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from retdet.registry import HOOKS

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer


class HookBase:
    """Override any of these. ``self.trainer`` is set before ``before_train``; ``trainer.iter`` is
    the current iteration (0-based)."""

    trainer: "Trainer"

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass


@HOOKS.register()
class StopAtIteration(HookBase):
    """Ends training after iteration ``iteration`` (a shorter run of the same schedule)."""

    def __init__(self, *, iteration: int) -> None:
        self.iteration = iteration

    def after_step(self) -> None:
        if self.trainer.iter >= self.iteration:
            self.trainer.stop_requested = True
