"""Glue between Snakemake rule scripts and the stage modules.

Rule scripts (``scripts/*.py``) stay thin: they import their stage module and call
:func:`run_stage` with it and a function that maps the ``snakemake`` object onto the module's
``main``. Decisions (defaults, which files to use) belong in the stage, not in the script.
"""

from __future__ import annotations

import logging
import os
import time
from types import ModuleType
from typing import Any, Callable

from .errors import SplatForgeError
from .io import remove_stale_temporaries
from .log import get_logger, setup_logging

#: The only folders (relative to the workflow's working directory) a rule may write in.
OUTPUT_ROOTS = ("work", "results")


def check_output_paths(paths: Any, workdir: str | os.PathLike | None = None) -> None:
    """Refuse output paths outside ``work/`` and ``results/`` of the working directory.

    The check is lexical (``..`` and absolute paths are resolved by ``os.path.normpath``, not
    by following symlinks, so a ``work/`` that is itself a link to another disk still works).

    Args:
        paths: output and log paths of a rule (strings or path-likes).
        workdir: the workflow's working directory (default: the current one).

    Raises:
        SplatForgeError: a path outside those folders; nothing has been written then.
    """
    base = os.path.abspath(workdir or os.getcwd())
    roots = [os.path.join(base, r) for r in OUTPUT_ROOTS]
    for p in paths:
        full = os.path.normpath(os.path.join(base, os.fspath(p)))
        if not any(full.startswith(r + os.sep) for r in roots):
            raise SplatForgeError(f"{p}: refusing to write outside {' and '.join(r + '/' for r in roots)} "
                                  f"(resolves to {full}); check the scene name and the configured paths")


def run_stage(smk: Any, module: ModuleType, call: Callable[[ModuleType], Any]) -> Any:
    """Run one stage from a Snakemake ``script:`` with logging to the rule's log file.

    Args:
        smk: the ``snakemake`` object Snakemake injects into rule scripts.
        module: the stage module (e.g. ``splatforge_core.ingest``), imported by the script.
        call: receives ``module`` and calls its ``main``.

    Raises:
        SplatForgeError: an output or log path outside ``work/`` and ``results/``
            (:func:`check_output_paths`), before anything is written.

    Returns:
        Whatever ``call`` returns. Exceptions propagate (the rule fails, Snakemake removes
        its declared outputs); they are logged first, with the stage name and wall time.
    """
    check_output_paths([*smk.output, *smk.log])
    remove_stale_temporaries(smk.output)  # of a killed earlier run of this rule (issue #18)
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
