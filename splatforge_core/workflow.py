"""Glue between Snakemake rule scripts and the stage modules.

Rule scripts (``scripts/*.py``) stay thin: they import their stage module and call
:func:`run_stage` with it and a function that maps the ``snakemake`` object onto the module's
``main``. Decisions (defaults, which files to use) belong in the stage, not in the script.
"""

from __future__ import annotations

import logging
import sys
import time
from types import ModuleType
from typing import Any, Callable

from .errors import SplatForgeError
from .log import get_logger, setup_logging


def run_stage(smk: Any, module: ModuleType, call: Callable[[ModuleType], Any]) -> Any:
    """Run one stage from a Snakemake ``script:`` with logging to the rule's log file.

    Args:
        smk: the ``snakemake`` object Snakemake injects into rule scripts.
        module: the stage module (e.g. ``splatforge_core.ingest``), imported by the script.
        call: receives ``module`` and calls its ``main``.

    Returns:
        Whatever ``call`` returns.

    Raises:
        SystemExit: (exit status 1) on a :class:`~splatforge_core.errors.SplatForgeError`: the
            user-facing message (file, problem, remedy) goes to the rule's log and to stderr
            without a Python traceback, so the console shows what to fix, not our call stack.
            Snakemake then removes the rule's declared outputs as for any failed job.
            Other exceptions (bugs) propagate with their traceback.
    """
    logfile = smk.log[0] if len(smk.log) else None
    setup_logging(logging.INFO, logfile)
    log = get_logger("workflow")
    rule = getattr(smk, "rule", module.__name__)
    t0 = time.perf_counter()
    log.info("rule %s: start (%s)", rule, module.__name__)
    try:
        result = call(module)
    except SplatForgeError as e:
        # setup_logging sends this to stderr and to the rule's log file.
        log.error("rule %s failed after %.1f s: %s", rule, time.perf_counter() - t0, e)
        sys.exit(1)
    except Exception as e:
        log.error("rule %s failed after %.1f s: %s: %s", rule, time.perf_counter() - t0, type(e).__name__, e)
        raise
    log.info("rule %s: done in %.1f s", rule, time.perf_counter() - t0)
    return result
