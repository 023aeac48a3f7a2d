"""Progress lines for long work (a training epoch, a finished search trial) for a person who
watches a run: one line each, `progress: <what>`, on stdout, flushed at once.

They are printed wherever the stage runs (a `digitops` command, a KFP task, a container), and
`digitops pipeline run` picks them out of each task's output by their prefix.
"""

from __future__ import annotations

import logging
import sys

PREFIX = "progress: "

_logger = logging.getLogger("digitops.progress")


def report(message: str) -> None:
    """Print one progress line."""
    if not _logger.handlers:
        handler = logging.StreamHandler(sys.stdout)  # flushes after every line
        handler.setFormatter(logging.Formatter(f"{PREFIX}%(message)s"))
        _logger.addHandler(handler)
        _logger.setLevel(logging.INFO)
        _logger.propagate = False  # the line is printed once, not again by a root handler
    _logger.info(message)


def duration(seconds: float) -> str:
    """`45 s`, `3 min 05 s`, `1 h 02 min`."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
