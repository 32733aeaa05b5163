"""The ``.sfz`` container used by the non-PLY tiers (``lossless-zstd``, ``quantised``).

Layout (all integers little-endian)::

    offset 0   8 bytes  magic  b"SFSPLAT\\x00"
    offset 8   u32      container version (1)
    offset 12  u32      J = length of the JSON header in bytes
    offset 16  J bytes  JSON header (UTF-8), see below
    16 + J     ...      data blocks, concatenated; block i occupies
                        [16 + J + blocks[i].offset, ... + blocks[i].size)

The JSON header always has ``codec`` (tier name), ``codec_version`` and ``blocks``
(a list of ``{"offset", "size", "raw_size"}``; every block is one zstd frame with
content checksum, RFC 8878); the rest is the tier's own metadata (documented in
:mod:`.entropy` and :mod:`.quantised`). Blocks are compressed with the ``zstandard``
library, several at a time in threads (zstd releases the GIL).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import zstandard

from ..errors import InputError

MAGIC = b"SFSPLAT\x00"
VERSION = 1
_PRE = struct.Struct("<8sII")


def is_container(path: str | os.PathLike) -> bool:
    """True when the file starts with the ``.sfz`` magic bytes."""
    with open(path, "rb") as f:
        return f.read(8) == MAGIC


def container_codec(path: str | os.PathLike) -> str | None:
    """The ``codec`` named in a container's JSON header (reads only the header)."""
    return read_container_meta(path).get("codec")


def read_container_meta(path: str | os.PathLike) -> dict:
    """A container's JSON metadata, without touching its data blocks."""
    with open(path, "rb") as f:
        pre = f.read(_PRE.size)
        if len(pre) < _PRE.size or pre[:8] != MAGIC:
            raise InputError(f"{path}: not a splatforge .sfz container (bad magic bytes)")
        _, _, jlen = _PRE.unpack(pre)
        try:
            meta = json.loads(f.read(jlen).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path}: container JSON header is damaged ({e})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: container JSON header is not an object")
    return meta


def _threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def write_container(
    path: str | os.PathLike,
    meta: dict,
    blocks: Iterable[bytes | memoryview | Callable[[], bytes | memoryview]],
    level: int = 3,
) -> int:
    """Compress ``blocks`` with zstd ``level`` and write the container to ``path``.

    ``blocks`` items are bytes-like or zero-argument callables returning bytes-like (run
    in the worker threads, so per-block preparation such as byte-plane shuffling runs in
    parallel too). ``meta`` must hold ``codec``; ``blocks`` is filled in here. Returns
    the file size in bytes. Writes ``path`` directly (callers wrap it in
    :func:`..io.atomic_path`).
    """
    blocks = list(blocks)

    def comp(b) -> tuple[int, bytes]:
        raw = b() if callable(b) else b
        return memoryview(raw).nbytes, zstandard.ZstdCompressor(level=level, write_checksum=True).compress(raw)

    with ThreadPoolExecutor(_threads()) as ex:
        packed = list(ex.map(comp, blocks))
    table, off = [], 0
    for raw_size, c in packed:
        table.append({"offset": off, "size": len(c), "raw_size": raw_size})
        off += len(c)
    meta = dict(meta, blocks=table)
    js = json.dumps(meta, separators=(",", ":"), allow_nan=False).encode("utf-8")
    with open(path, "wb") as f:
        f.write(_PRE.pack(MAGIC, VERSION, len(js)))
        f.write(js)
        for _, c in packed:
            f.write(c)
    return _PRE.size + len(js) + off


def read_container(
    path: str | os.PathLike, into: Callable[[dict, int], memoryview | None] | None = None
) -> tuple[dict, list]:
    """Read a container: returns ``(JSON metadata, decompressed blocks)``.

    ``into(meta, i)`` may return a writable buffer of block ``i``'s ``raw_size`` bytes; the
    block is then decompressed straight into it (no intermediate copy) and the list holds
    that buffer. The file is memory-mapped, not read into fresh memory.
    Raises :class:`InputError` naming the file when it is not a container, has an
    unsupported version, is truncated or a block fails its checksum.
    """
    path = Path(path)
    size = path.stat().st_size
    if size < _PRE.size:
        raise InputError(f"{path}: not a splatforge .sfz container (too short)")
    with open(path, "rb") as f:
        data = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    if bytes(data[:8]) != MAGIC:
        raise InputError(f"{path}: not a splatforge .sfz container (bad magic bytes)")
    _, ver, jlen = _PRE.unpack_from(data)
    if ver != VERSION:
        raise InputError(f"{path}: container version {ver} not supported (this reader: {VERSION})")
    base = _PRE.size + jlen
    if base > len(data):
        raise InputError(f"{path}: truncated container header")
    try:
        meta = json.loads(bytes(data[_PRE.size:base]).decode("utf-8"))
        table = meta["blocks"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{path}: container JSON header is damaged ({e})") from None
    end = base + (table[-1]["offset"] + table[-1]["size"] if table else 0)
    if end != len(data):
        raise InputError(f"{path}: container size does not match its block table (truncated or padded)")

    # destinations are asked for in this thread, in block order (callers may allocate lazily)
    dests = [into(meta, i) if into else None for i in range(len(table))]

    def dec(i: int):
        b = table[i]
        src = data[base + b["offset"] : base + b["offset"] + b["size"]]
        dest = dests[i]
        try:
            if dest is None:
                out = zstandard.ZstdDecompressor().decompress(src, max_output_size=b["raw_size"])
                if len(out) != b["raw_size"]:
                    raise InputError(f"{path}: block {i} decompressed to {len(out)} bytes, expected {b['raw_size']}")
                return out
            dest = memoryview(dest).cast("B")
            if dest.nbytes != b["raw_size"]:
                raise InputError(f"{path}: block {i} has raw size {b['raw_size']}, expected {dest.nbytes}")
            got = 0
            with zstandard.ZstdDecompressor().stream_reader(src) as r:
                while got < dest.nbytes:
                    k = r.readinto(dest[got:])
                    if not k:
                        break
                    got += k
                extra = r.read(1)
            if got != dest.nbytes or extra:
                raise InputError(f"{path}: block {i} does not decompress to {dest.nbytes} bytes")
            return dest
        except zstandard.ZstdError as e:
            raise InputError(f"{path}: damaged data block {i} ({e})") from None

    with ThreadPoolExecutor(_threads()) as ex:
        out = list(ex.map(dec, range(len(table))))
    return meta, out
