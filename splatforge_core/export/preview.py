"""Preview pictures: the textured mesh and the splat rendered from the same cameras.

The mesh is drawn with a small numpy z-buffer rasteriser (:func:`bake.raster_triangles`)
instead of an OpenGL renderer: pyrender and trimesh's ``scene.save_image`` need an OpenGL
context (pyglet + a display, or EGL/OSMesa), none of which exists on this headless CPU
machine. Texture look-up is unlit (the baked colour as is, like the splat's own colour) with
bilinear filtering; barycentrics are interpolated in screen space (not perspective-correct),
which is invisible at the size of a decimated mesh's triangles. The splat is rendered with
:func:`splatforge_core.render.rasterization` (gsplat conventions, CPU port).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io import atomic_path
from ..log import get_logger
from ..splat import sh_degree_from_rest
from .bake import raster_triangles
from .mesh import _read_splat_ply

_LOG = get_logger("export.preview")


def look_at_cameras(centre: np.ndarray, radius: float, n_views: int, width: int, height: int,
                    fov_deg: float = 50.0, elevation_deg: float = 25.0, azimuth0_deg: float = 30.0):
    """Cameras on a circle around ``centre`` (ENU, Z up) looking at it.

    Returns (viewmats [C, 4, 4] float64 cam_from_world, OpenCV axes; K [3, 3] pixels).
    """
    from ..render.cameras import orbit_viewmats

    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
    dist = radius / math.sin(math.radians(fov_deg) / 2) * 1.05
    return orbit_viewmats(centre, dist, n_views, elevation_deg, azimuth0_deg), K


def _bilinear(tex: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """tex [H, W, 3] float, uv [M, 2] (v up) -> [M, 3]."""
    H, W = tex.shape[:2]
    x = np.clip(uv[:, 0] * W - 0.5, 0, W - 1)
    y = np.clip((1.0 - uv[:, 1]) * H - 0.5, 0, H - 1)
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    x1 = np.minimum(x0 + 1, W - 1)
    y1 = np.minimum(y0 + 1, H - 1)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    return ((tex[y0, x0] * (1 - fx) + tex[y0, x1] * fx) * (1 - fy)
            + (tex[y1, x0] * (1 - fx) + tex[y1, x1] * fx) * fy)


def render_mesh(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, texture: np.ndarray,
                viewmat: np.ndarray, K: np.ndarray, width: int, height: int,
                background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Render a textured mesh (unlit). vertices [V, 3] metres, faces [F, 3], uv [V, 2] (v up),
    texture [H, W, 3] uint8; viewmat [4, 4] cam_from_world (OpenCV axes), K [3, 3].
    Returns [height, width, 3] float32 RGB in [0, 1]."""
    pc = vertices @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = pc[:, 2]
    zs = np.maximum(z, 1e-9)
    xy = np.stack([K[0, 0] * pc[:, 0] / zs + K[0, 2], K[1, 1] * pc[:, 1] / zs + K[1, 2]], axis=1)
    keep = (z[faces] > 1e-3).all(axis=1)
    fs = faces[keep]
    pix, fid, bary = raster_triangles(xy[fs], width, height, depth=z[fs])
    img = np.empty((height * width, 3), dtype=np.float32)
    img[:] = background
    if len(pix):
        uvp = np.einsum("mi,mij->mj", bary.astype(np.float64), uv[fs[fid]])
        img[pix] = _bilinear(texture.astype(np.float32) / 255.0, uvp)
    return img.reshape(height, width, 3)


def render_splat(splat, viewmat: np.ndarray, K: np.ndarray, width: int, height: int,
                 background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Render a :class:`mesh.Splat` with ``splatforge_core.render.rasterization`` (full SH).
    Returns [height, width, 3] float32 RGB in [0, 1]."""
    import torch

    from ..render import rasterization

    deg = sh_degree_from_rest(splat.sh.shape[1] - 1)
    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        col, _, _ = rasterization(t(splat.means), t(splat.quats), t(splat.scales), t(splat.opacities),
                                  t(splat.sh), t(viewmat[None]), t(K[None]), width, height,
                                  sh_degree=deg, backgrounds=t(np.asarray(background)[None]))
    return np.clip(col[0].numpy(), 0, 1).astype(np.float32)


def load_textured_mesh(path: str | Path):
    """Read a GLB/OBJ written by this stage: (vertices ENU [V, 3], faces, uv [V, 2], texture uint8).
    For GLB the mesh's own vertex data is taken (ENU), not the ENU->glTF node transform."""
    import trimesh

    sc = trimesh.load(str(path), force="scene", process=False)
    m = list(sc.geometry.values())[0]
    mat = m.visual.material
    img = getattr(mat, "baseColorTexture", None)
    if img is None:
        img = getattr(mat, "image", None)
    tex = np.asarray(img.convert("RGB"))
    return np.asarray(m.vertices), np.asarray(m.faces), np.asarray(m.visual.uv), tex


def compare_png(splat_ply: str | Path, mesh_path: str | Path, out_png: str | Path, n_views: int = 2,
                size: int = 480, min_opacity: float = 0.1, margin: float = 0.1) -> dict:
    """Write a PNG grid: one row per view, textured mesh on the left, splat on the right.

    The cameras orbit the centre of the mesh at a distance that frames its bounding box; the
    splat is drawn with only its Gaussians inside that box (padded by ``margin`` x its size,
    and opacity >= ``min_opacity``): the trainer's far background (sky sphere) would otherwise
    hide the scene from outside, and the mesh only covers what the export kept (its
    ``crop_box``). Returns {"views": n_views, "psnr_mesh_vs_splat": [per view dB]}.
    """
    import cv2

    V, F, UV, tex = load_textured_mesh(mesh_path)
    lo, hi = V.min(0), V.max(0)
    pad = margin * (hi - lo)
    splat = _read_splat_ply(splat_ply)
    inside = np.all((splat.means >= lo - pad) & (splat.means <= hi + pad), axis=1)
    splat = splat.subset((splat.opacities >= min_opacity) & inside)
    centre = (lo + hi) / 2
    radius = float(np.linalg.norm(hi - lo) / 2)
    mats, K = look_at_cameras(centre, radius, n_views, size, size)
    rows, psnrs = [], []
    for M in mats:
        a = render_mesh(V, F, UV, tex, M, K, size, size)
        b = render_splat(splat, M, K, size, size)
        mse = float(np.mean((a - b) ** 2))
        psnrs.append(round(10 * math.log10(1.0 / max(mse, 1e-12)), 2))
        row = (np.concatenate([a, np.ones((size, 8, 3), np.float32), b], axis=1) * 255).round().astype(np.uint8)
        rows.append(row)
    grid = np.concatenate(rows, axis=0)
    bgr = np.ascontiguousarray(grid[:, :, ::-1])
    for text, x in (("textured mesh", 10), ("splat", size + 18)):
        cv2.putText(bgr, text, (x, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2, cv2.LINE_AA)
    with atomic_path(out_png) as tmp:
        if not cv2.imwrite(str(tmp), bgr):
            raise OSError(f"could not write {out_png}")
    return {"views": n_views, "psnr_mesh_vs_splat": psnrs}
