"""Atomic file output and small JSON helpers shared by every stage.

Every output is first written to a temporary path in the destination folder and then
renamed into place (``os.replace`` is atomic on POSIX within one file system), so a crash
never leaves a half-written file that looks finished.

A write that fails because the disk is full (``ENOSPC``, or ``EDQUOT`` for a full quota)
becomes a :class:`DiskFullError` naming the output (:func:`atomic_path`,
:func:`reporting_disk_full`), never a raw ``OSError`` traceback. Temporaries that a killed
process left behind (it had no chance to remove them) are removed by the stage that owns
them when it starts again (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import SplatForgeError
from .log import get_logger

_LOG = get_logger("io")


class DiskFullError(SplatForgeError):
    """A write failed because the disk (or the user's quota) is full; the message names the path."""


def _full_oserror(exc: BaseException | None) -> OSError | None:
    """The ``ENOSPC``/``EDQUOT`` ``OSError`` of ``exc`` or of its cause/context chain, if any
    (torch's zip writer, for one, masks the ``OSError`` with a ``RuntimeError`` on exit)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is (or was raised while handling) an ``OSError`` for a full disk or quota
    (``ENOSPC``, ``EDQUOT``)."""
    return _full_oserror(exc) is not None


def disk_full_error(path: str | os.PathLike, exc: BaseException) -> DiskFullError:
    """The :class:`DiskFullError` for a failed write of ``path`` (with the free space left)."""
    folder = Path(path).parent
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    full = _full_oserror(exc)
    code = full.errno if full is not None and full.errno else errno.ENOSPC
    return DiskFullError(f"{path}: the disk is full ({os.strerror(code)}; {free} in {folder}); "
                         f"nothing was written there: free some space (or move work/ and results/ to a bigger "
                         f"disk) and rerun")


def require_free_space(path: str | os.PathLike, need_bytes: int, what: str) -> None:
    """Stop with a :class:`DiskFullError` before a native stage that cannot report a full disk.

    COLMAP (pycolmap's SIFT extraction, matching, mapping) aborts the process with a native
    stack dump when a write fails, so the SfM stages check the free space against an estimate
    of what they will write first.

    Args:
        path: the output about to be written (its folder's file system is checked).
        need_bytes: the estimated size of what will be written, bytes.
        what: what is written, for the message (e.g. ``"SIFT features of 216 images"``).

    Raises:
        DiskFullError: less than ``need_bytes`` free where ``path`` goes.
    """
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise DiskFullError(f"{path}: not enough disk space for {what}: about {need_bytes / 2**20:.0f} MiB needed, "
                            f"{free / 2**20:.0f} MiB free in {folder}; free some space (or move work/ to a bigger "
                            f"disk) and rerun")


@contextlib.contextmanager
def reporting_disk_full(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full-disk ``OSError`` raised in the block into a :class:`DiskFullError` naming ``path``.

    For stages that write big files some other way than :func:`atomic_path` (which does this
    itself). Other exceptions pass unchanged.
    """
    try:
        yield
    except Exception as e:
        if is_disk_full(e):
            raise disk_full_error(path, e) from e
        raise


def temporary_names(dest: str | os.PathLike) -> re.Pattern:
    """Regular expression matching the names of :func:`atomic_path`'s temporaries of ``dest``:
    ``.{stem}.<mkstemp letters>.tmp{suffix}`` and ``.{name}.old.<pid>`` (a replaced folder
    being deleted). The random part has no dots, so ``results/scene.ply``'s pattern does not
    match ``results/.scene.compressed.<random>.tmp.ply`` (another rule's, maybe in use)."""
    dest = Path(dest)
    return re.compile(rf"^\.{re.escape(dest.stem)}\.[A-Za-z0-9_]+\.tmp.*$|^\.{re.escape(dest.name)}\.old\.\d+$")


def remove_stale_temporaries(dests: Iterable[str | os.PathLike], patterns: Iterable[str] = (),
                             folders: Iterable[str | os.PathLike] = ()) -> list[Path]:
    r"""Delete temporaries that a killed run left beside the outputs ``dests``.

    Only names of this project's own temporary patterns directly beside each output are
    touched: :func:`temporary_names` of the output, plus ``patterns`` (extra regular
    expressions matched against names in the outputs' folders and in ``folders``, e.g. the
    checkpoint saver's ``^\.ckpt_\d+\.[A-Za-z0-9_]+\.tmp\.pt$``). Call it at the start of the
    stage that owns the outputs (never while another process may be writing them).

    Args:
        dests: the stage's output paths (files or folders).
        patterns: extra name patterns (regular expressions) of the stage's own temporaries.
        folders: more folders (besides the outputs' parents) where ``patterns`` apply.

    Returns:
        The paths removed (each logged as a warning).
    """
    removed: list[Path] = []
    extra = [re.compile(p) for p in patterns]
    places = [(Path(d).parent, temporary_names(d)) for d in dests] + [(Path(f), None) for f in folders]
    for folder, own in places:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if (own is not None and own.match(p.name)) or any(x.match(p.name) for x in extra):
                _LOG.warning("removing %s left by a killed run", p)
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` if the block succeeds.

    The temporary name keeps ``dest``'s suffix (or ``suffix``) so that libraries that pick a
    format from the extension (PIL, trimesh, plyfile) still work. On any exception the
    temporary file or folder is removed and ``dest`` is left untouched.

    Works for files and for folders (a folder replaces an existing ``dest`` folder whole).

    Raises:
        DiskFullError: the disk or quota filled up while writing (the temporary is removed,
            ``dest`` is untouched); the message names ``dest``.
    """
    dest = Path(dest)
    sfx = dest.suffix if suffix is None else suffix
    with reporting_disk_full(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=f".tmp{sfx}", dir=dest.parent)
        os.close(fd)
        os.unlink(tmp)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_dir():
            if dest.exists():
                old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
                os.replace(dest, old)
                os.replace(tmp_path, dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp_path, dest)
        elif tmp_path.exists():
            os.replace(tmp_path, dest)
        else:
            raise FileNotFoundError(f"atomic_path: nothing was written for {dest}")
    except BaseException as e:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()
        if is_disk_full(e):
            raise disk_full_error(dest, e) from e
        raise


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as UTF-8 JSON to ``path`` atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent, sort_keys=False)
            f.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; raise ``ValueError`` naming the file when it is not valid JSON."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
