"""The Gaussian-splat data layout shared by the stages: Inria (3DGS) PLY properties, SH
constants and degree, activations, and the one reader/writer of splat PLYs. No stage logic.

Layout (graphdeco-inria/gaussian-splatting, ``scene/gaussian_model.py``,
``GaussianModel.construct_list_of_attributes`` and ``save_ply``), one binary little-endian
``vertex`` element with float32 properties in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 .. f_rest_{3(K-1)-1}
    opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3

* ``f_dc_*``: degree-0 SH coefficient per colour channel (R, G, B).
* ``f_rest_*``: higher SH coefficients, **channel-major**: the Inria code stores
  ``features_rest`` as [N, K-1, 3] and saves ``features_rest.transpose(1, 2).flatten(1)``,
  so the file holds all K-1 red coefficients, then all green, then all blue
  (K = (degree+1)^2, i.e. 45 f_rest for SH degree 3, 24 for 2, 9 for 1, none for 0).
* ``opacity``: logit of the opacity; ``scale_*``: natural log of the scale (metres);
  ``rot_*``: quaternion in wxyz order (not necessarily normalised); ``nx ny nz``: zeros.

gsplat's ``export_splats`` (format="ply"), SuperSplat, antimatter15/splat and the
other web viewers read this layout.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict

import numpy as np
from plyfile import PlyData, PlyElement

from .errors import InputError
from .io import atomic_path

__all__ = ["SH_C0", "REQUIRED_PROPERTIES", "property_names", "sh_degree_from_rest", "sh_degree_from_names",
           "sigmoid", "write_splat_ply", "read_splat_ply"]

#: Zeroth-order real spherical-harmonic constant, 1 / (2 sqrt(pi)); colour = 0.5 + C0 * f_dc
#: (Inria 3DGS ``utils/sh_utils.py`` ``SH2RGB``).
SH_C0 = 0.28209479177387814

#: The properties every Inria-layout splat has (float32), in file order (Kerbl et al. 2023,
#: graphdeco-inria/gaussian-splatting ``GaussianModel.save_ply``); ``nx ny nz`` and ``f_rest_*`` are optional.
REQUIRED_PROPERTIES = (
    ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    + [f"scale_{i}" for i in range(3)]
    + [f"rot_{i}" for i in range(4)]
)


def property_names(n_rest: int) -> list[str]:
    """The ``vertex`` property names, in file order, of an Inria-layout splat with ``n_rest``
    ``f_rest_*`` columns (``3 * (K - 1)``), normals included."""
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(n_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def sh_degree_from_names(names: list[str]) -> int:
    """SH degree implied by the number of ``f_rest_*`` columns (0, 9, 24, 45 -> 0..3).

    Raises:
        InputError: the count matches no SH degree.
    """
    n_rest = sum(1 for n in names if n.startswith("f_rest_"))
    for d in range(5):
        if 3 * ((d + 1) ** 2 - 1) == n_rest:
            return d
    raise InputError(f"{n_rest} f_rest_* columns do not match any SH degree (expected 0, 9, 24 or 45)")


def sigmoid(logit) -> np.ndarray:
    """Opacity activation: ``1 / (1 + exp(-logit))`` in float64, the logit clipped to [-60, 60]
    (no overflow warning; the result is then exact to float64 rounding)."""
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logit, np.float64), -60, 60)))


def sh_degree_from_rest(n_rest_coeffs: int) -> int:
    """SH degree from the number of higher-order coefficients per channel (K - 1).

    Raises:
        ValueError: ``n_rest_coeffs + 1`` is not a perfect square.
    """
    k = n_rest_coeffs + 1
    d = int(round(math.sqrt(k))) - 1
    if (d + 1) ** 2 != k:
        raise ValueError(f"{n_rest_coeffs} SH rest coefficients per channel is not (d+1)^2-1")
    return d


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def write_splat_ply(path: str | os.PathLike, means, scales, quats, opacities, sh0, shN) -> None:
    """Write a splat to ``path`` in the Inria PLY layout (binary, float32), atomically.

    Args:
        path: destination ``.ply``; written to a temporary file and renamed into place.
        means: [N, 3] positions (metres, ENU for this project).
        scales: [N, 3] log-scales (natural log of metres).
        quats: [N, 4] rotations, wxyz.
        opacities: [N] (or [N, 1]) opacity logits.
        sh0: [N, 3] or [N, 1, 3] degree-0 SH coefficients (R, G, B).
        shN: [N, K-1, 3] higher SH coefficients (coefficient-major, channel last, as in
            gsplat) or None / [N, 0, 3] for SH degree 0. Stored channel-major (see module).
        Arrays may be numpy arrays or torch tensors (any float dtype).

    Raises:
        ValueError: inconsistent shapes, K not a square number, or non-finite values.
    """
    means, scales, quats = _np(means), _np(scales), _np(quats)
    opac = _np(opacities).reshape(-1)
    sh0 = _np(sh0).reshape(len(means), 3) if len(means) else _np(sh0).reshape(0, 3)
    n = len(means)
    shN = np.zeros((n, 0, 3), np.float32) if shN is None else _np(shN)
    if shN.ndim != 3 or shN.shape[0] != n or shN.shape[2] != 3:
        raise ValueError(f"shN must be [N, K-1, 3], got {shN.shape}")
    sh_degree_from_rest(shN.shape[1])
    for name, arr, shape in (("means", means, (n, 3)), ("scales", scales, (n, 3)),
                             ("quats", quats, (n, 4)), ("opacities", opac, (n,))):
        if arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    f_rest = shN.transpose(0, 2, 1).reshape(n, -1)  # channel-major, as Inria save_ply
    cols = [means, np.zeros((n, 3), np.float32), sh0, f_rest, opac[:, None], scales, quats]
    data = np.concatenate(cols, axis=1)
    if not np.isfinite(data).all():
        raise ValueError("splat has non-finite values; refusing to write a broken PLY")
    names = property_names(f_rest.shape[1])
    rec = np.empty(n, dtype=[(nm, "<f4") for nm in names])
    for i, nm in enumerate(names):
        rec[nm] = data[:, i]
    el = PlyElement.describe(rec, "vertex")
    with atomic_path(path) as tmp:
        PlyData([el], text=False, byte_order="<").write(str(tmp))


def read_splat_ply(path: str | os.PathLike) -> Dict[str, np.ndarray]:
    """Read and validate an Inria-layout splat PLY (the one reader of splat PLYs in the project).

    Layout: ``x y z [nx ny nz] f_dc_0..2 [f_rest_0..] opacity scale_0..2 rot_0..3``; f_rest is
    channel-major in the file (all R coefficients, then G, then B), as written by Inria's
    ``GaussianModel.save_ply`` (graphdeco-inria/gaussian-splatting, scene/gaussian_model.py).

    Returns:
        dict of float32 numpy arrays: ``means`` [N, 3], ``scales`` [N, 3] (log),
        ``quats`` [N, 4] (wxyz, as stored: not normalised), ``opacities`` [N] (logit),
        ``sh0`` [N, 3], ``shN`` [N, K-1, 3] (channel last, like gsplat) and ``sh_degree``
        (Python int).

    Raises:
        InputError (naming the file): the file is missing or not a PLY, has no ``vertex``
            element or no vertices, lacks a splat property, has an f_rest count that is no SH
            layout, or holds NaN/Inf values (the column and count are named).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: splat PLY not found")
    try:
        ply = PlyData.read(str(path))
    except Exception as e:  # plyfile raises several types for malformed input
        raise InputError(f"{path}: not a readable PLY file ({e})") from e
    if "vertex" not in [el.name for el in ply.elements]:
        raise InputError(f"{path}: PLY has no 'vertex' element, not a Gaussian splat")
    v = ply["vertex"].data
    names = set(v.dtype.names or ())
    required = list(REQUIRED_PROPERTIES)
    missing = [p for p in required if p not in names]
    if missing:
        raise InputError(f"{path}: not a Gaussian-splat PLY (Inria 3DGS layout), missing properties {missing}")
    n = len(v)
    if n == 0:
        raise InputError(f"{path}: splat is empty (0 Gaussians)")
    n_rest = sum(1 for p in names if p.startswith("f_rest_"))
    rest_names = [f"f_rest_{i}" for i in range(n_rest)]
    gaps = [p for p in rest_names if p not in names]
    if n_rest % 3 or gaps:
        raise InputError(f"{path}: {n_rest} f_rest properties is not an SH layout (3 * ((d+1)^2 - 1) "
                         f"numbered from 0){'; missing ' + str(gaps[:3]) if gaps else ''}")
    try:
        degree = sh_degree_from_rest(n_rest // 3)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    for c in required + rest_names:
        bad = ~np.isfinite(np.asarray(v[c], dtype=np.float64))
        if bad.any():
            raise InputError(f"{path}: column {c} has {int(bad.sum())} NaN/Inf value(s) of {n}")

    def stack(keys):
        return np.stack([np.asarray(v[k], np.float32) for k in keys], axis=1)

    rest = stack(rest_names) if n_rest else np.zeros((n, 0), np.float32)
    return {
        "means": stack(["x", "y", "z"]),
        "scales": stack(["scale_0", "scale_1", "scale_2"]),
        "quats": stack(["rot_0", "rot_1", "rot_2", "rot_3"]),
        "opacities": np.asarray(v["opacity"], np.float32),
        "sh0": stack(["f_dc_0", "f_dc_1", "f_dc_2"]),
        "shN": rest.reshape(n, 3, n_rest // 3).transpose(0, 2, 1).copy(),
        "sh_degree": degree,
    }
