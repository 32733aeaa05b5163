"""Scaffold-GS neural Gaussians: the reference's MLP shapes and ``generate_neural_gaussians``.

Maths as city-super/Scaffold-GS ``gaussian_renderer/__init__.py`` (our own code). For
anchors ``a`` [N, 3] with feature ``f`` [N, F], offsets ``o`` [N, k, 3], log scales ``s`` [N, 6]
and a camera centre ``c``:

* ``d = a - c``, ``dist = |d|``, ``view = d / dist``;
* optional feature bank (``use_feat_bank``): softmax weights ``w`` [N, 3] = MLP([view, dist]);
  ``f = f[::4] repeated x4 * w0 + f[::2] repeated x2 * w1 + f * w2`` (multi-resolution feature);
* MLP input ``[f, view]`` (+ ``dist`` when ``add_*_dist``; the colour MLP also gets the camera's
  appearance embedding when ``appearance_dim > 0``);
* opacity = opacity MLP (tanh) [N, k]; a neural Gaussian is kept when its opacity > 0;
* colour = colour MLP (sigmoid) [N, 3k] -> [N k, 3];
* cov = cov MLP [N, 7k] -> [N k, 7]: scales ``exp(s[:, 3:]) * sigmoid(cov[:, :3])``,
  rotation ``normalize(cov[:, 3:7])`` (wxyz);
* centre ``a + o * exp(s[:, :3])``.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
from torch import Tensor, nn

from .layout import Anchors, ScaffoldConfig


def build_mlps(cfg: ScaffoldConfig, n_cameras: int = 0) -> Dict[str, nn.Module]:
    """The reference's MLPs (``GaussianModel.__init__``) as fresh float32 CPU modules.

    opacity: Linear(opacity_in, F) ReLU Linear(F, k) Tanh; cov: Linear(cov_in, F) ReLU
    Linear(F, 7k); color: Linear(color_in, F) ReLU Linear(F, 3k) Sigmoid; feature_bank
    (use_feat_bank): Linear(4, F) ReLU Linear(F, 3) Softmax(dim=1); appearance
    (appearance_dim > 0 and n_cameras > 0): Embedding(n_cameras, appearance_dim).
    """
    f, k = cfg.feat_dim, cfg.n_offsets
    out: Dict[str, nn.Module] = {
        "opacity": nn.Sequential(nn.Linear(cfg.opacity_in, f), nn.ReLU(True), nn.Linear(f, k), nn.Tanh()),
        "cov": nn.Sequential(nn.Linear(cfg.cov_in, f), nn.ReLU(True), nn.Linear(f, 7 * k)),
        "color": nn.Sequential(nn.Linear(cfg.color_in, f), nn.ReLU(True), nn.Linear(f, 3 * k), nn.Sigmoid()),
    }
    if cfg.use_feat_bank:
        out["feature_bank"] = nn.Sequential(nn.Linear(4, f), nn.ReLU(True), nn.Linear(f, 3), nn.Softmax(dim=1))
    if cfg.appearance_dim > 0 and n_cameras > 0:
        out["appearance"] = nn.Embedding(n_cameras, cfg.appearance_dim)
    return out


def anchor_tensors(a: Anchors, device="cpu", dtype=torch.float32) -> Dict[str, Tensor]:
    """:class:`Anchors` as tensors: anchor [N,3], offset [N,k,3], anchor_feat [N,F], scaling [N,6] (log)."""
    return {"anchor": torch.as_tensor(a.anchor, dtype=dtype, device=device),
            "offset": torch.as_tensor(a.offset, dtype=dtype, device=device),
            "anchor_feat": torch.as_tensor(a.anchor_feat, dtype=dtype, device=device),
            "scaling": torch.as_tensor(a.scaling, dtype=dtype, device=device)}


def generate_neural_gaussians(t: Dict[str, Tensor], mlps: Dict[str, Callable], cfg: ScaffoldConfig, cam_center: Tensor,
                              camera_index: int = 0, visible_mask: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """Neural Gaussians of the anchors in ``t`` seen from ``cam_center`` (module docstring).

    Args:
        t: :func:`anchor_tensors` (``scaling`` is log scale, as stored).
        mlps: :func:`build_mlps` modules or the loaded TorchScript (same keys).
        cfg: the model's shape options.
        cam_center: [3] camera centre (world, same dtype/device as ``t``).
        camera_index: row of the appearance embedding (the training camera's uid); ignored
            without ``appearance`` in ``mlps``.
        visible_mask: [N] bool anchors to use (None: all).

    Returns:
        dict with ``xyz`` [M, 3], ``color`` [M, 3] in [0, 1], ``opacity`` [M, 1] in (0, 1],
        ``scaling`` [M, 3] (activated), ``rot`` [M, 4] unit wxyz, and for the trainer
        ``neural_opacity`` [N' k, 1] (all, before the mask), ``mask`` [N' k] bool (kept),
        ``visible_mask`` [N] bool; M = number kept.
    """
    n_all = t["anchor"].shape[0]
    vis = torch.ones(n_all, dtype=torch.bool, device=t["anchor"].device) if visible_mask is None else visible_mask
    feat, anchor, offsets, scaling = t["anchor_feat"][vis], t["anchor"][vis], t["offset"][vis], torch.exp(t["scaling"][vis])
    k = cfg.n_offsets
    ob_view = anchor - cam_center.reshape(1, 3)
    ob_dist = ob_view.norm(dim=1, keepdim=True)
    ob_view = ob_view / ob_dist
    if cfg.use_feat_bank:
        w = mlps["feature_bank"](torch.cat([ob_view, ob_dist], dim=1)).unsqueeze(1)  # [n, 1, 3]
        fe = feat.unsqueeze(-1)
        fe = (fe[:, ::4, :1].repeat([1, 4, 1]) * w[:, :, :1] + fe[:, ::2, :1].repeat([1, 2, 1]) * w[:, :, 1:2]
              + fe[:, ::1, :1] * w[:, :, 2:])
        feat = fe.squeeze(-1)
    with_dist = torch.cat([feat, ob_view, ob_dist], dim=1)
    wo_dist = torch.cat([feat, ob_view], dim=1)
    neural_opacity = mlps["opacity"](with_dist if cfg.add_opacity_dist else wo_dist).reshape(-1, 1)
    mask = (neural_opacity > 0.0).view(-1)
    color_in = with_dist if cfg.add_color_dist else wo_dist
    if cfg.appearance_dim > 0 and "appearance" in mlps:
        idx = torch.full((anchor.shape[0],), int(camera_index), dtype=torch.long, device=anchor.device)
        color_in = torch.cat([color_in, mlps["appearance"](idx).to(color_in.dtype)], dim=1)
    color = mlps["color"](color_in).reshape(-1, 3)
    scale_rot = mlps["cov"](with_dist if cfg.add_cov_dist else wo_dist).reshape(-1, 7)
    off = offsets.reshape(-1, 3)
    scaling_rep = scaling.repeat_interleave(k, dim=0)
    anchor_rep = anchor.repeat_interleave(k, dim=0)
    scaling_rep, anchor_rep, color, scale_rot, off = scaling_rep[mask], anchor_rep[mask], color[mask], scale_rot[mask], off[mask]
    return {"xyz": anchor_rep + off * scaling_rep[:, :3], "color": color, "opacity": neural_opacity[mask],
            "scaling": scaling_rep[:, 3:] * torch.sigmoid(scale_rot[:, :3]),
            "rot": torch.nn.functional.normalize(scale_rot[:, 3:7]), "neural_opacity": neural_opacity, "mask": mask,
            "visible_mask": vis}
