"""The loop every foreign-checkpoint converter shares: rename each key, report it, refuse unknown ones."""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Tuple

from torch import Tensor

Report = List[Tuple[str, str]]  # (source key, retdet key or "(dropped: why)")


def rename_state(state: Mapping[str, Tensor], rename: Callable[[str], str], *, converter: str,
                 expected: str) -> Tuple[Dict[str, Tensor], Report]:
    """(renamed state, report of every source key). ``rename(key)`` gives the retdet key, a
    "(dropped: why)" note, or "" for a key it does not know, which raises naming the key and what
    checkpoint was ``expected`` (a silent drop could leave a layer at its initialisation). BN
    counters (``num_batches_tracked``; FrozenBN has none) are dropped for every converter."""
    out: Dict[str, Tensor] = {}
    report: Report = []
    for key, value in state.items():
        new = "(dropped: BN bookkeeping)" if key.endswith("num_batches_tracked") else rename(key)
        if not new:
            raise KeyError(f"{converter}: unexpected key {key!r}; is this {expected}?")
        report.append((key, new))
        if not new.startswith("(dropped"):
            out[new] = value
    return out, report
