"""Synthetic splats with a known surface (tests and benchmarks of the export stage)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..rotations import rotmat_to_quat
from ..splat import SH_C0


def sphere_colour(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Ground-truth colour of the synthetic sphere at [M, 3] points: red = east half,
    green = 8 bands of azimuth, blue = height (0 at the bottom, 1 at the top)."""
    d = points - centre
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    az = np.arctan2(d[:, 1], d[:, 0])
    r = (d[:, 0] > 0).astype(float) * 0.8 + 0.1
    g = ((np.floor((az + np.pi) / (2 * np.pi) * 8) % 2) * 0.8 + 0.1)
    b = (d[:, 2] + 1) / 2
    return np.stack([r, g, b], axis=1)


def sphere_splat(n: int, radius: float = 1.0, centre=(10.0, 20.0, 5.0), seed: int = 0,
                 sh_degree: int = 0) -> dict:
    """``n`` flat Gaussians on a sphere (ENU metres), coloured by :func:`sphere_colour`.

    Each Gaussian's local z axis is the sphere normal with scale min(2 mm * radius,
    0.1 x sample spacing) (flat, like trained surface Gaussians); its in-surface scales are
    0.7 x the sample spacing. Returns a dict of Inria PLY columns (float32 arrays).
    """
    rng = np.random.default_rng(seed)
    c = np.asarray(centre, dtype=np.float64)
    nrm = rng.normal(size=(n, 3))
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    pts = c + radius * nrm
    t1 = np.cross(nrm, np.array([0.0, 0.0, 1.0]))
    bad = np.linalg.norm(t1, axis=1) < 1e-6
    t1[bad] = np.cross(nrm[bad], np.array([1.0, 0.0, 0.0]))
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(nrm, t1)
    R = np.stack([t1, t2, nrm], axis=2)  # columns: local x, y, z in world
    q = rotmat_to_quat(R)
    spacing = radius * np.sqrt(4 * np.pi / n)
    scales = np.log(np.stack([np.full(n, 0.7 * spacing), np.full(n, 0.7 * spacing),
                              np.full(n, min(0.002 * radius, 0.1 * spacing))], axis=1))
    col = sphere_colour(pts, c)
    cols = {"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2],
            "nx": np.zeros(n), "ny": np.zeros(n), "nz": np.zeros(n)}
    for i in range(3):
        cols[f"f_dc_{i}"] = (col[:, i] - 0.5) / SH_C0
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    for i in range(n_rest):
        cols[f"f_rest_{i}"] = np.zeros(n)
    cols["opacity"] = np.full(n, 3.0)  # sigmoid(3) = 0.95
    for i in range(3):
        cols[f"scale_{i}"] = scales[:, i]
    for i in range(4):
        cols[f"rot_{i}"] = q[:, i]
    return {k: np.asarray(v, dtype=np.float32) for k, v in cols.items()}


def write_ply(path: str | Path, cols: dict) -> Path:
    """Write a dict of equal-length float32 columns as a binary little-endian PLY ``vertex`` element."""
    from plyfile import PlyData, PlyElement

    n = len(next(iter(cols.values())))
    arr = np.empty(n, dtype=[(k, "f4") for k in cols])
    for k, v in cols.items():
        arr[k] = v
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    PlyData([PlyElement.describe(arr, "vertex")], text=False).write(str(path))
    return path
