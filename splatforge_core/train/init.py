"""Initial Gaussians of a training run: from the SfM points (:func:`init_gaussians`) and a
sky sphere for the far background SfM leaves without points (:func:`sky_sphere`)."""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from ..splat import SH_C0
from .data import SceneData

__all__ = ["init_gaussians", "sky_sphere", "seen_by_views"]


def _knn_mean_dist(points: np.ndarray, k: int = 3) -> np.ndarray:
    """Mean distance (metres) of each point to its k nearest other points; [P] float32."""
    from scipy.spatial import cKDTree

    if len(points) < 2:
        return np.full(len(points), 0.01, np.float32)
    k_eff = min(k, len(points) - 1)
    d, _ = cKDTree(points).query(points, k=k_eff + 1)
    d = np.asarray(d)[:, 1:].mean(1)
    pos = d[d > 0]
    floor = float(np.median(pos)) * 1e-2 if pos.size else 1e-3
    return np.maximum(d, floor).astype(np.float32)


def init_gaussians(points: np.ndarray, colors: np.ndarray, sh_degree: int, init_opacity: float = 0.1,
                   init_scale: float = 1.0, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Gaussian parameters from SfM points (gsplat simple_trainer ``create_splats_with_optimizers``).

    Args:
        points: [P, 3] float positions (metres). colors: [P, 3] float RGB in [0, 1].
        sh_degree: SH degree of the model (0-3). init_opacity: opacity in (0, 1).
        init_scale: factor on the 3-NN mean distance. seed: RNG seed for the quaternions.

    Returns:
        float32 CPU tensors: ``means`` [P, 3], ``scales`` [P, 3] (log), ``quats`` [P, 4]
        (wxyz, unit), ``opacities`` [P] (logit), ``sh0`` [P, 1, 3], ``shN`` [P, K-1, 3].
    """
    g = torch.Generator().manual_seed(seed)
    n = len(points)
    dist = torch.from_numpy(_knn_mean_dist(points)) * init_scale
    quats = torch.rand(n, 4, generator=g)
    quats = quats / quats.norm(dim=-1, keepdim=True)
    k = (sh_degree + 1) ** 2
    return {
        "means": torch.from_numpy(np.asarray(points, np.float32)).clone(),
        "scales": torch.log(dist)[:, None].repeat(1, 3),
        "quats": quats,
        "opacities": torch.logit(torch.full((n,), float(init_opacity))),
        "sh0": ((torch.from_numpy(np.asarray(colors, np.float32)) - 0.5) / SH_C0)[:, None, :].clone(),
        "shN": torch.zeros(n, k - 1, 3),
    }


def sky_sphere(scene: SceneData, n: int, radius_factor: float, max_views: int = 32):
    """Points for sky / far background: a Fibonacci sphere (uniform directions) around the
    camera centroid.

    Args:
        scene: the loaded scene (training views, SfM points in metres).
        n: number of points.
        radius_factor: sphere radius as a multiple of the 97th-percentile SfM point distance
            from the camera centroid (at least ``radius_factor`` x the scene scale).
        max_views: colours are sampled from up to this many training views.

    Returns:
        ``(points [n, 3] float32 metres, colors [n, 3] float32 RGB in [0, 1], centre [3]
        float32 metres, radius metres)``; a point's colour is the mean of the pixels it
        projects to in the sampled views, grey 0.5 if it is seen in none.
    """
    views = scene.train
    centres = np.array([-v.viewmat[:3, :3].T @ v.viewmat[:3, 3] for v in views])
    c = centres.mean(0)
    radius = radius_factor * float(np.percentile(np.linalg.norm(scene.points - c, axis=1), 97))
    radius = max(radius, radius_factor * scene.scene_scale)
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5 ** 0.5) * i
    r = np.sqrt(1 - z * z)
    pts = c + radius * np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)
    acc = np.zeros((n, 3))
    cnt = np.zeros(n)
    for v in views[:: max(1, len(views) // max_views)]:
        xc = pts @ v.viewmat[:3, :3].T + v.viewmat[:3, 3]
        ok = xc[:, 2] > 1e-6
        uv = (xc[ok] @ v.K.T)[:, :2] / xc[ok, 2:3]
        u, w = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        inb = (u >= 0) & (u < v.width) & (w >= 0) & (w < v.height)
        idx = np.flatnonzero(ok)[inb]
        acc[idx] += v.image[w[inb], u[inb]] / 255.0
        cnt[idx] += 1
    col = np.where(cnt[:, None] > 0, acc / np.maximum(cnt, 1)[:, None], 0.5)
    return pts.astype(np.float32), col.astype(np.float32), c.astype(np.float32), radius


def seen_by_views(means: np.ndarray, views, margin: float = 0.1) -> np.ndarray:
    """Which points some view sees: in front of its camera and inside its image grown by
    ``margin`` x its size on every side (a Gaussian just outside the frame still spills in).

    Args:
        means: [N, 3] float positions (metres, the views' world frame).
        views: :class:`.data.View` list (``viewmat`` [4, 4] cam_from_world, ``K`` [3, 3] pixels,
            ``width``, ``height``).
        margin: fraction of the image size added on each side.

    Returns:
        [N] bool.
    """
    x = np.asarray(means, np.float64)
    seen = np.zeros(len(x), bool)
    for v in views:
        xc = x @ v.viewmat[:3, :3].T.astype(np.float64) + v.viewmat[:3, 3]
        z = xc[:, 2]
        front = z > 1e-6
        uv = xc[front] @ v.K.T.astype(np.float64)
        u, w = uv[:, 0] / uv[:, 2], uv[:, 1] / uv[:, 2]
        mu, mv = margin * v.width, margin * v.height
        inside = (u >= -mu) & (u <= v.width + mu) & (w >= -mv) & (w <= v.height + mv)
        idx = np.flatnonzero(front)[inside]
        seen[idx] = True
    return seen
