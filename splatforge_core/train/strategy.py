"""Training strategies (densification / pruning), gsplat style: one object per strategy.

:data:`STRATEGIES` maps the ``strategy`` option (:data:`.options.STRATEGY_NAMES`) to a
:class:`StrategyRecipe`, which knows how to build its gsplat strategy, which extra loss terms
it adds, how to call its ``step_post_backward``, how an out-of-memory culling tier changes it,
and how the first Gaussians are initialised for it. The trainer only talks to the recipe, so a
new strategy is one class and one registry entry.

* ``default``: :class:`SkyAwareDefaultStrategy`, gsplat's ``DefaultStrategy`` (CPU or CUDA)
  with a sky-sphere exemption from "too big" pruning and budgeted growth under a Gaussian cap.
* ``mcmc``: gsplat's ``MCMCStrategy`` (CUDA only: its relocation is a CUDA kernel), with
  simple_trainer's opacity and scale regularisers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from gsplat.strategy import DefaultStrategy, MCMCStrategy
from gsplat.strategy.ops import remove

from ..errors import InputError
from .options import TrainOptions

__all__ = ["SkyAwareDefaultStrategy", "StrategyRecipe", "DefaultRecipe", "MCMCRecipe", "STRATEGIES",
           "get_recipe", "refine_schedule"]


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



@dataclass
class SkyAwareDefaultStrategy(DefaultStrategy):
    """gsplat DefaultStrategy with two changes, otherwise gsplat 1.5.3's own code
    (low-opacity pruning, duplicate/split, opacity resets).

    Args (besides gsplat ``DefaultStrategy``'s):
        sky_centre: [3] float tensor, centre of the sky sphere (metres, ENU), or None.
        sky_min_radius: metres; "too big" pruning skips Gaussians farther than this from
            ``sky_centre`` (the sky sphere's Gaussians are large by design). None: no exemption.
        cap_fn: returns the Gaussian cap (a count) or None; read at every refinement.

    * 'too big' pruning skips Gaussians beyond ``sky_min_radius`` of ``sky_centre``.
    * budgeted growth: ``cap_fn()`` caps the count *during* growth: when more Gaussians pass
      ``grow_grad2d`` than the cap leaves room for (each duplicate or split adds one), only
      those with the highest mean 2D gradient grow. (The earlier approach, growing freely and
      then deleting the least opaque Gaussians down to the cap, deleted fresh split children
      and whole regions on the demo scene.)
    """

    sky_centre: Optional[torch.Tensor] = None
    sky_min_radius: Optional[float] = None
    cap_fn: Optional[Callable[[], Optional[int]]] = None

    @torch.no_grad()
    def _grow_gs(self, params, optimizers, state, step):
        cap = self.cap_fn() if self.cap_fn is not None else None
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
            if self.sky_min_radius is not None:
                far = (params["means"] - self.sky_centre.to(params["means"].device)).norm(dim=-1) > self.sky_min_radius
                is_too_big &= ~far
            if step < self.refine_scale2d_stop_iter:
                is_too_big |= state["radii"] > self.prune_scale2d
            is_prune = is_prune | is_too_big
        n_prune = int(is_prune.sum().item())
        if n_prune > 0:
            remove(params=params, optimizers=optimizers, state=state, mask=is_prune)
        return n_prune


class StrategyRecipe:
    """How the trainer uses one gsplat strategy (see the module docstring).

    Attributes:
        name: the ``strategy`` option value.
        culls_to_cap: after every step, cull to the Gaussian cap when the count exceeds it
            (:meth:`.trainer.Trainer._cull`); False for strategies that hold their own budget.
    """

    name = ""
    culls_to_cap = True

    def build(self, opts: TrainOptions, device: torch.device, schedule: Tuple[int, int, int, int],
              sky_centre: Optional[torch.Tensor], sky_min_radius: Optional[float],
              cap_fn: Callable[[], Optional[int]]):
        """The gsplat strategy object.

        Args:
            opts: the run's options. device: where training runs.
            schedule: ``(refine_start, refine_stop, reset_every, refine_every)`` in steps
                (:func:`refine_schedule`).
            sky_centre: [3] tensor (metres) or None; sky_min_radius: metres or None (no sky sphere).
            cap_fn: returns the current Gaussian cap or None.

        Raises:
            InputError: the strategy cannot run on ``device``.
        """
        raise NotImplementedError

    def init_opacity_scale(self, opts: TrainOptions) -> Tuple[float, float]:
        """``(init_opacity, init_scale)`` for :func:`.init.init_gaussians`."""
        return opts.init_opacity, opts.init_scale

    def initialize_state(self, strategy, scene_scale: float) -> Dict[str, Any]:
        """The strategy's state dict; ``scene_scale`` in metres."""
        raise NotImplementedError

    def add_loss_terms(self, loss: torch.Tensor, params) -> torch.Tensor:
        """``loss`` (scalar tensor) plus the strategy's regularisers (none by default)."""
        return loss

    def step_post_backward(self, strategy, params, optimizers, state: Dict[str, Any], step: int,
                           info: Dict[str, Any], lr: float) -> None:
        """Call the strategy's ``step_post_backward`` (after the optimiser step).

        Args:
            lr: the means learning rate of this step (MCMC scales its noise by it).
        """
        raise NotImplementedError

    def apply_tier(self, strategy, opts: TrainOptions, tier_opacity: float, tier_cap: int) -> Optional[float]:
        """Tighten the strategy for an out-of-memory culling tier (``opts.oom_tiers`` entry:
        opacity threshold, Gaussian count); returns the opacity below which Gaussians are
        culled now, or None."""
        return None

    def per_gaussian_state(self, state: Dict[str, Any]) -> Dict[str, Any]:
        """The part of ``state`` holding per-Gaussian tensors, which culling must index too."""
        return state


class DefaultRecipe(StrategyRecipe):
    """``default``: :class:`SkyAwareDefaultStrategy` on CPU or CUDA; the Gaussian cap is kept by
    budgeted growth and, as a safety net, by culling after every step."""

    name = "default"
    culls_to_cap = True

    def build(self, opts, device, schedule, sky_centre, sky_min_radius, cap_fn):
        refine_start, refine_stop, reset_every, refine_every = schedule
        return SkyAwareDefaultStrategy(sky_centre=sky_centre, sky_min_radius=sky_min_radius, cap_fn=cap_fn,
                                       prune_opa=opts.prune_opa, grow_grad2d=opts.grow_grad2d,
                                       refine_start_iter=refine_start, refine_stop_iter=refine_stop,
                                       reset_every=reset_every, refine_every=refine_every, absgrad=opts.absgrad)

    def initialize_state(self, strategy, scene_scale):
        return strategy.initialize_state(scene_scale=scene_scale)

    def step_post_backward(self, strategy, params, optimizers, state, step, info, lr):
        strategy.step_post_backward(params, optimizers, state, step, info, packed=False)

    def apply_tier(self, strategy, opts, tier_opacity, tier_cap):
        strategy.prune_opa = max(opts.prune_opa, float(tier_opacity))
        return strategy.prune_opa


class MCMCRecipe(StrategyRecipe):
    """``mcmc``: gsplat's MCMCStrategy (CUDA only), simple_trainer's initialisation (opacity 0.5,
    scale x 0.1) and regularisers (``opacity_reg`` x mean opacity + ``scale_reg`` x mean scale)."""

    name = "mcmc"
    culls_to_cap = False  # MCMC grows to cap_max; an OOM tier lowers cap_max instead
    opacity_reg = 0.01
    scale_reg = 0.01

    def build(self, opts, device, schedule, sky_centre, sky_min_radius, cap_fn):
        if device.type != "cuda":
            raise InputError("train option strategy='mcmc' needs CUDA (gsplat's MCMC relocation is a "
                             "CUDA kernel); use strategy='default' on CPU")
        refine_start, refine_stop, _reset_every, refine_every = schedule
        return MCMCStrategy(cap_max=opts.mcmc_cap_max, refine_start_iter=refine_start,
                            refine_stop_iter=refine_stop, refine_every=refine_every)

    def init_opacity_scale(self, opts):
        return 0.5, opts.init_scale * 0.1

    def initialize_state(self, strategy, scene_scale):
        return strategy.initialize_state()

    def add_loss_terms(self, loss, params):
        return loss + self.opacity_reg * torch.sigmoid(params["opacities"]).mean() \
            + self.scale_reg * torch.exp(params["scales"]).mean()

    def step_post_backward(self, strategy, params, optimizers, state, step, info, lr):
        strategy.step_post_backward(params, optimizers, state, step, info, lr=lr)

    def apply_tier(self, strategy, opts, tier_opacity, tier_cap):
        strategy.cap_max = min(strategy.cap_max, int(tier_cap))
        return None

    def per_gaussian_state(self, state):
        return {}  # MCMC's state holds no per-Gaussian tensors (only a binomial table)


#: ``strategy`` option -> recipe.
STRATEGIES: Dict[str, StrategyRecipe] = {r.name: r for r in (DefaultRecipe(), MCMCRecipe())}


def get_recipe(name: str) -> StrategyRecipe:
    """The recipe of the ``strategy`` option ``name``.

    Raises:
        InputError: no such strategy.
    """
    try:
        return STRATEGIES[name]
    except KeyError:
        raise InputError(f"train option 'strategy' must be one of {sorted(STRATEGIES)}, got {name!r}") from None
