"""Glue between Snakemake rule scripts and the stage modules.

Rule scripts (``scripts/*.py``) stay thin: they import their stage module and call
:func:`run_stage` with it and a function that maps the ``snakemake`` object onto the module's
``main``. Decisions (defaults, which files to use) belong in the stage, not in the script.
"""

from __future__ import annotations

import logging
import time
from types import ModuleType
from typing import Any, Callable

from .log import get_logger, setup_logging


def run_stage(smk: Any, module: ModuleType, call: Callable[[ModuleType], Any]) -> Any:
    """Run one stage from a Snakemake ``script:`` with logging to the rule's log file.

    Args:
        smk: the ``snakemake`` object Snakemake injects into rule scripts.
        module: the stage module (e.g. ``splatforge_core.ingest``), imported by the script.
        call: receives ``module`` and calls its ``main``.

    Returns:
        Whatever ``call`` returns. Exceptions propagate (the rule fails, Snakemake removes
        its declared outputs); they are logged first, with the stage name and wall time.
    """
    logfile = smk.log[0] if len(smk.log) else None
    setup_logging(logging.INFO, logfile)
    log = get_logger("workflow")
    rule = getattr(smk, "rule", module.__name__)
    t0 = time.perf_counter()
    log.info("rule %s: start (%s)", rule, module.__name__)
    try:
        result = call(module)
    except Exception as e:
        log.error("rule %s failed after %.1f s: %s: %s", rule, time.perf_counter() - t0, type(e).__name__, e)
        raise
    log.info("rule %s: done in %.1f s", rule, time.perf_counter() - t0)
    return result
