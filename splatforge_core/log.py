"""Logging set-up shared by the CLI and the rule scripts (logging, never print)."""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "splatforge"


def get_logger(name: str | None = None) -> logging.Logger:
    """Return the project logger, or a child ``splatforge.<name>``."""
    return logging.getLogger(LOGGER_NAME if not name else f"{LOGGER_NAME}.{name}")


def setup_logging(level: int | str = logging.INFO, logfile: str | None = None) -> None:
    """Send project log records to stderr (and ``logfile`` if given) with timestamps."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    if not any(isinstance(h, logging.StreamHandler) and getattr(h, "_sf", False) for h in logger.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(fmt)
        h._sf = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    if logfile:
        fh = logging.FileHandler(logfile)
        fh.setFormatter(fmt)
        logger.addHandler(fh)
