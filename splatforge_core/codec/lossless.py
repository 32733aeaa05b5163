"""Preset ``qat-3dgs``: lossless constant-column elimination; the output is still a PLY.

Format (all of it legal PLY 1.0, opened by plyfile and by splat viewers, which skip
``comment`` lines):

* Right after the ``format`` line the encoder inserts ``comment splatforge_codec qat-3dgs 2``
  and, on the next line, ``comment splatforge_sha256 <64 hex digits>``: the SHA-256 of the
  whole file with that one line left out (header and body). :func:`decode_ply_parts` checks
  it before anything else, so a flipped body byte, an edited, deleted or added header line
  (a ``constant_field`` value, a column name) is refused as "corrupt or was edited".
  Format version 1 (no checksum line) is refused with a "re-encode" error.
* Each vertex property whose values are all bit-identical (raw bits compared, so -0.0 vs
  0.0 and different NaN payloads count as different values) is removed from the body and
  its ``property <type> <name>`` line is *replaced in place* by
  ``comment constant_field <name> <hex>`` (``<hex>`` = the value's bits, most significant
  byte first: 8 hex digits for float32, e.g. 1.0 -> ``3f800000``, independent of the
  file's byte order). The line's position records the column's position; for a type other
  than ``float`` the type name is appended: ``comment constant_field <name> <hex> <type>``.
* All other header lines (comments, obj_info, other elements, line endings) and the body
  layout (byte order, types) are kept, so :func:`decode_ply` restores the original file
  byte for byte.
* The 14 required 3DGS columns (x y z f_dc_* opacity scale_* rot_*) are never dropped,
  even when constant, so a viewer that expects them still opens the file.

Zero-copy numpy is used on the body (see :mod:`.layout` for why not plyfile).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, SplatForgeError
from ..log import get_logger
from ..splat import REQUIRED_PROPERTIES
from .container import REENCODE, corrupt
from .layout import (
    CHECKSUM_COMMENT,
    CODEC_COMMENT,
    CONSTANT_COMMENT,
    PLY_TYPES,
    PlyHeader,
    SplatBody,
    bits_hex,
    hex_to_bytes,
    map_file,
    parse_header,
    read_body,
)

log = get_logger("codec")

PRESET = "qat-3dgs"
#: Presets whose output is this format (the marker comment names which); ``qat-scaffold``
#: applies it to Scaffold-GS anchor PLYs (:func:`encode_ply` with ``preset=``).
PLY_PRESETS = (PRESET, "qat-scaffold")
FORMAT_VERSION = 2
#: Placeholder of the checksum line while the body is written (same length as the real digest).
_NO_DIGEST = "0" * 64


class RoundTripError(SplatForgeError):
    """The encoder's self-check found a difference: the output was deleted."""


# --------------------------------------------------------------------------- helpers


def word_size(dtype: np.dtype) -> int:
    """Largest w in (8, 4, 2, 1) dividing every field's offset and size of a packed dtype."""
    for w in (8, 4, 2, 1):
        if all(dtype.fields[n][1] % w == 0 and dtype.fields[n][0].itemsize % w == 0 for n in dtype.names):
            return w
    return 1  # pragma: no cover


def as_words(arr: np.ndarray) -> tuple[np.ndarray, int]:
    """View a packed structured array [N] as an unsigned-int matrix [N, itemsize / w]."""
    w = word_size(arr.dtype)
    n = arr.shape[0]
    return arr.view(np.dtype(f"u{w}")).reshape(n, arr.dtype.itemsize // w) if n else np.empty(
        (0, arr.dtype.itemsize // w), np.dtype(f"u{w}")
    ), w


def runs(dst_idx: list[int]) -> list[tuple[int, int, int]]:
    """Group word indices into runs: ``[(src_start, dst_start, length)]``.

    ``dst_idx[i]`` is where source word ``i`` goes; consecutive indices form one run so
    that gathers/scatters become a few 2-D slice copies instead of a fancy index.
    """
    out: list[tuple[int, int, int]] = []
    for i, d in enumerate(dst_idx):
        if out and out[-1][1] + out[-1][2] == d:
            s, ds, ln = out[-1]
            out[-1] = (s, ds, ln + 1)
        else:
            out.append((i, d, 1))
    return out


CHUNK_ROWS = 1 << 15


def constant_columns(vertices: np.ndarray, chunk_rows: int = 1 << 16) -> dict[str, bytes]:
    """Find the fields of ``vertices`` whose raw bits are identical in every row.

    ``vertices``: packed structured array [N]. Returns ``{name: raw bytes of the value}``
    in field order (empty for N == 0). Bitwise comparison, one pass over the body in
    chunks of ``chunk_rows`` rows on an integer view (no float compare: NaN == NaN and
    -0.0 != 0.0 here).
    """
    n = vertices.shape[0]
    if n == 0:
        return {}
    words, w = as_words(vertices)
    first = words[0].copy()
    differs = np.zeros(words.shape[1], dtype=bool)
    for s in range(1, n, chunk_rows):
        differs |= (words[s : s + chunk_rows] != first).any(axis=0)
        if differs.all():
            break
    out: dict[str, bytes] = {}
    for name in vertices.dtype.names:
        ft, off = vertices.dtype.fields[name][:2]
        if not differs[off // w : (off + ft.itemsize) // w].any():
            out[name] = vertices[:1][name].tobytes()
    return out


def _value_for_report(raw: bytes, dtype: np.dtype) -> float | int | str:
    v = np.frombuffer(raw, dtype=dtype)[0]
    if dtype.kind == "f":
        f = float(v)
        if math.isnan(f) or math.isinf(f):
            return str(f)
        if f == 0.0 and math.copysign(1.0, f) < 0:
            return "-0.0"
        return f
    return int(v)


def constants_report(verts: np.ndarray, consts: dict[str, bytes]) -> tuple[dict[str, str], dict[str, dict]]:
    """Hex bits and report values of the constant columns ``consts`` (name -> raw bytes).

    Returns:
        (name -> 8-digit IEEE-754 hex, name -> {"hex", "value"}) for the JSON report.
    """
    dts = {name: verts.dtype.fields[name][0] for name in consts}
    hexes = {k: bits_hex(np.frombuffer(v, dtype=dts[k])[0]) for k, v in consts.items()}
    values = {k: {"hex": hexes[k], "value": _value_for_report(v, dts[k])} for k, v in consts.items()}
    return hexes, values


@dataclasses.dataclass
class EncodeResult:
    """What :func:`encode_ply` did (fields go into the JSON report)."""

    n_vertices: int
    constants: dict[str, str]  # name -> hex
    constant_values: dict[str, dict]
    size_in: int
    size_out: int


def _eol(line: bytes) -> bytes:
    return b"\r\n" if line.endswith(b"\r\n") else b"\n"


def build_header(header: PlyHeader, vertex_index: int, drop: dict[str, bytes], preset: str = PRESET) -> bytes:
    """Header of the ``qat-3dgs`` output: marker comment, checksum line (a placeholder of
    64 zeros that :func:`encode_ply` overwrites) and in-place constant comments."""
    el = header.elements[vertex_index]
    bo = header.byte_order
    types = {p.name: p.ply_type for p in el.properties}
    next_el = header.elements[vertex_index + 1].line_index if vertex_index + 1 < len(header.elements) else len(header.lines)
    out: list[bytes] = []
    for k, line in enumerate(header.lines):
        text = line.decode("ascii").rstrip("\r\n")
        tok = text.split()
        if el.line_index < k < next_el and tok[0] == "property" and tok[-1] in drop:
            name = tok[-1]
            if text != f"property {types[name]} {name}":
                raise InputError(
                    f"{header.path}: property line {text!r} is not in canonical form; "
                    "it could not be restored byte for byte"
                )
            dt = np.dtype(bo + PLY_TYPES[types[name]])
            h = bits_hex(np.frombuffer(drop[name], dtype=dt)[0])
            extra = "" if types[name] == "float" else f" {types[name]}"
            out.append(f"comment {CONSTANT_COMMENT} {name} {h}{extra}".encode("ascii") + _eol(line))
        else:
            out.append(line)
        if tok[0] == "format":
            out.append(f"comment {CODEC_COMMENT} {preset} {FORMAT_VERSION}".encode("ascii") + _eol(line))
            out.append(f"comment {CHECKSUM_COMMENT} {_NO_DIGEST}".encode("ascii") + _eol(line))
    return b"".join(out)


def restore_header(header: PlyHeader) -> tuple[bytes, list[tuple[str, str, str]]]:
    """Invert :func:`build_header` on a ``qat-3dgs`` header.

    Returns ``(original header bytes, [(name, ply_type, hex)] of the restored columns)``.
    Raises :class:`InputError` when the file is not a ``qat-3dgs`` PLY.
    """
    out: list[bytes] = []
    consts: list[tuple[str, str, str]] = []
    marker = False
    in_vertex = False
    for line in header.lines:
        text = line.decode("ascii").rstrip("\r\n")
        tok = text.split()
        if tok[0] == "element":
            in_vertex = tok[1] == "vertex"
        if tok[:2] == ["comment", CODEC_COMMENT]:
            if len(tok) < 4 or tok[2] not in PLY_PRESETS or tok[3] != str(FORMAT_VERSION):
                raise InputError(f"{header.path}: unsupported codec marker {text!r}")
            marker = True
            continue
        if tok[:2] == ["comment", CHECKSUM_COMMENT]:
            continue
        if tok[:2] == ["comment", CONSTANT_COMMENT]:
            if not in_vertex or len(tok) not in (4, 5):
                raise InputError(f"{header.path}: misplaced or malformed line {text!r}")
            name, h = tok[2], tok[3]
            ptype = tok[4] if len(tok) == 5 else "float"
            if ptype not in PLY_TYPES:
                raise InputError(f"{header.path}: unknown type in {text!r}")
            consts.append((name, ptype, h))
            out.append(f"property {ptype} {name}".encode("ascii") + _eol(line))
            continue
        out.append(line)
    if not marker:
        raise InputError(f"{header.path}: not a file written by the {PRESET} preset (no '{CODEC_COMMENT}' comment)")
    return b"".join(out), consts


# --------------------------------------------------------------------------- encode / decode


def _checksum_line(header: PlyHeader) -> tuple[int, int, str]:
    """(byte offset, byte length, hex digest) of the checksum line of a ``qat-3dgs`` header.

    Raises :class:`InputError` naming the file: no codec marker (not a qat-3dgs PLY), a
    format version 1 marker (no checksum: re-encode), another version, or a missing,
    repeated or malformed checksum line ("corrupt or was edited").
    """
    path = header.path
    markers = [c.split() for c in header.comments if c.split()[:1] == [CODEC_COMMENT]]
    if not markers:
        raise InputError(f"{path}: not a file written by the {PRESET} preset (no '{CODEC_COMMENT}' comment)")
    m = markers[0]
    if len(markers) == 1 and m[1:3] == [PRESET, "1"]:
        raise InputError(f"{path}: {PRESET} format version 1 (written by an older splatforge, without a checksum) "
                         f"is no longer read; {REENCODE} (splatforge compress)")
    if len(markers) != 1 or len(m) < 3 or m[1] not in PLY_PRESETS or m[2] != str(FORMAT_VERSION):
        raise InputError(f"{path}: unsupported codec marker {' '.join(m)!r} (this reader: {PRESET} {FORMAT_VERSION}); "
                         f"{REENCODE}")
    found, off = [], 0
    for line in header.lines:
        tok = line.split()
        if tok[:2] == [b"comment", CHECKSUM_COMMENT.encode()]:
            found.append((off, len(line), tok[2].decode("ascii") if len(tok) == 3 else ""))
        off += len(line)
    if len(found) != 1:
        raise corrupt(path, f"{len(found)} '{CHECKSUM_COMMENT}' lines, expected 1")
    h = found[0][2]
    if len(h) != 64 or any(ch not in "0123456789abcdef" for ch in h):
        raise corrupt(path, f"malformed '{CHECKSUM_COMMENT}' line")
    return found[0]


def file_digest(data: np.ndarray, skip_off: int, skip_len: int) -> str:
    """SHA-256 (hex) of the uint8 array ``data`` [size] without bytes [skip_off, skip_off + skip_len)."""
    h = hashlib.sha256()
    h.update(memoryview(data[:skip_off]))
    h.update(memoryview(data[skip_off + skip_len:]))
    return h.hexdigest()


def verify_checksum(header: PlyHeader, data: np.ndarray | None = None) -> None:
    """Check the SHA-256 of a ``qat-3dgs`` PLY (``data``: the whole file, uint8 [size]; mapped
    when None) against its ``splatforge_sha256`` line, before anything is decoded.

    Raises :class:`InputError` naming the file (see :func:`_checksum_line`; a mismatch:
    "<file> is corrupt or was edited: checksum mismatch; re-encode it from the source splat").
    """
    off, ln, want = _checksum_line(header)
    if data is None:
        data = map_file(header.path)
    if len(data) < header.size or file_digest(data, off, ln) != want:
        raise corrupt(header.path)


def decode_ply_parts(path: str | os.PathLike, *, check_digest: bool = True) -> list:
    """Decode a ``qat-3dgs`` PLY into the original file as a list of buffers (no concatenation).

    The buffers (bytes / uint8-viewable arrays), written one after the other, are the
    original PLY file. The checksum (:func:`verify_checksum`) is checked first (only the
    encoder's self-check, which hashed the bytes as it wrote them and compares every decoded
    byte with the source, passes ``check_digest=False`` to save a second pass). Raises
    :class:`InputError` for a file that is not a ``qat-3dgs`` PLY, of format version 1, or
    damaged / edited.
    """
    hdr = parse_header(path)
    data = map_file(path)
    if check_digest:
        verify_checksum(hdr, data)
    else:
        _checksum_line(hdr)  # marker and checksum line still required
    orig_raw, consts = restore_header(hdr)
    body = read_body(hdr, data)
    orig = parse_header(str(path), raw=orig_raw)
    return assemble(orig, body, {n: (t, h) for n, t, h in consts})


def decode_ply(path: str | os.PathLike) -> bytes:
    """Decode a ``qat-3dgs`` PLY at ``path`` back into the original PLY file's bytes."""
    return join_parts(decode_ply_parts(path))


def _u8(part) -> np.ndarray:
    if isinstance(part, np.ndarray):
        return part.reshape(-1).view(np.uint8) if part.size else np.empty(0, np.uint8)
    return np.frombuffer(part, np.uint8)


def join_parts(parts: list) -> bytes:
    """Concatenate decoded buffers into one bytes object."""
    return b"".join(memoryview(_u8(p)) for p in parts)


def parts_equal(parts: list, data: np.ndarray, chunk: int = 1 << 22) -> bool:
    """True when the concatenated ``parts`` equal the uint8 array ``data`` bit for bit.

    Zero-copy, in 4 MiB chunks (``np.array_equal`` on a whole 287 MB array allocates a
    287 MB boolean temporary and is ~15x slower).
    """
    pos = 0
    for p in parts:
        u = _u8(p)
        if pos + u.size > data.size:
            return False
        for s in range(0, u.size, chunk):
            if not np.array_equal(u[s : s + chunk], data[pos + s : pos + min(s + chunk, u.size)]):
                return False
        pos += u.size
    return pos == data.size


def assemble(orig: PlyHeader, body: SplatBody, consts: dict[str, tuple[str, str]]) -> list:
    """Rebuild the original file as parts: [header, prefix, full vertex records, suffix]."""
    el = next(e for e in orig.elements if e.name == "vertex")
    dt = el.dtype(orig.byte_order)
    n = body.vertices.shape[0]
    if n != el.count:  # pragma: no cover - same header line
        raise InputError(f"{orig.path}: vertex count mismatch")
    full = np.empty(n, dtype=dt)
    fw, w = as_words(full)
    cv = body.vertices
    # view the stored records with the *original* word size (every kept field is a multiple of it)
    cw = cv.view(fw.dtype).reshape(n, cv.dtype.itemsize // w) if n and cv.dtype.itemsize % w == 0 else None
    # word indices of the kept columns, in order, and constant fill values per column
    kept: list[int] = []
    for name in dt.names:
        ft, off = dt.fields[name][:2]
        idx = range(off // w, (off + ft.itemsize) // w)
        if name in consts:
            t, h = consts[name]
            raw = hex_to_bytes(h, np.dtype(orig.byte_order + PLY_TYPES[t]))
            fw[:, idx.start : idx.stop] = np.frombuffer(raw, dtype=fw.dtype)
        else:
            if name not in cv.dtype.names:
                raise InputError(f"{orig.path}: column {name!r} is neither stored nor constant")
            kept.extend(idx)
    if n and kept:
        if cw is None or cw.shape[1] != len(kept) or [x for x in dt.names if x not in consts] != list(cv.dtype.names):
            raise InputError(f"{orig.path}: stored columns do not match the restored layout")
        rr = runs(kept)
        for r0 in range(0, n, CHUNK_ROWS):  # row chunks stay in cache for all the runs
            r1 = min(n, r0 + CHUNK_ROWS)
            for s, d, ln in rr:
                fw[r0:r1, d : d + ln] = cw[r0:r1, s : s + ln]
    return [orig.raw, body.prefix, full, body.suffix]


def encode_ply(
    in_ply: str | os.PathLike,
    out_ply: str | os.PathLike,
    *,
    keep_required: bool = True,
    header: PlyHeader | None = None,
    data: np.ndarray | None = None,
    preset: str = PRESET,
    required: tuple[str, ...] = REQUIRED_PROPERTIES,
) -> EncodeResult:
    """Write the ``qat-3dgs`` PLY of ``in_ply`` to ``out_ply`` and verify it bit for bit.

    The output is written to a temporary file beside ``out_ply``; it is decoded again from
    disk in this process and compared with the source bytes (which implies every column
    is bit-identical, NaN and -0.0 included; the decode checks the header's SHA-256 line,
    filled in after the body is written). Only if they match is it renamed onto
    ``out_ply``; otherwise it is deleted and :class:`RoundTripError` is raised.

    ``preset`` is the name the marker comment records (one of :data:`PLY_PRESETS`);
    ``required`` the columns kept even when constant (with ``keep_required``).

    Raises :class:`InputError` for bad input (see :func:`.layout.read_body`) and for a
    file that is already a ``qat-3dgs`` output.
    """
    from ..io import atomic_path

    in_ply = Path(in_ply)
    if data is None:
        data = map_file(in_ply)
    header = header or parse_header(in_ply)
    if any(c.split()[:1] in ([CONSTANT_COMMENT], [CODEC_COMMENT], [CHECKSUM_COMMENT]) for c in header.comments):
        raise InputError(f"{in_ply}: already written by the {PRESET} codec (decompress it first)")
    body = read_body(header, data)
    verts = body.vertices
    consts = constant_columns(verts)
    if keep_required:
        consts = {k: v for k, v in consts.items() if k not in required}
    if verts.dtype.names and len(consts) == len(verts.dtype.names):
        # keep one column so the vertex element keeps a record (and its count) readable
        consts.pop(verts.dtype.names[0])
    new_header = build_header(header, body.vertex_index, consts, preset)
    keep_names = [n for n in verts.dtype.names if n not in consts]
    n = verts.shape[0]
    words, w = as_words(verts)
    kept_idx: list[int] = []
    for name in keep_names:
        ft, off = verts.dtype.fields[name][:2]
        kept_idx.extend(range(off // w, (off + ft.itemsize) // w))
    # the checksum line: hash everything but it while writing, then fill in its digest
    ck = b"\ncomment " + CHECKSUM_COMMENT.encode() + b" " + _NO_DIGEST.encode()
    ck_off = new_header.index(ck) + 1
    ck_len = new_header.index(b"\n", ck_off) + 1 - ck_off
    digest_off = ck_off + len(ck) - 1 - len(_NO_DIGEST)
    h = hashlib.sha256(new_header[:ck_off] + new_header[ck_off + ck_len:])
    with atomic_path(out_ply) as tmp:
        with open(tmp, "wb") as f:

            def put(b) -> None:
                h.update(b)
                f.write(b)

            f.write(new_header)
            put(body.prefix)
            if n:
                if len(kept_idx) == words.shape[1]:
                    put(memoryview(np.ascontiguousarray(words)).cast("B"))
                else:
                    # gather in row chunks (bounded memory, cache-friendly) by slice runs
                    rr = runs(kept_idx)  # here: (dst_start, src_start, length)
                    buf = np.empty((min(n, CHUNK_ROWS), len(kept_idx)), dtype=words.dtype)
                    for r0 in range(0, n, CHUNK_ROWS):
                        r1 = min(n, r0 + CHUNK_ROWS)
                        for d, s, ln in rr:
                            buf[: r1 - r0, d : d + ln] = words[r0:r1, s : s + ln]
                        put(memoryview(buf[: r1 - r0]).cast("B"))
            put(body.suffix)
            f.seek(digest_off)
            f.write(h.hexdigest().encode("ascii"))
        size_out = os.path.getsize(tmp)
        if not parts_equal(decode_ply_parts(tmp, check_digest=False), data):
            raise RoundTripError(
                f"{in_ply}: self-check failed: decoding the {preset} output did not reproduce the "
                "source bit for bit; the output was deleted"
            )
    hexes, values = constants_report(verts, consts)
    log.info("%s: %d vertices, %d constant columns dropped (%s)", in_ply, n, len(consts), ", ".join(consts))
    return EncodeResult(n, hexes, values, int(data.size), int(size_out))


def encode_preset(
    in_ply: str | os.PathLike, out_path: str | os.PathLike, opts: Any, *,
    header: PlyHeader | None = None, data: np.ndarray | None = None,
) -> tuple[EncodeResult, dict[str, Any]]:
    """The ``qat-3dgs`` encoder of the preset registry (:mod:`.presets`): :func:`encode_ply` with
    ``opts.keep_required`` (``opts``: :class:`~splatforge_core.codec.CodecOptions`); no extra report fields."""
    return encode_ply(in_ply, out_path, keep_required=opts.keep_required, header=header, data=data), {}


#: Columns ``qat-scaffold`` keeps even when constant: the anchor positions, so the file stays a point cloud.
SCAFFOLD_REQUIRED = ("x", "y", "z")


def encode_scaffold_preset(
    in_ply: str | os.PathLike, out_path: str | os.PathLike, opts: Any, *,
    header: PlyHeader | None = None, data: np.ndarray | None = None,
) -> tuple[EncodeResult, dict[str, Any]]:
    """The ``qat-scaffold`` encoder: :func:`encode_ply` on a Scaffold-GS anchor PLY.

    Scaffold-GS never trains the normals (zeros), ``opacity`` or ``rot_*`` of its anchors, so
    those 8 columns are constant and move to header comments; only ``x y z`` are always kept
    (``opts.keep_required``). The layout is checked by the registry's ``validate``
    (:func:`splatforge_core.scaffold.layout.validate_anchor_header`).
    """
    return encode_ply(in_ply, out_path, keep_required=opts.keep_required, header=header, data=data,
                      preset="qat-scaffold", required=SCAFFOLD_REQUIRED), {}
