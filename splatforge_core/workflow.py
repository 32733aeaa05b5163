"""Glue between Snakemake rule scripts and the stage modules.

Rule scripts (``scripts/*.py``) stay thin: they import their stage module and call
:func:`run_stage` with it and a function that maps the ``snakemake`` object onto the module's
``main``. Decisions (defaults, which files to use) belong in the stage, not in the script.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Sequence

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


@contextlib.contextmanager
def native_stderr_to(logfile: str | os.PathLike) -> Iterator[None]:
    """Send what native libraries write to file descriptor 2 into ``logfile`` for the duration.

    COLMAP (through pycolmap) logs with glog straight to fd 2: on the demo it was 1,617 of the
    console's 2,008 lines. Inside this context fd 2 is the rule's log file (appended to, so it
    interleaves with the Python log records written there), while Python's ``sys.stderr``, and
    with it our logger's console handler, tracebacks and progress bars, stays on the console.
    Child processes inherit fd 2 and log to the file as well.

    Args:
        logfile: the rule's log file (created if missing).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    console = os.fdopen(saved, "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                        errors="backslashreplace")
    fd = os.open(os.fspath(logfile), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    previous, sys.stderr = sys.stderr, console
    try:
        yield
    finally:
        console.flush()
        sys.stderr = previous
        os.dup2(saved, 2)
        console.close()


def run_stage(smk: Any, module: ModuleType, call: Callable[[ModuleType], Any]) -> Any:
    """Run one stage from a Snakemake ``script:`` with logging to the rule's log file.

    The console gets our log records (stage start/finish, warnings, errors) and progress bars;
    native libraries' output (COLMAP's glog) goes only to the log file (:func:`native_stderr_to`).

    Args:
        smk: the ``snakemake`` object Snakemake injects into rule scripts.
        module: the stage module (e.g. ``splatforge_core.ingest``), imported by the script.
        call: receives ``module`` and calls its ``main``.

    Returns:
        Whatever ``call`` returns.

    Raises:
        SystemExit: (exit status 1) on an output or log path outside ``work/`` and ``results/``
            (:func:`check_output_paths`, before anything is written) and on a
            :class:`~splatforge_core.errors.SplatForgeError` of the stage: the
            user-facing message (file, problem, remedy) goes to the rule's log and to stderr
            without a Python traceback, so the console shows what to fix, not our call stack.
            Snakemake then removes the rule's declared outputs as for any failed job.
            Other exceptions (bugs) propagate with their traceback.
    """
    try:
        check_output_paths([*smk.output, *smk.log])
    except SplatForgeError as e:  # no log file yet: it may be the path refused
        setup_logging(logging.INFO)
        get_logger("workflow").error("rule %s refused: %s", getattr(smk, "rule", module.__name__), e)
        sys.exit(1)
    remove_stale_temporaries(smk.output)  # of a killed earlier run of this rule (issue #18)
    logfile = smk.log[0] if len(smk.log) else None
    with native_stderr_to(logfile) if logfile else contextlib.nullcontext():
        return _run_logged(smk, module, call, logfile)


def _run_logged(smk: Any, module: ModuleType, call: Callable[[ModuleType], Any], logfile: str | None) -> Any:
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
        if logfile:  # a bug: its traceback goes to the log file (fd 2 here) and, re-raised, to the console
            os.write(2, traceback.format_exc().encode("utf-8", "backslashreplace"))
        raise
    log.info("rule %s: done in %.1f s", rule, time.perf_counter() - t0)
    return result


#: Markdown image links, ``![caption](file.png)``: the figures a report.md points at.
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def missing_deliverables(paths: Sequence[str | os.PathLike]) -> list[str]:
    """The deliverables among ``paths`` that are missing or incomplete.

    A file is missing when it does not exist; a folder when it is incomplete: the run report
    without ``report.md`` or one of the figures that ``report.md`` links to, the viewer page
    without ``index.html``, its splat or its two scripts.

    Args:
        paths: deliverable files and folders of one scene (``results/{scene}_mesh.glb``, ...).

    Returns:
        The missing ones, as given, in order.
    """
    missing = []
    for p in map(Path, paths):
        if p.name.endswith("_report"):
            md = p / "report.md"
            ok = md.is_file() and all((p / f).is_file() for f in _MD_IMAGE.findall(md.read_text(errors="replace"))
                                      if "://" not in f)
        elif p.name.endswith("_viewer"):  # the viewer page folder (splatforge_core.viewer)
            ok = all((p / f).is_file() for f in ("index.html", "scene.splat", "lib/gaussian-splats-3d.module.js",
                                                 "lib/three.module.min.js"))
        else:
            ok = p.is_file()
        if not ok:
            missing.append(str(p))
    return missing


def heal_published(canonical: str | os.PathLike, deliverables: Sequence[str | os.PathLike]) -> list[str]:
    """Make a rerun restore deleted deliverables of a finished scene.

    ``results/{scene}.ply`` is published last, once every other deliverable exists. Snakemake
    does not rerun a job whose output exists only because one of its inputs was deleted (it
    treats missing inputs of an up-to-date output like removed temporary files), so deleting
    ``results/scene_mesh.glb`` and re-running ``snakemake results/scene.ply`` would say "Nothing to
    be done". When a deliverable is missing, this sets the canonical file's mtime to the epoch:
    its inputs are then newer, the publish job reruns, and Snakemake first re-makes the missing
    inputs. An incomplete folder deliverable (the run report with a figure deleted) still exists,
    so it is marked stale the same way (its ``.snakemake_timestamp``, the file Snakemake reads a
    folder output's mtime from, and the folder itself) to make its rule run again. Nothing is
    deleted; the files are replaced only when their rules run.

    Args:
        canonical: ``results/{scene}.ply``; nothing happens when it does not exist.
        deliverables: the scene's other outputs under ``results/`` (see :func:`missing_deliverables`).

    Returns:
        The missing deliverables (empty when the scene is complete or not published yet).
    """
    canonical = Path(canonical)
    if not canonical.is_file():
        return []
    missing = missing_deliverables(deliverables)
    if missing:
        get_logger("workflow").warning("%s: %d deliverable(s) missing (%s): publishing again to restore them",
                                       canonical, len(missing), ", ".join(missing))
        for p in [canonical, *(Path(m) for m in missing if Path(m).is_dir())]:
            for q in (p / ".snakemake_timestamp", p):
                if q.exists():
                    os.utime(q, (0, 0))
    return missing
