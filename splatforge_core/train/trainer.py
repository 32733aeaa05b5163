"""Train a 3D Gaussian splat from a geo-aligned COLMAP model (gsplat on CUDA, torch on CPU).

Method (Kerbl et al. 2023, "3D Gaussian Splatting for Real-Time Radiance Field Rendering";
parameterisation and defaults of gsplat 1.5.3 ``examples/simple_trainer.py``):

* Gaussians initialised from the SfM points and colours: log-scale = log of the mean
  distance to the 3 nearest neighbours (isotropic), random unit quaternions (wxyz),
  opacity logit of 0.1, ``sh0 = (rgb - 0.5) / C0`` (C0 = 0.28209479), higher SH zero.
* Rendering only through :func:`splatforge_core.render.rasterization` (gsplat on CUDA
  tensors, our tile compositor on CPU); SH degree grows by one every
  ``sh_degree_interval`` steps up to ``sh_degree``.
* Loss ``(1 - lambda) L1 + lambda (1 - SSIM)``, lambda = 0.2. One Adam optimiser per
  parameter (eps 1e-15, gsplat's learning rates; means lr scaled by the scene scale and
  decayed exponentially to ``means_lr_final`` over the run).
* Densification / pruning: gsplat's ``DefaultStrategy`` (CPU or CUDA) or ``MCMCStrategy``
  (CUDA only: its relocation uses a CUDA kernel). Its schedule (refine start/stop, opacity
  reset, refine interval) is scaled with ``iterations / 30000`` like simple_trainer's
  ``steps_scaler``, with floors for short CPU runs (:func:`refine_schedule`), unless given
  explicitly. A Gaussian cap is enforced by budgeted growth (highest gradients first).
* Held-out evaluation: Mip-NeRF 360 protocol (every 8th frame; a panorama is held out
  whole), PSNR/SSIM at ``eval_steps`` and at the end.

Outputs in ``out_dir``: ``checkpoints/ckpt_*.pt``, ``metrics.json``, ``renders.png`` (render
| ground truth for a few held-out views), ``curve.png`` (training curve), ``splat.ply``
(hard link to / copy of ``ply_path``); and ``ply_path`` (Inria layout, see ``ply.py``).

CPU defaults: images downscaled to ``cpu_max_side`` pixels on the longer side and
``cpu_iterations`` steps (sized to fit the whole demo workflow in 10 minutes on 2 cores; see
``benchmarks/results/train.md``). CUDA defaults: full resolution, 30000 steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..errors import InputError, SplatForgeError
from ..io import atomic_path, read_json, write_json
from ..log import get_logger, setup_logging
from .checkpoint import load_latest_checkpoint, save_checkpoint
from .data import SceneData, View, load_scene
from .metrics import psnr, save_comparison_png, save_curve_png, ssim, try_load_lpips
from .ply import write_splat_ply

_LOG = get_logger("train")
SH_C0 = 0.28209479177387814  # Y_0^0, as in gsplat/3DGS RGB2SH

__all__ = ["TrainOptions", "main", "cli", "init_gaussians", "refine_schedule"]


@dataclass
class TrainOptions:
    """Training options (config section ``train``); defaults documented per field.

    iterations: total steps; None -> 30000 on CUDA, ``cpu_iterations`` on CPU.
    cpu_iterations: default step count on CPU (1500). Measured on the demo (12 panoramas 1.5 m
        apart, 180 training views of 320x320, 2 threads, ``benchmarks/results/train.md``):
        held-out PSNR 24.98 dB at 1000 steps and 25.70 dB at 1500 steps (about 5.5 min of
        training on a quiet machine, 0.13-0.26 s/step from 17k to 100k Gaussians), which keeps
        the whole demo workflow under 10 minutes on 2 cores (``benchmarks/results/e2e.md``).
        (On the old demo, 10 panoramas 3 m apart, 3000 steps gave only 22.0 dB: held-out
        panoramas saw ground no training panorama saw closely; more steps did not help.)
    max_side: longer image side in pixels on CUDA (None = full resolution).
    cpu_max_side: longer image side in pixels on CPU (320); images are downscaled with
        INTER_AREA and K scaled accordingly (never upscaled).
    sh_degree: final SH degree (0-3), default 3; sh_degree_interval: steps per degree (1000).
        The PLY and ``metrics.json`` carry the degree the schedule actually reached
        (:meth:`Trainer.trained_sh_degree`): 1500 CPU steps train degrees 0 and 1 only, and
        the never-trained (all-zero) degree 2-3 coefficients would be 36 of the 62 floats of
        every Gaussian in the file.
    ssim_lambda: SSIM weight in the loss (0.2).
    means_lr, means_lr_final: positions learning rate x scene scale (metres), decayed
        exponentially from 1.6e-4 to 1.6e-6; scales_lr 5e-3, quats_lr 1e-3,
        opacities_lr 5e-2, sh0_lr 2.5e-3, shN_lr 2.5e-3/20.
    init_opacity (0.1), init_scale (1.0, multiplies the 3-NN distance).
    sky_points: extra Gaussians on a sphere around the scene for sky / far background, which
        SfM leaves without points (10,000; 0 = none). Placed on a Fibonacci sphere of radius
        ``sky_radius`` x the 97th-percentile SfM point distance from the camera centroid,
        coloured by the mean colour they project to in the training views; exempt from
        DefaultStrategy's "too big in 3D" pruning (they are far away, so large by design).
    strategy: "default" (gsplat DefaultStrategy) or "mcmc" (gsplat MCMCStrategy, CUDA only).
    refine_start, refine_stop, reset_every, refine_every: DefaultStrategy schedule in steps;
        None -> :func:`refine_schedule`: gsplat defaults 500 / 15000 / 3000 / 100 scaled by
        iterations / 30000, with short-run floors refine_every >= 100, refine_start >=
        refine_every, reset_every >= 5 x refine_every, refine_stop = 75 % of runs under 5000
        steps (1500 CPU steps: 100 / 1125 / 500 / 100). Measured reason: the old linear scaling
        (2000 steps: 50 / 1000 / 200 / 25) grew the demo from 14k to 91k Gaussians in 100 steps.
    prune_opa (0.005), grow_grad2d (0.0002), absgrad (False), antialiased (False).
    mcmc_cap_max: Gaussian budget for MCMC (1,000,000).
    max_gaussians: cap on the Gaussian count, enforced by budgeted growth (at the cap only
        the highest-gradient candidates are duplicated/split, nothing is deleted to make room);
        None -> no cap on CUDA, ``cpu_max_gaussians`` (100,000) on CPU: the demo reached the
        cap at ~1000 steps; at 1000 steps a 100k cap gave 21.36 dB vs 21.15 dB at 1100 steps
        with a 60k cap. (The old enforcement,
        deleting the least opaque Gaussians after each refinement, selected for opacity:
        on the demo mean opacity went 0.39 -> 1.00 in 200 steps, the sky sphere and fresh
        splits were deleted, and held-out PSNR fell from 18.4 to 13.1 dB.)
    oom_tiers: CUDA out-of-memory fallbacks, tried in order: ``[prune_opa, max_gaussians]``
        each; training restarts from the last checkpoint with that culling.
    eval_every_n: hold out every n-th frame (8; 0 = no hold-out).
    eval_offset: index of the first held-out frame (frames sorted by name); None (default):
        an interior frame, and never the first or last (:func:`~.data.held_out_frame_indices`);
        0: the Mip-NeRF 360 protocol (which holds out the first frame of a walk).
    eval_steps: steps (completed) at which held-out views are evaluated, besides the end;
        None -> [iterations // 2].
    n_eval_images: held-out views shown in renders.png (3).
    checkpoint_every: save a checkpoint every this many steps (500) and at the end;
        keep_checkpoints: how many to keep (2).
    resume: continue from the newest checkpoint in ``out_dir/checkpoints`` (True).
    seed: RNG seed (42). device: "auto" | "cpu" | "cuda".
    background: "black", "white" or "random" (random colour behind the render each step,
        black at evaluation).
    progress: show a tqdm progress bar (loss, PSNR, Gaussian count). log_every: history
        sampling interval in steps (10).
    """

    iterations: Optional[int] = None
    cpu_iterations: int = 1500
    max_side: Optional[int] = None
    cpu_max_side: int = 320
    sh_degree: int = 3
    sh_degree_interval: int = 1000
    ssim_lambda: float = 0.2
    means_lr: float = 1.6e-4
    means_lr_final: float = 1.6e-6
    scales_lr: float = 5e-3
    quats_lr: float = 1e-3
    opacities_lr: float = 5e-2
    sh0_lr: float = 2.5e-3
    shN_lr: float = 2.5e-3 / 20
    init_opacity: float = 0.1
    init_scale: float = 1.0
    sky_points: int = 10_000
    sky_radius: float = 1.5
    strategy: str = "default"
    refine_start: Optional[int] = None
    refine_stop: Optional[int] = None
    reset_every: Optional[int] = None
    refine_every: Optional[int] = None
    prune_opa: float = 0.005
    grow_grad2d: float = 0.0002
    absgrad: bool = False
    antialiased: bool = False
    mcmc_cap_max: int = 1_000_000
    max_gaussians: Optional[int] = None
    cpu_max_gaussians: int = 100_000
    oom_tiers: List[List[float]] = field(default_factory=lambda: [[0.01, 3_000_000], [0.02, 1_500_000],
                                                                  [0.05, 750_000]])
    eval_every_n: int = 8
    eval_offset: Optional[int] = None
    eval_steps: Optional[List[int]] = None
    n_eval_images: int = 3
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    resume: bool = True
    seed: int = 42
    device: str = "auto"
    background: str = "black"
    progress: bool = True
    log_every: int = 10

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "TrainOptions":
        """Build from a plain dict (config section); unknown keys raise InputError."""
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"train options: unknown key(s) {unknown}; known: {sorted(known)}")
        opts = cls(**d)
        opts.validate()
        return opts

    def validate(self) -> None:
        """Raise InputError naming the first bad option."""
        def pos_int(name, v, allow_none=False, allow_zero=False):
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if allow_zero else 1):
                raise InputError(f"train option {name!r} must be a {'non-negative' if allow_zero else 'positive'} "
                                 f"integer{' or null' if allow_none else ''}, got {v!r}")
        pos_int("iterations", self.iterations, allow_none=True)
        pos_int("cpu_iterations", self.cpu_iterations)
        pos_int("max_side", self.max_side, allow_none=True)
        pos_int("cpu_max_side", self.cpu_max_side)
        pos_int("sh_degree_interval", self.sh_degree_interval)
        pos_int("checkpoint_every", self.checkpoint_every)
        pos_int("keep_checkpoints", self.keep_checkpoints)
        pos_int("eval_every_n", self.eval_every_n, allow_zero=True)
        pos_int("eval_offset", self.eval_offset, allow_none=True, allow_zero=True)
        pos_int("n_eval_images", self.n_eval_images, allow_zero=True)
        pos_int("max_gaussians", self.max_gaussians, allow_none=True)
        pos_int("cpu_max_gaussians", self.cpu_max_gaussians)
        pos_int("mcmc_cap_max", self.mcmc_cap_max)
        pos_int("log_every", self.log_every)
        pos_int("sky_points", self.sky_points, allow_zero=True)
        if isinstance(self.sky_radius, bool) or not isinstance(self.sky_radius, (int, float)) or self.sky_radius <= 1:
            raise InputError(f"train option 'sky_radius' must be a number > 1, got {self.sky_radius!r}")
        for name in ("refine_start", "refine_stop", "reset_every", "refine_every"):
            pos_int(name, getattr(self, name), allow_none=True)
        if self.sh_degree not in (0, 1, 2, 3):
            raise InputError(f"train option 'sh_degree' must be 0..3, got {self.sh_degree!r}")
        if not 0 <= float(self.ssim_lambda) <= 1:
            raise InputError(f"train option 'ssim_lambda' must be in [0, 1], got {self.ssim_lambda!r}")
        if self.strategy not in ("default", "mcmc"):
            raise InputError(f"train option 'strategy' must be 'default' or 'mcmc', got {self.strategy!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"train option 'device' must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.background not in ("black", "white", "random"):
            raise InputError(f"train option 'background' must be black/white/random, got {self.background!r}")
        for name in ("means_lr", "means_lr_final", "scales_lr", "quats_lr", "opacities_lr", "sh0_lr",
                     "shN_lr", "init_scale", "prune_opa", "grow_grad2d"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise InputError(f"train option {name!r} must be a positive number, got {v!r}")
        if not 0 < float(self.init_opacity) < 1:
            raise InputError(f"train option 'init_opacity' must be in (0, 1), got {self.init_opacity!r}")
        if self.eval_steps is not None and (not isinstance(self.eval_steps, (list, tuple))
                                            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                                                   for s in self.eval_steps)):
            raise InputError(f"train option 'eval_steps' must be a list of step numbers, got {self.eval_steps!r}")
        if not isinstance(self.oom_tiers, (list, tuple)) or any(
                not isinstance(t, (list, tuple)) or len(t) != 2 or not 0 < float(t[0]) < 1 or int(t[1]) < 1
                for t in self.oom_tiers):
            raise InputError(f"train option 'oom_tiers' must be a list of [opacity_threshold in (0,1), "
                             f"max_gaussians >= 1], got {self.oom_tiers!r}")


# --------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------


def sky_sphere(scene: SceneData, n: int, radius_factor: float, max_views: int = 32):
    """Points for sky / far background: ``(points [n, 3], colors [n, 3], centre [3], radius)``.

    A Fibonacci sphere (uniform directions) around the camera centroid with radius
    ``radius_factor`` x the 97th-percentile SfM point distance from it (metres); each point's
    colour is the mean of the pixels it projects to in up to ``max_views`` training views
    (grey 0.5 if it is seen in none).
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


def _sky_aware_default_strategy(sky_centre, sky_min_radius, cap_fn=None, **kw):
    """gsplat DefaultStrategy with two changes, otherwise gsplat 1.5.3's own code
    (low-opacity pruning, duplicate/split, opacity resets):

    * 'too big' pruning skips Gaussians beyond ``sky_min_radius`` (metres) of ``sky_centre``:
      the sky sphere's Gaussians are large by design.
    * budgeted growth: ``cap_fn()`` (a Gaussian count or None) caps the count *during*
      growth: when more Gaussians pass ``grow_grad2d`` than the cap leaves room for (each
      duplicate or split adds one), only those with the highest mean 2D gradient grow. (The
      earlier approach, growing freely and then deleting the least opaque Gaussians down to
      the cap, deleted fresh split children and whole regions on the demo scene.)
    """
    from gsplat.strategy import DefaultStrategy
    from gsplat.strategy.ops import remove

    class SkyAwareDefaultStrategy(DefaultStrategy):
        @torch.no_grad()
        def _grow_gs(self, params, optimizers, state, step):
            cap = cap_fn() if cap_fn is not None else None
            if cap is not None:
                grads = state["grad2d"] / state["count"].clamp_min(1)
                cand = grads > self.grow_grad2d
                budget = max(0, cap - len(params["means"]))
                n_cand = int(cand.sum())
                if n_cand > budget:
                    # drop all but the `budget` highest-gradient candidates (their statistics
                    # are zeroed right after refinement anyway, see DefaultStrategy)
                    keep = torch.zeros_like(cand)
                    if budget:
                        idx = torch.nonzero(cand).flatten()
                        keep[idx[torch.topk(grads[idx], budget).indices]] = True
                    state["grad2d"][cand & ~keep] = 0.0
            return super()._grow_gs(params, optimizers, state, step)

        @torch.no_grad()
        def _prune_gs(self, params, optimizers, state, step):  # gsplat 1.5.3 _prune_gs + sky exemption
            is_prune = torch.sigmoid(params["opacities"].flatten()) < self.prune_opa
            if step > self.reset_every:
                is_too_big = torch.exp(params["scales"]).max(dim=-1).values > self.prune_scale3d * state["scene_scale"]
                if sky_min_radius is not None:
                    far = (params["means"] - sky_centre.to(params["means"].device)).norm(dim=-1) > sky_min_radius
                    is_too_big &= ~far
                if step < self.refine_scale2d_stop_iter:
                    is_too_big |= state["radii"] > self.prune_scale2d
                is_prune = is_prune | is_too_big
            n_prune = int(is_prune.sum().item())
            if n_prune > 0:
                remove(params=params, optimizers=optimizers, state=state, mask=is_prune)
            return n_prune

    return SkyAwareDefaultStrategy(**kw)


def refine_schedule(iterations: int, refine_start: Optional[int] = None, refine_stop: Optional[int] = None,
                    reset_every: Optional[int] = None, refine_every: Optional[int] = None):
    """DefaultStrategy schedule ``(refine_start, refine_stop, reset_every, refine_every)`` in steps.

    Explicit values are kept; None -> gsplat's 30k-step defaults (500 / 15000 / 3000 / 100)
    scaled by ``iterations / 30000`` (simple_trainer's ``steps_scaler``) with floors for short
    (CPU) runs, measured on the demo scene (``benchmarks/results/train.md``):

    * ``refine_every`` >= 100: the mean 2D gradient that decides growth is averaged over the
      views seen since the last refinement; over 25 steps (the old linear scaling for 2000
      steps) most Gaussians are seen once or twice, and the demo grew 14k -> 91k Gaussians in
      100 steps by splitting almost everything every 25 steps.
    * ``refine_start`` >= ``refine_every`` (statistics of at least one full interval).
    * ``refine_stop`` = 75 % of the run below 5000 steps (gsplat: 50 %; a short run needs its
      few refinements spread out).
    * ``reset_every`` >= 5 x ``refine_every``: gsplat prunes "too big" Gaussians only after the
      first reset interval, and an opacity reset every 200 steps would leave a short run no
      time to recover. (gsplat 1.5.3's reset test ``step % reset_every == 0 & step > 0`` is
      always False by operator precedence, so it never resets opacities at all.)
    """
    s = iterations / 30_000
    every = refine_every or max(100, round(100 * s))
    start = refine_start or max(every, round(500 * s))
    stop = refine_stop or (max(round(0.75 * iterations), 1) if iterations < 5000 else round(15_000 * s))
    reset = reset_every or max(5 * every, round(3000 * s))
    return start, stop, reset, every


def _rasterization():
    """The project's renderer (imported lazily; tests may monkeypatch this function)."""
    from ..render import rasterization

    return rasterization


class Trainer:
    """One training run; see :func:`main`. Holds parameters, optimisers and strategy."""

    def __init__(self, scene: SceneData, opts: TrainOptions, device: torch.device, out_dir: Path):
        self.scene, self.opts, self.device, self.out_dir = scene, opts, device, out_dir
        self.ckpt_dir = out_dir / "checkpoints"
        on_cpu = device.type != "cuda"
        self.iterations = int(opts.iterations or (opts.cpu_iterations if on_cpu else 30_000))
        self.max_gaussians = opts.max_gaussians or (opts.cpu_max_gaussians if on_cpu else None)
        self.refine_start, self.refine_stop, self.reset_every, self.refine_every = refine_schedule(
            self.iterations, opts.refine_start, opts.refine_stop, opts.reset_every, opts.refine_every)
        self.eval_steps = sorted({int(x) for x in (opts.eval_steps if opts.eval_steps is not None
                                                   else [self.iterations // 2]) if 0 < int(x) < self.iterations})
        self.render_fn = _rasterization()
        self.tier = 0
        self.history: Dict[str, list] = {"step": [], "loss": [], "psnr": [], "num_gaussians": []}
        self.evals: List[Dict[str, Any]] = []
        self.resumed_from: List[int] = []
        self.train_seconds = 0.0
        self.nonfinite_grads = 0
        self.step = 0
        self.np_rng = np.random.default_rng(opts.seed)
        self.order: List[int] = []
        self.lpips_fn, self.lpips_note = try_load_lpips(device)
        self.sky_centre, self.sky_min_radius, self.sky = None, None, None
        if opts.sky_points:
            pts, col, c, radius = sky_sphere(scene, opts.sky_points, opts.sky_radius)
            self.sky = (pts, col)
            self.sky_centre, self.sky_min_radius = torch.from_numpy(c), 0.8 * radius

    # ---- model / optimisers -----------------------------------------------------------
    def _make_strategy(self):
        o = self.opts
        if o.strategy == "mcmc":
            if self.device.type != "cuda":
                raise InputError("train option strategy='mcmc' needs CUDA (gsplat's MCMC relocation is a "
                                 "CUDA kernel); use strategy='default' on CPU")
            from gsplat.strategy import MCMCStrategy

            return MCMCStrategy(cap_max=o.mcmc_cap_max, refine_start_iter=self.refine_start,
                                refine_stop_iter=self.refine_stop, refine_every=self.refine_every)
        return _sky_aware_default_strategy(self.sky_centre, self.sky_min_radius, cap_fn=self._cap,
                               prune_opa=o.prune_opa, grow_grad2d=o.grow_grad2d,
                               refine_start_iter=self.refine_start, refine_stop_iter=self.refine_stop,
                               reset_every=self.reset_every, refine_every=self.refine_every,
                               absgrad=o.absgrad)

    def _build(self, tensors: Dict[str, torch.Tensor]) -> None:
        o = self.opts
        self.params = torch.nn.ParameterDict(
            {k: torch.nn.Parameter(v.to(self.device).contiguous()) for k, v in tensors.items()})
        lrs = {"means": o.means_lr * self.scene.scene_scale, "scales": o.scales_lr, "quats": o.quats_lr,
               "opacities": o.opacities_lr, "sh0": o.sh0_lr, "shN": o.shN_lr}
        self.optimizers = {k: torch.optim.Adam([{"params": self.params[k], "lr": lrs[k], "name": k}], eps=1e-15)
                           for k in self.params}
        gamma = (o.means_lr_final / o.means_lr) ** (1.0 / self.iterations)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizers["means"], gamma=gamma)
        self.strategy = self._make_strategy()
        self.strategy.check_sanity(self.params, self.optimizers)
        if o.strategy == "mcmc":
            self.strategy_state = self.strategy.initialize_state()
        else:
            self.strategy_state = self.strategy.initialize_state(scene_scale=self.scene.scene_scale)

    def init_fresh(self) -> None:
        o = self.opts
        mcmc = o.strategy == "mcmc"  # simple_trainer uses opacity 0.5, scale x0.1 for MCMC
        pts, cols = self.scene.points, self.scene.colors
        if self.sky is not None:
            pts, cols = np.concatenate([pts, self.sky[0]]), np.concatenate([cols, self.sky[1]])
        t = init_gaussians(pts, cols, o.sh_degree,
                           init_opacity=0.5 if mcmc else o.init_opacity,
                           init_scale=o.init_scale * (0.1 if mcmc else 1.0), seed=o.seed)
        self._build(t)
        torch.manual_seed(o.seed)
        random.seed(o.seed)
        self.np_rng = np.random.default_rng(o.seed)
        self.step = 0
        self._apply_tier()
        _LOG.info("initialised %d Gaussians from SfM points (+%d sky sphere points)", len(self.params["means"]),
                  0 if self.sky is None else len(self.sky[0]))

    def _signature(self) -> Dict[str, Any]:
        return {"train": [v.name for v in self.scene.train], "test": [v.name for v in self.scene.test],
                "sh_degree": self.opts.sh_degree, "strategy": self.opts.strategy, "sky_points": self.opts.sky_points,
                "sizes": [[v.width, v.height] for v in self.scene.train[:1]]}

    # ---- checkpoints ------------------------------------------------------------------
    def save(self) -> Path:
        st = {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in self.strategy_state.items()}
        payload = {
            "step": self.step,
            "iterations": self.iterations,
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "scheduler": self.scheduler.state_dict(),
            "strategy_state": st,
            "tier": self.tier,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
                    "numpy": self.np_rng.bit_generator.state, "python": random.getstate(),
                    "order": list(self.order)},
            "history": self.history, "evals": self.evals, "resumed_from": self.resumed_from,
            "train_seconds": self.train_seconds, "nonfinite_grads": self.nonfinite_grads,
            "signature": self._signature(),
            "options": asdict(self.opts),
        }
        return save_checkpoint(self.ckpt_dir, self.step, payload, keep=self.opts.keep_checkpoints)

    def load(self, ck: Dict[str, Any]) -> None:
        if ck.get("signature") != self._signature():
            raise InputError(f"{ck.get('_path')}: checkpoint belongs to another scene, image set, resolution "
                             f"or SH degree/strategy; delete {self.ckpt_dir} to start over")
        self._build(ck["params"])
        for k, opt in self.optimizers.items():
            opt.load_state_dict(ck["optimizers"][k])
        self.scheduler.load_state_dict(ck["scheduler"])
        for k, v in ck["strategy_state"].items():
            self.strategy_state[k] = v.to(self.device) if torch.is_tensor(v) else v
        self.step = int(ck["step"])
        self.tier = int(ck.get("tier", 0))
        rng = ck["rng"]
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.np_rng = np.random.default_rng()
        self.np_rng.bit_generator.state = rng["numpy"]
        random.setstate(rng["python"])
        self.order = list(rng["order"])
        self.history = ck["history"]
        self.evals = ck["evals"]
        self.resumed_from = list(ck.get("resumed_from", []))
        self.train_seconds = float(ck.get("train_seconds", 0.0))
        self.nonfinite_grads = int(ck.get("nonfinite_grads", 0))
        self._apply_tier()

    # ---- culling (Gaussian cap, OOM tiers) ---------------------------------------------
    def _cap(self) -> Optional[int]:
        caps = [c for c in (self.max_gaussians,
                            int(self.opts.oom_tiers[self.tier - 1][1]) if self.tier else None) if c]
        return min(caps) if caps else None

    @torch.no_grad()
    def _apply_tier(self) -> None:
        """Set the tier's pruning threshold and cull now (tier 0: only the Gaussian cap)."""
        if self.tier and self.opts.strategy == "default":
            self.strategy.prune_opa = max(self.opts.prune_opa, float(self.opts.oom_tiers[self.tier - 1][0]))
        if self.tier and self.opts.strategy == "mcmc":  # MCMC grows to cap_max: lower the budget
            self.strategy.cap_max = min(self.strategy.cap_max, int(self.opts.oom_tiers[self.tier - 1][1]))
        self._cull(self.strategy.prune_opa if self.tier and self.opts.strategy == "default" else None)

    @torch.no_grad()
    def _cull(self, min_opacity: Optional[float] = None) -> int:
        from gsplat.strategy.ops import remove

        opa = torch.sigmoid(self.params["opacities"].flatten())
        mask = torch.zeros_like(opa, dtype=torch.bool)
        if min_opacity is not None:
            mask |= opa < min_opacity
        if not bool((~mask).any()):  # never cull everything: keep the most opaque ones
            mask[torch.topk(opa, min(len(opa), 1000)).indices] = False
        cap = self._cap()
        if cap is not None and int((~mask).sum()) > cap:
            keep_idx = torch.topk(torch.where(mask, torch.full_like(opa, -1.0), opa), cap).indices
            mask = torch.ones_like(mask)
            mask[keep_idx] = False
        n = int(mask.sum())
        if n:
            # MCMC's state holds no per-Gaussian tensors (only a binomial table): pass none
            state = self.strategy_state if self.opts.strategy == "default" else {}
            remove(params=self.params, optimizers=self.optimizers, state=state, mask=mask)
        return n

    @torch.no_grad()
    def _zero_nonfinite_grads(self) -> int:
        """Zero the gradients of Gaussians with a non-finite gradient in any parameter; returns
        how many. Adam turns one NaN gradient into NaN means/quats/scales for good (seen on
        the demo on CPU: 2 of 48k Gaussians by step 800, which then made the PLY unwritable).
        Summed over steps (Gaussian-steps) in ``metrics.json`` as ``nonfinite_grad_gaussians``."""
        bad = None
        for v in self.params.values():
            if v.grad is not None:
                b = ~torch.isfinite(v.grad.reshape(len(v), -1)).all(1)
                bad = b if bad is None else bad | b
        n = int(bad.sum()) if bad is not None else 0
        if n:
            for v in self.params.values():
                if v.grad is not None:
                    v.grad[bad] = 0.0
            self.nonfinite_grads += n
            _LOG.debug("step %d: zeroed non-finite gradients of %d Gaussians", self.step, n)
        return n

    # ---- rendering --------------------------------------------------------------------
    def render(self, view: View, sh_degree: int, bg: Optional[torch.Tensor]):
        p = self.params
        colors = torch.cat([p["sh0"], p["shN"]], 1)
        K = torch.from_numpy(view.K).to(self.device)
        vm = torch.from_numpy(view.viewmat).to(self.device)
        return self.render_fn(
            p["means"], p["quats"], torch.exp(p["scales"]), torch.sigmoid(p["opacities"]), colors,
            vm[None], K[None], view.width, view.height, sh_degree=sh_degree,
            backgrounds=None if bg is None else bg[None], packed=False, absgrad=self.opts.absgrad,
            rasterize_mode="antialiased" if self.opts.antialiased else "classic")

    def _gt(self, view: View) -> torch.Tensor:
        return torch.from_numpy(view.image).to(self.device).float().div_(255.0)

    def _mask(self, view: View) -> Optional[torch.Tensor]:
        """[1, H, W, 1] bool scene mask of a view (False on the operator), or None."""
        if view.mask is None:
            return None
        return torch.from_numpy(view.mask).to(self.device)[None, :, :, None]

    def _next_view(self) -> View:
        if not self.order:
            self.order = [int(i) for i in self.np_rng.permutation(len(self.scene.train))]
        return self.scene.train[self.order.pop()]

    def _sh_degree_now(self) -> int:
        return min(self.step // self.opts.sh_degree_interval, self.opts.sh_degree)

    def trained_sh_degree(self) -> int:
        """SH degree in use at the last step of the run: ``min(sh_degree, (iterations - 1) //
        sh_degree_interval)``; higher coefficients never receive a gradient and stay zero."""
        return min((self.iterations - 1) // self.opts.sh_degree_interval, self.opts.sh_degree)

    # ---- evaluation -------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, images: bool = False, views: Optional[List[View]] = None, log_name: str = "held-out") -> Dict[str, Any]:
        """PSNR/SSIM (and LPIPS when available) over ``views`` (default: the held-out views),
        pixels of the operator mask left out; ``images`` writes ``renders.png``."""
        views = self.scene.test if views is None else views
        rec: Dict[str, Any] = {"step": self.step, "num_gaussians": int(len(self.params["means"])),
                               "n_views": len(views)}
        if not views:
            return rec
        ps, ss, ls, pairs = [], [], [], []
        pick = set(np.linspace(0, len(views) - 1, min(self.opts.n_eval_images, len(views))).round().astype(int))
        bg = None if self.opts.background != "white" else torch.ones(3, device=self.device)
        for i, v in enumerate(views):
            img, _, _ = self.render(v, self.trained_sh_degree() if self.step >= self.iterations
                                    else self._sh_degree_now(), bg)
            pred = img[..., :3].clamp(0, 1)
            gt = self._gt(v)[None]
            m = self._mask(v)
            if m is not None:  # the operator is not scene: no error there (PSNR over scene pixels)
                gt = torch.where(m, gt, pred)
            ps.append(psnr(pred, gt, m))
            ss.append(float(ssim(pred, gt)))
            if self.lpips_fn is not None:
                ls.append(self.lpips_fn(pred, gt))
            if images and i in pick:
                pairs.append((f"{v.name} ({ps[-1]:.2f} dB)", pred[0].cpu().numpy(), self._gt(v).cpu().numpy()))
        rec.update(psnr=float(np.mean(ps)), ssim=float(np.mean(ss)),
                   per_view={v.name: {"psnr": p, "ssim": s} for v, p, s in zip(views, ps, ss)})
        if ls:
            rec["lpips"] = float(np.mean(ls))
        if pairs:
            save_comparison_png(self.out_dir / "renders.png", pairs)
        _LOG.info("step %d: %s PSNR %.2f dB, SSIM %.4f over %d views", self.step, log_name, rec["psnr"],
                  rec["ssim"], len(views))
        return rec

    # ---- training loop ----------------------------------------------------------------
    def train_until_done(self) -> None:
        from tqdm import tqdm

        o = self.opts
        bar = tqdm(total=self.iterations, initial=self.step, disable=not o.progress, dynamic_ncols=True,
                   desc="train", mininterval=1.0)
        t_last = time.perf_counter()
        try:
            while self.step < self.iterations:
                view = self._next_view()
                gt = self._gt(view)[None]
                if o.background == "random":
                    bg = torch.rand(3, device=self.device)
                elif o.background == "white":
                    bg = torch.ones(3, device=self.device)
                else:
                    bg = None
                img, _, info = self.render(view, self._sh_degree_now(), bg)
                pred = img[..., :3]
                m = self._mask(view)
                if m is not None:  # masked loss: no gradient from the operator's pixels
                    gt = torch.where(m, gt, pred.detach())
                self.strategy.step_pre_backward(self.params, self.optimizers, self.strategy_state, self.step, info)
                l1 = torch.abs(pred - gt).mean()
                loss = (1 - o.ssim_lambda) * l1 + o.ssim_lambda * (1 - ssim(pred, gt))
                if o.strategy == "mcmc":  # simple_trainer's MCMC regularisers (opacity, scale 0.01)
                    loss = loss + 0.01 * torch.sigmoid(self.params["opacities"]).mean() \
                        + 0.01 * torch.exp(self.params["scales"]).mean()
                loss.backward()
                self._zero_nonfinite_grads()
                for opt in self.optimizers.values():
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                self.scheduler.step()
                if o.strategy == "mcmc":
                    self.strategy.step_post_backward(self.params, self.optimizers, self.strategy_state,
                                                     self.step, info, lr=self.scheduler.get_last_lr()[0])
                else:
                    self.strategy.step_post_backward(self.params, self.optimizers, self.strategy_state,
                                                     self.step, info, packed=False)
                    if self._cap() is not None and len(self.params["means"]) > self._cap():
                        self._cull()
                self.step += 1
                now = time.perf_counter()
                self.train_seconds += now - t_last
                t_last = now
                if self.step % o.log_every == 0 or self.step == self.iterations:
                    p = psnr(pred.detach(), gt, m)
                    n = int(len(self.params["means"]))
                    self.history["step"].append(self.step)
                    self.history["loss"].append(float(loss.detach()))
                    self.history["psnr"].append(p)
                    self.history["num_gaussians"].append(n)
                    bar.set_postfix(loss=f"{self.history['loss'][-1]:.4f}", psnr=f"{p:.2f}", n=n, refresh=False)
                bar.update(1)
                if self.step in self.eval_steps and not any(e["step"] == self.step for e in self.evals):
                    self.evals.append(self.evaluate())
                    t_last = time.perf_counter()
                if self.step % o.checkpoint_every == 0 or self.step == self.iterations:
                    self.save()
                    t_last = time.perf_counter()
        finally:
            bar.close()


def _oom_types():
    types = [getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)]
    return tuple({t for t in types if t is not None})


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("train option device='cuda' but no CUDA device is available")
    return torch.device(name)


def main(aligned_dir: str | os.PathLike, images_dir: str | os.PathLike,
         views_path: Optional[str | os.PathLike], out_dir: str | os.PathLike,
         ply_path: str | os.PathLike, options: Dict[str, Any] | TrainOptions | None = None) -> Dict[str, Any]:
    """Train a splat and write ``ply_path`` plus ``out_dir``'s metrics, figures and checkpoints.

    Args:
        aligned_dir: COLMAP model (ENU metres; PINHOLE, SIMPLE_PINHOLE, or SIMPLE_RADIAL /
            RADIAL / OPENCV which are undistorted on load).
        images_dir: folder the model's image names are relative to.
        views_path: views.json (frames for the held-out split) or None.
        out_dir: working folder (``work/{scene}/splat``): checkpoints/, metrics.json,
            renders.png, curve.png, splat.ply.
        ply_path: final splat (``results/{scene}.ply``), Inria layout, written atomically.
        options: :class:`TrainOptions`, a dict of its fields, or None for defaults.

    Returns:
        The metrics dict also written to ``out_dir/metrics.json``: ``final`` (held-out
        ``psnr`` dB, ``ssim``, optional ``lpips``), ``evals`` (per eval step), ``iterations``,
        ``num_gaussians``, ``train_seconds``, ``sec_per_iter``, ``resumed_from`` (steps
        resumed at), ``device``, ``resolution``, ``test_images``, ``lpips_note`` ...

    Raises:
        InputError: bad options, unreadable model/images, a checkpoint of another run.
        SplatForgeError: CUDA out of memory even with the last culling tier.
    """
    opts = options if isinstance(options, TrainOptions) else TrainOptions.from_dict(options)
    opts.validate()
    device = _resolve_device(opts.device)
    out_dir, ply_path = Path(out_dir), Path(ply_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    max_side = opts.max_side if device.type == "cuda" else (opts.max_side or opts.cpu_max_side)
    t0 = time.perf_counter()
    scene = load_scene(aligned_dir, images_dir, views_path, max_side=max_side, eval_every_n=opts.eval_every_n,
                       eval_offset=opts.eval_offset)
    if not scene.train:
        raise InputError(f"{aligned_dir}: no training views left after holding out every "
                         f"{opts.eval_every_n}th frame")
    tr = Trainer(scene, opts, device, out_dir)

    ck = load_latest_checkpoint(tr.ckpt_dir) if opts.resume else None
    if ck is not None:
        tr.load(ck)
        if tr.step < tr.iterations:
            tr.resumed_from.append(tr.step)
        _LOG.info("resumed from checkpoint %s at step %d of %d", ck["_path"], tr.step, tr.iterations)
    else:
        tr.init_fresh()
    del ck

    oom = _oom_types()
    while True:
        try:
            tr.train_until_done()
            final = tr.evaluate(images=True)
            break
        except oom as e:
            if tr.tier >= len(opts.oom_tiers):
                raise SplatForgeError(
                    f"out of GPU memory at step {tr.step} with {len(tr.params['means'])} Gaussians even with the "
                    f"most aggressive culling tier (opacity >= {opts.oom_tiers[-1][0]}, at most "
                    f"{int(opts.oom_tiers[-1][1])} Gaussians); this scene needs a bigger GPU: farm the training "
                    f"job out to a machine with more GPU memory (resolution is never lowered automatically)") from e
            tier = tr.tier + 1
            _LOG.warning("out of memory at step %d (%s); retrying from the last checkpoint with culling tier "
                         "%d/%d: opacity >= %g, at most %d Gaussians", tr.step, str(e).splitlines()[0][:200],
                         tier, len(opts.oom_tiers), opts.oom_tiers[tier - 1][0], int(opts.oom_tiers[tier - 1][1]))
            if device.type == "cuda":
                torch.cuda.empty_cache()
            ck = load_latest_checkpoint(tr.ckpt_dir)
            if ck is not None:
                tr.load(ck)
            else:
                tr.init_fresh()
            del ck
            tr.tier = max(tr.tier, tier)
            tr._apply_tier()

    # how well the splat fits the views it was trained on (a pose or data problem shows here first)
    final_train = tr.evaluate(views=scene.train, log_name="training-view")
    p = tr.params
    sh_degree = tr.trained_sh_degree()
    write_splat_ply(ply_path, p["means"], p["scales"], p["quats"], p["opacities"], p["sh0"],
                    p["shN"][:, : (sh_degree + 1) ** 2 - 1])
    local_ply = out_dir / "splat.ply"
    if local_ply.resolve() != ply_path.resolve():
        with atomic_path(local_ply) as tmp:
            try:
                os.link(ply_path, tmp)
            except OSError:
                import shutil

                shutil.copyfile(ply_path, tmp)
    evals = [e for e in tr.evals if e["step"] != final["step"]] + [final]
    save_curve_png(out_dir / "curve.png", tr.history["step"], tr.history["loss"], tr.history["psnr"],
                   [e["step"] for e in evals if "psnr" in e], [e["psnr"] for e in evals if "psnr" in e])
    v0 = scene.train[0]
    metrics = {
        "schema_version": 1,
        "device": str(device),
        "iterations": tr.iterations,
        "final_step": tr.step,
        "resumed_from": tr.resumed_from,
        "oom_tier": tr.tier,
        "num_gaussians": int(len(p["means"])),
        "sh_degree": sh_degree,
        "sh_degree_configured": opts.sh_degree,
        "strategy": opts.strategy,
        "resolution": {"max_side": max_side, "first_train_view": [v0.width, v0.height]},
        "n_train_views": len(scene.train),
        "n_test_views": len(scene.test),
        "test_frames": scene.test_frames,
        "test_images": [v.name for v in scene.test],
        "scene_scale_m": scene.scene_scale,
        "final": {k: final[k] for k in ("psnr", "ssim", "lpips") if k in final},
        "final_train_views": {k: final_train[k] for k in ("psnr", "ssim") if k in final_train},
        "evals": [{k: e[k] for k in ("step", "psnr", "ssim", "lpips", "num_gaussians", "n_views") if k in e}
                  for e in evals],
        "final_per_view": final.get("per_view", {}),
        "lpips_note": tr.lpips_note,
        "eval_note": (f"held-out: every {opts.eval_every_n}th frame from "
                      + ("an interior frame, never the first or last" if opts.eval_offset is None
                         else f"frame index {opts.eval_offset}")
                      + f" (frames {', '.join(scene.test_frames)}; panoramas held out whole)")
        if scene.test else "no held-out views (too few frames or eval_every_n=0)",
        "train_seconds": tr.train_seconds,
        "nonfinite_grad_gaussians": tr.nonfinite_grads,
        "sec_per_iter": tr.train_seconds / max(1, tr.step),
        "wall_seconds_this_run": time.perf_counter() - t0,
        "ply": str(ply_path),
        "options": asdict(opts),
    }
    write_json(out_dir / "metrics.json", metrics)
    if "psnr" in final:
        _LOG.info("done: %d steps, %d Gaussians, held-out PSNR %.2f dB SSIM %.4f -> %s", tr.step,
                  metrics["num_gaussians"], final["psnr"], final["ssim"], ply_path)
    else:
        _LOG.info("done: %d steps, %d Gaussians (no held-out views) -> %s", tr.step, metrics["num_gaussians"],
                  ply_path)
    return metrics


def cli(argv: Optional[List[str]] = None) -> int:
    """``splatforge train``: parse ``argv`` and run :func:`main`; returns the exit code."""
    ap = argparse.ArgumentParser(prog="splatforge train", description=__doc__.split("\n")[0])
    ap.add_argument("--aligned", required=True, help="geo-aligned COLMAP model folder (work/{scene}/aligned)")
    ap.add_argument("--images", required=True, help="images folder (work/{scene}/images)")
    ap.add_argument("--views", default=None, help="views.json (frames for the held-out split)")
    ap.add_argument("--out", required=True, help="working folder (work/{scene}/splat)")
    ap.add_argument("--ply", required=True, help="output splat PLY (results/{scene}.ply)")
    ap.add_argument("--options", default=None, help="JSON file with train options (config section)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override one option, value parsed as JSON (e.g. --set iterations=500)")
    args = ap.parse_args(argv)
    import json

    opts: Dict[str, Any] = dict(read_json(args.options)) if args.options else {}
    for item in args.set:
        if "=" not in item:
            raise InputError(f"--set {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            opts[k] = json.loads(v)
        except json.JSONDecodeError:
            opts[k] = v
    main(args.aligned, args.images, args.views, args.out, args.ply, opts)
    return 0


if __name__ == "__main__":  # pragma: no cover - ``python -m splatforge_core.train.trainer``
    import sys

    from ..cli import main as _cli_main

    setup_logging()
    sys.exit(_cli_main(["train", *sys.argv[1:]]))
