"""Splat PLY -> triangle mesh: read and validate, normals, screened Poisson, trim, decimate.

Coordinates stay in the splat's frame (ENU metres, Z up for this project's splats); nothing
here rescales or re-orients the data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..log import get_logger
from ..rotations import quat_to_rotmat
from ..splat import SH_C0, read_splat_ply, sigmoid

_LOG = get_logger("export.mesh")

@dataclass
class Splat:
    """Activated Gaussian parameters of one splat (float64 unless noted).

    means: [N, 3] centres (metres). quats: [N, 4] unit quaternions, wxyz. scales: [N, 3]
    standard deviations (metres, already exp() of the stored log-scale). opacities: [N] in
    [0, 1] (sigmoid of the stored logit). colors: [N, 3] view-independent RGB in [0, 1]
    (0.5 + SH_C0 * f_dc, clipped). sh: [N, K, 3] float32 SH coefficients (DC first, then
    f_rest re-ordered from channel-major), K = (degree + 1)^2.
    """

    means: np.ndarray
    quats: np.ndarray
    scales: np.ndarray
    opacities: np.ndarray
    colors: np.ndarray
    sh: np.ndarray
    path: Path

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def subset(self, mask: np.ndarray) -> "Splat":
        return Splat(self.means[mask], self.quats[mask], self.scales[mask],
                     self.opacities[mask], self.colors[mask], self.sh[mask], self.path)


def _read_splat_ply(path: str | Path) -> Splat:
    """Read an Inria-3DGS splat PLY into a :class:`Splat` (float64, activated values); a ``.splat``,
    ``.spz`` or ``.sog`` file is read through :func:`splatforge_core.formats.read_any` (#16).

    Parsing and validation are :func:`splatforge_core.splat.read_splat_ply`'s (missing file,
    not a PLY, missing columns, empty, NaN/Inf: InputError naming the file); here the
    quaternions are normalised (InputError for zero-length ones), scales exponentiated and
    opacities passed through the sigmoid.
    """
    path = Path(path)
    if path.suffix.lower() in (".splat", ".spz", ".sog"):
        from ..formats import read_any

        d = read_any(path)
    else:
        d = read_splat_ply(path)
    n = len(d["means"])
    quats = d["quats"].astype(np.float64)
    qn = np.linalg.norm(quats, axis=1, keepdims=True)
    if (qn[:, 0] < 1e-12).any():
        raise InputError(f"{path}: {int((qn[:, 0] < 1e-12).sum())} Gaussian(s) have a zero rotation quaternion")
    quats = quats / qn
    scales = np.exp(np.clip(d["scales"].astype(np.float64), -30.0, 30.0))
    opac = sigmoid(d["opacities"])
    dc = d["sh0"].astype(np.float64)
    sh = np.concatenate([d["sh0"][:, None, :], d["shN"]], axis=1).astype(np.float32)
    assert sh.shape == (n, (d["sh_degree"] + 1) ** 2, 3)
    colors = np.clip(0.5 + SH_C0 * dc, 0.0, 1.0)
    return Splat(d["means"].astype(np.float64), quats, scales, opac, colors, sh, path)


def check_geometry(splat: Splat, min_gaussians: int, flatness_tol: float) -> None:
    """Reject splats a surface cannot be built from (too few points, all on a plane or a line).

    The test uses the principal axes of the centres: if the smallest standard deviation is
    below ``flatness_tol`` times the largest, the points are (numerically) planar.

    Raises:
        InputError: naming the file and the problem.
    """
    n = len(splat)
    if n < min_gaussians:
        raise InputError(f"{splat.path}: only {n} usable Gaussian(s) (opaque enough, finite); "
                         f"a surface needs at least {min_gaussians}")
    c = splat.means - splat.means.mean(axis=0)
    sub = c if n <= 200_000 else c[np.random.default_rng(0).choice(n, 200_000, replace=False)]
    sv = np.linalg.svd(sub / np.sqrt(len(sub)), compute_uv=False)
    if sv[0] <= 0:
        raise InputError(f"{splat.path}: all {n} Gaussian centres coincide")
    if sv[2] < flatness_tol * sv[0]:
        raise InputError(f"{splat.path}: degenerate splat, all {n} Gaussian centres lie on a plane "
                         f"(principal extents {sv[0]:.3g}, {sv[1]:.3g}, {sv[2]:.3g} m); "
                         "Poisson reconstruction needs a 3D point set")


def estimate_normals(points: np.ndarray, k: int = 10) -> np.ndarray:
    """Consistently oriented point-cloud normals (MeshLab's PCA + MST propagation).

    The propagation makes neighbouring normals agree but leaves the global sign arbitrary.
    It is fixed with the highest points (top 1 % in Z, ENU up): the topmost surface of a
    scene or object (roofs, tree tops, the top of an object) is seen from above, so its
    normals must point up; if their median Z component is negative, all normals are flipped.
    Poisson then builds an outward-facing surface (no inside-out mesh under back-face culling).

    points: [N, 3] float64. Returns [N, 3] float64 unit normals.
    """
    import pymeshlab

    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=points))
    ms.compute_normal_for_point_clouds(k=k, smoothiter=0)
    nrm = np.asarray(ms.current_mesh().vertex_normal_matrix(), dtype=np.float64)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    top = points[:, 2] >= np.quantile(points[:, 2], 0.99)
    if np.median(nrm[top, 2]) < 0:
        nrm = -nrm
    return nrm


def gaussian_normals(splat: Splat, mode: str, flat_ratio: float = 0.5, k: int = 10) -> tuple[np.ndarray, dict]:
    """Per-Gaussian oriented unit normals [N, 3] for Poisson.

    mode "shortest_axis": the direction of each Gaussian's smallest scale (the optimiser
    flattens Gaussians onto surfaces, so this axis is the local surface normal it found, with
    no neighbourhood smoothing across thin structures). Its sign is ambiguous, so it is
    flipped to agree with the PCA/MST-propagated normal of :func:`estimate_normals`; Gaussians
    that are not flat (smallest / middle scale > ``flat_ratio``) have no meaningful shortest
    axis and take the estimated normal. mode "estimated": PCA normals of the centres only.

    Returns (normals, stats) with stats {"n_shortest_axis", "n_estimated"}.
    """
    est = estimate_normals(splat.means, k=k)
    if mode == "estimated":
        return est, {"n_shortest_axis": 0, "n_estimated": len(splat)}
    if mode != "shortest_axis":
        raise ValueError(f"unknown normals mode {mode!r}")
    s = np.sort(splat.scales, axis=1)
    amin = np.argmin(splat.scales, axis=1)
    rot = quat_to_rotmat(splat.quats)
    ax = rot[np.arange(len(splat)), :, amin]  # column amin of R = world direction of that local axis
    flip = np.sum(ax * est, axis=1) < 0
    ax[flip] *= -1
    flat = s[:, 0] <= flat_ratio * s[:, 1]
    out = np.where(flat[:, None], ax, est)
    return out, {"n_shortest_axis": int(flat.sum()), "n_estimated": int((~flat).sum())}


def poisson(points: np.ndarray, normals: np.ndarray, depth: int, threads: int,
            samples_per_node: float = 1.5, point_weight: float = 4.0):
    """Screened Poisson surface reconstruction (Kazhdan & Hoppe 2013, MeshLab's filter).

    points, normals: [N, 3] float64. Returns (vertices [V, 3] float64, faces [F, 3] int64,
    density [V] float64: MeshLab stores the Poisson sample density as vertex quality).
    """
    import pymeshlab

    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=points, v_normals_matrix=normals))
    ms.generate_surface_reconstruction_screened_poisson(
        depth=depth, samplespernode=samples_per_node, pointweight=point_weight,
        preclean=False, threads=max(1, threads))
    m = ms.current_mesh()
    v = np.asarray(m.vertex_matrix(), dtype=np.float64)
    f = np.asarray(m.face_matrix(), dtype=np.int64)
    q = np.asarray(m.vertex_scalar_array(), dtype=np.float64) if m.has_vertex_scalar() else np.zeros(len(v))
    return v, f, q


def poisson_voxel_size(points: np.ndarray, depth: int, scale: float = 1.1) -> float:
    """Edge length (metres) of the finest octree cell of screened Poisson at ``depth``.

    The octree spans the points' bounding cube enlarged by ``scale`` (MeshLab's default 1.1,
    Kazhdan & Hoppe 2013 ``--scale``) and is split ``depth`` times: ``scale * max extent /
    2**depth``. points: [N, 3] float (metres). The surface is not located more precisely than
    about one such cell, which bounds how tight a distance-based trim may be.
    """
    pts = np.asarray(points, dtype=np.float64)
    extent = float(np.max(pts.max(0) - pts.min(0))) if len(pts) else 0.0
    return scale * extent / 2 ** depth


def trim(vertices: np.ndarray, faces: np.ndarray, density: np.ndarray, centres: np.ndarray,
         trim_quantile: float, trim_distance: float, min_component_frac: float):
    """Remove Poisson surface that no Gaussian supports.

    A vertex is dropped when its Poisson density is below the ``trim_quantile`` quantile, or
    when the nearest Gaussian centre is farther than ``trim_distance`` metres; a face goes with
    any dropped vertex. Connected components with fewer than ``min_component_frac`` of the
    remaining faces are removed too (floating blobs from outliers).

    Returns (vertices [V', 3], faces [F', 3] int64, stats dict).
    """
    from scipy.spatial import cKDTree

    keep_v = np.ones(len(vertices), dtype=bool)
    if trim_quantile > 0 and density.size and np.ptp(density) > 0:
        keep_v &= density >= np.quantile(density, trim_quantile)
    dist, _ = cKDTree(centres).query(vertices, k=1, workers=-1)
    keep_v &= dist <= trim_distance
    keep_f = keep_v[faces].all(axis=1)
    faces = faces[keep_f]
    n_after_trim = len(faces)
    if min_component_frac > 0 and len(faces):
        import scipy.sparse as sp
        from scipy.sparse.csgraph import connected_components

        nv = len(vertices)
        e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
        g = sp.coo_matrix((np.ones(len(e), dtype=np.int8), (e[:, 0], e[:, 1])), shape=(nv, nv))
        _, lab = connected_components(g, directed=False)
        flab = lab[faces[:, 0]]
        counts = np.bincount(flab)
        faces = faces[counts[flab] >= min_component_frac * len(faces)]
    used = np.unique(faces)
    remap = -np.ones(len(vertices), dtype=np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces], {
        "faces_removed_trim": int((~keep_f).sum()),
        "faces_removed_components": int(n_after_trim - len(faces)),
    }


def decimate(vertices: np.ndarray, faces: np.ndarray, target_faces: int):
    """Quadric edge-collapse decimation (Garland & Heckbert 1997, MeshLab's filter) to at most
    ``target_faces`` faces; a mesh already below the target is returned as is."""
    if len(faces) <= target_faces:
        return vertices, faces
    import pymeshlab

    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=vertices, face_matrix=faces))
    ms.meshing_decimation_quadric_edge_collapse(targetfacenum=int(target_faces), preservenormal=True,
                                                 planarquadric=True, autoclean=True, qualitythr=0.3)
    ms.meshing_remove_unreferenced_vertices()
    m = ms.current_mesh()
    return np.asarray(m.vertex_matrix(), dtype=np.float64), np.asarray(m.face_matrix(), dtype=np.int64)


def median_spacing(centres: np.ndarray, k: int = 4, sample: int = 50_000) -> float:
    """Median distance (metres) from a Gaussian centre to its k-th nearest neighbour (subsampled)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(centres)
    n = len(centres)
    q = centres if n <= sample else centres[np.random.default_rng(0).choice(n, sample, replace=False)]
    d, _ = tree.query(q, k=min(k + 1, n), workers=-1)
    return float(np.median(d[:, -1]))


class Timer:
    """Collect wall-clock seconds per named step."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self_inner):
                self_inner.t0 = time.perf_counter()

            def __exit__(self_inner, *exc):
                timer.steps[name] = round(time.perf_counter() - self_inner.t0, 3)
                _LOG.info("export step %s: %.2f s", name, timer.steps[name])

        return _Ctx()
