"""The ``.sfz`` container used by the non-PLY tiers (``lossless-zstd``, ``quantised``).

Layout, format version 2 (all integers little-endian)::

    offset 0   8 bytes  magic  b"SFSPLAT\\x00"
    offset 8   u32      container version (2)
    offset 12  u32      J = length of the JSON header in bytes
    offset 16  J bytes  JSON header (UTF-8), see below
    16 + J     ...      data blocks, concatenated; block i occupies
                        [16 + J + blocks[i].offset, ... + blocks[i].size)
    end - 32   32 bytes SHA-256 of every byte before it (prelude, JSON header, blocks)

The JSON header always has ``codec`` (tier name), ``codec_version`` and ``blocks``
(a list of ``{"offset", "size", "raw_size"}``; every block is one zstd frame with
content size and content checksum, RFC 8878); the rest is the tier's own metadata
(documented and validated in :mod:`.entropy` and :mod:`.quantised`). Blocks are
compressed with the ``zstandard`` library, several at a time in threads (zstd releases
the GIL).

Reading (:func:`read_container`) trusts nothing it has not checked, in this order: magic,
version (version 1, which had no checksum, is refused with a "re-encode" error), the
SHA-256 over the whole file (a flipped bit anywhere, an edited header, a truncated or
extended file: "corrupt or was edited"), the block table (contiguous, ends exactly before
the checksum, each ``raw_size`` within zstd's maximum ratio of its compressed size and
equal to the frame's declared content size), then the tier's ``check(meta)`` (types,
ranges and sizes of its metadata) and only then any allocation or decompression. The
SHA-256 detects damage and edits; it is not a signature (whoever edits a file can
recompute it), which is why the metadata is validated as well.
"""

from __future__ import annotations

import hashlib
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
VERSION = 2
_PRE = struct.Struct("<8sII")
DIGEST_SIZE = 32  # SHA-256
#: zstd's largest possible expansion: an RLE block (3-byte block header + 1 byte) stands for
#: up to 128 KiB (ZSTD_BLOCKSIZE_MAX, RFC 8878 section 3.1.1.2), so <= 128 KiB per 4 bytes.
_ZSTD_MAX_BLOCK = 1 << 17
#: Appended to every "damaged or edited" message.
REENCODE = "re-encode it from the source splat"


def max_raw_size(compressed_size: int) -> int:
    """Upper bound on the decompressed size of a zstd frame of ``compressed_size`` bytes."""
    return (compressed_size // 4 + 1) * _ZSTD_MAX_BLOCK


def corrupt(path: str | os.PathLike, what: str = "checksum mismatch") -> InputError:
    """The :class:`InputError` for a codec output that fails an integrity check."""
    return InputError(f"{path} is corrupt or was edited: {what}; {REENCODE}")


def is_container(path: str | os.PathLike) -> bool:
    """True when the file starts with the ``.sfz`` magic bytes."""
    with open(path, "rb") as f:
        return f.read(8) == MAGIC


def container_codec(path: str | os.PathLike) -> str | None:
    """The ``codec`` named in a container's JSON header (reads only the header)."""
    codec = read_container_meta(path).get("codec")
    return codec if isinstance(codec, str) else None


def _check_version(path, ver: int) -> None:
    if ver == 1:
        raise InputError(f"{path}: .sfz format version 1 (written by an older splatforge, without a checksum) is "
                         f"no longer read; {REENCODE} (splatforge compress)")
    if ver != VERSION:
        raise InputError(f"{path}: .sfz format version {ver} not supported (this reader: {VERSION}); {REENCODE}")


def _parse_json(path, raw: bytes) -> dict:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise InputError(f"{path}: container JSON header is damaged ({e}); {REENCODE}") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: container JSON header is not an object; {REENCODE}")
    return meta


def read_container_meta(path: str | os.PathLike) -> dict:
    """A container's JSON metadata, without touching its data blocks or checking its checksum
    (:func:`verify_container` does). Raises :class:`InputError` for a file that is not a
    container, an unsupported version or a header that does not fit in the file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        pre = f.read(_PRE.size)
        if len(pre) < _PRE.size or pre[:8] != MAGIC:
            raise InputError(f"{path}: not a splatforge .sfz container (bad magic bytes)")
        _, ver, jlen = _PRE.unpack(pre)
        _check_version(path, ver)
        if _PRE.size + jlen + DIGEST_SIZE > size:
            raise corrupt(path, f"JSON header length {jlen} exceeds the file size {size}")
        return _parse_json(path, f.read(jlen))


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
    the file size in bytes (the trailing SHA-256 included). Writes ``path`` directly (callers wrap it in
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
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for part in [_PRE.pack(MAGIC, VERSION, len(js)), js] + [c for _, c in packed]:
            h.update(part)
            f.write(part)
        f.write(h.digest())
    return _PRE.size + len(js) + off + DIGEST_SIZE


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_table(path, table, body_size: int) -> None:
    """Block table: a list of ``{"offset", "size", "raw_size"}`` (non-negative ints), contiguous
    from 0, filling exactly ``body_size`` bytes, each raw size possible for its size."""
    if not isinstance(table, list):
        raise InputError(f"{path}: container block table is missing or not a list; {REENCODE}")
    off = 0
    for i, b in enumerate(table):
        if not isinstance(b, dict) or not all(_int(b.get(k)) and b[k] >= 0 for k in ("offset", "size", "raw_size")):
            raise InputError(f"{path}: container block {i} entry {b!r} is not offset/size/raw_size integers; {REENCODE}")
        if b["offset"] != off:
            raise corrupt(path, f"block {i} starts at {b['offset']}, expected {off} (block table out of order)")
        if b["raw_size"] > max_raw_size(b["size"]):
            raise corrupt(path, f"block {i} claims {b['raw_size']} bytes from {b['size']} compressed bytes, "
                                "more than zstd can encode")
        off += b["size"]
    if off != body_size:
        raise corrupt(path, f"blocks hold {off} bytes but the file has {body_size} (truncated or padded)")


def verify_container(path: str | os.PathLike) -> tuple[memoryview, dict, int]:
    """Check a container's integrity before anything is decoded or allocated.

    Returns ``(whole file as a read-only memoryview (memory-mapped), JSON metadata, offset of
    the first block)``. Raises :class:`InputError` naming the file: not a container, version 1
    or unknown, checksum mismatch (damaged, edited, truncated or extended), damaged JSON, a
    block table that does not describe the file (see :func:`_check_table`).
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
    _check_version(path, ver)
    if size < _PRE.size + DIGEST_SIZE:
        raise corrupt(path, "file too short for its checksum (truncated)")
    if hashlib.sha256(data[: size - DIGEST_SIZE]).digest() != bytes(data[size - DIGEST_SIZE :]):
        raise corrupt(path)
    base = _PRE.size + jlen
    if base > size - DIGEST_SIZE:
        raise corrupt(path, f"JSON header length {jlen} exceeds the file size")
    meta = _parse_json(path, bytes(data[_PRE.size : base]))
    _check_table(path, meta.get("blocks"), size - DIGEST_SIZE - base)
    return data, meta, base


def read_container(
    path: str | os.PathLike,
    into: Callable[[dict, int], memoryview | None] | None = None,
    check: Callable[[dict], None] | None = None,
) -> tuple[dict, list]:
    """Read a container: returns ``(JSON metadata, decompressed blocks)``.

    :func:`verify_container` runs first, then ``check(meta)`` (the tier's metadata validation,
    which raises :class:`InputError`), then every block's zstd frame header is checked to
    declare exactly its ``raw_size``; only then are buffers asked for and blocks decompressed.
    ``into(meta, i)`` may return a writable buffer of block ``i``'s ``raw_size`` bytes; the
    block is then decompressed straight into it (no intermediate copy) and the list holds
    that buffer. The file is memory-mapped, not read into fresh memory.
    Raises :class:`InputError` naming the file when it is not a container, has an
    unsupported version, fails its checksum or metadata checks, or a block fails its own
    zstd checksum.
    """
    path = Path(path)
    data, meta, base = verify_container(path)
    if check is not None:
        check(meta)
    table = meta["blocks"]
    for i, b in enumerate(table):
        src = data[base + b["offset"] : base + b["offset"] + b["size"]]
        try:
            declared = zstandard.frame_content_size(src)
        except zstandard.ZstdError as e:
            raise corrupt(path, f"block {i} is not a zstd frame ({e})") from None
        if declared != b["raw_size"]:
            raise corrupt(path, f"block {i} declares {declared} bytes, the block table {b['raw_size']}")

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
