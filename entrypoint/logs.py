"""podvisor's own log lines, at PODVISOR_LOG_LEVEL: every daemon and command sets its logging up here, with
the line format its output is read in (the container log prefixes each program's lines with its name)."""
from __future__ import annotations

import logging
import sys
from typing import TextIO

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def configure(level: str, fmt: str = "%(message)s", stream: TextIO = sys.stdout, datefmt: str | None = None) -> None:
    """Log at `level` (PODVISOR_LOG_LEVEL's words) in `fmt`; a second call (`start`, once the level is parsed)
    sets the level again."""
    logging.basicConfig(level=LEVELS[level], format=fmt, stream=stream, datefmt=datefmt)
    logging.getLogger().setLevel(LEVELS[level])
