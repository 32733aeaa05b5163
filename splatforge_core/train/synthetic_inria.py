"""A tiny Inria-layout folder rendered from a known splat (tests and benchmarks of finetunes / QAT).

``point_cloud.ply`` (Inria PLY, :func:`splatforge_core.splat.write_splat_ply`), ``cameras.json``
and ``images/*.png`` (:func:`splatforge_core.inria.write_dataset`): the images are renders of
the splat itself (:func:`splatforge_core.render.rasterization`, black background) from
cameras on a ring around the origin, so the splat reproduces its views exactly and a finetune
started from a perturbed copy must lower the loss. The folder is what an extracted bundle holds.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from ..inria import write_dataset
from ..splat import write_splat_ply
from .data import View
from .synthetic import look_at_cam_from_world

__all__ = ["synthetic_splat_dict", "make_inria_folder"]


def synthetic_splat_dict(n: int = 300, sh_degree: int = 3, seed: int = 0, radius: float = 1.0) -> dict:
    """A random splat dict (the layout of :func:`splatforge_core.splat.read_splat_ply`): ``n``
    Gaussians in a ball of ``radius`` metres, log-scales ~ log(radius / 12), opacity logits
    ~ 1, DC colours in [-1, 1], higher SH ~ N(0, 0.15) with a per-coefficient spread (so the
    columns' ranges differ as in trained splats)."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    means = d * radius * rng.uniform(0, 1, (n, 1)) ** (1 / 3)
    k = (sh_degree + 1) ** 2 - 1
    spread = np.linspace(0.25, 0.05, k)[None, :, None] if k else np.zeros((1, 0, 1))
    q = rng.normal(size=(n, 4))
    return {
        "means": means.astype(np.float32),
        "scales": (np.log(radius / 12) + rng.normal(0, 0.2, (n, 3))).astype(np.float32),
        "quats": (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32),
        "opacities": rng.normal(1.0, 0.5, n).astype(np.float32),
        "sh0": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        "shN": (rng.normal(0, 1, (n, k, 3)) * spread).astype(np.float32),
        "sh_degree": sh_degree,
    }


def ring_views(splat: dict, n_views: int = 12, size: int = 48, distance: float = 3.5) -> list[View]:
    """``n_views`` renders (``size`` x ``size`` px, 60 degree field of view) of ``splat`` from a ring
    at ``distance`` metres and 0.8 m height looking at the origin; view ``i`` is frame ``f{i:03d}``."""
    from ..render import rasterization

    f = size / 2 / math.tan(math.radians(30))
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], np.float32)
    t = {k: torch.as_tensor(np.asarray(splat[k], np.float32)) for k in ("means", "scales", "quats", "opacities",
                                                                       "sh0", "shN")}
    colors = torch.cat([t["sh0"][:, None, :], t["shN"]], 1)
    views = []
    for i in range(n_views):
        a = 2 * math.pi * i / n_views
        vm = np.eye(4, dtype=np.float32)
        vm[:3] = look_at_cam_from_world(np.array([distance * math.cos(a), distance * math.sin(a), 0.8]), np.zeros(3))
        with torch.no_grad():
            img, _, _ = rasterization(t["means"], t["quats"], torch.exp(t["scales"]), torch.sigmoid(t["opacities"]),
                                      colors, torch.from_numpy(vm)[None], torch.from_numpy(K)[None], size, size,
                                      sh_degree=int(splat["sh_degree"]))
        u8 = (img[0, ..., :3].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
        views.append(View(f"v{i:03d}.png", f"f{i:03d}", u8, K.copy(), vm))
    return views


def make_inria_folder(root: str | os.PathLike, n: int = 300, sh_degree: int = 3, n_views: int = 12,
                      size: int = 48, seed: int = 0) -> dict:
    """Write the synthetic Inria folder (see module) under ``root``; returns the splat dict."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    s = synthetic_splat_dict(n, sh_degree, seed)
    write_dataset(ring_views(s, n_views, size), root)
    write_splat_ply(root / "point_cloud.ply", s["means"], s["scales"], s["quats"], s["opacities"], s["sh0"], s["shN"])
    return s
