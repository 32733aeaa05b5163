"""Archives of the farm: packing files into a tar, cutting it into sha256-checked chunks,
reassembling them, and extracting a received archive safely.

Safe extraction (:func:`safe_extract`, re-exported from :mod:`splatforge_core.archive`, the one
extractor shared with the codec's bundles): every member is checked before anything is written
(regular files and folders only: no symbolic or hard links, devices, FIFOs; relative paths without
``..``; at most ``max_members`` members and ``max_bytes`` bytes in all), then ``tarfile``'s
``data`` filter extracts into a fresh temporary folder beside the destination, which is renamed
into place only when everything succeeded.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import Iterator

# The extractor and its caps are shared with the codec's bundles (splatforge_core.archive);
# ArchiveError (an InputError) is the refused archives' error for both.
from ..archive import MAX_BYTES, MAX_MEMBERS, ArchiveError, check_member_name, check_members, safe_extract  # noqa: F401
from .protocol import CHUNK_BYTES


def pack(root: str | Path, relpaths: list[str], out: str | Path) -> tuple[int, str]:
    """Write an uncompressed tar of ``relpaths`` (files or folders, relative to ``root``) to ``out``.

    Symbolic links are followed (their targets are stored as files). Returns (size in bytes,
    sha256 hex) of the archive.

    Raises:
        ArchiveError: a path is absolute, leaves ``root`` or does not exist.
    """
    root = Path(root)
    with tarfile.open(out, "w", dereference=True) as tar:
        for rel in relpaths:
            check_member_name(rel, where=str(out))
            src = root / rel
            if not src.exists():
                raise ArchiveError(f"{src}: file to send does not exist")
            tar.add(src, arcname=PurePosixPath(rel).as_posix())
    return os.path.getsize(out), file_sha256(out)


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def chunks(path: str | Path, size: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes, str]]:
    """(seq, bytes, sha256 hex) of consecutive pieces of a file of at most ``size`` bytes."""
    with open(path, "rb") as f:
        seq = 0
        while True:
            data = f.read(size)
            if not data and seq > 0:
                return
            yield seq, data, hashlib.sha256(data).hexdigest()
            seq += 1
            if len(data) < size:
                return


def n_chunks(nbytes: int, size: int = CHUNK_BYTES) -> int:
    """Number of pieces :func:`chunks` yields for a file of ``nbytes`` (at least 1)."""
    return max(1, -(-nbytes // size))


class Assembly:
    """An archive being received chunk by chunk into ``path`` (in order; each chunk's sha256 is
    checked by :func:`splatforge_core.farm.protocol.decode`, the whole one here)."""

    def __init__(self, path: str | Path, size: int, nchunks: int, sha256: str, max_bytes: int = MAX_BYTES):
        if size > max_bytes:
            raise ArchiveError(f"{path}: announced archive of {size} bytes over the cap of {max_bytes}")
        if nchunks != n_chunks(size):
            raise ArchiveError(f"{path}: {nchunks} chunks announced for {size} bytes (expected {n_chunks(size)})")
        self.path, self.size, self.nchunks, self.sha256 = Path(path), size, nchunks, sha256
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "wb")
        self._h = hashlib.sha256()
        self.next_seq = 0
        self.received = 0

    def add(self, seq: int, data: bytes) -> bool:
        """Append chunk ``seq``; returns True when the archive is complete and its sha256 matches.

        Raises:
            ArchiveError: out-of-order chunk, more bytes than announced, or (at the end) a
                whole-archive sha256 other than announced.
        """
        if seq != self.next_seq:
            self.close()
            raise ArchiveError(f"{self.path}: chunk {seq} arrived, {self.next_seq} expected")
        self.received += len(data)
        if self.received > self.size:
            self.close()
            raise ArchiveError(f"{self.path}: more than the announced {self.size} bytes")
        self._f.write(data)
        self._h.update(data)
        self.next_seq += 1
        if self.next_seq < self.nchunks:
            return False
        self.close()
        if self.received != self.size or self._h.hexdigest() != self.sha256:
            raise ArchiveError(f"{self.path}: archive sha256 or size differs from the announced one "
                               f"({self.received} of {self.size} bytes); refused")
        return True

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def top_files(folder: str | Path) -> list[str]:
    """Names (sorted) of the regular, non-hidden files directly in ``folder`` ([] when it is not a
    folder). A checkpoint folder is mirrored as these: sub-folders (the trainer's ``stale-*``) and
    hidden files (temporaries of an atomic save in progress) are left out; symbolic links too."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.is_file() and not p.is_symlink())
