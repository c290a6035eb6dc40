"""Structured pruning: smaller dense networks (tools/prune.py), and the widths record that lets a
pruned checkpoint reload into a model built from its config.

Only :mod:`.widths` is imported here: loading a pruned checkpoint needs no pruning library. The
pruner (:mod:`.pruner`) and its criteria (:mod:`.importance`) need torch-pruning (``pip install
retdet[prune]``).
"""
from .widths import WIDTHS_KEY, apply_widths, record_widths, widths_in_checkpoint

__all__ = ["WIDTHS_KEY", "apply_widths", "record_widths", "widths_in_checkpoint"]
