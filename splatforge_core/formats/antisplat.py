"""antimatter15 ``.splat`` files: read and write (our own code, see below for why).

Format (antimatter15/splat, ``convert.py`` ``process_ply_to_splat`` and ``main.js``): no header,
32 bytes per Gaussian, little-endian::

    position f32 x3 | scale f32 x3 (linear, not log) | RGBA u8 x4 | rotation u8 x4

* RGB = ``0.5 + SH_C0 * f_dc`` (SH degree 0 only; higher SH is dropped), A = ``sigmoid(opacity)``,
  each as ``value * 255`` clipped to [0, 255].
* rotation: the quaternion (w, x, y, z) normalised, stored as ``q * 128 + 128`` clipped to [0, 255].
* Gaussians are sorted by descending importance ``exp(scale_0 + scale_1 + scale_2) * sigmoid(opacity)``
  (volume times opacity), as the reference writer does (viewers stream the file front to back).

Why our own code: ``@playcanvas/splat-transform`` (npm) reads ``.splat`` but has no ``.splat`` writer,
and there is no maintained Python package for it; tests/test_formats.py checks this reader and
this writer against splat-transform's ``.splat`` reader.

Differences from the reference writer: bytes are rounded to nearest (the reference truncates with
``astype(uint8)``), which halves the quantisation error and makes read -> write of a ``.splat`` give
the same colour bytes back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import numpy as np

from ..errors import InputError
from ..io import atomic_path
from ..log import get_logger
from ..splat import SH_C0, sigmoid

__all__ = ["RECORD", "BYTES_PER_GAUSSIAN", "read_antisplat", "write_antisplat", "antisplat_records"]

_LOG = get_logger("formats")

#: One Gaussian of a ``.splat`` file (32 bytes, little-endian).
RECORD = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
BYTES_PER_GAUSSIAN = RECORD.itemsize
assert BYTES_PER_GAUSSIAN == 32

#: Opacity bytes 0 and 255 have no finite logit; they are read as this far from 0 / 1.
_ALPHA_EPS = 0.5 / 255.0
#: A zero scale (a flat Gaussian) has no log; it is read as this (metres, or the file's unit).
_MIN_SCALE = 1e-12


def read_antisplat(path: str | os.PathLike) -> Dict[str, np.ndarray]:
    """Read an antimatter15 ``.splat`` file into the dict of :func:`splatforge_core.splat.read_splat_ply`.

    Returns:
        ``means`` [N, 3] float32, ``scales`` [N, 3] float32 (natural log), ``quats`` [N, 4] float32
        (wxyz, unit length; a zero quaternion becomes identity), ``opacities`` [N] float32 (logit;
        alpha 0 / 255 become the logit of 0.5/255 and 1 - 0.5/255), ``sh0`` [N, 3] float32
        (``(rgb / 255 - 0.5) / SH_C0``), ``shN`` [N, 0, 3] and ``sh_degree`` 0. Gaussians stay
        in file order.

    Raises:
        InputError (naming the file): missing, empty, a size that is not a multiple of 32 bytes
            (truncated, or not a ``.splat``), non-finite positions or scales, negative scales.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: .splat file not found")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path}: .splat file is empty (0 Gaussians)")
    if size % BYTES_PER_GAUSSIAN:
        raise InputError(f"{path}: {size} bytes is not a whole number of 32-byte .splat records "
                         f"(truncated by {size % BYTES_PER_GAUSSIAN} bytes, or not an antimatter15 .splat file)")
    rec = np.fromfile(path, dtype=RECORD, count=size // BYTES_PER_GAUSSIAN)  # count bounded by the file size
    pos = rec["position"].astype(np.float32)
    scale = rec["scale"].astype(np.float64)
    for name, arr in (("position", pos), ("scale", scale)):
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            raise InputError(f"{path}: {int(bad.sum())} of {len(rec)} Gaussians have a NaN/Inf {name} "
                             f"(first at record {int(np.argmax(bad))}); not a valid .splat file")
    if (scale < 0).any():
        raise InputError(f"{path}: {int((scale < 0).any(axis=1).sum())} Gaussians have a negative scale; "
                         "a .splat stores linear scales >= 0 (is this file another format?)")
    rgba = rec["rgba"].astype(np.float64) / 255.0
    alpha = np.clip(rgba[:, 3], _ALPHA_EPS, 1.0 - _ALPHA_EPS)
    q = (rec["rot"].astype(np.float64) - 128.0) / 128.0
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 0, q / np.maximum(norm, 1e-12), np.array([1.0, 0, 0, 0]))
    n = len(rec)
    return {
        "means": pos,
        "scales": np.log(np.maximum(scale, _MIN_SCALE)).astype(np.float32),
        "quats": q.astype(np.float32),
        "opacities": np.log(alpha / (1.0 - alpha)).astype(np.float32),
        "sh0": ((rgba[:, :3] - 0.5) / SH_C0).astype(np.float32),
        "shN": np.zeros((n, 0, 3), np.float32),
        "sh_degree": 0,
    }


def antisplat_records(splat: Dict[str, np.ndarray]) -> np.ndarray:
    """The ``.splat`` records [N] (dtype :data:`RECORD`) of a splat dict, sorted by descending
    importance (volume x opacity, as antimatter15's ``convert.py``; stable for ties).

    Args:
        splat: ``means`` [N, 3], ``scales`` [N, 3] (log), ``quats`` [N, 4] (wxyz), ``opacities``
            [N] (logit), ``sh0`` [N, 3] (or [N, 1, 3]); ``shN`` is ignored (dropped, logged).

    Raises:
        ValueError: non-finite values or inconsistent shapes.
    """
    means = np.asarray(splat["means"], np.float64).reshape(-1, 3)
    n = len(means)
    log_s = np.asarray(splat["scales"], np.float64).reshape(n, 3)
    quats = np.asarray(splat["quats"], np.float64).reshape(n, 4)
    logit = np.asarray(splat["opacities"], np.float64).reshape(n)
    sh0 = np.asarray(splat["sh0"], np.float64).reshape(n, 3)
    for name, arr in (("means", means), ("scales", log_s), ("quats", quats), ("opacities", logit), ("sh0", sh0)):
        if not np.isfinite(arr).all():
            raise ValueError(f"splat has non-finite {name}; refusing to write a broken .splat")
    shN = splat.get("shN")
    if shN is not None and np.asarray(shN).size:
        _LOG.info(".splat keeps SH degree 0 only: %d higher SH coefficients per Gaussian dropped",
                  np.asarray(shN).shape[1] * 3)
    alpha = sigmoid(logit)
    order = np.argsort(-(np.exp(log_s.sum(axis=1)) * alpha), kind="stable")
    norm = np.linalg.norm(quats, axis=1, keepdims=True)
    q = np.where(norm > 0, quats / np.maximum(norm, 1e-300), np.array([1.0, 0, 0, 0]))
    rgba = np.concatenate([0.5 + SH_C0 * sh0, alpha[:, None]], axis=1)
    rec = np.empty(n, RECORD)
    rec["position"] = means[order]
    rec["scale"] = np.exp(log_s[order])
    rec["rgba"] = np.clip(np.rint(rgba[order] * 255.0), 0, 255).astype(np.uint8)
    rec["rot"] = np.clip(np.rint(q[order] * 128.0 + 128.0), 0, 255).astype(np.uint8)
    return rec


def write_antisplat(path: str | os.PathLike, splat: Dict[str, np.ndarray]) -> int:
    """Write ``splat`` (the dict of :func:`read_antisplat` / ``read_splat_ply``) as an antimatter15
    ``.splat`` file, atomically; returns the number of bytes written (32 x N).

    Raises:
        ValueError: non-finite values or inconsistent shapes (see :func:`antisplat_records`).
    """
    rec = antisplat_records(splat)
    with atomic_path(path) as tmp:
        rec.tofile(tmp)
    return rec.nbytes
