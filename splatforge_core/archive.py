"""Safe extraction of tar archives from outside (farm result/input archives, codec bundles).

One extractor for every archive this project opens (:func:`safe_extract`): every member is
checked before anything is written (regular files and folders only: no symbolic or hard links,
devices, FIFOs; relative paths without ``..``; at most ``max_members`` members and ``max_bytes``
bytes in all), then ``tarfile``'s ``data`` filter (PEP 706, Python >= 3.11.4) extracts into a
fresh temporary folder beside the destination, which is renamed into place only when everything
succeeded. A failure leaves nothing at the destination. Used by :mod:`splatforge_core.farm.archive`
(uncompressed tars) and :mod:`splatforge_core.codec.bundle` (``.tar`` and ``.tar.gz``).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from .errors import InputError
from .io import disk_full_error, is_disk_full

#: Default extraction caps (a farm result of one training job is a PLY of some 100 MB plus logs).
MAX_MEMBERS = 200_000
MAX_BYTES = 64 << 30


class ArchiveError(InputError):
    """An archive that is refused (unreadable, an unsafe member, over a cap); the message names
    the archive and the member."""


def check_member_name(name: str, where: str) -> None:
    """Refuse an archive member name that is absolute, empty or contains ``..``.

    Raises:
        ArchiveError: naming ``where`` and the member.
    """
    p = PurePosixPath(name)
    if not name or p.is_absolute() or name.startswith(("/", "\\")) or ".." in p.parts or "\\" in name or "\0" in name:
        raise ArchiveError(f"{where}: unsafe member name {name[:200]!r} (absolute or '..'); archive refused")


def check_members(tar: tarfile.TarFile, where: str, max_members: int, max_bytes: int) -> list[tarfile.TarInfo]:
    """All members of ``tar`` after the safety checks (see the module docstring).

    Raises:
        ArchiveError: the first unsafe member, or the member count or total size over a cap.
    """
    members, total = [], 0
    for m in tar:
        if len(members) >= max_members:
            raise ArchiveError(f"{where}: more than {max_members} members; archive refused (tar bomb?)")
        check_member_name(m.name, where)
        if not (m.isfile() or m.isdir()):
            kind = "link" if (m.issym() or m.islnk()) else "device or special file"
            raise ArchiveError(f"{where}: member {m.name[:200]!r} is a {kind}; archive refused")
        total += m.size
        if total > max_bytes:
            raise ArchiveError(f"{where}: members total more than {max_bytes} bytes (at member {m.name[:200]!r}); "
                               "archive refused (tar bomb?)")
        members.append(m)
    return members


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, max_members: int = MAX_MEMBERS,
                 max_bytes: int = MAX_BYTES, mode: str = "r:") -> list[str]:
    """Extract ``archive`` into the new folder ``dest`` (which must not exist); returns the
    member names (files only, POSIX, sorted).

    Args:
        archive: the tar file.
        dest: the folder to create (its parent is created if needed).
        max_members: cap on the number of members.
        max_bytes: cap on the members' total (unpacked) size in bytes.
        mode: ``tarfile.open`` read mode: ``"r:"`` (uncompressed, the farm's), ``"r:gz"``, ``"r:*"``.

    Raises:
        ArchiveError: ``dest`` exists, the archive is unreadable or truncated (a tar or gzip
            error), or a member fails a check; nothing is left at ``dest`` then (the temporary
            folder is removed).
        DiskFullError: the disk filled up during extraction.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise ArchiveError(f"{dest}: extraction folder already exists; refusing to extract {archive} over it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        try:
            with tarfile.open(archive, mode) as tar:
                members = check_members(tar, str(archive), max_members, max_bytes)
                tar.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, EOFError, zlib.error) as e:
            raise ArchiveError(f"{archive}: not a readable tar archive ({e}); refused") from None
        except OSError as e:  # gzip.BadGzipFile, a read error, or a full disk
            if is_disk_full(e):
                raise disk_full_error(dest, e) from e
            raise ArchiveError(f"{archive}: not a readable tar archive ({e}); refused") from None
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(m.name for m in members if m.isfile())
