"""Preset ``qat-3dgs-bundle``: int8 higher-order SH with a quantisation-aware finetune; output a valid PLY.

Input: a bundle (:mod:`.bundle`, or an Inria-layout folder, which is what an extracted bundle is):
``point_cloud.ply`` (3DGS, SH degree >= 1), ``cameras.json`` and ``images/``.

Encoder (:func:`encode_folder`), all PSNR/SSIM on the same held-out views (every 8th frame,
:func:`splatforge_core.inria.load_views`, never trained on), rendered at ``finetune_max_side``:

(a) the input splat; (b) post-hoc quantisation of its ``f_rest_*`` (no finetune); (c) a
quantisation-aware finetune (:func:`splatforge_core.finetune.finetune` with the quantiser
in the forward pass through a straight-through estimator) of ``finetune_iters`` steps, then
quantised; (d) a float32 finetune of the same length, so that a gain from extra training is not
credited to quantisation. (c) is what is written; ``delta_psnr_db`` is (c) - (a).

Quantiser: per ``f_rest_i`` column ``j`` (45 columns for SH degree 3, channel-major as in the
Inria PLY), symmetric: ``s_j = max_i |x_ij| / Q`` with ``Q = 2^(sh_bits-1) - 1`` (127 for 8
bits; ``s_j = 0`` for an all-zero column), ``q_ij = clip(round(x_ij / s_j), -Q, Q)`` stored as
int8, decoded as ``float32(q_ij) * float32(s_j)`` (computed in float32: the decoder reproduces
the values the encoder evaluated bit for bit). A zero point (asymmetric [min, max] range) was
measured and left out: coefficient MSE 1.03x the symmetric one on the demo splat (SH 1, column
means < 0.3% of the ranges) and 0.65x on ``inria3dgs_sh3_9080.ply``, where the symmetric MSE is
already 1.6e-7 (RMS 4e-4 of an SH coefficient, far below one 8-bit colour step), so it cannot
move the held-out PSNR measurably.

File format (legal PLY 1.0; every reader that skips comments opens it, with ``f_rest_*``
as ``char`` columns):

* ``comment splatforge_codec qat-3dgs-bundle 1`` after the ``format`` line and the
  ``comment splatforge_sha256 <hex>`` line of the lossless tier (SHA-256 of the file without
  that line, :mod:`.lossless`), checked before anything is decoded;
* ``comment splatforge_sh_bits <b>`` (4..8) before the ``element vertex`` line;
* ``comment splatforge_sh_scale f_rest_<j> <8 hex digits>`` (the float32 bits of ``s_j``, most
  significant byte first, as the lossless tier's ``constant_field`` comments) right before
  each ``property char f_rest_<j>`` line;
* then the lossless tier's constant strip on top (the zero normals of Inria PLYs become
  ``comment constant_field`` lines; the strip is verified bit for bit by :func:`.lossless.encode_ply`).

Decoding (:func:`decode_parts`, ``splatforge decompress``) writes a float32 Inria PLY
(``x y z nx ny nz f_dc_* f_rest_* opacity scale_* rot_*``) of the dequantised values. Columns
of the input beyond the Inria layout are not kept.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..errors import InputError
from ..io import atomic_path
from ..log import get_logger
from ..splat import REQUIRED_PROPERTIES, property_names, read_splat_ply, sh_degree_from_names
from . import lossless
from .container import corrupt, REENCODE
from .layout import CHECKSUM_COMMENT, CODEC_COMMENT, PLY_TYPES, PlyHeader, bits_hex, map_file, parse_header, read_body

log = get_logger("codec")

PRESET = "qat-3dgs-bundle"
FORMAT_VERSION = 1
SCALE_COMMENT = "splatforge_sh_scale"
BITS_COMMENT = "splatforge_sh_bits"
#: CPU defaults of the finetune: 40 steps (benchmarks/results/qat.md) at the bundle images' own
#: resolution (None; the workflow packs a bundle at the resolution the splat was trained at). A
#: lower finetune resolution is not a cheap stand-in: on snowmiku (SH 3) the 96 px finetune scored
#: +1.69 dB at 96 px but -2.37 dB at 256 px (SplatBench), while the same 40 steps at its 192 px
#: training resolution gave +0.11 dB there. CUDA: 5000 steps at full resolution.
CPU_FINETUNE_ITERS = 40
CPU_MAX_SIDE = None
CUDA_FINETUNE_ITERS = 5000
EVAL_EVERY_N = 8

_MARKER = f"comment {CODEC_COMMENT} {PRESET} {FORMAT_VERSION}".encode()
_LOSSLESS_MARKER = f"comment {CODEC_COMMENT} {lossless.PRESET} {lossless.FORMAT_VERSION}".encode()


# --------------------------------------------------------------------------- quantiser


def qmax(bits: int) -> int:
    """Largest stored magnitude of a symmetric ``bits``-bit code: ``2^(bits-1) - 1``."""
    if not 2 <= bits <= 8:
        raise InputError(f"sh_bits {bits} not in 2..8")
    return (1 << (bits - 1)) - 1


def column_scales(rest: np.ndarray, bits: int) -> np.ndarray:
    """Per-column scales [C] float32 of ``rest`` [N, C] (``max |x| / qmax(bits)``, 0 for a zero column)."""
    return (np.abs(rest).max(axis=0).astype(np.float32) / np.float32(qmax(bits))).astype(np.float32)


def quantise_columns(rest: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantise ``rest`` [N, C] float32 per column -> (codes [N, C] int8, scales [C] float32)."""
    rest = np.asarray(rest, np.float32)
    s = column_scales(rest, bits)
    safe = np.where(s > 0, s, np.float32(1))
    q = np.clip(np.rint(rest / safe), -qmax(bits), qmax(bits))
    q[:, s == 0] = 0
    return q.astype(np.int8), s


def dequantise_columns(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``float32(q) * float32(s)`` [N, C] float32: the one dequantiser of encoder and decoder."""
    return q.astype(np.float32) * np.asarray(s, np.float32)[None, :]


def rest_matrix(shN: np.ndarray) -> np.ndarray:
    """[N, K-1, 3] (channel last) -> the PLY's ``f_rest`` columns [N, 3 (K-1)] (channel-major)."""
    n = shN.shape[0]
    return np.ascontiguousarray(np.asarray(shN, np.float32).transpose(0, 2, 1).reshape(n, -1))


def rest_to_shN(rest: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rest_matrix`."""
    n, c = rest.shape
    return np.ascontiguousarray(rest.reshape(n, 3, c // 3).transpose(0, 2, 1))


def fake_quant_torch(bits: int) -> Callable:
    """The quantiser of the QAT forward pass on torch ``shN`` [N, K-1, 3]: the same per-column
    symmetric grid as :func:`quantise_columns` (scale from the current values, no gradient)."""
    import torch

    Q = float(qmax(bits))

    def f(shN: "torch.Tensor") -> "torch.Tensor":
        s = shN.abs().amax(dim=0, keepdim=True) / Q  # per (coefficient, channel) = per f_rest column
        safe = torch.where(s > 0, s, torch.ones_like(s))
        return torch.clamp(torch.round(shN / safe), -Q, Q) * s

    return f


def quantised_splat(splat: dict, bits: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """(splat with dequantised ``shN``, codes [N, C] int8, scales [C] float32)."""
    q, s = quantise_columns(rest_matrix(splat["shN"]), bits)
    out = dict(splat)
    out["shN"] = rest_to_shN(dequantise_columns(q, s))
    return out, q, s


# --------------------------------------------------------------------------- file format


def _stored_records(splat: dict, q: np.ndarray) -> np.ndarray:
    """Structured little-endian records [N] of the stored PLY body (floats + ``char f_rest_*``)."""
    n = len(splat["means"])
    names = property_names(q.shape[1])
    rec = np.zeros(n, dtype=[(nm, "i1" if nm.startswith("f_rest_") else "<f4") for nm in names])
    cols = {"x": splat["means"][:, 0], "y": splat["means"][:, 1], "z": splat["means"][:, 2],
            "opacity": np.asarray(splat["opacities"]).reshape(-1)}
    for i in range(3):
        cols[f"f_dc_{i}"] = splat["sh0"][:, i]
        cols[f"scale_{i}"] = splat["scales"][:, i]
    for i in range(4):
        cols[f"rot_{i}"] = splat["quats"][:, i]
    for nm, v in cols.items():
        rec[nm] = np.asarray(v, np.float32)
    for j in range(q.shape[1]):
        rec[f"f_rest_{j}"] = q[:, j]
    return rec


def stored_header(n: int, s: np.ndarray, bits: int) -> bytes:
    """Header of the stored (pre-strip) PLY: bits comment, one scale comment per char column."""
    lines = ["ply", "format binary_little_endian 1.0", f"comment {BITS_COMMENT} {bits}", f"element vertex {n}"]
    for nm in property_names(len(s)):
        if nm.startswith("f_rest_"):
            j = int(nm[7:])
            lines += [f"comment {SCALE_COMMENT} {nm} {bits_hex(np.float32(s[j]))}", f"property char {nm}"]
        else:
            lines.append(f"property float {nm}")
    return ("\n".join(lines) + "\nend_header\n").encode("ascii")


def float_ply_parts(values: dict[str, np.ndarray], names: list[str], comments: tuple[str, ...] = ()) -> list:
    """A float32 little-endian Inria PLY (header bytes, records [N]) of columns ``values`` in ``names`` order."""
    n = len(values[names[0]])
    rec = np.empty(n, dtype=[(nm, "<f4") for nm in names])
    for nm in names:
        rec[nm] = values[nm]
    head = ["ply", "format binary_little_endian 1.0", *[f"comment {c}" for c in comments], f"element vertex {n}",
            *[f"property float {nm}" for nm in names], "end_header"]
    return [("\n".join(head) + "\n").encode("ascii"), rec]


def _checksum_line(hdr: PlyHeader, preset: str = PRESET, version: int = FORMAT_VERSION) -> tuple[int, int, str]:
    """(offset, length, digest) of the checksum line; checks the codec marker ``preset version`` (clear errors
    naming the file). Shared by the int8 PLY presets (this one and ``qat-bundle``)."""
    path = hdr.path
    markers = [c.split() for c in hdr.comments if c.split()[:1] == [CODEC_COMMENT]]
    if not markers:
        raise InputError(f"{path}: not a file written by the {preset} preset (no '{CODEC_COMMENT}' comment)")
    if len(markers) != 1 or markers[0][1:] != [preset, str(version)]:
        raise InputError(f"{path}: unsupported codec marker {' '.join(markers[0])!r} (this reader: {preset} "
                         f"{version}); {REENCODE}")
    found, off = [], 0
    for line in hdr.lines:
        tok = line.split()
        if tok[:2] == [b"comment", CHECKSUM_COMMENT.encode()]:
            found.append((off, len(line), tok[2].decode("ascii", "replace") if len(tok) == 3 else ""))
        off += len(line)
    if len(found) != 1:
        raise corrupt(path, f"{len(found)} '{CHECKSUM_COMMENT}' lines, expected 1")
    if not re.fullmatch(r"[0-9a-f]{64}", found[0][2]):
        raise corrupt(path, f"malformed '{CHECKSUM_COMMENT}' line")
    return found[0]


def sign(data: bytes, path: str | os.PathLike, preset: str = PRESET, version: int = FORMAT_VERSION) -> bytes:
    """``data`` (a whole file with one checksum line and the codec marker ``preset version``) with that
    line's digest filled in (SHA-256 of the file without the line, as :func:`.lossless.verify_checksum`
    checks it)."""
    hdr = parse_header(str(path), raw=data[: data.index(b"end_header") + len(b"end_header\n")])
    off, ln, _ = _checksum_line(hdr, preset, version)
    h = hashlib.sha256(data[:off] + data[off + ln:]).hexdigest().encode()
    line = data[off: off + ln]
    new = line[: line.rindex(b" ") + 1] + h + (b"\r\n" if line.endswith(b"\r\n") else b"\n")
    return data[:off] + new + data[off + ln:]


def _hex_f32(path, name: str, h: str) -> np.float32:
    if not re.fullmatch(r"[0-9a-fA-F]{8}", h):
        raise InputError(f"{path}: scale of {name} is {h!r}, not 8 hex digits (float32 bits); {REENCODE}")
    v = np.frombuffer(bytes.fromhex(h)[::-1], "<f4")[0]
    if not np.isfinite(v) or v < 0:
        raise InputError(f"{path}: scale of {name} is {float(v)!r}; scales must be finite and >= 0; {REENCODE}")
    return v


def read_quant_meta(hdr: PlyHeader) -> tuple[int, dict[str, np.float32]]:
    """Validate the stored header (after the constant strip is undone): (sh_bits, {f_rest name: scale}).

    Raises :class:`InputError` naming the file: a missing / repeated / out-of-range bits comment,
    an ``f_rest`` column that is not ``char`` or has no (or two) scale comments, a scale comment for
    another column, a malformed, negative or non-finite scale, an ``f_rest`` count that is no SH
    layout, a required 3DGS column missing or not float.
    """
    path = hdr.path
    bits_c = [c.split() for c in hdr.comments if c.split()[:1] == [BITS_COMMENT]]
    if len(bits_c) != 1 or len(bits_c[0]) != 2 or not bits_c[0][1].isdigit() or not 2 <= int(bits_c[0][1]) <= 8:
        raise InputError(f"{path}: expected one '{BITS_COMMENT} <2..8>' comment, got {[' '.join(b) for b in bits_c]}; "
                         f"{REENCODE}")
    bits = int(bits_c[0][1])
    el = hdr.element("vertex")
    types = {p.name: p.ply_type for p in el.properties}
    rest = [p.name for p in el.properties if p.name.startswith("f_rest_")]
    try:
        deg = sh_degree_from_names(rest)
    except InputError as e:
        raise InputError(f"{path}: {e}; {REENCODE}") from None
    want = [f"f_rest_{j}" for j in range(len(rest))]
    if deg < 1 or rest != want:
        raise InputError(f"{path}: f_rest columns {rest[:3]}... are not f_rest_0..{len(want) - 1} in order; {REENCODE}")
    bad = [f"{n} ({types[n]})" for n in rest if PLY_TYPES[types[n]] != "i1"]
    if bad:
        raise InputError(f"{path}: {PRESET} stores f_rest as char, got {', '.join(bad[:3])}; {REENCODE}")
    miss = [n for n in REQUIRED_PROPERTIES if n not in types or PLY_TYPES[types[n]] != "f4"]
    if miss:
        raise InputError(f"{path}: 3DGS columns missing or not float: {', '.join(miss)}; {REENCODE}")
    scales: dict[str, np.float32] = {}
    for c in hdr.comments:
        tok = c.split()
        if tok[:1] != [SCALE_COMMENT]:
            continue
        if len(tok) != 3:
            raise InputError(f"{path}: malformed line 'comment {c}'; {REENCODE}")
        if tok[1] not in want:
            raise InputError(f"{path}: scale comment for {tok[1]!r}, which is not an f_rest column; {REENCODE}")
        if tok[1] in scales:
            raise InputError(f"{path}: two scale comments for {tok[1]}; {REENCODE}")
        scales[tok[1]] = _hex_f32(path, tok[1], tok[2])
    missing = [n for n in want if n not in scales]
    if missing:
        raise InputError(f"{path}: no scale comment for {', '.join(missing[:3])} ({len(missing)} of {len(want)}); "
                         f"{REENCODE}")
    return bits, scales


def _stored(path: str | os.PathLike, preset: str = PRESET, version: int = FORMAT_VERSION,
            lossless_marker: bytes = _LOSSLESS_MARKER) -> tuple[PlyHeader, np.ndarray]:
    """Checksum-verified stored header (constant strip undone) and its records [N], for a file of the int8
    PLY preset ``preset version`` whose constant strip is written as ``lossless_marker`` (this preset and
    ``qat-bundle``)."""
    marker = f"comment {CODEC_COMMENT} {preset} {version}".encode()
    hdr = parse_header(path)
    data = map_file(path)
    off, ln, want = _checksum_line(hdr, preset, version)
    if len(data) < hdr.size or lossless.file_digest(data, off, ln) != want:
        raise corrupt(path)
    if marker not in hdr.raw:
        raise corrupt(path, "codec marker line is not in canonical form")
    hdr2 = parse_header(str(path), raw=hdr.raw.replace(marker, lossless_marker, 1))
    orig_raw, consts = lossless.restore_header(hdr2)
    body = read_body(hdr, data)
    inner = parse_header(str(path), raw=orig_raw)
    if inner.fmt != "binary_little_endian" or len(inner.elements) != 1:
        raise InputError(f"{path}: a {preset} file has one little-endian 'vertex' element; {REENCODE}")
    parts = lossless.assemble(inner, body, {n: (t, h) for n, t, h in consts})
    return inner, parts[2]


def check(path: str | os.PathLike, hdr: Optional[PlyHeader] = None) -> PlyHeader:
    """Validate a ``qat-3dgs-bundle`` PLY (checksum, then its metadata) without writing anything;
    returns the stored header. Raises :class:`InputError` naming the file (see :func:`decode_parts`)."""
    inner, recs = _stored(path)
    _decoded(path, inner, recs)
    return inner


def _decoded(path, inner: PlyHeader, recs: np.ndarray) -> dict[str, np.ndarray]:
    bits, scales = read_quant_meta(inner)
    if len(recs) == 0:
        raise InputError(f"{path}: 0 Gaussians; {REENCODE}")
    names = [p.name for p in inner.element("vertex").properties]
    out: dict[str, np.ndarray] = {}
    lim = qmax(bits)
    for nm in names:
        col = recs[nm]
        if nm.startswith("f_rest_"):
            if np.abs(col.astype(np.int16)).max() > lim:
                raise InputError(f"{path}: column {nm} holds codes beyond +-{lim} of a {bits}-bit quantiser; {REENCODE}")
            out[nm] = dequantise_columns(col[:, None], np.array([scales[nm]], np.float32))[:, 0]
        else:
            out[nm] = np.asarray(col, np.float32)
    return out


def decode_parts(path: str | os.PathLike) -> list:
    """Decode a ``qat-3dgs-bundle`` PLY into a float32 Inria PLY, as [header bytes, records [N]].

    Raises :class:`InputError` naming the file: not this preset's output, a checksum mismatch
    (corrupt or edited), or bad quantisation metadata (:func:`read_quant_meta`), codes beyond
    the quantiser's range.
    """
    inner, recs = _stored(path)
    vals = _decoded(path, inner, recs)
    names = [p.name for p in inner.element("vertex").properties]
    return float_ply_parts(vals, names)


def write_stored(splat: dict, q: np.ndarray, s: np.ndarray, bits: int, out_path: str | os.PathLike,
                 keep_required: bool = True) -> lossless.EncodeResult:
    """Write the ``qat-3dgs-bundle`` PLY of ``splat`` (float columns) with codes ``q`` / scales ``s``.

    The stored PLY goes through :func:`.lossless.encode_ply` (constant strip, verified bit for
    bit), gets this preset's marker and checksum, and is decoded again and compared bit for bit
    with the dequantised values before it is renamed onto ``out_path``
    (:class:`.lossless.RoundTripError` otherwise).
    """
    n = len(splat["means"])
    rec = _stored_records(splat, q)
    with tempfile.TemporaryDirectory(dir=Path(out_path).parent, prefix=".qat-") as td:
        inner = Path(td) / "stored.ply"
        inner.write_bytes(stored_header(n, s, bits) + rec.tobytes())
        res = lossless.encode_ply(inner, Path(td) / "strip.ply", keep_required=keep_required)
        data = (Path(td) / "strip.ply").read_bytes()
        hlen = data.index(b"end_header") + len(b"end_header\n")
        head = data[:hlen]
        if head.count(_LOSSLESS_MARKER) != 1:  # pragma: no cover - lossless writes exactly one
            raise lossless.RoundTripError(f"{out_path}: unexpected lossless header")
        data = head.replace(_LOSSLESS_MARKER, _MARKER, 1) + data[hlen:]
        data = sign(data, out_path)
    want = {nm: rec[nm].astype(np.float32) for nm in rec.dtype.names if not nm.startswith("f_rest_")}
    deq = dequantise_columns(q, s)
    for j in range(q.shape[1]):
        want[f"f_rest_{j}"] = deq[:, j]
    write_checked(data, out_path, list(rec.dtype.names), want, decode_parts, PRESET)
    return lossless.EncodeResult(n, res.constants, res.constant_values, 0, len(data))


def write_checked(data: bytes, out_path: str | os.PathLike, names: list[str], want: dict[str, np.ndarray],
                  decode: Callable, preset: str) -> None:
    """Write ``data`` to ``out_path`` through a temporary file and move it into place only if
    ``decode(tmp)[1]`` (records [N]) has the columns ``names`` and reproduces ``want`` (float32 [N] per
    column) bit for bit. Shared by the int8 PLY presets (this one and ``qat-bundle``).

    Raises:
        lossless.RoundTripError: the decode differs (the temporary file is deleted).
    """
    with atomic_path(out_path) as tmp:
        Path(tmp).write_bytes(data)
        got = decode(tmp)[1]
        ok = list(got.dtype.names) == list(names) and all(
            np.array_equal(got[nm].view(np.uint32), want[nm].view(np.uint32)) for nm in got.dtype.names)
        if not ok:
            raise lossless.RoundTripError(f"{out_path}: self-check failed: decoding the {preset} output did not "
                                          "reproduce the dequantised values bit for bit; the output was deleted")


# --------------------------------------------------------------------------- encoder


def finetune_defaults(opts: Any, cuda: bool) -> tuple[int, Optional[int]]:
    """(iterations, max_side) of the finetune: the options', else 5000 / full resolution on CUDA,
    :data:`CPU_FINETUNE_ITERS` / :data:`CPU_MAX_SIDE` on CPU."""
    it = getattr(opts, "finetune_iters", None)
    ms = getattr(opts, "finetune_max_side", None)
    if it is None:
        it = CUDA_FINETUNE_ITERS if cuda else CPU_FINETUNE_ITERS
    if ms is None and not cuda:
        ms = CPU_MAX_SIDE  # None: the images' own size
    return int(it), (int(ms) if ms else None)


def _score(ev: dict) -> dict:
    return {"psnr": round(ev["psnr"], 4), "ssim": round(ev["ssim"], 5)}


def encode_folder(root: str | os.PathLike, out_path: str | os.PathLike, opts: Any, *, ply: Optional[Path] = None,
                  cameras: Optional[list] = None, images_dir: Optional[Path] = None,
                  device: Optional[str] = None) -> tuple[lossless.EncodeResult, dict[str, Any]]:
    """Encode the Inria-layout folder ``root`` (or an extracted bundle) into ``out_path`` (see module).

    Args:
        root: folder with ``cameras.json`` and ``images/`` (and ``point_cloud.ply`` unless ``ply``).
        opts: :class:`~splatforge_core.codec.CodecOptions` (``sh_bits``, default 8;
            ``finetune_iters``; ``finetune_max_side``; ``keep_required``).
        cameras, images_dir: already validated cameras / image folder (a :class:`.bundle.Bundle`'s).
        device: torch device (default CUDA when available).

    Returns:
        (EncodeResult with the input PLY's size, report fields: delta_psnr_db, psnr_baseline,
        psnr_canonical, four_way {input, posthoc_int8, qat, fp32_finetune: {psnr, ssim}},
        finetune_iters, train_wall_secs (the QAT finetune), fp32_finetune_wall_secs,
        constant_strip_bitexact, sh_bits, finetune_resolution, finetune_device, n_train_views,
        n_test_views, test_frames, finetune_logs).

    Raises:
        InputError: a splat of SH degree 0 (nothing to quantise: use ``qat-3dgs``), no held-out
            or no training views, bad cameras / images (:mod:`splatforge_core.inria`).
    """
    import torch

    from ..inria import load_views
    from ..finetune import evaluate, finetune

    root = Path(root)
    ply = Path(ply) if ply is not None else root / "point_cloud.ply"
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bits = getattr(opts, "sh_bits", None) or 8
    iters, max_side = finetune_defaults(opts, dev.type == "cuda")
    splat = read_splat_ply(ply)
    if splat["sh_degree"] < 1:
        raise InputError(f"{ply}: SH degree 0 (no f_rest columns): nothing for {PRESET} to quantise; "
                         "use the lossless 'qat-3dgs' preset")
    data = load_views(root, cameras, max_side=max_side, eval_every_n=EVAL_EVERY_N, images_dir=images_dir)
    if not data.test or not data.train:
        raise InputError(f"{root}: {len(data.train)} training and {len(data.test)} held-out views; the held-out "
                         f"split (every {EVAL_EVERY_N}th frame) needs at least 3 frames")
    res_px = f"{data.test[0].width}x{data.test[0].height}"
    log.info("%s: %d Gaussians, SH %d, %d train / %d held-out views at %s, %d finetune steps on %s", root,
             len(splat["means"]), splat["sh_degree"], len(data.train), len(data.test), res_px, iters, dev)
    ev_a = evaluate(splat, data.test, device=dev)
    post, _, _ = quantised_splat(splat, bits)
    ev_b = evaluate(post, data.test, device=dev)
    t0 = time.perf_counter()
    qat, log_c = finetune(splat, data, iters, quantise=fake_quant_torch(bits), device=dev)
    t_qat = time.perf_counter() - t0
    final, q, s = quantised_splat(qat, bits)
    ev_c = evaluate(final, data.test, device=dev)
    t0 = time.perf_counter()
    fp32, log_d = finetune(splat, data, iters, device=dev)
    t_fp = time.perf_counter() - t0
    ev_d = evaluate(fp32, data.test, device=dev)
    res = write_stored(final, q, s, bits, out_path, keep_required=getattr(opts, "keep_required", True))
    res.size_in = int(ply.stat().st_size)
    four = {"input": _score(ev_a), "posthoc_int8": _score(ev_b), "qat": _score(ev_c), "fp32_finetune": _score(ev_d)}
    extra = {
        "delta_psnr_db": round(ev_c["psnr"] - ev_a["psnr"], 4),
        "delta_ssim": round(ev_c["ssim"] - ev_a["ssim"], 5),
        "psnr_baseline": round(ev_a["psnr"], 4),
        "psnr_canonical": round(ev_c["psnr"], 4),
        "four_way": four,
        "finetune_iters": iters,
        "train_wall_secs": round(t_qat, 2),
        "fp32_finetune_wall_secs": round(t_fp, 2),
        "constant_strip_bitexact": True,  # lossless.encode_ply raises instead of returning otherwise
        "sh_bits": bits,
        "sh_degree": int(splat["sh_degree"]),
        "finetune_resolution": res_px,
        "finetune_device": str(dev),
        "n_train_views": len(data.train),
        "n_test_views": len(data.test),
        "test_frames": list(data.test_frames),
        "finetune_logs": {"qat": {k: v for k, v in log_c.items() if k != "history"},
                          "fp32": {k: v for k, v in log_d.items() if k != "history"}},
    }
    log.info("%s: four-way held-out PSNR input %.3f, post-hoc %.3f, QAT %.3f, fp32 finetune %.3f dB; %d -> %d bytes",
             root, ev_a["psnr"], ev_b["psnr"], ev_c["psnr"], ev_d["psnr"], res.size_in, res.size_out)
    return res, extra


def encode_preset(in_ply: str | os.PathLike, out_path: str | os.PathLike, opts: Any, *, header: Any = None,
                  data: Any = None, bundle: Any = None) -> tuple[lossless.EncodeResult, dict[str, Any]]:
    """The ``qat-3dgs-bundle`` encoder of the preset registry: :func:`encode_folder` on ``bundle``
    (a :class:`.bundle.Bundle`, which :func:`splatforge_core.codec.main` opens and validates).

    Raises:
        InputError: no bundle (call :func:`encode_folder` for an Inria folder).
    """
    if bundle is None:
        raise InputError(f"{in_ply}: the {PRESET} preset needs the splat's training cameras and images: give a "
                         "bundle (splatforge bundle SCENE_OR_WORKDIR out.tar.gz)")
    return encode_folder(bundle.root, out_path, opts, ply=Path(in_ply), cameras=bundle.cameras,
                         images_dir=bundle.images_dir)
