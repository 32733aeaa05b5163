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
(hard link to / copy of ``ply_path``); and ``ply_path`` (Inria layout, see
:mod:`splatforge_core.splat`).

Modules: :mod:`.options` (:class:`TrainOptions`), :mod:`.init` (initial Gaussians, sky
sphere), :mod:`.strategy` (densification strategies), this module (the :class:`Trainer` loop,
out-of-memory tiers, :func:`main`, :func:`cli`), :mod:`.data`, :mod:`.metrics`, :mod:`.checkpoint`.

CPU defaults: images downscaled to ``cpu_max_side`` pixels on the longer side and
``cpu_iterations`` steps (sized to fit the whole demo workflow in 10 minutes on 2 cores; see
``benchmarks/results/train.md``). CUDA defaults: full resolution, 30000 steps.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from gsplat.strategy.ops import remove

from ..errors import InputError, SplatForgeError
from ..io import atomic_path, read_json, remove_stale_temporaries, write_json
from ..log import get_logger, setup_logging
from ..splat import write_splat_ply
from .checkpoint import input_fingerprint, load_latest_checkpoint, move_aside, save_checkpoint
from .data import SceneData, View, _masks_from_views, load_scene
from .init import init_gaussians, sky_sphere
from ..metrics import psnr, save_comparison_png, save_curve_png, ssim, try_load_lpips
from .options import TrainOptions
from .strategy import get_recipe, refine_schedule

_LOG = get_logger("train")

# TrainOptions, init_gaussians, sky_sphere and refine_schedule moved to .options, .init and
# .strategy; re-exported here for the existing ``from splatforge_core.train.trainer import ...``.
__all__ = ["TrainOptions", "Trainer", "main", "train_scene_data", "cli", "init_gaussians", "sky_sphere", "refine_schedule"]


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
        # the part of the schedule this run trains (a coarse pass or a finetune, TrainOptions)
        self.start_step = min(round(opts.schedule_start * self.iterations), self.iterations - 1)
        self.stop_step = max(round(opts.schedule_stop * self.iterations), self.start_step + 1)
        #: start of a run that continues another (:func:`main`'s ``init_from``, :func:`load_init`):
        #: ``{"params": tensors as :meth:`_build` takes them, "optimizers": per-parameter Adam
        #: moments or None, "strategy_state": per-Gaussian tensors or None, "step": int or None}``;
        #: None: start from the SfM points and the sky sphere
        self.init_splat: Optional[Dict[str, Any]] = None
        self.max_gaussians = opts.max_gaussians or (opts.cpu_max_gaussians if on_cpu else None)
        self.refine_start, self.refine_stop, self.reset_every, self.refine_every = refine_schedule(
            self.iterations, opts.refine_start, opts.refine_stop, opts.reset_every, opts.refine_every)
        self.eval_steps = sorted({int(x) for x in (opts.eval_steps if opts.eval_steps is not None
                                                   else [self.iterations // 2])
                                  if self.start_step < int(x) < self.stop_step})
        self.render_fn = _rasterization()
        self.tier = 0
        self.history: Dict[str, list] = {"step": [], "loss": [], "psnr": [], "num_gaussians": []}
        self.evals: List[Dict[str, Any]] = []
        self.resumed_from: List[int] = []
        #: :func:`.checkpoint.input_fingerprint` of the inputs (set by :func:`main`), stored in
        #: every checkpoint; a checkpoint with another one is never resumed.
        self.fingerprint: Dict[str, str] = {}
        self.train_seconds = 0.0
        self.nonfinite_grads = 0
        self.step = 0
        self.np_rng = np.random.default_rng(opts.seed)
        self.order: List[int] = []
        self.lpips_fn, self.lpips_note = try_load_lpips(device)
        self.recipe = get_recipe(opts.strategy)
        self.sky_centre, self.sky_min_radius, self.sky = None, None, None
        if opts.sky_points:
            pts, col, c, radius = sky_sphere(scene, opts.sky_points, opts.sky_radius)
            self.sky = (pts, col)
            self.sky_centre, self.sky_min_radius = torch.from_numpy(c), 0.8 * radius

    # ---- model / optimisers -----------------------------------------------------------
    def _make_strategy(self):
        """The gsplat strategy of ``opts.strategy`` (:mod:`.strategy`)."""
        schedule = (self.refine_start, self.refine_stop, self.reset_every, self.refine_every)
        return self.recipe.build(self.opts, self.device, schedule, self.sky_centre, self.sky_min_radius,
                                 cap_fn=self._cap)

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
        self.strategy_state = self.recipe.initialize_state(self.strategy, self.scene.scene_scale)

    def init_fresh(self) -> None:
        o = self.opts
        if self.init_splat is not None:
            self._init_from_splat()
            return
        init_opacity, init_scale = self.recipe.init_opacity_scale(o)
        pts, cols = self.scene.points, self.scene.colors
        if self.sky is not None:
            pts, cols = np.concatenate([pts, self.sky[0]]), np.concatenate([cols, self.sky[1]])
        t = init_gaussians(pts, cols, o.sh_degree,
                           init_opacity=init_opacity, init_scale=init_scale, seed=o.seed)
        self._build(t)
        torch.manual_seed(o.seed)
        random.seed(o.seed)
        self.np_rng = np.random.default_rng(o.seed)
        self.step = 0
        self._apply_tier()
        _LOG.info("initialised %d Gaussians from SfM points (+%d sky sphere points)", len(self.params["means"]),
                  0 if self.sky is None else len(self.sky[0]))

    def _init_from_splat(self) -> None:
        """Start at ``start_step`` from :attr:`init_splat`: its parameters (SH padded with zeros to
        the run's degree), its Adam moments and densification statistics when it has them (a
        checkpoint), and the means learning rate where the whole run has it at that step."""
        o = self.opts
        init = self.init_splat
        if init.get("step") is not None and init["step"] != self.start_step:
            raise InputError(f"{self.out_dir}: the run to continue stopped at step {init['step']}, but this run starts "
                             f"at step {self.start_step} of {self.iterations} (schedule_start {o.schedule_start}): "
                             f"both must use the same iterations and fraction")
        t = dict(init["params"])
        k = (o.sh_degree + 1) ** 2 - 1
        m = min(k, t["shN"].shape[1])
        shN = torch.zeros(len(t["means"]), k, 3)
        shN[:, :m] = t["shN"][:, :m]
        t["shN"] = shN
        self._build(t)
        for name, st in (init.get("optimizers") or {}).items():
            st = dict(st)
            for key in ("exp_avg", "exp_avg_sq"):
                z = torch.zeros_like(self.params[name])
                if name == "shN":
                    z[:, :min(k, st[key].shape[1])] = st[key][:, :k]
                else:
                    z.copy_(st[key])
                st[key] = z.to(self.device)
            sd = self.optimizers[name].state_dict()
            sd["state"] = {0: st}
            self.optimizers[name].load_state_dict(sd)
        for key, v in (init.get("strategy_state") or {}).items():
            if torch.is_tensor(v) and key in self.strategy_state:
                self.strategy_state[key] = v.to(self.device)
        torch.manual_seed(o.seed)
        random.seed(o.seed)
        self.np_rng = np.random.default_rng(o.seed)
        self.step = self.start_step
        for g in self.optimizers["means"].param_groups:
            g["lr"] = g["lr"] * self.scheduler.gamma ** self.start_step
        self._apply_tier()
        _LOG.info("initialised %d Gaussians from the initial splat%s; continuing its schedule at step %d of %d",
                  len(self.params["means"]), " (with its Adam moments)" if init.get("optimizers") else "",
                  self.start_step, self.iterations)

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
            "fingerprint": dict(self.fingerprint),
            "options": asdict(self.opts),
        }
        return save_checkpoint(self.ckpt_dir, self.step, payload, keep=self.opts.keep_checkpoints)

    def load(self, ck: Dict[str, Any]) -> None:
        """Continue from a checkpoint dict that :func:`.checkpoint.load_latest_checkpoint` returned
        for this run's fingerprint (schema checked there)."""
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
        min_opacity = None
        if self.tier:
            tier_opacity, tier_cap = self.opts.oom_tiers[self.tier - 1]
            min_opacity = self.recipe.apply_tier(self.strategy, self.opts, tier_opacity, tier_cap)
        self._cull(min_opacity)

    @torch.no_grad()
    def _cull(self, min_opacity: Optional[float] = None) -> int:
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
            remove(params=self.params, optimizers=self.optimizers,
                   state=self.recipe.per_gaussian_state(self.strategy_state), mask=mask)
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
        """SH degree in use at the last step of the run: ``min(sh_degree, (stop_step - 1) //
        sh_degree_interval)`` (``stop_step`` = ``iterations`` unless ``schedule_stop`` < 1);
        higher coefficients never receive a gradient and stay zero (or keep the initial splat's)."""
        return min((self.stop_step - 1) // self.opts.sh_degree_interval, self.opts.sh_degree)

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
            img, _, _ = self.render(v, self.trained_sh_degree() if self.step >= self.stop_step
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
        bar = tqdm(total=self.stop_step, initial=self.step, disable=not o.progress, dynamic_ncols=True,
                   desc="train", mininterval=1.0)
        t_last = time.perf_counter()
        try:
            while self.step < self.stop_step:
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
                loss = self.recipe.add_loss_terms(loss, self.params)
                loss.backward()
                self._zero_nonfinite_grads()
                for opt in self.optimizers.values():
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                self.scheduler.step()
                self.recipe.step_post_backward(self.strategy, self.params, self.optimizers, self.strategy_state,
                                               self.step, info, lr=self.scheduler.get_last_lr()[0])
                if self.recipe.culls_to_cap and self._cap() is not None and len(self.params["means"]) > self._cap():
                    self._cull()
                self.step += 1
                now = time.perf_counter()
                self.train_seconds += now - t_last
                t_last = now
                if self.step % o.log_every == 0 or self.step == self.stop_step:
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
                if self.step % o.checkpoint_every == 0 or self.step == self.stop_step:
                    self.save()
                    t_last = time.perf_counter()
        finally:
            bar.close()



TRAIN_EVAL_VIEWS = 36  # training views evaluated at the end (metrics.json ``final_train_views``)


def _oom_types():
    types = [getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)]
    return tuple({t for t in types if t is not None})


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("train option device='cuda' but no CUDA device is available")
    return torch.device(name)


def _resume_or_init(tr: Trainer, resume: bool) -> None:
    """Continue from the newest checkpoint in ``tr.ckpt_dir`` (when ``resume``) or start fresh.

    Only a checkpoint of the same inputs (``tr.fingerprint``) is resumed; others, and every
    checkpoint when ``resume`` is False, are moved aside (:func:`.checkpoint.move_aside`) so
    that a fresh run never mixes with an older run's files.

    Raises:
        InputError: a checkpoint file that is not one this project wrote (see
            :func:`.checkpoint.load_latest_checkpoint`).
    """
    ck = load_latest_checkpoint(tr.ckpt_dir, tr.fingerprint) if resume else None
    if not resume:
        move_aside(tr.ckpt_dir, "train option resume is false")
    if ck is not None:
        tr.load(ck)
        if tr.step < tr.stop_step:
            tr.resumed_from.append(tr.step)
        _LOG.info("resumed from checkpoint %s at step %d of %d", ck["_path"], tr.step, tr.iterations)
    else:
        tr.init_fresh()


def train_with_oom_tiers(tr: Trainer) -> Dict[str, Any]:
    """Train to the end and evaluate the held-out views (writing ``renders.png``); on a CUDA
    out-of-memory error, restart from the last checkpoint with the next culling tier of
    ``opts.oom_tiers`` (tighter opacity pruning and Gaussian cap).

    Returns:
        The final held-out evaluation (:meth:`Trainer.evaluate`).

    Raises:
        SplatForgeError: out of memory even with the last tier.
    """
    opts = tr.opts
    oom = _oom_types()
    while True:
        try:
            tr.train_until_done()
            return tr.evaluate(images=True)
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
            if tr.device.type == "cuda":
                torch.cuda.empty_cache()
            ck = load_latest_checkpoint(tr.ckpt_dir, tr.fingerprint)
            if ck is not None:
                tr.load(ck)
            else:
                tr.init_fresh()
            del ck
            tr.tier = max(tr.tier, tier)
            tr._apply_tier()


def _write_splat(tr: Trainer, ply_path: Path, out_dir: Path) -> int:
    """Write the splat (SH up to the degree actually trained) to ``ply_path`` and link or copy
    it to ``out_dir/splat.ply``; returns that SH degree."""
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
    return sh_degree


def _metrics(tr: Trainer, final: Dict[str, Any], final_train: Dict[str, Any], sh_degree: int,
             max_side: Optional[int], ply_path: Path, t0: float) -> Dict[str, Any]:
    """The ``metrics.json`` dict of a finished run (see :func:`main`); also draws ``curve.png``."""
    opts, scene, p = tr.opts, tr.scene, tr.params
    evals = [e for e in tr.evals if e["step"] != final["step"]] + [final]
    save_curve_png(tr.out_dir / "curve.png", tr.history["step"], tr.history["loss"], tr.history["psnr"],
                   [e["step"] for e in evals if "psnr" in e], [e["psnr"] for e in evals if "psnr" in e])
    v0 = scene.train[0]
    return {
        "schema_version": 1,
        "device": str(tr.device),
        "iterations": tr.iterations,
        "start_step": tr.start_step,
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
        "final_train_views": {k: final_train[k] for k in ("psnr", "ssim", "n_views") if k in final_train},
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


def _prepare_run(opts: TrainOptions, out_dir: str | os.PathLike, ply_path: str | os.PathLike):
    """Device, torch threads and output folder of a run; removes the temporaries a killed run left
    beside the outputs and the checkpoints (issue #18). Returns (device, out_dir, ply_path) as Paths.

    Raises:
        InputError: ``opts.device`` asks for CUDA where there is none (:func:`_resolve_device`).
    """
    device = _resolve_device(opts.device)
    if opts.num_threads is not None:
        torch.set_num_threads(opts.num_threads)
    out_dir, ply_path = Path(out_dir), Path(ply_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries([ply_path, *(out_dir / n for n in ("splat.ply", "metrics.json", "renders.png",
                                                                 "curve.png"))])
    remove_stale_temporaries([], patterns=[r"^\.ckpt_\d+\.[A-Za-z0-9_]+\.tmp\.pt$"], folders=[out_dir / "checkpoints"])
    return device, out_dir, ply_path


def main(aligned_dir: str | os.PathLike, images_dir: str | os.PathLike,
         views_path: Optional[str | os.PathLike], out_dir: str | os.PathLike,
         ply_path: str | os.PathLike, options: Dict[str, Any] | TrainOptions | None = None,
         init_from: Optional[str | os.PathLike] = None,
         state_path: Optional[str | os.PathLike] = None) -> Dict[str, Any]:
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
        init_from: a run to continue instead of starting from the SfM points and the sky
            sphere, at step ``schedule_start`` x iterations: another run's ``state_path`` file
            (parameters with their Adam moments and densification statistics) or a splat (Inria
            PLY, same ENU frame); see :func:`load_init`. This is how a cluster continues the
            scene's coarse pass (CityGaussian: Liu et al. 2024, "CityGaussian: Real-time
            High-quality Large-Scale Scene Rendering with Gaussians", sec. 3.2). All its
            Gaussians are kept (:func:`load_init` says why).
        state_path: where to write this run's final state (a checkpoint file, atomically) for
            a run that continues it; None: not written.

    Returns:
        The metrics dict also written to ``out_dir/metrics.json``: ``final`` (held-out
        ``psnr`` dB, ``ssim``, optional ``lpips``), ``evals`` (per eval step), ``iterations``,
        ``num_gaussians``, ``train_seconds``, ``sec_per_iter``, ``resumed_from`` (steps
        resumed at), ``device``, ``resolution``, ``test_images``, ``lpips_note`` ...

    Raises:
        InputError: bad options, unreadable model/images, a checkpoint file this project did not
            write, an unreadable ``init_from``, ``schedule_start`` > 0 without ``init_from``, or
            ``init_from``/a partial schedule with ``model`` scaffold.
        SplatForgeError: CUDA out of memory even with the last culling tier.
    """
    opts = options if isinstance(options, TrainOptions) else TrainOptions.from_dict(options)
    opts.validate()
    if opts.schedule_start > 0 and init_from is None:
        raise InputError(f"{out_dir}: train option schedule_start={opts.schedule_start} continues a run, but no "
                         f"run to continue (init_from) was given")
    if opts.model == "scaffold" and (init_from is not None or opts.schedule_stop < 1):
        raise InputError(f"{out_dir}: model 'scaffold' trains whole runs only (no init_from, schedule_start/stop); "
                         f"use model '3dgs' for clustered scenes with a coarse pass")
    if opts.model == "scaffold":  # Scaffold-GS: its own trainer, same inputs and outputs (+ out_dir/scaffold/)
        from ..scaffold.trainer import main as scaffold_main

        return scaffold_main(aligned_dir, images_dir, views_path, out_dir, ply_path, opts)
    device, out_dir, ply_path = _prepare_run(opts, out_dir, ply_path)
    t0 = time.perf_counter()
    # load
    max_side = opts.max_side if device.type == "cuda" else (opts.max_side or opts.cpu_max_side)
    scene = load_scene(aligned_dir, images_dir, views_path, max_side=max_side, eval_every_n=opts.eval_every_n,
                       eval_offset=opts.eval_offset, eval_frames=opts.eval_frames)
    if not scene.train:
        raise InputError(f"{aligned_dir}: no training views left after holding out every "
                         f"{opts.eval_every_n}th frame")
    t_fp = time.perf_counter()
    fingerprint = input_fingerprint(aligned_dir, images_dir, [v.name for v in scene.train + scene.test],
                                    _masks_from_views(views_path).values(), views_path, asdict(opts))
    _LOG.info("input fingerprint of %d images in %.2f s", len(scene.train) + len(scene.test),
              time.perf_counter() - t_fp)
    init = None
    if init_from is not None:
        init, fingerprint["init"] = load_init(init_from, scene)
    metrics = _train_loaded(scene, opts, device, out_dir, ply_path, fingerprint, max_side, t0, init)
    if state_path is not None:
        _write_state(out_dir, Path(state_path))
    return metrics


def _write_state(out_dir: Path, state_path: Path) -> None:
    """Copy the run's last checkpoint (written at its last step) to ``state_path`` atomically:
    what a run that continues this one starts from (:func:`load_init`)."""
    import shutil

    from .checkpoint import list_checkpoints

    cks = list_checkpoints(out_dir / "checkpoints")
    if not cks:
        raise SplatForgeError(f"{out_dir / 'checkpoints'}: no checkpoint to write {state_path} from")
    with atomic_path(state_path) as tmp:
        shutil.copyfile(cks[-1], tmp)


def load_init(path: str | os.PathLike, scene: SceneData) -> tuple[Dict[str, Any], str]:
    """The start of a continued run (:attr:`Trainer.init_splat`) and the sha256 of its file.

    ``path`` is either a checkpoint this project wrote (``.pt``, e.g. the coarse pass's
    ``state.pt``: parameters, Adam moments, densification statistics, checked by
    :func:`.checkpoint.check_schema`, loaded with ``weights_only``) or a splat (Inria PLY,
    :func:`splatforge_core.splat.read_splat_ply`: parameters only, fresh optimiser). Every
    Gaussian is kept, seen by this run's views or not: a cluster's splat is cropped to its cell
    afterwards, and a Gaussian of that cell that only the neighbouring cluster's views see would
    otherwise be lost to both (measured on lund, 2 clusters: keeping only the Gaussians each
    cluster's views saw left 8,536 of the coarse pass's 17,970 in the merged splat).

    Raises:
        InputError: unreadable (torn, truncated) or invalid file (named), or none of its
            Gaussians is seen by a training view.
    """
    import hashlib

    from ..splat import read_splat_ply
    from .checkpoint import _load_one, check_schema
    from .init import seen_by_views

    path = Path(path)
    optim = strategy = step = None
    if path.suffix == ".pt":
        try:
            ck = _load_one(path)
        except InputError:
            raise
        except Exception as e:  # torn, truncated, not a torch file at all
            raise InputError(f"{path}: cannot read this checkpoint ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__}"
                             f"); it is torn or not a checkpoint: delete it and rerun the run it continues (for a "
                             f"cluster: the scene's coarse pass, train_coarse)") from None
        check_schema(ck, path)
        params = {k: v.float() for k, v in ck["params"].items()}
        optim = {k: dict(sd["state"][0]) for k, sd in ck["optimizers"].items()
                 if isinstance(sd, dict) and 0 in (sd.get("state") or {})
                 and all(torch.is_tensor(sd["state"][0].get(kk)) for kk in ("exp_avg", "exp_avg_sq"))}
        n = len(params["means"])
        for k, st in optim.items():
            for kk in ("exp_avg", "exp_avg_sq"):
                if st[kk].shape != params[k].shape or not st[kk].is_floating_point():
                    raise InputError(f"{path}: not a valid Splat Forge checkpoint (Adam state {kk!r} of {k!r} is "
                                     f"{tuple(st[kk].shape)} {st[kk].dtype}, the parameter is "
                                     f"{tuple(params[k].shape)}); delete it and rerun the coarse pass")
        strategy = {k: v for k, v in ck["strategy_state"].items() if torch.is_tensor(v) and v.dim() >= 1
                    and v.shape[0] == n}
        step = int(ck["step"])
    else:
        s = read_splat_ply(path)
        params = {k: torch.from_numpy(np.ascontiguousarray(s[k], np.float32)) for k in ("means", "scales", "quats",
                                                                                         "opacities", "shN")}
        params["sh0"] = torch.from_numpy(np.ascontiguousarray(s["sh0"], np.float32))[:, None, :]
    seen = seen_by_views(params["means"].numpy(), scene.train)
    if not seen.any():
        raise InputError(f"{path}: none of its {len(seen)} Gaussians is in front of a training view of this "
                         f"scene; is it a splat of this scene, in the same ENU frame?")
    _LOG.info("initial splat %s: %d Gaussians, %d of them seen by the %d training views", path, len(seen),
              int(seen.sum()), len(scene.train))
    out = {"params": {k: v.contiguous() for k, v in params.items()}, "step": step, "optimizers": optim,
           "strategy_state": strategy}
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return out, h.hexdigest()


def _train_loaded(scene: SceneData, opts: TrainOptions, device: torch.device, out_dir: Path, ply_path: Path,
                  fingerprint: Dict[str, str], max_side: Optional[int], t0: float,
                  init: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Train on a loaded scene, evaluate, write the splat and ``metrics.json`` (shared by
    :func:`main` and :func:`train_scene_data`); ``init``: the run to continue (:func:`load_init`)."""
    tr = Trainer(scene, opts, device, out_dir)
    tr.fingerprint = fingerprint
    tr.init_splat = init
    _resume_or_init(tr, opts.resume)
    final = train_with_oom_tiers(tr)
    # how well the splat fits the views it was trained on (a pose or data problem shows here
    # first): up to TRAIN_EVAL_VIEWS training views, evenly spaced (all 144 of the demo cost 40 s)
    final_train = tr.evaluate(views=scene.train[:: max(1, -(-len(scene.train) // TRAIN_EVAL_VIEWS))],
                              log_name="training-view")
    # write, metrics
    sh_degree = _write_splat(tr, ply_path, out_dir)
    metrics = _metrics(tr, final, final_train, sh_degree, max_side, ply_path, t0)
    write_json(out_dir / "metrics.json", metrics)
    if "psnr" in final:
        _LOG.info("done: %d steps, %d Gaussians, held-out PSNR %.2f dB SSIM %.4f -> %s", tr.step,
                  metrics["num_gaussians"], final["psnr"], final["ssim"], ply_path)
    else:
        _LOG.info("done: %d steps, %d Gaussians (no held-out views) -> %s", tr.step, metrics["num_gaussians"],
                  ply_path)
    return metrics


def scene_fingerprint(scene: SceneData, options: Dict[str, Any]) -> Dict[str, str]:
    """:func:`.checkpoint.input_fingerprint`'s counterpart for an in-memory scene: sha256 hex
    digests of the views (names, frames, pixels, K, viewmat, masks), the initial points and
    colours, and the options (result-neutral ones left out), so that a checkpoint of other
    inputs is never resumed."""
    import hashlib
    import json

    from .checkpoint import RESULT_NEUTRAL_OPTIONS

    def digest(views: List[View]) -> str:
        h = hashlib.sha256()
        for v in views:
            h.update(f"{v.name}\0{v.frame}\0".encode())
            for a in (v.image, v.K, v.viewmat, v.mask):
                h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    pts = hashlib.sha256(np.ascontiguousarray(scene.points, np.float32).tobytes()
                         + np.ascontiguousarray(scene.colors, np.float32).tobytes()).hexdigest()
    opts = {k: v for k, v in options.items() if k not in RESULT_NEUTRAL_OPTIONS}
    return {"images": digest(scene.train) + digest(scene.test), "aligned": pts, "masks": "", "views": "",
            "options": hashlib.sha256(json.dumps(opts, sort_keys=True, default=str).encode()).hexdigest()}


def train_scene_data(scene: SceneData, out_dir: str | os.PathLike, ply_path: str | os.PathLike,
                     options: Dict[str, Any] | TrainOptions | None = None) -> Dict[str, Any]:
    """Train on an already loaded scene (e.g. :func:`splatforge_core.inria.load_views` plus SfM
    points) and write ``ply_path`` and ``out_dir``'s metrics, figures and checkpoints like
    :func:`main`.

    Args:
        scene: :class:`.data.SceneData` with ``train``/``test`` views at the training size
            (``max_side``/``cpu_max_side`` are not applied again) and ``points`` [P, 3] /
            ``colors`` [P, 3] float32 (colours in [0, 1]) for initialisation.
        out_dir, ply_path, options: as in :func:`main`.

    Returns:
        the metrics dict (see :func:`main`).

    Raises:
        InputError: bad options, no training views, no initial points, ``schedule_start`` > 0.
        SplatForgeError: CUDA out of memory even with the last culling tier.
    """
    opts = options if isinstance(options, TrainOptions) else TrainOptions.from_dict(options)
    opts.validate()
    if opts.model == "scaffold":  # Scaffold-GS: its own trainer on the same loaded scene
        from ..scaffold.trainer import train_scene_data as scaffold_train_scene_data

        return scaffold_train_scene_data(scene, out_dir, ply_path, opts)
    if not scene.train:
        raise InputError("train_scene_data: the scene has no training views")
    if len(scene.points) == 0 and not opts.sky_points:
        raise InputError("train_scene_data: the scene has no initial points (and sky_points is 0)")
    if opts.schedule_start > 0:
        raise InputError("train_scene_data: schedule_start > 0 continues a run from an initial splat; "
                         "use main(..., init_from=...)")
    device, out_dir, ply_path = _prepare_run(opts, out_dir, ply_path)
    t0 = time.perf_counter()
    return _train_loaded(scene, opts, device, out_dir, ply_path, scene_fingerprint(scene, asdict(opts)),
                         max(scene.train[0].width, scene.train[0].height), t0)


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
