"""Train a Scaffold-GS model (``train.model: scaffold``): the reference method, our code, CPU or CUDA.

Method (Lu et al. 2024, "Scaffold-GS: Structured 3D Gaussians for View-Adaptive Rendering";
maths and defaults of city-super/Scaffold-GS ``train.py``, ``scene/gaussian_model.py``,
``arguments/__init__.py``):

* Anchors: the SfM points snapped to a voxel grid (``round(p / voxel) * voxel``, unique); the
  voxel size is the median distance of a point to its nearest neighbour (the reference's rule
  for ``voxel_size <= 0``). Offsets 0, features 0, log scales ``log(sqrt(mean squared distance
  to the 3 nearest anchors))`` for all 6, opacity logit(0.1) and identity rotation (never
  trained, as in the reference). F = 32, k = 10 (reference defaults); anchor positions are
  not optimised (``position_lr_init = 0``).
* Per step: anchors in the camera frustum (z > 0.2, within 1.3x the image, like the
  reference's ``prefilter_voxel``), neural Gaussians (:mod:`.model`), our rasteriser;
  loss ``(1 - 0.2) L1 + 0.2 (1 - SSIM) + 0.01 * mean(prod(scaling))`` (the volume regulariser).
* Adam (eps 1e-15) with the reference learning rates: offsets 0.01 -> 1e-4 (x scene extent),
  features 0.0075, scaling 0.007, opacity MLP 0.002 -> 2e-5, cov MLP 0.004, colour MLP
  0.008 -> 5e-5, log-linear decay over the run.
* Anchor growing / pruning (``adjust_anchor``): per neural Gaussian, the mean norm of its
  screen-space gradient (NDC units: pixel gradient x (W/2, H/2)) over the steps it was visible;
  those above 0.0002 x 2^i with enough visits spawn anchors on grids of ``voxel *
  16 // 4^i`` (i = 0, 1, 2; random half / quarter / eighth kept, no duplicate of an existing
  anchor cell, features the max of the spawning anchors'); anchors whose accumulated opacity
  is below 0.005 x visits are pruned. Schedule scaled to short runs (module constants
  :func:`schedule`): the reference's 500 / 1500 / 100 / 15000 of 30000 steps (start of
  statistics, first update, interval, last update) times ``iterations / 30000``, with an
  interval of at least 50 steps (visit thresholds are 0.4 and 0.8 x the interval). Steps of
  1500 (the CPU default): 25 / 75 / 50 / 750.
* No appearance embedding (``appearance_dim = 0``): a held-out view has no embedding of its
  own (the reference evaluates with the training camera of the same list index).

Outputs in ``out_dir``: ``scaffold/`` (the canonical layout, :mod:`.layout`; ``point_cloud/
iteration_<N>``), ``checkpoints_scaffold/``, ``metrics.json``, ``renders.png``, ``curve.png``;
and ``ply_path``: an Inria-layout PLY *baked* from the neural Gaussians seen from the centroid
of the training cameras (each anchor's view direction and distance from that point; colours
as SH degree 0), for viewers that do not run the MLPs. ``metrics.json`` gives the held-out
PSNR of the Scaffold render (``final``), of the reloaded folder (``reloaded_final``) and of
the baked PLY (``baked_final``).
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError
from ..io import remove_stale_temporaries, write_json
from ..log import get_logger
from ..train.checkpoint import _load_one, input_fingerprint, list_checkpoints, move_aside, save_checkpoint
from ..train.data import SceneData, View, _masks_from_views, load_scene
from ..metrics import psnr, save_comparison_png, save_curve_png, ssim
from ..train.options import TrainOptions
from .layout import Anchors, ScaffoldConfig, ScaffoldModel, load_scaffold, save_scaffold
from .model import build_mlps, generate_neural_gaussians
from .render import in_frustum, rasterize_gaussians, render_model, render_view

_LOG = get_logger("train.scaffold")

FEAT_DIM, N_OFFSETS = 32, 10
LAMBDA_DSSIM, VOLUME_REG = 0.2, 0.01
#: (name, initial, final learning rate); offsets are also multiplied by the scene extent.
LRS = (("offset", 0.01, 0.0001), ("anchor_feat", 0.0075, 0.0075), ("scaling", 0.007, 0.007),
       ("mlp_opacity", 0.002, 0.00002), ("mlp_cov", 0.004, 0.004), ("mlp_color", 0.008, 0.00005))
MIN_OPACITY, SUCCESS_THRESHOLD, GRAD_THRESHOLD = 0.005, 0.8, 0.0002
ANCHOR_KEYS = ("anchor", "offset", "anchor_feat", "scaling", "opacity", "rotation")
TRAINED_ANCHOR_KEYS = ("offset", "anchor_feat", "scaling")
CKPT_FORMAT, CKPT_VERSION = "splatforge-scaffold-checkpoint", 1
SH_C0 = 0.28209479177387814


def schedule(iterations: int) -> tuple[int, int, int, int]:
    """(start_stat, update_from, update_interval, update_until) for a run of ``iterations`` steps
    (the reference's 500 / 1500 / 100 / 15000 at 30000, scaled; interval >= 50)."""
    s = iterations / 30000
    interval = max(50, round(100 * s))
    start = round(500 * s)
    return start, max(round(1500 * s), start + interval), interval, round(15000 * s)


def lr_at(init: float, final: float, t: float) -> float:
    """Log-linear interpolation ``exp((1-t) log init + t log final)``, t in [0, 1] (``get_expon_lr_func``)."""
    t = min(max(t, 0.0), 1.0)
    return math.exp((1 - t) * math.log(init) + t * math.log(final))


def knn_mean_sq_dist(points: np.ndarray, k: int = 3) -> np.ndarray:
    """[N] mean squared distance of each point to its ``k`` nearest other points (``distCUDA2``)."""
    from scipy.spatial import cKDTree

    n = len(points)
    if n < 2:
        return np.full(n, 1e-4)
    d, _ = cKDTree(points).query(points, k=min(k, n - 1) + 1)
    return (d[:, 1:] ** 2).mean(1)


def init_anchors(points: np.ndarray, voxel_size: Optional[float], feat_dim: int = FEAT_DIM,
                 n_offsets: int = N_OFFSETS) -> tuple[Anchors, float]:
    """Anchors from SfM points [P, 3] (``create_from_pcd``); returns ``(anchors, voxel_size)``.

    Raises:
        InputError: fewer than 2 SfM points.
    """
    pts = np.asarray(points, np.float64)
    if len(pts) < 2:
        raise InputError(f"Scaffold-GS needs SfM points to place anchors, got {len(pts)}")
    if not voxel_size or voxel_size <= 0:
        voxel_size = float(np.median(np.sqrt(knn_mean_sq_dist(pts, 1))))
        voxel_size = max(voxel_size, 1e-6)
    grid = np.unique(np.round(pts / voxel_size), axis=0) * voxel_size
    n = len(grid)
    d2 = np.maximum(knn_mean_sq_dist(grid, 3), 1e-7)
    a = Anchors(grid.astype(np.float32), np.zeros((n, n_offsets, 3), np.float32), np.zeros((n, feat_dim), np.float32),
                np.full((n, 1), math.log(0.1 / 0.9), np.float32),
                np.repeat(np.log(np.sqrt(d2))[:, None], 6, 1).astype(np.float32),
                np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)))
    return a, float(voxel_size)


class ScaffoldTrainer:
    """One Scaffold-GS training run (see the module docstring and :func:`main`)."""

    def __init__(self, scene: SceneData, opts: TrainOptions, device: torch.device, out_dir: Path):
        self.scene, self.opts, self.device, self.out_dir = scene, opts, device, out_dir
        self.ckpt_dir = out_dir / "checkpoints_scaffold"
        self.iterations = int(opts.iterations or (opts.cpu_iterations if device.type != "cuda" else 30_000))
        self.start_stat, self.update_from, self.update_interval, self.update_until = schedule(self.iterations)
        self.eval_steps = sorted({int(x) for x in (opts.eval_steps if opts.eval_steps is not None
                                                   else [self.iterations // 2]) if 0 < int(x) < self.iterations})
        self.cfg = ScaffoldConfig(feat_dim=FEAT_DIM, n_offsets=N_OFFSETS, appearance_dim=0)
        self.history: Dict[str, list] = {"step": [], "loss": [], "psnr": [], "num_anchors": []}
        self.evals: List[Dict[str, Any]] = []
        self.resumed_from: List[int] = []
        self.fingerprint: Dict[str, str] = {}
        self.train_seconds = 0.0
        self.step = 0
        self.order: List[int] = []
        self.np_rng = np.random.default_rng(opts.seed)
        self.voxel_size = 0.0

    # ---- parameters ---------------------------------------------------------------------
    def _build(self, anchors: Dict[str, Tensor], mlp_state: Optional[Dict[str, Any]] = None) -> None:
        dev = self.device
        self.params = {k: nn.Parameter(anchors[k].to(dev).float().contiguous(), requires_grad=k in TRAINED_ANCHOR_KEYS)
                       for k in ANCHOR_KEYS}
        self.mlps = {k: m.to(dev) for k, m in build_mlps(self.cfg).items()}
        if mlp_state:
            for k, m in self.mlps.items():
                m.load_state_dict(mlp_state[k])
        self.optimizers = {k: torch.optim.Adam([self.params[k]], lr=1e-3, eps=1e-15) for k in TRAINED_ANCHOR_KEYS}
        for k in ("opacity", "cov", "color"):
            self.optimizers["mlp_" + k] = torch.optim.Adam(self.mlps[k].parameters(), lr=1e-3, eps=1e-15)
        n, k = len(self.params["anchor"]), self.cfg.n_offsets
        self.opacity_accum = torch.zeros(n, 1, device=dev)
        self.anchor_demon = torch.zeros(n, 1, device=dev)
        self.offset_gradient_accum = torch.zeros(n * k, 1, device=dev)
        self.offset_denom = torch.zeros(n * k, 1, device=dev)

    def init_fresh(self) -> None:
        a, self.voxel_size = init_anchors(self.scene.points, None, self.cfg.feat_dim, self.cfg.n_offsets)
        torch.manual_seed(self.opts.seed)
        random.seed(self.opts.seed)
        self.np_rng = np.random.default_rng(self.opts.seed)
        self.step = 0
        self._build({k: torch.from_numpy(getattr(a, k)) for k in ANCHOR_KEYS})
        _LOG.info("Scaffold-GS: %d anchors from %d SfM points on a %.4g m voxel grid", a.n, len(self.scene.points),
                  self.voxel_size)

    def _set_lrs(self) -> None:
        t = self.step / max(1, self.iterations)
        for name, lr0, lr1 in LRS:
            scale = self.scene.scene_scale if name == "offset" else 1.0
            for g in self.optimizers[name].param_groups:
                g["lr"] = lr_at(lr0 * scale, lr1 * scale, t)

    def tensors(self) -> Dict[str, Tensor]:
        return {k: self.params[k] for k in ("anchor", "offset", "anchor_feat", "scaling")}

    # ---- rendering ----------------------------------------------------------------------
    def render(self, view: View, bg: Optional[Tensor]):
        K = torch.from_numpy(view.K).to(self.device)
        vm = torch.from_numpy(view.viewmat).to(self.device)
        vis = in_frustum(self.params["anchor"].detach(), vm, K, view.width, view.height)
        return render_view(self.tensors(), self.mlps, self.cfg, vm, K, view.width, view.height, bg, 0, vis)

    def _gt(self, view: View) -> Tensor:
        return torch.from_numpy(view.image).to(self.device).float().div_(255.0)

    def _mask(self, view: View) -> Optional[Tensor]:
        return None if view.mask is None else torch.from_numpy(view.mask).to(self.device)[:, :, None]

    def _next_view(self) -> View:
        if not self.order:
            self.order = [int(i) for i in self.np_rng.permutation(len(self.scene.train))]
        return self.scene.train[self.order.pop()]

    # ---- anchor statistics, growing, pruning (reference training_statis / adjust_anchor) -------
    @torch.no_grad()
    def _statis(self, g: Dict[str, Tensor], info: Dict[str, Any], view: View) -> None:
        k = self.cfg.n_offsets
        vis_anchor = g["visible_mask"]
        op = g["neural_opacity"].detach().view(-1).clamp_min(0).view(-1, k)
        self.opacity_accum[vis_anchor] += op.sum(1, keepdim=True)
        self.anchor_demon[vis_anchor] += 1
        radii = info["radii"][0]
        update_filter = (radii > 0).all(-1) if radii.dim() == 2 else radii > 0
        grad = info["means2d"].grad
        if grad is None:
            return
        grad = grad[0].clone()
        grad[:, 0] *= view.width / 2.0
        grad[:, 1] *= view.height / 2.0
        vis_rep = vis_anchor.repeat_interleave(k)
        combined = torch.zeros(len(self.offset_gradient_accum), dtype=torch.bool, device=self.device)
        combined[vis_rep] = g["mask"]
        tmp = combined.clone()
        combined[tmp] = update_filter
        self.offset_gradient_accum[combined] += grad[update_filter].norm(dim=-1, keepdim=True)
        self.offset_denom[combined] += 1

    def _replace(self, new: Dict[str, Tensor], keep: Optional[Tensor] = None) -> None:
        """Swap anchor tensors: ``keep`` [N] bool selects rows; ``new`` rows are appended (Adam state zero)."""
        for name in ANCHOR_KEYS:
            old = self.params[name]
            data = old.data if keep is None else old.data[keep]
            if name in new:
                data = torch.cat([data, new[name].to(data)], 0)
            p = nn.Parameter(data.contiguous(), requires_grad=name in TRAINED_ANCHOR_KEYS)
            if name in self.optimizers:
                opt = self.optimizers[name]
                st = opt.state.pop(old, None)
                opt.param_groups[0]["params"] = [p]
                if st:
                    for s in ("exp_avg", "exp_avg_sq"):
                        v = st[s] if keep is None else st[s][keep]
                        if name in new:
                            v = torch.cat([v, torch.zeros_like(new[name]).to(v)], 0)
                        st[s] = v.contiguous()
                    opt.state[p] = st
            self.params[name] = p

    @torch.no_grad()
    def _grow(self, grads: Tensor, offset_mask: Tensor) -> None:
        k, f = self.cfg.n_offsets, self.cfg.feat_dim
        init_length = len(self.params["anchor"]) * k
        for i in range(self.cfg.update_depth):
            cur_threshold = GRAD_THRESHOLD * ((self.cfg.update_hierachy_factor // 2) ** i)
            cand = (grads >= cur_threshold) & offset_mask
            cand &= torch.rand(len(cand), device=self.device) > 0.5 ** (i + 1)
            length_inc = len(self.params["anchor"]) * k - init_length
            if length_inc == 0 and i > 0:
                continue
            if length_inc:
                cand = torch.cat([cand, torch.zeros(length_inc, dtype=torch.bool, device=self.device)])
            anchor, scaling = self.params["anchor"].data, torch.exp(self.params["scaling"].data)
            all_xyz = anchor[:, None] + self.params["offset"].data * scaling[:, None, :3]
            size_factor = self.cfg.update_init_factor // (self.cfg.update_hierachy_factor ** i)
            cur_size = self.voxel_size * size_factor
            if not cand.any() or cur_size <= 0:
                continue
            grid = torch.round(anchor / cur_size).long()
            sel = torch.round(all_xyz.view(-1, 3)[cand] / cur_size).long()
            uniq, inverse = torch.unique(sel, return_inverse=True, dim=0)
            # cells already holding an anchor: unique over both sets, a candidate cell shared with the grid is a duplicate
            both, inv_both = torch.unique(torch.cat([grid, uniq]), return_inverse=True, dim=0)
            taken = torch.zeros(len(both), dtype=torch.bool, device=self.device)
            taken[inv_both[: len(grid)]] = True
            fresh = ~taken[inv_both[len(grid):]]
            if not fresh.any():
                continue
            cand_anchor = uniq[fresh].float() * cur_size
            feat = self.params["anchor_feat"].data[:, None].expand(-1, k, -1).reshape(-1, f)[cand]
            pooled = torch.full((len(uniq), f), -torch.inf, device=self.device).scatter_reduce(
                0, inverse[:, None].expand(-1, f), feat, reduce="amax", include_self=True)
            m = len(cand_anchor)
            new = {"anchor": cand_anchor, "scaling": torch.full((m, 6), math.log(cur_size), device=self.device),
                   "rotation": torch.tensor([[1.0, 0, 0, 0]], device=self.device).repeat(m, 1),
                   "opacity": torch.full((m, 1), math.log(0.1 / 0.9), device=self.device),
                   "anchor_feat": pooled[fresh], "offset": torch.zeros(m, k, 3, device=self.device)}
            self.anchor_demon = torch.cat([self.anchor_demon, torch.zeros(m, 1, device=self.device)])
            self.opacity_accum = torch.cat([self.opacity_accum, torch.zeros(m, 1, device=self.device)])
            self._replace(new)

    @torch.no_grad()
    def adjust_anchor(self) -> tuple[int, int]:
        """Grow and prune anchors (reference ``adjust_anchor``); returns (added, removed)."""
        k = self.cfg.n_offsets
        n0 = len(self.params["anchor"])
        check = self.update_interval
        grads = self.offset_gradient_accum / self.offset_denom
        grads[grads.isnan()] = 0.0
        grads_norm = grads.norm(dim=-1)
        offset_mask = (self.offset_denom > check * SUCCESS_THRESHOLD * 0.5).squeeze(1)
        self._grow(grads_norm, offset_mask)
        n1 = len(self.params["anchor"])
        self.offset_denom[offset_mask] = 0
        self.offset_denom = torch.cat([self.offset_denom, torch.zeros(n1 * k - len(self.offset_denom), 1, device=self.device)])
        self.offset_gradient_accum[offset_mask] = 0
        self.offset_gradient_accum = torch.cat(
            [self.offset_gradient_accum, torch.zeros(n1 * k - len(self.offset_gradient_accum), 1, device=self.device)])
        prune = (self.opacity_accum < MIN_OPACITY * self.anchor_demon).squeeze(1)
        anchors_mask = (self.anchor_demon > check * SUCCESS_THRESHOLD).squeeze(1)
        prune &= anchors_mask
        if int((~prune).sum()) == 0:
            prune[:] = False  # never prune everything
        keep = ~prune
        self.offset_denom = self.offset_denom.view(-1, k)[keep].view(-1, 1)
        self.offset_gradient_accum = self.offset_gradient_accum.view(-1, k)[keep].view(-1, 1)
        self.opacity_accum[anchors_mask] = 0
        self.anchor_demon[anchors_mask] = 0
        self.opacity_accum, self.anchor_demon = self.opacity_accum[keep], self.anchor_demon[keep]
        if prune.any():
            self._replace({}, keep)
            s = self.params["scaling"].data
            s[:, 3:] = s[:, 3:].clamp_max(0.05)  # the reference clamps the (log) Gaussian scales on pruning
        return n1 - n0, int(prune.sum())

    # ---- checkpoints --------------------------------------------------------------------
    def save(self) -> Path:
        payload = {
            "format": CKPT_FORMAT, "version": CKPT_VERSION, "step": self.step, "iterations": self.iterations, "voxel_size": self.voxel_size,
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "mlps": {k: {n: t.detach().cpu() for n, t in m.state_dict().items()} for k, m in self.mlps.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "stats": {"opacity_accum": self.opacity_accum.cpu(), "anchor_demon": self.anchor_demon.cpu(),
                      "offset_gradient_accum": self.offset_gradient_accum.cpu(), "offset_denom": self.offset_denom.cpu()},
            "rng": {"torch": torch.get_rng_state(), "numpy": self.np_rng.bit_generator.state, "python": random.getstate(),
                    "order": list(self.order)},
            "history": self.history, "evals": self.evals, "resumed_from": self.resumed_from,
            "train_seconds": self.train_seconds, "fingerprint": dict(self.fingerprint), "options": asdict(self.opts),
        }
        d = self.ckpt_dir
        d.mkdir(parents=True, exist_ok=True)
        p = save_checkpoint(d, self.step, payload, keep=self.opts.keep_checkpoints)
        return p

    def load(self, ck: Dict[str, Any]) -> None:
        self.voxel_size = float(ck["voxel_size"])
        self._build(ck["params"], ck["mlps"])
        for k, o in self.optimizers.items():
            o.load_state_dict(ck["optimizers"][k])
        for k, v in ck["stats"].items():
            setattr(self, k, v.to(self.device))
        self.step = int(ck["step"])
        rng = ck["rng"]
        torch.set_rng_state(rng["torch"])
        self.np_rng = np.random.default_rng()
        self.np_rng.bit_generator.state = rng["numpy"]
        random.setstate(rng["python"])
        self.order = list(rng["order"])
        self.history, self.evals = ck["history"], ck["evals"]
        self.resumed_from = list(ck["resumed_from"])
        self.train_seconds = float(ck["train_seconds"])

    # ---- evaluation ---------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, views: Optional[List[View]] = None, images: bool = False, render=None) -> Dict[str, Any]:
        """Held-out PSNR/SSIM (default views: ``scene.test``); ``render(view) -> [H, W, 3]`` overrides the renderer."""
        views = self.scene.test if views is None else views
        rec: Dict[str, Any] = {"step": self.step, "num_anchors": int(len(self.params["anchor"])), "n_views": len(views)}
        if not views:
            return rec
        bg = torch.ones(3, device=self.device) if self.opts.background == "white" else None
        ps, ss, pairs = [], [], []
        for v in views:
            img = render(v) if render is not None else self.render(v, bg)[0]
            pred = torch.as_tensor(img, device=self.device)[None].clamp(0, 1)
            gt = self._gt(v)[None]
            m = self._mask(v)
            if m is not None:
                gt = torch.where(m[None], gt, pred)
            ps.append(psnr(pred, gt, None if m is None else m[None]))
            ss.append(float(ssim(pred, gt)))
            if images and len(pairs) < self.opts.n_eval_images:
                pairs.append((f"{v.name} ({ps[-1]:.2f} dB)", pred[0].cpu().numpy(), gt[0].cpu().numpy()))
        rec.update(psnr=float(np.mean(ps)), ssim=float(np.mean(ss)),
                   per_view={v.name: {"psnr": p, "ssim": s} for v, p, s in zip(views, ps, ss)})
        if pairs:
            save_comparison_png(self.out_dir / "renders.png", pairs)
        _LOG.info("step %d: PSNR %.2f dB, SSIM %.4f over %d views (%d anchors)", self.step, rec["psnr"], rec["ssim"],
                  len(views), rec["num_anchors"])
        return rec

    # ---- loop ---------------------------------------------------------------------------
    def train_until_done(self) -> None:
        from tqdm import tqdm

        o = self.opts
        bar = tqdm(total=self.iterations, initial=self.step, disable=not o.progress, dynamic_ncols=True,
                   desc="train scaffold", mininterval=1.0)
        t_last = time.perf_counter()
        try:
            while self.step < self.iterations:
                self.step += 1  # the reference counts iterations from 1
                self._set_lrs()
                view = self._next_view()
                gt = self._gt(view)
                bg = (torch.rand(3, device=self.device) if o.background == "random" else
                      torch.ones(3, device=self.device) if o.background == "white" else None)
                img, _, info, g = self.render(view, bg)
                stats = self.start_stat < self.step < self.update_until
                if stats:
                    info["means2d"].retain_grad()
                m = self._mask(view)
                if m is not None:
                    gt = torch.where(m, gt, img.detach())
                l1 = torch.abs(img - gt).mean()
                loss = ((1 - LAMBDA_DSSIM) * l1 + LAMBDA_DSSIM * (1 - ssim(img[None], gt[None]))
                        + VOLUME_REG * g["scaling"].prod(dim=1).mean())
                loss.backward()
                if stats:
                    self._statis(g, info, view)
                    if self.step > self.update_from and self.step % self.update_interval == 0:
                        added, removed = self.adjust_anchor()
                        _LOG.debug("step %d: +%d / -%d anchors -> %d", self.step, added, removed, len(self.params["anchor"]))
                for opt in self.optimizers.values():
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                now = time.perf_counter()
                self.train_seconds += now - t_last
                t_last = now
                if self.step % o.log_every == 0 or self.step == self.iterations:
                    p = psnr(img.detach()[None].clamp(0, 1), gt[None], None if m is None else m[None])
                    self.history["step"].append(self.step)
                    self.history["loss"].append(float(loss.detach()))
                    self.history["psnr"].append(p)
                    self.history["num_anchors"].append(int(len(self.params["anchor"])))
                    bar.set_postfix(loss=f"{float(loss.detach()):.4f}", psnr=f"{p:.2f}", anchors=len(self.params["anchor"]), refresh=False)
                bar.update(1)
                if self.step in self.eval_steps and not any(e["step"] == self.step for e in self.evals):
                    self.evals.append(self.evaluate())
                    t_last = time.perf_counter()
                if self.step % o.checkpoint_every == 0 or self.step == self.iterations:
                    self.save()
                    t_last = time.perf_counter()
        finally:
            bar.close()

    # ---- outputs ------------------------------------------------------------------------
    def model(self) -> ScaffoldModel:
        a = Anchors(*(self.params[k].detach().cpu().numpy().astype(np.float32) for k in
                      ("anchor", "offset", "anchor_feat", "opacity", "scaling", "rotation")))
        cfg = ScaffoldConfig(feat_dim=self.cfg.feat_dim, n_offsets=self.cfg.n_offsets, appearance_dim=0,
                             voxel_size=self.voxel_size, raw={"white_background": self.opts.background == "white",
                                                              "eval": bool(self.scene.test), "lod": 0, "ratio": 1,
                                                              "source_path": "", "model_path": ""})
        return ScaffoldModel(cfg, a, {k: m.cpu() for k, m in self.mlps.items()})

    @torch.no_grad()
    def baked_gaussians(self) -> Dict[str, Tensor]:
        """Neural Gaussians for the canonical viewpoint: the centroid of the training cameras."""
        centres = np.array([-v.viewmat[:3, :3].T @ v.viewmat[:3, 3] for v in self.scene.train])
        c = torch.tensor(centres.mean(0), dtype=torch.float32, device=self.device)
        return generate_neural_gaussians(self.tensors(), self.mlps, self.cfg, c)


def _check_ckpt(data: Any, path: Path) -> None:
    def bad(what):
        return InputError(f"{path}: not a valid Scaffold-GS checkpoint ({what}); delete it to train from scratch")

    if not isinstance(data, dict) or data.get("format") != CKPT_FORMAT or data.get("version") != CKPT_VERSION:
        raise bad("wrong format or version")
    for key in ("step", "iterations", "params", "mlps", "optimizers", "stats", "rng", "history", "evals", "fingerprint"):
        if key not in data:
            raise bad(f"missing {key!r}")
    p = data["params"]
    if set(p) != set(ANCHOR_KEYS) or not all(torch.is_tensor(v) and v.dtype == torch.float32 for v in p.values()):
        raise bad("anchor parameters")
    n = len(p["anchor"])
    if any(len(v) != n for v in p.values()) or p["offset"].shape[1:] != (N_OFFSETS, 3) or p["anchor_feat"].shape[1:] != (FEAT_DIM,):
        raise bad("anchor parameter shapes")
    if not 0 <= int(data["step"]) <= int(data["iterations"]):
        raise bad("step out of range")


def _load_latest(tr: ScaffoldTrainer) -> Optional[Dict[str, Any]]:
    """The newest readable checkpoint of this run's inputs, or None (others are moved aside)."""
    for p in reversed(list_checkpoints(tr.ckpt_dir)):
        try:
            data = _load_one(p)
        except InputError:
            raise
        except Exception as e:  # torn file: try the next older one
            _LOG.warning("cannot read checkpoint %s (%s); trying an older one", p, str(e).splitlines()[0][:200])
            continue
        _check_ckpt(data, p)
        if data["fingerprint"] != tr.fingerprint:
            move_aside(tr.ckpt_dir, f"{p} was trained from other inputs")
            return None
        data["_path"] = str(p)
        return data
    return None


def _write_input_ply(path: Path, points: np.ndarray, colors: np.ndarray) -> None:
    """The SfM points as the Inria ``storePly`` writes ``input.ply`` (x y z nx ny nz red green blue)."""
    from plyfile import PlyData, PlyElement

    from ..io import atomic_path

    n = len(points)
    el = np.empty(n, dtype=[(c, "f4") for c in ("x", "y", "z", "nx", "ny", "nz")] + [(c, "u1") for c in ("red", "green", "blue")])
    for i, c in enumerate("xyz"):
        el[c] = points[:, i]
    for c in ("nx", "ny", "nz"):
        el[c] = 0
    rgb = np.clip(np.round(colors * 255), 0, 255).astype(np.uint8)
    for i, c in enumerate(("red", "green", "blue")):
        el[c] = rgb[:, i]
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(el, "vertex")]).write(str(tmp))


def main(aligned_dir: str | os.PathLike, images_dir: str | os.PathLike, views_path: Optional[str | os.PathLike],
         out_dir: str | os.PathLike, ply_path: str | os.PathLike, opts: TrainOptions) -> Dict[str, Any]:
    """Train Scaffold-GS (module docstring); the same inputs and ``metrics.json`` keys as
    :func:`splatforge_core.train.trainer.main` plus ``model``, ``num_anchors``, ``scaffold_dir``,
    ``reloaded_final`` (held-out PSNR of the written folder, loaded and rendered again) and
    ``baked_final`` (held-out PSNR of ``ply_path``, the baked Inria PLY).

    Raises:
        InputError: unreadable inputs, no training views, too few SfM points, a checkpoint this
            project did not write.
    """
    device, out_dir, ply_path = _prepare(opts, out_dir, ply_path)
    t0 = time.perf_counter()
    max_side = opts.max_side if device.type == "cuda" else (opts.max_side or opts.cpu_max_side)
    scene = load_scene(aligned_dir, images_dir, views_path, max_side=max_side, eval_every_n=opts.eval_every_n,
                       eval_offset=opts.eval_offset)
    if not scene.train:
        raise InputError(f"{aligned_dir}: no training views left after holding out every {opts.eval_every_n}th frame")
    fingerprint = input_fingerprint(aligned_dir, images_dir, [v.name for v in scene.train + scene.test],
                                    _masks_from_views(views_path).values(), views_path, asdict(opts))
    return _train_loaded(scene, opts, device, out_dir, ply_path, fingerprint, max_side, t0)


def train_scene_data(scene: SceneData, out_dir: str | os.PathLike, ply_path: str | os.PathLike,
                     opts: TrainOptions) -> Dict[str, Any]:
    """Train Scaffold-GS on an already loaded scene (e.g. :func:`splatforge_core.inria.load_views`
    plus SfM points, as for the snowmiku object capture) and write the same outputs as :func:`main`.

    Args:
        scene: :class:`SceneData` with ``train``/``test`` views at the training size and
            ``points`` [P, 3] / ``colors`` [P, 3] float32 for the anchors.
        out_dir, ply_path, opts: as in :func:`main`.

    Raises:
        InputError: no training views, too few SfM points, a checkpoint this project did not write.
    """
    from ..train.trainer import scene_fingerprint

    if not scene.train:
        raise InputError("train_scene_data: the scene has no training views")
    device, out_dir, ply_path = _prepare(opts, out_dir, ply_path)
    return _train_loaded(scene, opts, device, out_dir, ply_path, scene_fingerprint(scene, asdict(opts)),
                         max(scene.train[0].width, scene.train[0].height), time.perf_counter())


def _prepare(opts: TrainOptions, out_dir, ply_path):
    """Device, threads and the output folder of a run -> (device, out_dir Path, ply_path Path)."""
    from ..train.trainer import _resolve_device

    device = _resolve_device(opts.device)
    if opts.num_threads is not None:
        torch.set_num_threads(opts.num_threads)
    out_dir, ply_path = Path(out_dir), Path(ply_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries([ply_path, *(out_dir / n for n in ("metrics.json", "renders.png", "curve.png"))])
    return device, out_dir, ply_path


def _train_loaded(scene: SceneData, opts: TrainOptions, device, out_dir: Path, ply_path: Path,
                  fingerprint: Dict[str, str], max_side, t0: float) -> Dict[str, Any]:
    """Train (or resume) on a loaded scene, write the canonical folder, the baked PLY and metrics.json."""
    from ..inria import camera_from_pinhole
    from ..splat import write_splat_ply

    tr = ScaffoldTrainer(scene, opts, device, out_dir)
    tr.fingerprint = fingerprint
    ck = _load_latest(tr) if opts.resume else None
    if not opts.resume:
        move_aside(tr.ckpt_dir, "train option resume is false")
    if ck is not None:
        tr.load(ck)
        if tr.step < tr.iterations:
            tr.resumed_from.append(tr.step)
        _LOG.info("resumed from %s at step %d of %d", ck["_path"], tr.step, tr.iterations)
    else:
        tr.init_fresh()
    tr.train_until_done()
    final = tr.evaluate(images=True)
    final_train = tr.evaluate(views=scene.train[:: max(1, -(-len(scene.train) // 36))])
    # the canonical folder, then load it back and render the held-out views from it
    sdir = out_dir / "scaffold"
    model = tr.model()
    try:
        cams = [camera_from_pinhole(i, os.path.splitext(v.name.replace("/", "__"))[0], v.K, v.viewmat, v.width, v.height,
                                    v.frame) for i, v in enumerate(scene.train + scene.test)]
    except InputError as e:  # an off-centre principal point has no Inria record
        _LOG.warning("no cameras.json in %s: %s", out_dir / "scaffold", e)
        cams = None
    input_tmp = out_dir / "input.ply"
    _write_input_ply(input_tmp, scene.points, scene.colors)
    save_scaffold(sdir, model, iteration=tr.step, cameras=cams, input_ply=input_tmp)
    input_tmp.unlink()
    loaded = load_scaffold(sdir)
    bgc = (1.0, 1.0, 1.0) if opts.background == "white" else (0.0, 0.0, 0.0)
    reloaded = tr.evaluate(render=lambda v: render_model(loaded, v.viewmat, v.K, v.width, v.height, bgc, device=str(device)))
    # the baked Inria PLY (neural Gaussians seen from the training cameras' centroid)
    g = tr.baked_gaussians()
    op = g["opacity"].clamp(1e-6, 1 - 1e-6)
    write_splat_ply(ply_path, g["xyz"], torch.log(g["scaling"].clamp_min(1e-12)), g["rot"], torch.logit(op).reshape(-1),
                    ((g["color"] - 0.5) / SH_C0)[:, None, :], torch.zeros(len(op), 0, 3))
    bg_t = torch.tensor(bgc, dtype=torch.float32, device=device)

    def baked_render(v: View):
        vm = torch.from_numpy(v.viewmat).to(device)
        gg = {"xyz": g["xyz"], "rot": g["rot"], "scaling": g["scaling"], "opacity": g["opacity"], "color": g["color"]}
        return rasterize_gaussians(gg, vm, torch.from_numpy(v.K).to(device), v.width, v.height, bg_t)[0]

    baked = tr.evaluate(render=baked_render)
    evals = [e for e in tr.evals if e["step"] != final["step"]] + [final]
    save_curve_png(out_dir / "curve.png", tr.history["step"], tr.history["loss"], tr.history["psnr"],
                   [e["step"] for e in evals if "psnr" in e], [e["psnr"] for e in evals if "psnr" in e])
    it = sdir / "point_cloud" / f"iteration_{tr.step}"
    pick = ("psnr", "ssim")
    metrics = {
        "schema_version": 1, "model": "scaffold", "device": str(device), "iterations": tr.iterations,
        "final_step": tr.step, "resumed_from": tr.resumed_from, "num_anchors": int(len(tr.params["anchor"])),
        "num_gaussians": int(len(g["xyz"])), "n_offsets": N_OFFSETS, "feat_dim": FEAT_DIM, "voxel_size": tr.voxel_size,
        "schedule": dict(zip(("start_stat", "update_from", "update_interval", "update_until"), schedule(tr.iterations))),
        "n_train_views": len(scene.train), "n_test_views": len(scene.test), "test_frames": scene.test_frames,
        "test_images": [v.name for v in scene.test], "scene_scale_m": scene.scene_scale,
        "resolution": {"max_side": max_side, "first_train_view": [scene.train[0].width, scene.train[0].height]},
        "final": {k: final[k] for k in pick if k in final},
        "final_train_views": {k: final_train[k] for k in pick + ("n_views",) if k in final_train},
        "reloaded_final": {k: reloaded[k] for k in pick if k in reloaded},
        "baked_final": {k: baked[k] for k in pick if k in baked},
        "baked_note": "Inria PLY baked from the neural Gaussians seen from the centroid of the training cameras "
                      "(per-anchor view direction and distance from that point), colours as SH degree 0",
        "evals": [{k: e[k] for k in ("step", "psnr", "ssim", "num_anchors", "n_views") if k in e} for e in evals],
        "final_per_view": final.get("per_view", {}),
        "train_seconds": tr.train_seconds, "sec_per_iter": tr.train_seconds / max(1, tr.step),
        "wall_seconds_this_run": time.perf_counter() - t0, "ply": str(ply_path), "scaffold_dir": str(sdir),
        "sizes_bytes": {"anchor_ply": (it / "point_cloud.ply").stat().st_size,
                        "mlps": sum((it / n).stat().st_size for n in ("opacity_mlp.pt", "cov_mlp.pt", "color_mlp.pt")),
                        "baked_ply": ply_path.stat().st_size},
        "options": asdict(opts),
    }
    write_json(out_dir / "metrics.json", metrics)
    if "psnr" in final:
        _LOG.info("done: %d steps, %d anchors, held-out PSNR %.2f dB (reloaded %.2f, baked PLY %.2f) -> %s", tr.step,
                  metrics["num_anchors"], final["psnr"], reloaded["psnr"], baked["psnr"], ply_path)
    return metrics
