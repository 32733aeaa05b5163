"""Synthetic Inria-3DGS PLYs for benchmarks and tests (random but realistic statistics)."""

from __future__ import annotations

import os

import numpy as np


def inria_names(sh_degree: int = 3, normals: bool = True) -> list[str]:
    """Vertex property names of an Inria 3DGS PLY of the given SH degree (62 for SH3)."""
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (
        ["x", "y", "z"]
        + (["nx", "ny", "nz"] if normals else [])
        + [f"f_dc_{i}" for i in range(3)]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity"]
        + [f"scale_{i}" for i in range(3)]
        + [f"rot_{i}" for i in range(4)]
    )


def synthetic_splat(n: int, sh_degree: int = 3, seed: int = 0) -> np.ndarray:
    """Random Inria-layout vertex array [n] (little-endian float32 fields).

    Positions in ~30 Gaussian clusters (metres), normals exactly 0, f_dc ~ N(0, 0.8),
    f_rest ~ N(0, 0.05) decaying with degree, opacity logits ~ N(1, 2), log-scales ~
    N(-4.5, 1) (clipped), unit quaternions (wxyz, w >= 0).
    """
    rng = np.random.default_rng(seed)
    names = inria_names(sh_degree)
    v = np.zeros(n, dtype=np.dtype([(k, "<f4") for k in names]))
    centres = rng.normal(0, 20, size=(30, 3))
    spread = rng.uniform(0.5, 5, size=30)
    k = rng.integers(0, 30, size=n)
    pos = centres[k] + rng.normal(size=(n, 3)) * spread[k, None]
    for i, c in enumerate("xyz"):
        v[c] = pos[:, i]
    for i in range(3):
        v[f"f_dc_{i}"] = rng.normal(0, 0.8, n)
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    for i in range(n_rest):
        deg = int(np.floor(np.sqrt(i % max(n_rest // 3, 1) + 1)))
        v[f"f_rest_{i}"] = rng.normal(0, 0.05 / deg, n)
    v["opacity"] = rng.normal(1.0, 2.0, n)
    for i in range(3):
        v[f"scale_{i}"] = np.clip(rng.normal(-4.5, 1.0, n), -10, 1)
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    for i in range(4):
        v[f"rot_{i}"] = q[:, i]
    return v


def write_ply(path: str | os.PathLike, vertices: np.ndarray, comments: list[str] | None = None) -> None:
    """Write a binary PLY with one ``vertex`` element from a packed structured array.

    Writes the header by hand (fast, exact); byte order from the array's dtype.
    """
    dt = vertices.dtype
    le = all(dt.fields[n][0].byteorder in "<|" or (dt.fields[n][0].byteorder == "=") for n in dt.names)
    tnames = {"f4": "float", "f8": "double", "u1": "uchar", "i1": "char", "u2": "ushort", "i2": "short", "u4": "uint", "i4": "int"}
    lines = ["ply", f"format {'binary_little_endian' if le else 'binary_big_endian'} 1.0"]
    lines += [f"comment {c}" for c in (comments or [])]
    lines.append(f"element vertex {len(vertices)}")
    for name in dt.names:
        ft = dt.fields[name][0]
        lines.append(f"property {tnames[ft.kind + str(ft.itemsize)]} {name}")
    lines.append("end_header")
    with open(path, "wb") as f:
        f.write(("\n".join(lines) + "\n").encode("ascii"))
        f.write(vertices.tobytes())
