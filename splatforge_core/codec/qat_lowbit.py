"""Preset ``qat-3dgs-lowbit``: few-bit SH per band and SPZ-like attributes, finetuned on the encoder's own grids.

Input: a bundle (:mod:`.bundle`) or an Inria-layout folder: ``point_cloud.ply`` (3DGS, SH degree
>= 1), ``cameras.json``, ``images/``. Output: an ``.sfz`` container (:mod:`.container`) in the
layout of the ``quantised`` tier (:mod:`.quantised`: Morton order, byte-plane shuffle, zstd) with
codec ``qat-3dgs-lowbit``: the same arrays, but one SH bit count per band and every range fixed
by this encoder *before* the finetune, so that the finetune trains the values the file stores.

The grid (:func:`make_grid`, from the input splat):

* positions: ``position_bits`` (16) per axis over the input's [min, max]; log-scales and DC
  colour 8 bits per column over [min, max]; opacity 8 bits of sigmoid(logit); rotations
  smallest-three with ``rotation_bits`` (8) bits: exactly the ``quantised`` tier's quantisers;
* SH band l (l = 1..degree): ``band_bits[l-1]`` bits, per ``f_rest`` column a grid that holds
  zero (``lo = -Q s``, ``hi = (2^b - 1 - Q) s``, ``Q = 2^(b-1) - 1``: code Q is 0), whose step
  ``s`` minimises the column's squared error (clipping included) over 40 candidates
  ``max|x| * f / Q``, f log-spaced in [1/64, 1] (:func:`sh_range`). Most higher-order SH
  coefficients of a trained splat are near zero, so a zero code and clipped outliers cost few
  bits after zstd, where a [min, max] grid without a zero level cannot (the ``quantised`` tier's).

Encoder (:func:`encode_folder`): on the held-out views (every 8th frame,
:func:`splatforge_core.inria.load_views`, never trained on), at ``finetune_max_side``, the PSNR /
SSIM of (a) the input, (b) the input on the grid without finetune (post-hoc), (c) the finetune
with every parameter on the grid in the forward pass (:func:`splatforge_core.finetune.finetune`,
``quantise_all``: straight-through estimator; the forward quantiser is :func:`fake_quant`, the
encoder's own functions), then on the grid, and (d) a float32 finetune of the same length. (c)
is written; decoding the file gives (c)'s values bit for bit (checked before the output is
renamed into place, :class:`.lossless.RoundTripError` otherwise). Default ``band_bits``
(:data:`DEFAULT_BAND_BITS`): measured in ``benchmarks/results/qat.md`` ("lower-bit tier").

Decoding: :func:`.quantised.decode_quantised_parts` (``splatforge decompress``: a float32 PLY in
the stored header's layout, Gaussians in Morton order).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import InputError
from ..log import get_logger
from ..splat import read_splat_ply, write_splat_ply
from . import quantised as Q
from .container import read_container, write_container
from .layout import hex_to_bytes, map_file, parse_header, read_body
from .lossless import EncodeResult, RoundTripError, _value_for_report
from .qat_bundle import EVAL_EVERY_N, finetune_defaults, rest_matrix, rest_to_shN

log = get_logger("codec")

PRESET = Q.LOWBIT_CODEC
#: SH bits per band (1, 2, 3) by default; measured in benchmarks/results/qat.md ("lower-bit tier").
DEFAULT_BAND_BITS = (4, 3, 3)
DEFAULT_POSITION_BITS = 16
DEFAULT_ROTATION_BITS = 8
#: zstd level of the container (the quantised tier's default).
ZSTD_LEVEL = 16
#: Rate weight of the SH step choice (:func:`sh_range`), SH units squared per bit.
DEFAULT_LAMBDA = 1e-4
_STEP_FACTORS = np.geomspace(1.0 / 64, 8.0, 48)


@dataclass(frozen=True)
class Grid:
    """The quantisation grid shared by the finetune and the encoder.

    ranges: {"pos" [3], "scale" [3], "dc" [3], "rest" [3 (K-1)]: (lo, hi)} float64 arrays holding
        float32 values (what the container stores); band_bits: SH bits per band [degree];
    position_bits, rotation_bits: as the ``quantised`` tier's options; sh_degree: 1..3.
    """

    ranges: dict
    band_bits: tuple
    position_bits: int
    rotation_bits: int
    sh_degree: int


def _f32(x) -> np.ndarray:
    return np.asarray(x, np.float64).astype(np.float32).astype(np.float64)


def sh_range(x: np.ndarray, bits: int, lam: float = 0.0) -> tuple[float, float]:
    """(lo, hi) of a ``bits``-bit grid with a zero level for the column ``x`` [N] (see module).

    The step minimises ``sum (x - x_q)^2 + lam * N * H`` over the candidates, ``x_q`` from the
    grid's own quantiser (:func:`.quantised._uq` / ``_udq``), ``H`` the codes' empirical entropy in
    bits (what zstd's entropy coder approaches); ``lam`` in SH units squared per bit (0: least
    squared error). A column of zeros gets (0, 0) (every code decodes to 0).
    """
    x = np.asarray(x, np.float64)
    m = float(np.abs(x).max()) if len(x) else 0.0
    if m == 0:
        return 0.0, 0.0
    qm = (1 << (bits - 1)) - 1
    top = (1 << bits) - 1 - qm
    best, arg = np.inf, (0.0, 0.0)
    for f in _STEP_FACTORS:
        s = m * f / qm
        lo, hi = _f32([-qm * s])[0], _f32([top * s])[0]
        c = Q._uq(x[:, None].copy(), np.array([lo]), np.array([hi]), bits)
        r = Q._udq(c, np.array([lo]), np.array([hi]), bits)
        err = float(((r[:, 0] - x) ** 2).sum())
        if lam:
            p = np.bincount(c[:, 0], minlength=1 << bits) / len(x)
            p = p[p > 0]
            err += lam * len(x) * float(-(p * np.log2(p)).sum())
        if err < best:
            best, arg = err, (lo, hi)
    return arg


def make_grid(splat: dict, band_bits=DEFAULT_BAND_BITS, position_bits: int = DEFAULT_POSITION_BITS,
              rotation_bits: int = DEFAULT_ROTATION_BITS, lam: float = None) -> Grid:
    """The grid of ``splat`` (a :func:`splatforge_core.splat.read_splat_ply` dict, SH degree >= 1).

    Raises:
        InputError: SH degree 0, ``band_bits`` not one count in 2..8 per band, bits out of range.
    """
    deg = int(splat["sh_degree"])
    band_bits = tuple(int(b) for b in band_bits)
    if deg < 1:
        raise InputError(f"SH degree 0: nothing for {PRESET} to quantise per band; use the 'quantised' preset")
    if len(band_bits) < deg or any(b not in Q.BAND_BITS for b in band_bits[:deg]):
        raise InputError(f"{PRESET}: SH bits per band {list(band_bits)} must give {deg} counts in 2..8")
    band_bits = band_bits[:deg]
    if position_bits not in Q.ALLOWED_BITS["pos"] or rotation_bits not in Q.ALLOWED_BITS["rot"]:
        raise InputError(f"{PRESET}: position_bits {position_bits} (8..24) or rotation_bits {rotation_bits} (6..12) "
                         "out of range")
    ranges = {}
    for k, a in (("pos", splat["means"]), ("scale", splat["scales"]), ("dc", splat["sh0"])):
        a = np.asarray(a, np.float64)
        ranges[k] = (_f32(a.min(0)), _f32(a.max(0)))
    rest = rest_matrix(splat["shN"]).astype(np.float64)
    cb = Q.rest_column_bits(list(band_bits), deg)
    lam = DEFAULT_LAMBDA if lam is None else float(lam)
    lr = np.array([sh_range(rest[:, j], cb[j], lam) for j in range(rest.shape[1])]).reshape(-1, 2)
    ranges["rest"] = (lr[:, 0].copy(), lr[:, 1].copy())
    return Grid(ranges, band_bits, int(position_bits), int(rotation_bits), deg)


def fake_quant(splat: dict, grid: Grid) -> dict:
    """``splat`` on ``grid``: each array encoded and decoded with the container's own functions.

    Returns a splat dict (float32) whose values are bit for bit what :func:`encode_splat` stores
    and :func:`.quantised.dequantise` returns for ``splat`` (up to the Morton order).
    """
    r = grid.ranges
    out = dict(splat)

    def rt(x, k, bits):
        lo, hi = r[k]
        return Q._udq_cols(Q._uq_cols(np.asarray(x, np.float32).astype(np.float64), lo, hi, bits), lo, hi, bits)

    out["means"] = rt(splat["means"], "pos", grid.position_bits)
    out["scales"] = rt(splat["scales"], "scale", 8)
    out["sh0"] = rt(splat["sh0"], "dc", 8)
    n = len(out["means"])
    rest = rt(rest_matrix(splat["shN"]), "rest", Q.rest_column_bits(list(grid.band_bits), grid.sh_degree))
    out["shN"] = rest_to_shN(rest).reshape(np.asarray(splat["shN"]).shape)
    op = np.asarray(splat["opacities"], np.float32)
    out["opacities"] = Q.opacity_decode(Q.opacity_encode(op.reshape(-1))).reshape(op.shape)
    big, qi = Q._quat_encode(np.asarray(splat["quats"], np.float32).astype(np.float64).reshape(n, 4), grid.rotation_bits)
    out["quats"] = Q._quat_decode(big, qi, grid.rotation_bits)
    return out


def fake_quant_torch(grid: Grid):
    """The ``quantise_all`` of :func:`splatforge_core.finetune.finetune`: :func:`fake_quant` on
    detached tensors (through numpy, so the forward pass sees exactly the encoder's values)."""
    import torch

    def f(t: dict) -> dict:
        sp = {k: v.detach().cpu().numpy() for k, v in t.items()}
        sp["sh_degree"] = grid.sh_degree
        q = fake_quant(sp, grid)
        return {k: torch.from_numpy(np.ascontiguousarray(q[k], np.float32)).to(t[k].device) for k in t}

    return f


def _opts(grid: Grid) -> Any:
    from . import CodecOptions

    return CodecOptions(position_bits=grid.position_bits, rotation_bits=grid.rotation_bits, zstd_level=ZSTD_LEVEL,
                        evaluate_psnr=False)


def encode_splat(splat: dict, grid: Grid, out_path: str | os.PathLike) -> tuple[int, dict, dict]:
    """Write ``splat`` on ``grid`` as a ``qat-3dgs-lowbit`` container.

    Returns (bytes written, {array: compressed bytes}, {constant column: float32 bits as hex}).

    The splat is written as a float32 Inria PLY (:func:`splatforge_core.splat.write_splat_ply`,
    the stored header), quantised with the grid's ranges and bits (:func:`.quantised._quantise`)
    and decoded again; the decoded values must equal :func:`fake_quant` of ``splat`` bit for bit
    (Morton order applied), else :class:`.lossless.RoundTripError` and nothing is written.
    """
    from ..io import atomic_path

    want = fake_quant(splat, grid)
    with tempfile.TemporaryDirectory(dir=Path(out_path).parent, prefix=".lowbit-") as td:
        ply = Path(td) / "splat.ply"
        write_splat_ply(ply, splat["means"], splat["scales"], splat["quats"], splat["opacities"], splat["sh0"],
                        splat["shN"])
        hdr = parse_header(ply)
        verts = read_body(hdr, map_file(ply)).vertices
        ranges = {k: (lo, hi) for k, (lo, hi) in grid.ranges.items()}
        meta, blocks, order = Q._quantise(verts, hdr, _opts(grid), ranges=ranges, rest_bits=list(grid.band_bits))
        with atomic_path(out_path) as tmp:
            size = write_container(tmp, meta, blocks, level=ZSTD_LEVEL)
            m2, b2 = read_container(tmp, check=lambda m: Q.validate_meta(tmp, m))
            _, dec = Q.dequantise(m2, b2, str(tmp))
            got = read_splat_ply_records(dec)
            bad = [k for k in ("means", "scales", "quats", "opacities", "sh0", "shN")
                   if not np.array_equal(np.asarray(got[k], np.float32).view(np.uint32),
                                         np.asarray(want[k], np.float32)[order].reshape(got[k].shape).view(np.uint32))]
            if bad:
                raise RoundTripError(f"{out_path}: self-check failed: decoding the {PRESET} output did not give the "
                                     f"finetuned values on the grid bit for bit ({', '.join(bad)}); the output was deleted")
            sizes = {k: int(m2["blocks"][v["block"]]["size"]) for k, v in m2["arrays"].items()}
            consts = {e["name"]: e["constant"] for e in m2["extra_columns"] if e["constant"] is not None}
    return size, sizes, consts


def read_splat_ply_records(v: np.ndarray) -> dict:
    """A splat dict (float32 arrays, ``sh_degree``) of Inria-layout records [N] (e.g. a decoded container)."""
    n = len(v)
    deg = int(round(np.sqrt(len([c for c in v.dtype.names if c.startswith("f_rest_")]) / 3 + 1))) - 1
    k = (deg + 1) ** 2 - 1
    col = lambda names: np.stack([v[c] for c in names], 1).astype(np.float32)  # noqa: E731
    rest = col([f"f_rest_{j}" for j in range(3 * k)]) if k else np.zeros((n, 0), np.float32)
    return {"means": col(["x", "y", "z"]), "scales": col([f"scale_{i}" for i in range(3)]),
            "quats": col([f"rot_{i}" for i in range(4)]), "opacities": v["opacity"].astype(np.float32),
            "sh0": col([f"f_dc_{i}" for i in range(3)]), "shN": rest_to_shN(rest), "sh_degree": deg}


def _score(ev: dict) -> dict:
    return {"psnr": round(ev["psnr"], 4), "ssim": round(ev["ssim"], 5)}


def band_bits_option(opts: Any) -> tuple:
    """``opts.sh_band_bits`` (list of per-band bits) if the options have it, else :data:`DEFAULT_BAND_BITS`."""
    b = getattr(opts, "sh_band_bits", None)
    return tuple(b) if b else DEFAULT_BAND_BITS


def encode_folder(root: str | os.PathLike, out_path: str | os.PathLike, opts: Any, *, ply: Optional[Path] = None,
                  cameras: Optional[list] = None, images_dir: Optional[Path] = None,
                  device: Optional[str] = None) -> tuple[EncodeResult, dict[str, Any]]:
    """Encode the Inria folder ``root`` (or an extracted bundle) into ``out_path`` (see module).

    Args:
        root: folder with ``cameras.json`` and ``images/`` (and ``point_cloud.ply`` unless ``ply``).
        opts: :class:`~splatforge_core.codec.CodecOptions` (``finetune_iters``, ``finetune_max_side``;
            ``position_bits`` and ``rotation_bits`` are this preset's own defaults, 16 / 8).
        cameras, images_dir: a validated bundle's cameras / image folder.
        device: torch device (default CUDA when available).

    Returns:
        (EncodeResult with the input PLY's size, report fields: the design's callback fields
        (delta_psnr_db, psnr_baseline, psnr_canonical, finetune_iters, train_wall_secs,
        constant_strip_bitexact) and four_way {input, posthoc, qat, fp32_finetune: {psnr, ssim}},
        band_bits, position_bits, rotation_bits, array_bytes (compressed bytes per array),
        finetune_resolution, n_train_views, n_test_views, test_frames, finetune_logs).

    Raises:
        InputError: SH degree 0, no held-out or training views, bad cameras / images.
    """
    import torch

    from ..finetune import evaluate, finetune
    from ..inria import load_views

    root = Path(root)
    ply = Path(ply) if ply is not None else root / "point_cloud.ply"
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    iters, max_side = finetune_defaults(opts, dev.type == "cuda")
    splat = read_splat_ply(ply)
    if splat["sh_degree"] < 1:
        raise InputError(f"{ply}: SH degree 0 (no f_rest columns): nothing for {PRESET} to quantise per band; "
                         "use the 'quantised' preset")
    pos_bits = getattr(opts, "position_bits", DEFAULT_POSITION_BITS)
    rot_bits = getattr(opts, "rotation_bits", DEFAULT_ROTATION_BITS)
    grid = make_grid(splat, band_bits_option(opts), pos_bits, rot_bits)
    data = load_views(root, cameras, max_side=max_side, eval_every_n=EVAL_EVERY_N, images_dir=images_dir)
    if not data.test or not data.train:
        raise InputError(f"{root}: {len(data.train)} training and {len(data.test)} held-out views; the held-out "
                         f"split (every {EVAL_EVERY_N}th frame) needs at least 3 frames")
    res_px = f"{data.test[0].width}x{data.test[0].height}"
    log.info("%s: %d Gaussians, SH %d, bits per band %s, %d train / %d held-out views at %s, %d steps on %s", root,
             len(splat["means"]), splat["sh_degree"], list(grid.band_bits), len(data.train), len(data.test), res_px,
             iters, dev)
    ev_a = evaluate(splat, data.test, device=dev)
    ev_b = evaluate(fake_quant(splat, grid), data.test, device=dev)
    t0 = time.perf_counter()
    qat, log_c = finetune(splat, data, iters, quantise_all=fake_quant_torch(grid), device=dev)
    t_qat = time.perf_counter() - t0
    final = fake_quant(qat, grid)
    ev_c = evaluate(final, data.test, device=dev)
    t0 = time.perf_counter()
    fp32, log_d = finetune(splat, data, iters, device=dev)
    t_fp = time.perf_counter() - t0
    ev_d = evaluate(fp32, data.test, device=dev)
    size, sizes, consts = encode_splat(qat, grid, out_path)
    f4 = np.dtype("<f4")  # write_splat_ply's columns
    values = {k: {"hex": h, "value": _value_for_report(hex_to_bytes(h, f4), f4)} for k, h in consts.items()}
    res = EncodeResult(len(splat["means"]), consts, values, int(ply.stat().st_size), int(size))
    four = {"input": _score(ev_a), "posthoc": _score(ev_b), "qat": _score(ev_c), "fp32_finetune": _score(ev_d)}
    extra = {
        "delta_psnr_db": round(ev_c["psnr"] - ev_a["psnr"], 4),
        "delta_ssim": round(ev_c["ssim"] - ev_a["ssim"], 5),
        "psnr_baseline": round(ev_a["psnr"], 4),
        "psnr_canonical": round(ev_c["psnr"], 4),
        "four_way": four,
        "finetune_iters": iters,
        "train_wall_secs": round(t_qat, 2),
        "fp32_finetune_wall_secs": round(t_fp, 2),
        # the normals' constant columns are the container's extra columns (a hex constant each, as the quantised
        # tier's), checked bit for bit by encode_splat's decode self-check
        "constant_strip_bitexact": True,
        "band_bits": list(grid.band_bits),
        "position_bits": grid.position_bits,
        "rotation_bits": grid.rotation_bits,
        "array_bytes": sizes,
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
                  data: Any = None, bundle: Any = None) -> tuple[EncodeResult, dict[str, Any]]:
    """The registry's encoder: :func:`encode_folder` on ``bundle`` (a :class:`.bundle.Bundle`).

    Raises:
        InputError: no bundle.
    """
    if bundle is None:
        raise InputError(f"{in_ply}: the {PRESET} preset needs the splat's training cameras and images: give a "
                         "bundle (splatforge bundle SCENE_OR_WORKDIR out.tar.gz)")
    return encode_folder(bundle.root, out_path, opts, ply=Path(in_ply), cameras=bundle.cameras,
                         images_dir=bundle.images_dir)
