"""Glue between Snakemake rule scripts and the stage modules.

Rule scripts (``scripts/*.py``) stay thin: they call :func:`run_stage` with the stage module's
name and a function that maps the ``snakemake`` object onto the module's ``main``.
"""

from __future__ import annotations

import importlib
import logging
import time
from types import ModuleType
from typing import Any, Callable

from .errors import NotImplementedStageError
from .log import get_logger, setup_logging


def import_stage(module_name: str) -> ModuleType:
    """Import a stage module; raise :class:`NotImplementedStageError` if it has not landed.

    Raises:
        NotImplementedStageError: the module does not exist yet (an honest "not implemented
            yet" instead of a placeholder output).
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (e.name == module_name or module_name.startswith(e.name + ".")):
            raise NotImplementedStageError(
                f"stage {module_name!r} is not implemented yet: no outputs were written"
            ) from e
        raise


def run_stage(smk: Any, module_name: str, call: Callable[[ModuleType], Any]) -> Any:
    """Run one stage from a Snakemake ``script:`` with logging to the rule's log file.

    Args:
        smk: the ``snakemake`` object Snakemake injects into rule scripts.
        module_name: dotted name of the stage module (e.g. ``"splatforge_core.ingest"``).
        call: receives the imported module and calls its ``main``.

    Returns:
        Whatever ``call`` returns. Exceptions propagate (the rule fails, Snakemake removes
        its declared outputs); they are logged first, with the stage name and wall time.
    """
    logfile = smk.log[0] if len(smk.log) else None
    setup_logging(logging.INFO, logfile)
    log = get_logger("workflow")
    rule = getattr(smk, "rule", module_name)
    t0 = time.perf_counter()
    log.info("rule %s: start (%s)", rule, module_name)
    try:
        module = import_stage(module_name)
        result = call(module)
    except Exception as e:
        log.error("rule %s failed after %.1f s: %s: %s", rule, time.perf_counter() - t0, type(e).__name__, e)
        raise
    log.info("rule %s: done in %.1f s", rule, time.perf_counter() - t0)
    return result
