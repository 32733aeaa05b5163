"""Training options (config section ``train``): :class:`TrainOptions` and its validation.

Kept free of torch and gsplat imports so that :func:`splatforge_core.config.validate_config`
can build the class from this source without importing them (see
:func:`splatforge_core.config.load_class_from_source`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..errors import InputError
from ..options import check_types, range_problem

__all__ = ["TrainOptions", "STRATEGY_NAMES"]

#: Training strategies (``strategy`` option); each has an entry in :data:`.strategy.STRATEGIES`.
STRATEGY_NAMES = ("default", "mcmc")
#: Model families (``model`` option): vanilla 3D Gaussians or Scaffold-GS.
MODEL_NAMES = ("3dgs", "scaffold")


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
        (:meth:`.trainer.Trainer.trained_sh_degree`): 1500 CPU steps train degrees 0 and 1 only, and
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
        None -> :func:`.strategy.refine_schedule`: gsplat defaults 500 / 15000 / 3000 / 100 scaled by
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
    eval_frames: hold out exactly these frames (names, as in views.json) instead of every
        ``eval_every_n``-th; frames not in the model are ignored. The clustered workflow gives
        every cluster's finetune the coarse pass's held-out frames, so that no cluster trains on
        a frame the scene holds out (issue #12). None (default): ``eval_every_n``/``eval_offset``.
    schedule_start, schedule_stop: the part of the run's schedule this run trains, as fractions
        of its steps (0.0 and 1.0 = the whole run). Learning-rate decay, SH-degree growth and the
        densification schedule are those of the whole run: a run with ``schedule_stop`` 0.75
        is the first 75 % of a run (a coarse pass), one with ``schedule_start`` 0.75 is its last
        25 % continued from the first run's state (``init_from`` of :func:`.trainer.main`; the
        clustered workflow's per-cluster finetune). ``schedule_start`` > 0 needs that state.
    eval_steps: steps (completed) at which held-out views are evaluated, besides the end;
        None -> [iterations // 2].
    n_eval_images: held-out views shown in renders.png (3).
    checkpoint_every: save a checkpoint every this many steps (500) and at the end;
        keep_checkpoints: how many to keep (2).
    resume: continue from the newest checkpoint in ``out_dir/checkpoints`` (True).
    seed: RNG seed (42). device: "auto" | "cpu" | "cuda".
    num_threads: CPU threads for torch (``torch.set_num_threads``); None (default) leaves
        torch's own default (the machine's cores). The workflow passes the rule's ``threads``.
    background: "black", "white" or "random" (random colour behind the render each step,
        black at evaluation).
    model: "3dgs" (default; this trainer) or "scaffold" (Scaffold-GS anchors + MLPs,
        :mod:`splatforge_core.scaffold.trainer`; uses iterations/cpu_iterations, max_side/cpu_max_side,
        the eval, checkpoint, seed, device, thread, background and progress options; the
        3DGS-specific ones are ignored). The workflow still gets an Inria PLY (baked).
    progress: show a tqdm progress bar (loss, PSNR, Gaussian count). log_every: history
        sampling interval in steps (10).
    """

    iterations: Optional[int] = field(default=None, metadata={"min": 1})
    cpu_iterations: int = field(default=1500, metadata={"min": 1})
    max_side: Optional[int] = field(default=None, metadata={"min": 16})
    cpu_max_side: int = field(default=320, metadata={"min": 16})
    sh_degree: int = field(default=3, metadata={"min": 0, "max": 3})
    sh_degree_interval: int = field(default=1000, metadata={"min": 1})
    ssim_lambda: float = field(default=0.2, metadata={"min": 0, "max": 1})
    means_lr: float = field(default=1.6e-4, metadata={"gt": 0})
    means_lr_final: float = field(default=1.6e-6, metadata={"gt": 0})
    scales_lr: float = field(default=5e-3, metadata={"gt": 0})
    quats_lr: float = field(default=1e-3, metadata={"gt": 0})
    opacities_lr: float = field(default=5e-2, metadata={"gt": 0})
    sh0_lr: float = field(default=2.5e-3, metadata={"gt": 0})
    shN_lr: float = field(default=2.5e-3 / 20, metadata={"gt": 0})
    init_opacity: float = field(default=0.1, metadata={"gt": 0, "lt": 1})
    init_scale: float = field(default=1.0, metadata={"gt": 0})
    sky_points: int = field(default=10_000, metadata={"min": 0})
    sky_radius: float = field(default=1.5, metadata={"gt": 1})
    strategy: str = "default"
    refine_start: Optional[int] = field(default=None, metadata={"min": 1})
    refine_stop: Optional[int] = field(default=None, metadata={"min": 1})
    reset_every: Optional[int] = field(default=None, metadata={"min": 1})
    refine_every: Optional[int] = field(default=None, metadata={"min": 1})
    prune_opa: float = field(default=0.005, metadata={"gt": 0, "lt": 1})
    grow_grad2d: float = field(default=0.0002, metadata={"gt": 0})
    absgrad: bool = False
    antialiased: bool = False
    mcmc_cap_max: int = field(default=1_000_000, metadata={"min": 1})
    max_gaussians: Optional[int] = field(default=None, metadata={"min": 1})
    cpu_max_gaussians: int = field(default=100_000, metadata={"min": 1})
    oom_tiers: List[List[float]] = field(default_factory=lambda: [[0.01, 3_000_000], [0.02, 1_500_000],
                                                                  [0.05, 750_000]])
    eval_every_n: int = field(default=8, metadata={"min": 0})
    eval_offset: Optional[int] = field(default=None, metadata={"min": 0})
    eval_frames: Optional[List[str]] = None
    schedule_start: float = field(default=0.0, metadata={"min": 0, "lt": 1})
    schedule_stop: float = field(default=1.0, metadata={"gt": 0, "max": 1})
    eval_steps: Optional[List[int]] = None
    n_eval_images: int = field(default=3, metadata={"min": 0})
    checkpoint_every: int = field(default=500, metadata={"min": 1})
    keep_checkpoints: int = field(default=2, metadata={"min": 1})
    resume: bool = True
    seed: int = field(default=42, metadata={"min": 0})
    device: str = "auto"
    num_threads: Optional[int] = field(default=None, metadata={"min": 1})
    background: str = "black"
    progress: bool = True
    log_every: int = field(default=10, metadata={"min": 1})
    model: str = "3dgs"

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "TrainOptions":
        """Build from a plain dict (config section); unknown keys raise InputError."""
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"train options: unknown key(s) {unknown}; known: {sorted(known)}")
        check_types(cls, d, "train")
        opts = cls(**d)
        opts.validate()
        return opts

    def validate(self) -> None:
        """Raise InputError naming the first bad option (ranges from the fields' metadata first,
        :func:`splatforge_core.options.range_problem`)."""
        problem = range_problem(type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        if problem:
            raise InputError(f"bad train options: {problem}")
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
        pos_int("num_threads", self.num_threads, allow_none=True)
        pos_int("sky_points", self.sky_points, allow_zero=True)
        if isinstance(self.sky_radius, bool) or not isinstance(self.sky_radius, (int, float)) or self.sky_radius <= 1:
            raise InputError(f"train option 'sky_radius' must be a number > 1, got {self.sky_radius!r}")
        for name in ("refine_start", "refine_stop", "reset_every", "refine_every"):
            pos_int(name, getattr(self, name), allow_none=True)
        if self.sh_degree not in (0, 1, 2, 3):
            raise InputError(f"train option 'sh_degree' must be 0..3, got {self.sh_degree!r}")
        if not 0 <= float(self.ssim_lambda) <= 1:
            raise InputError(f"train option 'ssim_lambda' must be in [0, 1], got {self.ssim_lambda!r}")
        if self.strategy not in STRATEGY_NAMES:
            raise InputError(f"train option 'strategy' must be one of {list(STRATEGY_NAMES)}, got {self.strategy!r}")
        if self.model not in MODEL_NAMES:
            raise InputError(f"train option 'model' must be one of {list(MODEL_NAMES)}, got {self.model!r}")
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
        if self.schedule_start >= self.schedule_stop:
            raise InputError(f"train options: schedule_start ({self.schedule_start}) must be below schedule_stop "
                             f"({self.schedule_stop})")
        if self.eval_frames is not None and (not isinstance(self.eval_frames, (list, tuple))
                                             or any(not isinstance(f, str) for f in self.eval_frames)):
            raise InputError(f"train option 'eval_frames' must be a list of frame names, got {self.eval_frames!r}")
        if self.eval_steps is not None and (not isinstance(self.eval_steps, (list, tuple))
                                            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                                                   for s in self.eval_steps)):
            raise InputError(f"train option 'eval_steps' must be a list of step numbers, got {self.eval_steps!r}")
        if not isinstance(self.oom_tiers, (list, tuple)) or any(
                not isinstance(t, (list, tuple)) or len(t) != 2 or not 0 < float(t[0]) < 1 or int(t[1]) < 1
                for t in self.oom_tiers):
            raise InputError(f"train option 'oom_tiers' must be a list of [opacity_threshold in (0,1), "
                             f"max_gaussians >= 1], got {self.oom_tiers!r}")

