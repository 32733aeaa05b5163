"""A small synthetic scene for tests and benchmarks of the training stage.

Known Gaussians (a textured ground plane plus a few coloured boxes, Z up, metres) are
rendered with :func:`splatforge_core.render.rasterization` from cameras on a ring looking at
the centre; the images, a pycolmap Reconstruction (PINHOLE cameras, exact poses, noisy
subset of the Gaussian centres as SfM points) and a views.json (docs/formats.md; two
views per "panorama" frame when ``views_per_frame=2``) are written to a folder.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict

import numpy as np
import torch

from ..io import write_json

__all__ = ["make_synthetic_scene", "look_at_cam_from_world"]


def look_at_cam_from_world(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[3, 4] cam_from_world (COLMAP axes: x right, y down, z forward) for a camera at
    ``centre`` looking at ``target`` with world +Z up (metres)."""
    f = target - centre
    f = f / np.linalg.norm(f)
    r = np.cross(f, [0.0, 0.0, 1.0])
    r = r / np.linalg.norm(r)
    d = np.cross(f, r)
    R = np.stack([r, d, f])
    return np.concatenate([R, (-R @ centre)[:, None]], 1)


def _gaussians(n: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    n_ground = n // 2
    n_box = n - n_ground
    # ground plane z=0 in [-2, 2]^2 with a checker/gradient texture
    g = rng.uniform(-2, 2, (n_ground, 2))
    ground = np.c_[g, np.zeros(n_ground)]
    chk = ((np.floor(g[:, 0] * 2) + np.floor(g[:, 1] * 2)) % 2)[:, None]
    gcol = np.c_[0.3 + 0.4 * chk[:, 0], 0.5 + 0.1 * g[:, 0] / 2, 0.4 - 0.2 * chk[:, 0]]
    # three boxes (surface samples)
    boxes = [((-0.8, -0.5, 0.4), (0.35, 0.35, 0.4), (0.9, 0.2, 0.2)),
             ((0.7, 0.3, 0.3), (0.3, 0.5, 0.3), (0.2, 0.3, 0.9)),
             ((0.0, 0.9, 0.25), (0.25, 0.25, 0.25), (0.95, 0.85, 0.2))]
    pts, cols = [], []
    per = n_box // len(boxes) + 1
    for (c, h, col) in boxes:
        u = rng.uniform(-1, 1, (per, 3))
        ax = rng.integers(0, 3, per)
        u[np.arange(per), ax] = np.sign(u[np.arange(per), ax] + 1e-9)
        pts.append(np.asarray(c) + u * np.asarray(h))
        shade = 0.75 + 0.25 * np.cos(6 * u[:, :1])
        cols.append(np.clip(np.asarray(col)[None] * shade, 0, 1))
    means = np.concatenate([ground] + pts)[:n]
    colors = np.concatenate([gcol] + cols)[:n]
    return {"means": means.astype(np.float32), "colors": np.clip(colors, 0.02, 0.98).astype(np.float32)}


def make_synthetic_scene(root: str | os.PathLike, n_cameras: int = 16, width: int = 96, height: int = 72,
                         n_gaussians: int = 4000, n_points: int = 600, views_per_frame: int = 1,
                         seed: int = 0) -> Dict[str, Path]:
    """Write a synthetic training scene under ``root``.

    Args:
        root: output folder; gets ``images/``, ``aligned/`` (COLMAP binary), ``views.json``.
        n_cameras: number of images (a multiple of ``views_per_frame``).
        width, height: image size in pixels.
        n_gaussians: ground-truth Gaussians rendered into the images.
        n_points: SfM points (noisy subset of the Gaussian centres, noise 2 cm).
        views_per_frame: images per frame (2 imitates a panorama split into views).
        seed: RNG seed.

    Returns:
        dict with ``aligned``, ``images``, ``views`` paths.
    """
    import cv2
    import pycolmap

    from ..render import rasterization

    root = Path(root)
    rng = np.random.default_rng(seed)
    gs = _gaussians(n_gaussians, rng)
    n = len(gs["means"])
    means = torch.from_numpy(gs["means"])
    scales = torch.full((n, 3), 0.045)
    scales[: n // 2, 2] = 0.01  # flat ground splats
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    opac = torch.full((n,), 0.9)
    colors = torch.from_numpy(gs["colors"])

    fx = 0.9 * width
    K = np.array([[fx, 0, width / 2], [0, fx, height / 2], [0, 0, 1]], np.float64)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rec = pycolmap.Reconstruction()
    cam = pycolmap.Camera(camera_id=1, model="PINHOLE", width=width, height=height,
                          params=[fx, fx, width / 2, height / 2])
    rec.add_camera_with_trivial_rig(cam)
    frames = []
    n_frames = n_cameras // views_per_frame
    for fi in range(n_frames):
        ang = 2 * math.pi * fi / n_frames
        centre = np.array([3.2 * math.cos(ang), 3.2 * math.sin(ang), 1.4 + 0.3 * math.sin(3 * ang)])
        frame = {"frame": f"pano_{fi:04d}", "source": f"pano_{fi:04d}.jpg", "enu": centre.tolist(), "images": {}}
        for vi in range(views_per_frame):
            off = (vi - (views_per_frame - 1) / 2) * 0.6
            target = np.array([math.cos(ang + math.pi + off), math.sin(ang + math.pi + off), 0.0]) * 0.6 * bool(off)
            target = target + np.array([0, 0, 0.3])
            cfw = look_at_cam_from_world(centre, target)
            vm = np.eye(4)
            vm[:3] = cfw
            with torch.no_grad():
                img, _, _ = rasterization(means, quats, scales, opac, colors,
                                          torch.tensor(vm, dtype=torch.float32)[None],
                                          torch.tensor(K, dtype=torch.float32)[None], width, height)
            name = f"v{vi}/pano_{fi:04d}.png" if views_per_frame > 1 else f"img_{fi:04d}.png"
            (img_dir / name).parent.mkdir(parents=True, exist_ok=True)
            rgb = (img[0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
            cv2.imwrite(str(img_dir / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            image_id = len(rec.images) + 1
            im = pycolmap.Image(name=name, camera_id=1, image_id=image_id)
            pose = pycolmap.Rigid3d(pycolmap.Rotation3d(cfw[:, :3]), cfw[:, 3])
            rec.add_image_with_trivial_frame(im, pose)
            frame["images"][f"v{vi}"] = name
        frames.append(frame)
    idx = rng.choice(n, size=min(n_points, n), replace=False)
    for i in idx:
        xyz = gs["means"][i].astype(np.float64) + rng.normal(0, 0.02, 3)
        col = (gs["colors"][i] * 255).round().astype(np.uint8)
        rec.add_point3D(xyz, pycolmap.Track(), col)
    aligned = root / "aligned"
    aligned.mkdir(parents=True, exist_ok=True)
    rec.write(str(aligned))
    views = root / "views.json"
    write_json(views, {"schema_version": 1, "camera_kind": "equirectangular" if views_per_frame > 1 else
                       "perspective", "image_dir": str(img_dir), "cameras": [], "frames": frames})
    return {"aligned": aligned, "images": img_dir, "views": views}
