"""Preset ``quantised`` (lossy): SPZ-style quantisation + zstd in a ``.sfz`` container.

In the spirit of Niantic's SPZ (github.com/nianticlabs/spz: fixed-point positions, 8-bit
log-scales/opacity/colour, few-bit SH, then a general-purpose compressor) and PlayCanvas
SOG (smallest-three quaternions, Morton order). Per Gaussian:

* position: each axis uniformly quantised over its [min, max] with ``position_bits``
  (default 16) bits, then (after the Morton sort) stored as wrapping differences;
* log-scale: each axis uniform over its [min, max], 8 bits;
* rotation (wxyz, normalised, q ~ -q): "smallest three": index of the largest |component|
  (uint8) + the other three, each in [-1/sqrt2, 1/sqrt2], ``rotation_bits`` (default 8) bits;
* opacity: sigmoid(logit) in 8 bits (stored back as a logit, clipped to 1/510..1-1/510);
* f_dc: uniform per channel over [min, max], 8 bits;
* f_rest: uniform per column over [min, max], ``sh_bits`` (default 4, as SPZ) bits;
* other columns (e.g. normals): bit-identical constants as in the lossless tiers, else
  stored losslessly.

Gaussians are reordered by the Morton code of their quantised position (splat order
carries no meaning; spatial order makes neighbouring values similar), every array is
byte-plane shuffled and zstd-compressed (one block per array). The decoder writes a
float32 PLY with the source's header (same columns, order, types; Gaussians in Morton
order). Lossy: quality is measured by rendering (see :func:`render_psnr`).

Speed: the numpy part (quantise, reorder, decode self-check) is vectorised; the encode time is
then almost all zstd at the default level 16 on the SH block (about 12x SPZ's C++ encoder in CPU
seconds on a 200k-Gaussian SH3 PLY, 2-7x on real splats). ``zstd_level`` 3 gives the same
decoded splat as fast as SPZ, 4-9% larger (``benchmarks/results/spz.md``).

The same container with codec ``qat-3dgs-lowbit`` (:data:`LOWBIT_CODEC`, written by
:mod:`.qat_lowbit`) has one SH bit count per band (``bits["rest"]`` a list, 2..8 each) and
ranges its encoder chose; this module reads both.

JSON metadata: ``codec`` "quantised", ``codec_version`` 1, ``ply_header`` (source header),
``n_vertices``, ``sh_degree``, ``arrays`` ({name: {"block", "dtype", "shape"}}),
``ranges`` ({group: [[lo...], [hi...]]}), ``bits``, ``extra_columns`` and ``blocks``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError
from ..io import atomic_path
from ..log import get_logger
from .container import REENCODE, read_container, write_container
from ..splat import sh_degree_from_names
from .layout import PlyHeader, bits_hex, check_constant, hex_to_bytes, map_file, parse_header, read_body, stored_header
from .lossless import EncodeResult, _value_for_report, constant_columns

log = get_logger("codec")

PRESET = "quantised"
CODEC_VERSION = 1
ROT_BITS = 10
#: Codec name of the same container with one SH bit count per band and fixed ranges chosen by its
#: encoder (preset ``qat-3dgs-lowbit``, :mod:`.qat_lowbit`): ``bits["rest"]`` is a list
#: ``[b_1, ..., b_degree]`` (band l's ``3 (2l + 1)`` columns use ``b_l`` bits, 2..8); everything
#: else as ``quantised`` v1.
LOWBIT_CODEC = "qat-3dgs-lowbit"
#: Codec versions this module reads: ``{codec: version}``.
CODECS = {PRESET: CODEC_VERSION, LOWBIT_CODEC: 1}
#: Bits per SH band a ``qat-3dgs-lowbit`` container may use.
BAND_BITS = range(2, 9)



def _column_groups(sh_degree: int) -> dict[str, list[str]]:
    """Inria PLY columns quantised together, for an SH degree (encoder and decoder share it)."""
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return {
        "pos": ["x", "y", "z"],
        "scale": [f"scale_{i}" for i in range(3)],
        "dc": [f"f_dc_{i}" for i in range(3)],
        "rest": [f"f_rest_{i}" for i in range(n_rest)],
    }

def rest_column_bits(rest_bits: int | list[int], sh_degree: int) -> list[int]:
    """Bits of each ``f_rest_j`` column [3 (K-1)] (channel-major, as the PLY): one count for all, or
    ``rest_bits[l-1]`` for the coefficients of band l (coefficient k of a channel is in band
    ``floor(sqrt(k + 1))``)."""
    k = (sh_degree + 1) ** 2 - 1
    if isinstance(rest_bits, int):
        return [rest_bits] * (3 * k)
    band = [int(math.isqrt(i + 1)) for i in range(k)]
    return [rest_bits[band[i] - 1] for _ in range(3) for i in range(k)]


def _uq_cols(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int | list[int]) -> np.ndarray:
    """:func:`_uq` with one bit count per column (a list [D]) or for all (an int).

    Per column the same operations in the same order as :func:`_uq` with that column's bits
    (``levels`` broadcast per column), so the same integers, in one pass. In place in ``x`` when
    it is a writeable float64 array.
    """
    if isinstance(bits, int):
        return _uq(x, lo, hi, bits)
    levels = np.array([(1 << b) - 1 for b in bits], np.float64)
    span = np.where(hi > lo, hi - lo, 1.0)
    q = x if x.dtype == np.float64 and x.flags.writeable else x.astype(np.float64)
    np.subtract(q, lo, out=q)
    np.divide(q, span, out=q)
    np.multiply(q, levels, out=q)
    np.rint(q, out=q)
    np.clip(q, 0, levels, out=q)
    return q.astype(np.dtype(_uint_str(max(bits, default=8))))


def _udq_cols(q: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int | list[int]) -> np.ndarray:
    """:func:`_udq` with one bit count per column (a list [D]) or for all (an int): per column
    ``lo + q / levels * (hi - lo)`` in float64 with that column's levels, rounded to float32
    (through a [D, 2^8 or 2^16] table for 8- and 16-bit codes, as :func:`_udq`)."""
    if isinstance(bits, int):
        return _udq(q, lo, hi, bits)
    levels = np.array([(1 << b) - 1 for b in bits], np.float64)
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if q.ndim != 2 or q.dtype.itemsize > 2 or len(q) < 4 * (1 << (8 * q.dtype.itemsize)):
        return (lo + q.astype(np.float64) / levels * (hi - lo)).astype(np.float32)
    nv = 1 << (8 * q.dtype.itemsize)
    table = (lo[:, None] + np.arange(nv, dtype=np.float64)[None, :] / levels[:, None] * (hi - lo)[:, None]).astype(np.float32)
    flat = q.astype(np.intp) + (np.arange(q.shape[1], dtype=np.intp) * nv)[None, :]
    return table.reshape(-1)[flat]


def opacity_encode(logit: np.ndarray) -> np.ndarray:
    """Opacity logits [N] -> 8-bit codes [N] uint8 of sigmoid(logit)."""
    p = 1.0 / (1.0 + np.exp(-np.asarray(logit).astype(np.float64)))
    return np.clip(np.rint(p * 255), 0, 255).astype(np.uint8)


def opacity_decode(code: np.ndarray) -> np.ndarray:
    """Inverse of :func:`opacity_encode`: codes [N] -> logits [N] float32 (p clipped to 0.5/255..1-0.5/255)."""
    p = np.clip(code.astype(np.float64) / 255.0, 0.5 / 255, 1 - 0.5 / 255)
    return np.log(p / (1 - p)).astype(np.float32)


def _uq(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    """Uniform quantiser: float64 [N, D] -> integers in [0, 2^bits - 1] (dtype u1/u2/u4).

    ``rint((x - lo) / span * levels)`` clipped, span = hi - lo (1 where hi == lo). Computed in
    place in ``x`` when it is a float64 array (the caller's temporary): same operations in the
    same order as the reference formula, so the same integers, without four [N, D] temporaries.
    """
    levels = (1 << bits) - 1
    span = np.where(hi > lo, hi - lo, 1.0)
    q = x if x.dtype == np.float64 and x.flags.writeable else x.astype(np.float64)
    np.subtract(q, lo, out=q)
    np.divide(q, span, out=q)
    np.multiply(q, levels, out=q)
    np.rint(q, out=q)
    np.clip(q, 0, levels, out=q)
    dt = np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32
    return q.astype(dt)


def _udq(q: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`_uq`: unsigned integers [N, D] -> float32 [N, D], ``lo + q / levels * (hi - lo)``.

    For 8- and 16-bit integers the expression is evaluated once per (column, possible value)
    into a table [D, 2^8 or 2^16] and gathered: every value is the same float64 expression
    rounded to float32 as an element-wise evaluation (values above ``levels`` in a damaged
    file included), in far less time. Wider integers are evaluated element-wise.
    """
    levels = (1 << bits) - 1
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if q.ndim != 2 or q.dtype.itemsize > 2 or len(q) < 4 * (1 << (8 * q.dtype.itemsize)):
        return (lo + q.astype(np.float64) / levels * (hi - lo)).astype(np.float32)
    nv = 1 << (8 * q.dtype.itemsize)
    table = (lo[:, None] + np.arange(nv, dtype=np.float64)[None, :] / levels * (hi - lo)[:, None]).astype(np.float32)
    flat = q.astype(np.intp) + (np.arange(q.shape[1], dtype=np.intp) * nv)[None, :]
    return table.reshape(-1)[flat]


def _morton_order(qpos: np.ndarray, bits: int) -> np.ndarray:
    """Argsort by the 3-D Morton code of the top 10 bits of each quantised axis."""
    p = (qpos.astype(np.uint64) >> np.uint64(max(bits - 10, 0))) & np.uint64(1023)

    def spread(v: np.ndarray) -> np.ndarray:  # insert two zero bits between bits (10 -> 30)
        v = (v | (v << np.uint64(16))) & np.uint64(0x030000FF)
        v = (v | (v << np.uint64(8))) & np.uint64(0x0300F00F)
        v = (v | (v << np.uint64(4))) & np.uint64(0x030C30C3)
        return (v | (v << np.uint64(2))) & np.uint64(0x09249249)

    code = spread(p[:, 0]) | (spread(p[:, 1]) << np.uint64(1)) | (spread(p[:, 2]) << np.uint64(2))
    return np.argsort(code, kind="stable")


def _quat_encode(q: np.ndarray, bits: int = ROT_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Smallest-three quaternion code: [N, 4] wxyz float -> (index of largest [N] uint8,
    other three components [N, 3] quantised with ``bits`` bits, uint8 or uint16)."""
    q = q.astype(np.float64)
    nrm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(nrm > 0, q / np.where(nrm > 0, nrm, 1), np.array([1.0, 0, 0, 0]))
    big = np.argmax(np.abs(q), axis=1)
    sign = np.sign(q[np.arange(len(q)), big])
    q = q * np.where(sign < 0, -1.0, 1.0)[:, None]
    rest = _drop(q, big)
    r = 1.0 / math.sqrt(2.0)
    levels = (1 << bits) - 1
    qi = np.clip(np.rint((rest + r) / (2 * r) * levels), 0, levels)
    return big.astype(np.uint8), qi.astype(np.uint8 if bits <= 8 else np.uint16)


def _drop(q: np.ndarray, big: np.ndarray) -> np.ndarray:
    """The three components other than column ``big`` of each row, in order: [N, 3]."""
    mask = np.ones_like(q, dtype=bool)
    mask[np.arange(len(q)), big] = False
    return q[mask].reshape(len(q), 3)


def _quat_decode(big: np.ndarray, qi: np.ndarray, bits: int = ROT_BITS) -> np.ndarray:
    """Inverse of :func:`_quat_encode`: -> [N, 4] unit wxyz float32."""
    r = 1.0 / math.sqrt(2.0)
    levels = (1 << bits) - 1
    big = big.astype(np.int64)
    rest = qi.astype(np.float64) / levels * 2 * r - r
    w = np.sqrt(np.clip(1.0 - (rest**2).sum(1), 0.0, 1.0))
    out = np.empty((len(big), 4))
    mask = np.ones((len(big), 4), dtype=bool)
    mask[np.arange(len(big)), big] = False
    out[mask] = rest.reshape(-1)
    out[np.arange(len(big)), big] = w
    return out.astype(np.float32)


def _f4_index(v: np.ndarray, names: list[str]) -> list[int] | None:
    """Indices of ``names`` in a float32 [N, itemsize/4] view of ``v``, or None when no such view exists.

    The view exists for a C-contiguous structured array whose requested fields are native
    float32 at 4-byte aligned offsets (every Inria PLY read on a little-endian host).
    """
    dt = v.dtype
    if v.ndim != 1 or not v.flags.c_contiguous or dt.itemsize % 4 or not names:
        return None
    idx = []
    for n in names:
        ft, off = dt.fields[n][:2]
        if ft != np.dtype(np.float32) or off % 4:
            return None
        idx.append(off // 4)
    return idx


def _cols(v: np.ndarray, names: list[str]) -> np.ndarray:
    """Columns ``names`` of a structured array [N] as a new float64 array [N, len(names)]."""
    idx = _f4_index(v, names)
    if idx is not None:  # one strided gather instead of one pass over the records per column
        f = v.view(np.float32).reshape(len(v), v.dtype.itemsize // 4)
        k = idx[0]
        sel = f[:, k:k + len(idx)] if idx == list(range(k, k + len(idx))) else f[:, idx]
        return sel.astype(np.float64)
    out = np.empty((len(v), len(names)), np.float64)
    for i, n in enumerate(names):
        out[:, i] = v[n]
    return out


def _set_cols(out: np.ndarray, names: list[str], x: np.ndarray) -> None:
    """Write float32 [N, len(names)] ``x`` into the columns ``names`` of a structured array [N]."""
    idx = _f4_index(out, names)
    if idx is not None:
        f = out.view(np.float32).reshape(len(out), out.dtype.itemsize // 4)
        k = idx[0]
        if idx == list(range(k, k + len(idx))):
            f[:, k:k + len(idx)] = x
        else:
            f[:, idx] = x
        return
    for i, c in enumerate(names):
        out[c] = x[:, i]


def _planes(a: np.ndarray) -> Callable[[], memoryview]:
    """Byte-plane shuffle of a C-contiguous integer array [N, D] -> callable for write_container."""
    def f() -> memoryview:
        row = a.dtype.itemsize * int(np.prod(a.shape[1:]))
        b = np.ascontiguousarray(a).view(np.uint8).reshape(len(a), row)
        return memoryview(np.ascontiguousarray(b.T).reshape(-1))
    return f


def _unplanes(raw: bytes, dtype: str, shape: list[int]) -> np.ndarray:
    n = shape[0]
    row = int(np.prod(shape[1:])) * np.dtype(dtype).itemsize if len(shape) > 1 else np.dtype(dtype).itemsize
    b = np.frombuffer(raw, np.uint8).reshape(row, n).T
    return np.ascontiguousarray(b).view(dtype).reshape(shape)


def quantise(verts: np.ndarray, header: PlyHeader, opts: Any) -> tuple[dict, list]:
    """Quantise a structured vertex array [N] (Inria layout). Returns (metadata, blocks)."""
    meta, blocks, _ = _quantise(verts, header, opts)
    return meta, blocks


def _quantise(verts: np.ndarray, header: PlyHeader, opts: Any, *, ranges: dict | None = None,
              rest_bits: list[int] | None = None) -> tuple[dict, list, np.ndarray]:
    """:func:`quantise` plus the Morton order it applied (int64 [N]: stored Gaussian i is source ``order[i]``).

    ``ranges`` ({group: (lo [D], hi [D])}, float32 values) replaces the min/max ranges of the groups
    it names and ``rest_bits`` (one count per SH band) the single SH bit count: then the container's
    codec is :data:`LOWBIT_CODEC` (the encoder of ``qat-3dgs-lowbit``, which trains on these grids).
    """
    names = list(verts.dtype.names)
    deg = sh_degree_from_names(names)
    n = len(verts)
    g = _column_groups(deg)
    bits = {"pos": opts.position_bits, "scale": 8, "dc": 8, "rest": opts.sh_bits or 4, "opacity": 8,
            "rot": opts.rotation_bits}
    if rest_bits is not None:
        if len(rest_bits) != deg or any(not _is_int(b) or b not in BAND_BITS for b in rest_bits):
            raise InputError(f"{header.path}: SH bits per band {rest_bits!r}: need {deg} integers in 2..8")
        bits["rest"] = [int(b) for b in rest_bits]
    handled = set(sum(g.values(), [])) | {"opacity", "rot_0", "rot_1", "rot_2", "rot_3"}
    used = [c for c in names if c in handled]
    idx = _f4_index(verts, used)
    fast_ok = idx is not None and n > 0 and bool(np.isfinite(
        verts.view(np.float32).reshape(n, verts.dtype.itemsize // 4)[:, idx]).all())
    for c in ([] if fast_ok else used):
        if not np.isfinite(verts[c]).all():
            raise InputError(f"{header.path}: column {c!r} has NaN/Inf values; the quantised preset needs finite "
                             "values (use a lossless preset, which keeps them bit for bit)")
    arrays: dict[str, np.ndarray] = {}
    out_ranges: dict[str, list] = {}
    for k, cols in g.items():
        x = _cols(verts, cols)
        if ranges is not None and k in ranges:
            lo, hi = (np.asarray(r, np.float64).reshape(len(cols)) for r in ranges[k])
        else:
            lo = x.min(0) if n else np.zeros(len(cols))
            hi = x.max(0) if n else np.zeros(len(cols))
        # store the range as float32 so encoder and decoder use identical numbers
        lo, hi = lo.astype(np.float32).astype(np.float64), hi.astype(np.float32).astype(np.float64)
        out_ranges[k] = [lo.tolist(), hi.tolist()]
        arrays[k] = _uq_cols(x, lo, hi, rest_column_bits(bits[k], deg) if k == "rest" else bits[k])
    arrays["opacity"] = opacity_encode(verts["opacity"])[:, None]
    arrays["rot_index"], arrays["rot"] = _quat_encode(_cols(verts, [f"rot_{i}" for i in range(4)]), bits["rot"])
    arrays["rot_index"] = arrays["rot_index"][:, None]
    order = _morton_order(arrays["pos"], bits["pos"]) if n else np.zeros(0, np.int64)
    consts = constant_columns(verts)
    extra = []
    for c in names:
        if c in handled:
            continue
        ft = verts.dtype.fields[c][0]
        if c in consts:
            extra.append({"name": c, "constant": bits_hex(np.frombuffer(consts[c], ft)[0])})
        else:
            extra.append({"name": c, "constant": None})
            arrays["extra:" + c] = np.ascontiguousarray(verts[c]).view(f"u{ft.itemsize}")[:, None]
    meta = {
        "codec": PRESET if rest_bits is None else LOWBIT_CODEC,
        "codec_version": CODEC_VERSION if rest_bits is None else CODECS[LOWBIT_CODEC],
        "ply_header": header.raw.decode("ascii"),
        "n_vertices": n,
        "sh_degree": deg,
        "bits": bits,
        "ranges": out_ranges,
        "extra_columns": extra,
        "order": "morton",
        "arrays": {},
    }
    blocks = []
    for k, a in arrays.items():
        a = np.take(a, order, axis=0)
        if k == "pos" and n:
            # Morton order makes consecutive positions close: store wrapping differences
            a = np.diff(a, axis=0, prepend=np.zeros((1, 3), a.dtype))
        meta["arrays"][k] = {"block": len(blocks), "dtype": a.dtype.str, "shape": list(a.shape)}
        blocks.append(_planes(a))
    return meta, blocks, order


#: Bits each quantised group may use (the ranges of :class:`~splatforge_core.codec.CodecOptions`; fixed 8 elsewhere).
ALLOWED_BITS: dict[str, range] = {"pos": range(8, 25), "scale": range(8, 9), "dc": range(8, 9),
                                  "rest": range(4, 9), "opacity": range(8, 9), "rot": range(6, 13)}


def _uint_str(bits: int) -> str:
    return np.dtype("<u1" if bits <= 8 else "<u2" if bits <= 16 else "<u4").str


def validate_meta(path: str | os.PathLike, meta: dict) -> PlyHeader:
    """Check a ``quantised`` container's metadata before anything is allocated; return the stored header.

    Checked: codec and version; the stored PLY header (ASCII, binary, only a scalar vertex
    element whose columns include the Inria ones); ``n_vertices`` an integer equal to its
    count; ``sh_degree`` matching the header's f_rest columns; ``bits`` exactly the six groups,
    each an integer in :data:`ALLOWED_BITS`; ``ranges`` per group two lists of finite numbers,
    one per column, lo <= hi; ``extra_columns`` the header's other columns in order, each a
    valid hex constant or stored; ``arrays`` exactly the expected arrays, each with the dtype
    its bits imply, shape [N, D] and a distinct block index in range whose ``raw_size`` is
    N x D x itemsize (so the vertex count is tied to the file size through zstd's maximum ratio).
    Raises :class:`InputError` naming the file.
    """
    def bad(what: str) -> InputError:
        return InputError(f"{path}: {what}; {REENCODE}")

    codec = meta.get("codec")
    if codec not in CODECS or meta.get("codec_version") != CODECS[codec]:
        raise InputError(f"{path}: not a {PRESET} v{CODEC_VERSION} or {LOWBIT_CODEC} v{CODECS[LOWBIT_CODEC]} container")
    hdr = stored_header(path, meta)
    if len(hdr.elements) != 1:
        raise bad("quantised containers hold only the vertex element")
    el = hdr.elements[0]
    names = [p.name for p in el.properties]
    dt = el.dtype(hdr.byte_order)
    n = meta.get("n_vertices")
    if not _is_int(n) or n != el.count:
        raise bad(f"vertex count {n!r} does not match the stored header ({el.count})")
    try:
        deg = sh_degree_from_names(names)
    except InputError as e:
        raise bad(str(e)) from None
    if meta.get("sh_degree") != deg or not _is_int(meta.get("sh_degree")):
        raise bad(f"sh_degree {meta.get('sh_degree')!r} does not match the stored header ({deg})")
    groups = _column_groups(deg)
    handled = set(sum(groups.values(), [])) | {"opacity", "rot_0", "rot_1", "rot_2", "rot_3"}
    missing = [c for c in handled if c not in dt.names]
    if missing:
        raise bad(f"the stored header lacks columns {sorted(missing)[:5]}")
    bits = meta.get("bits")
    if not isinstance(bits, dict) or set(bits) != set(ALLOWED_BITS):
        raise bad(f"bits {bits!r} must name exactly the groups {sorted(ALLOWED_BITS)}")
    for k, allowed in ALLOWED_BITS.items():
        if k == "rest" and codec == LOWBIT_CODEC:
            b = bits[k]
            if not isinstance(b, list) or len(b) != deg or any(not _is_int(x) or x not in BAND_BITS for x in b):
                raise bad(f"bits['rest'] = {b!r} is not {deg} per-band bit counts in {BAND_BITS.start}..{BAND_BITS.stop - 1}")
        elif not _is_int(bits[k]) or bits[k] not in allowed:
            raise bad(f"bits[{k!r}] = {bits[k]!r} is not in {allowed.start}..{allowed.stop - 1}")
    ranges = meta.get("ranges")
    if not isinstance(ranges, dict) or set(ranges) != set(groups):
        raise bad(f"ranges must name exactly the groups {sorted(groups)}")
    for k, cols in groups.items():
        r = ranges[k]
        ok = (isinstance(r, list) and len(r) == 2 and all(isinstance(x, list) and len(x) == len(cols) for x in r)
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for x in r for v in x))
        if not ok:
            raise bad(f"ranges[{k!r}] is not two lists of {len(cols)} finite numbers")
        if any(lo > hi for lo, hi in zip(*r)):
            raise bad(f"ranges[{k!r}] has a lower bound above its upper bound")
    extra = meta.get("extra_columns")
    others = [c for c in names if c not in handled]
    if not isinstance(extra, list) or [e.get("name") if isinstance(e, dict) else None for e in extra] != others:
        raise bad(f"extra_columns do not list the stored header's other columns {others[:5]}")
    expect = {"pos": (_uint_str(bits["pos"]), 3), "scale": (_uint_str(8), 3), "dc": (_uint_str(8), 3),
              "rest": (_uint_str(max(rest_column_bits(bits["rest"], deg), default=8)), len(groups["rest"])), "opacity": (_uint_str(8), 1),
              "rot_index": (_uint_str(8), 1), "rot": (_uint_str(bits["rot"]), 3)}
    for e in extra:
        ft = dt.fields[e["name"]][0]
        if e.get("constant") is not None:
            check_constant(path, e["name"], e["constant"], ft)
        else:
            expect["extra:" + e["name"]] = (np.dtype(f"<u{ft.itemsize}").str, 1)
    arrays = meta.get("arrays")
    if not isinstance(arrays, dict) or set(arrays) != set(expect):
        raise bad(f"arrays must be exactly {sorted(expect)[:8]}")
    table = meta["blocks"]
    used = []
    for k, (dts, d) in expect.items():
        a = arrays[k]
        if not isinstance(a, dict) or a.get("dtype") != dts or a.get("shape") != [n, d]:
            raise bad(f"array {k!r} is {a!r}, expected dtype {dts} and shape [{n}, {d}]")
        i = a.get("block")
        if not _is_int(i) or not 0 <= i < len(table):
            raise bad(f"array {k!r} has block index {i!r}, not in 0..{len(table) - 1}")
        if table[i]["raw_size"] != n * d * np.dtype(dts).itemsize:
            raise bad(f"block {i} of array {k!r} holds {table[i]['raw_size']} bytes, expected {n * d * np.dtype(dts).itemsize}")
        used.append(i)
    if sorted(used) != list(range(len(table))):
        raise bad(f"block indices {sorted(used)} do not use each of the {len(table)} blocks exactly once")
    return hdr


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def dequantise(meta: dict, blocks: list[bytes], path: str = "") -> tuple[PlyHeader, np.ndarray]:
    """Decode quantised arrays into a structured array [N] in the source's vertex dtype.

    ``meta`` must have passed :func:`validate_meta` (re-checked here, cheap)."""
    hdr = validate_meta(path, meta)
    el = hdr.element("vertex")
    dt = el.dtype(hdr.byte_order)
    n = int(meta["n_vertices"])
    out = np.zeros(n, dtype=dt)
    arr = {k: _unplanes(blocks[v["block"]], v["dtype"], v["shape"]) for k, v in meta["arrays"].items()}
    if n:
        arr["pos"] = np.cumsum(arr["pos"], axis=0, dtype=arr["pos"].dtype)  # undo the delta coding
    deg = int(meta["sh_degree"])
    groups = _column_groups(deg)
    for k, cols in groups.items():
        lo, hi = (np.asarray(r, np.float64) for r in meta["ranges"][k])
        b = rest_column_bits(meta["bits"][k], deg) if k == "rest" else meta["bits"][k]
        _set_cols(out, cols, _udq_cols(arr[k], lo, hi, b))
    out["opacity"] = opacity_decode(arr["opacity"][:, 0])
    q = _quat_decode(arr["rot_index"][:, 0], arr["rot"], meta["bits"]["rot"])
    for i in range(4):
        out[f"rot_{i}"] = q[:, i]
    for e in meta["extra_columns"]:
        ft = dt.fields[e["name"]][0]
        if e["constant"] is not None:
            out[e["name"]] = np.frombuffer(check_constant(path, e["name"], e["constant"], ft), ft)[0]
        else:
            out[e["name"]] = arr["extra:" + e["name"]][:, 0].copy().view(ft)
    return hdr, out


def decode_quantised_ply_bytes(path: str | os.PathLike, meta_blocks: tuple[dict, list[bytes]] | None = None) -> bytes:
    """Decode a ``quantised`` container into PLY bytes (source header, dequantised values)."""
    meta, blocks = meta_blocks or read_container(path, check=lambda m: validate_meta(path, m))
    hdr, out = dequantise(meta, blocks, str(path))
    return hdr.raw + out.tobytes()


def decode_quantised_parts(path: str | os.PathLike) -> list:
    """The ``quantised`` decoder of the preset registry (:mod:`.presets`): ``[PLY bytes]``."""
    return [decode_quantised_ply_bytes(path)]


# ------------------------------------------------------------------ render-based quality


def orbit_cameras(means: np.ndarray, n_views: int = 8, size: int = 256, fov_deg: float = 60.0,
                  elevation_deg: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """Orbit cameras around the robust bounding box of ``means`` [N, 3] (metres).

    Centre = per-axis median; radius from the 5th-95th percentile extent (distance =
    0.75 x extent diagonal / tan(fov/2), so the box fills the view); cameras on a ring at
    ``elevation_deg`` above the x-y plane (+z up), looking at the centre.
    Returns (viewmats [V, 4, 4] cam_from_world, OpenCV axes; Ks [V, 3, 3] in pixels).
    """
    c = np.median(means, axis=0)
    lo, hi = np.percentile(means, 5, axis=0), np.percentile(means, 95, axis=0)
    diag = float(np.linalg.norm(hi - lo)) or 1.0
    f = 0.5 * size / math.tan(math.radians(fov_deg) / 2)
    dist = 0.75 * diag / math.tan(math.radians(fov_deg) / 2)
    from ..render.cameras import orbit_viewmats

    vms = orbit_viewmats(c, dist, n_views, elevation_deg)
    Ks = np.broadcast_to(np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]]), (n_views, 3, 3))
    return np.asarray(vms, np.float32), np.asarray(Ks, np.float32)


def _default_render_fn() -> Callable:
    try:
        from ..render import rasterization
    except ImportError as e:  # the CPU rasteriser module lands separately
        raise InputError(f"render-based PSNR needs splatforge_core.render.rasterization ({e})") from e
    return rasterization


def render_splat(v: np.ndarray, viewmats: np.ndarray, Ks: np.ndarray, size: int,
                 render_fn: Callable | None = None) -> np.ndarray:
    """Render an Inria-layout vertex array [N] from cameras: returns [V, H, W, 3] float32 in [0, 1].

    Activations as in Inria 3DGS: scales = exp(log-scale), opacity = sigmoid(logit),
    colour from SH (f_dc + f_rest, degree from the column count; Inria stores f_rest
    channel-major: f_rest_{c*(K-1)+k}). ``render_fn`` has gsplat's ``rasterization``
    signature (default: :func:`splatforge_core.render.rasterization`).
    """
    import torch

    fn = render_fn or _default_render_fn()
    names = list(v.dtype.names)
    deg = sh_degree_from_names(names)
    K = (deg + 1) ** 2
    n = len(v)
    means = torch.from_numpy(_cols(v, ["x", "y", "z"]).astype(np.float32))
    quats = torch.from_numpy(_cols(v, [f"rot_{i}" for i in range(4)]).astype(np.float32))
    scales = torch.from_numpy(np.exp(_cols(v, [f"scale_{i}" for i in range(3)])).astype(np.float32))
    opac = torch.sigmoid(torch.from_numpy(v["opacity"].astype(np.float32)))
    dc = _cols(v, [f"f_dc_{i}" for i in range(3)])[:, None, :]
    rest = _cols(v, [f"f_rest_{i}" for i in range(3 * (K - 1))]).reshape(n, 3, K - 1).transpose(0, 2, 1)
    sh = torch.from_numpy(np.concatenate([dc, rest], axis=1).astype(np.float32))
    with torch.no_grad():
        img, _, _ = fn(means, quats, scales, opac, sh, torch.from_numpy(viewmats), torch.from_numpy(Ks),
                       size, size, sh_degree=deg)
    return np.clip(img.detach().cpu().numpy()[..., :3], 0.0, 1.0)


def render_psnr(orig: np.ndarray, decoded: np.ndarray, n_views: int = 8, size: int = 256,
                render_fn: Callable | None = None) -> dict[str, Any]:
    """PSNR (dB, peak 1.0) between renders of two splats from the same orbit cameras.

    Cameras from :func:`orbit_cameras` on ``orig``'s positions. Returns ``{"psnr_db"
    (from the MSE pooled over all views), "psnr_min_view_db", "views", "size"}``;
    identical renders give ``inf`` (reported as the string "inf" in JSON).
    """
    vm, Ks = orbit_cameras(_cols(orig, ["x", "y", "z"]), n_views, size)
    a = render_splat(orig, vm, Ks, size, render_fn)
    b = render_splat(decoded, vm, Ks, size, render_fn)
    mse_v = ((a.astype(np.float64) - b) ** 2).reshape(len(a), -1).mean(1)
    to_db = lambda m: float("inf") if m == 0 else 10 * math.log10(1.0 / m)  # noqa: E731
    return {"psnr_db": to_db(float(mse_v.mean())), "psnr_min_view_db": min(to_db(float(m)) for m in mse_v),
            "views": n_views, "size": size}


def encode_quantised(
    in_ply: str | os.PathLike, out_path: str | os.PathLike, opts: Any, *,
    header: PlyHeader | None = None, data: np.ndarray | None = None,
    render_fn: Callable | None = None,
) -> tuple[EncodeResult, dict[str, Any]]:
    """Write the ``quantised`` container of ``in_ply``; decode it again and measure quality.

    The container is decoded in-process (a damaged container raises). When
    ``opts.evaluate_psnr`` is true, the source and decoded splats are rendered from
    ``opts.psnr_views`` orbit cameras at ``opts.psnr_size`` pixels and the PSNR is put in
    the extra report fields ``render_psnr_db`` (MSE pooled over views), ``render_psnr_min_view_db``,
    ``psnr_views``, ``psnr_size``; ``delta_psnr_db`` is null (it needs training images).
    Raises :class:`InputError` for bad input or non-finite values in quantised columns.
    """
    in_ply = Path(in_ply)
    if data is None:
        data = map_file(in_ply)
    header = header or parse_header(in_ply)
    body = read_body(header, data)
    if len(header.elements) != 1:
        raise InputError(f"{in_ply}: the quantised preset supports PLYs with only a vertex element")
    verts = body.vertices
    meta, blocks, order = _quantise(verts, header, opts)
    extra: dict[str, Any] = {}
    with atomic_path(out_path) as tmp:
        size_out = write_container(tmp, meta, blocks, level=opts.zstd_level or 16)
        m2, b2 = read_container(tmp, check=lambda m: validate_meta(tmp, m))
        _, dec = dequantise(m2, b2, str(tmp))
        xyz = ["x", "y", "z"]
        extra["max_abs_position_error"] = (float(np.abs(_cols(dec, xyz) - _cols(verts, xyz)[order]).max())
                                           if len(verts) else 0.0)
        if opts.evaluate_psnr and len(verts):
            q = render_psnr(verts[order], dec, opts.psnr_views, opts.psnr_size, render_fn)
            extra["render_psnr_db"] = q["psnr_db"] if math.isfinite(q["psnr_db"]) else "inf"
            extra["render_psnr_min_view_db"] = q["psnr_min_view_db"] if math.isfinite(q["psnr_min_view_db"]) else "inf"
            extra["psnr_views"], extra["psnr_size"] = q["views"], q["size"]
    # delta_psnr_db (the PSNR change against the training images) needs cameras and images,
    # which a codec run does not have: reported as null; the render PSNR against the
    # original splat is the quality figure of this tier.
    extra["delta_psnr_db"] = None
    extra["delta_psnr_note"] = ("needs training images; see render_psnr_db (decoded vs original splat renders)")
    consts = {e["name"]: e["constant"] for e in meta["extra_columns"] if e["constant"] is not None}
    values = {k: {"hex": h, "value": _value_for_report(hex_to_bytes(h, verts.dtype.fields[k][0]), verts.dtype.fields[k][0])}
              for k, h in consts.items()}
    extra["bits"] = meta["bits"]
    return EncodeResult(len(verts), consts, values, int(data.size), int(size_out)), extra
