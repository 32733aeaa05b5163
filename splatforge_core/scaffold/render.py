"""Render a Scaffold-GS model: neural Gaussians per view, rasterised by :func:`splatforge_core.render.rasterization`.

Colours are the colour MLP's output given directly (``sh_degree=None``), as the reference passes
``colors_precomp`` to its rasteriser; gsplat on CUDA tensors, our CPU port otherwise.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch import Tensor

from ..render import rasterization
from .layout import ScaffoldConfig, ScaffoldModel
from .model import anchor_tensors, generate_neural_gaussians


def camera_center(viewmat: Tensor) -> Tensor:
    """[3] world position of the camera of a [4, 4] cam_from_world matrix: ``-R^T t``."""
    return -viewmat[:3, :3].T @ viewmat[:3, 3]


def in_frustum(anchor: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int) -> Tensor:
    """[N] bool: anchor in front of the camera (z > 0.2) and within 1.3x the image (``in_frustum`` of the rasteriser)."""
    pc = anchor @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = pc[:, 2]
    zs = z.clamp_min(1e-6)
    x = (pc[:, 0] / zs * K[0, 0] + K[0, 2] - width / 2) / (width / 2)
    y = (pc[:, 1] / zs * K[1, 1] + K[1, 2] - height / 2) / (height / 2)
    return (z > 0.2) & (x.abs() < 1.3) & (y.abs() < 1.3)


def rasterize_gaussians(g: Dict[str, Tensor], viewmat: Tensor, K: Tensor, width: int, height: int,
                        background: Optional[Tensor] = None):
    """Rasterise the neural Gaussians ``g`` (:func:`generate_neural_gaussians`) for one camera.

    Returns ``(image [H, W, 3] float in [0, 1] (not clamped), alpha [H, W, 1], info)`` of
    :func:`splatforge_core.render.rasterization` (``info["means2d"]`` for densification).
    """
    bg = None if background is None else background.reshape(1, 3).to(g["xyz"])
    colors, alphas, info = rasterization(g["xyz"], g["rot"], g["scaling"], g["opacity"].reshape(-1), g["color"],
                                         viewmat[None].to(g["xyz"]), K[None].to(g["xyz"]), int(width), int(height),
                                         sh_degree=None, backgrounds=bg)
    return colors[0], alphas[0], info


def render_view(t: Dict[str, Tensor], mlps: Dict[str, Callable], cfg: ScaffoldConfig, viewmat: Tensor, K: Tensor,
                width: int, height: int, background: Optional[Tensor] = None, camera_index: int = 0,
                visible_mask: Optional[Tensor] = None):
    """Generate and rasterise the neural Gaussians of one view.

    Args:
        t: anchor tensors (:func:`.model.anchor_tensors` or the trainer's parameters).
        mlps, cfg: the model's MLPs and shape options.
        viewmat: [4, 4] cam_from_world (OpenCV axes); K: [3, 3] pixels; width, height: pixels.
        background: [3] colour or None (black); camera_index: appearance embedding row.
        visible_mask: [N] bool anchors to use; None: those :func:`in_frustum` (the reference
            always renders the anchors its ``prefilter_voxel`` keeps).

    Returns:
        ``(image [H, W, 3], alpha [H, W, 1], info, gaussians)``.
    """
    viewmat = viewmat.to(t["anchor"])
    if visible_mask is None:
        visible_mask = in_frustum(t["anchor"].detach(), viewmat, K.to(viewmat), width, height)
    g = generate_neural_gaussians(t, mlps, cfg, camera_center(viewmat), camera_index, visible_mask)
    img, alpha, info = rasterize_gaussians(g, viewmat, K, width, height, background)
    return img, alpha, info, g


@torch.no_grad()
def render_model(model: ScaffoldModel, viewmat: np.ndarray, K: np.ndarray, width: int, height: int,
                 background=(0.0, 0.0, 0.0), camera_index: int = 0, device: str = "cpu") -> np.ndarray:
    """Render a loaded :class:`ScaffoldModel` (e.g. :func:`.layout.load_scaffold`) to an image.

    Args:
        viewmat: [4, 4] cam_from_world; K: [3, 3] intrinsics in pixels of a width x height image.
        background: RGB in [0, 1] (the reference trains on black unless white_background).
        camera_index: appearance embedding row (0 for a view that was not trained on).

    Returns:
        [H, W, 3] float32 RGB clamped to [0, 1].
    """
    t = anchor_tensors(model.anchors, device=device)
    mlps = {k: (m.to(device) if hasattr(m, "to") else m) for k, m in model.mlps.items()}
    img, _, _, _ = render_view(t, mlps, model.config, torch.as_tensor(viewmat, dtype=torch.float32, device=device),
                               torch.as_tensor(K, dtype=torch.float32, device=device), width, height,
                               torch.tensor(background, dtype=torch.float32, device=device), camera_index)
    return img.clamp(0, 1).cpu().numpy().astype(np.float32)
