"""Rank-aware, coloured logging with a log file in the run's output folder, and tables.

Rank 0 logs INFO to the console; other ranks log only warnings and errors there, so an 8-process
run prints one stream. Every rank writes its whole log to a file: ``log.txt`` for rank 0,
``log.txt.rank{R}`` for the others (so a failure on rank 3 can be read afterwards).
"""
from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any, Iterable, Optional, Sequence

from tabulate import tabulate
from termcolor import colored

from .comm import get_rank

__all__ = ["setup_logger", "log_table", "format_table"]

_LEVEL_COLORS = {logging.WARNING: "yellow", logging.ERROR: "red", logging.CRITICAL: "red"}


class _ColorFormatter(logging.Formatter):
    """Green timestamp and name; the level word coloured for warnings and errors."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = super().formatMessage(record)
        color = _LEVEL_COLORS.get(record.levelno)
        if color is None:
            return message
        attrs = ["underline"] if record.levelno >= logging.ERROR else None
        prefix = colored(record.levelname, color, attrs=attrs, force_color=True)
        return prefix + " " + message


@functools.lru_cache(maxsize=None)  # one set of handlers per (name, output_dir, rank)
def setup_logger(
    output_dir: Optional[str] = None,
    *,
    name: str = "retdet",
    rank: Optional[int] = None,
    color: Optional[bool] = None,
    level: int = logging.INFO,
) -> logging.Logger:
    """Configure and return the logger ``name``.

    Args:
        output_dir: if given, the log file goes to ``output_dir/log.txt`` (``.rank{R}`` on other ranks).
        rank: this process's rank; default: from torch.distributed (0 when not initialised).
        color: colour the console output; default: when the console is a terminal.
    """
    rank = get_rank() if rank is None else rank
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    datefmt = "%m/%d %H:%M:%S"
    plain = logging.Formatter("[%(asctime)s %(name)s %(levelname)s]: %(message)s", datefmt=datefmt)

    console = logging.StreamHandler(stream=sys.stdout)
    console.setLevel(level if rank == 0 else logging.WARNING)
    if color is None:
        color = sys.stdout.isatty()
    if color:
        head = colored("[%(asctime)s %(name)s]: ", "green", force_color=True)
        console.setFormatter(_ColorFormatter(head + "%(message)s", datefmt=datefmt))
    else:
        console.setFormatter(plain)
    logger.addHandler(console)

    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        filename = os.path.join(output_dir, "log.txt" if rank == 0 else f"log.txt.rank{rank}")
        file_handler = logging.FileHandler(filename, mode="a", encoding="utf-8")
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(plain)
        logger.addHandler(file_handler)
    return logger


def format_table(rows: Iterable[Sequence[Any]], headers: Sequence[str], *, floatfmt: str = ".3f") -> str:
    """A GitHub-style table (tabulate) of ``rows`` under ``headers``."""
    return tabulate(list(rows), headers=list(headers), tablefmt="pipe", floatfmt=floatfmt, numalign="right")


def log_table(
    rows: Iterable[Sequence[Any]], headers: Sequence[str], *, title: str = "", logger: Optional[logging.Logger] = None
) -> str:
    """Log a table (with an optional title line) and return its text."""
    text = format_table(rows, headers)
    (logger or logging.getLogger("retdet")).info((title + "\n" if title else "") + text)
    return text
