"""Logging set-up shared by the CLI and the rule scripts (logging, never print)."""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "splatforge"


def get_logger(name: str | None = None) -> logging.Logger:
    """Return the project logger, or a child ``splatforge.<name>``."""
    return logging.getLogger(LOGGER_NAME if not name else f"{LOGGER_NAME}.{name}")


class _CurrentStderrHandler(logging.StreamHandler):
    """A StreamHandler that writes to whatever ``sys.stderr`` is when a record is emitted, not to
    the object it was at set-up (pytest's capture, :func:`splatforge_core.workflow.native_stderr_to`
    swap ``sys.stderr``; a handler bound to the old object would write to a closed or wrong stream)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(level: int | str = logging.INFO, logfile: str | None = None) -> None:
    """Send project log records to stderr (and ``logfile`` if given) with timestamps."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    if not any(isinstance(h, logging.StreamHandler) and getattr(h, "_sf", False) for h in logger.handlers):
        h = _CurrentStderrHandler()
        h.setFormatter(fmt)
        h._sf = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    if logfile:
        fh = logging.FileHandler(logfile)
        fh.setFormatter(fmt)
        logger.addHandler(fh)
