"""Atomic file output and small JSON helpers shared by every stage.

Every output is first written to a temporary path in the destination folder and then
renamed into place (``os.replace`` is atomic on POSIX within one file system), so a crash
never leaves a half-written file that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` if the block succeeds.

    The temporary name keeps ``dest``'s suffix (or ``suffix``) so that libraries that pick a
    format from the extension (PIL, trimesh, plyfile) still work. On any exception the
    temporary file or folder is removed and ``dest`` is left untouched.

    Works for files and for folders (a folder replaces an existing ``dest`` folder whole).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sfx = dest.suffix if suffix is None else suffix
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
    except BaseException:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()
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
