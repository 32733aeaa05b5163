"""Fewer Gaussians: rank by global significance on the training views and keep a fraction (#16).

Significance (LightGaussian, Fan et al. 2023, "global significance"): for Gaussian i,
``GS_i = sum over training views and pixels of w_i(p) * V_i^beta`` where ``w_i(p) = alpha_i(p) T_i(p)``
is its blending weight at pixel p (opacity x transmittance: its share of that pixel's colour) and
``V_i`` its volume normalised by the 90th-percentile volume, ``beta = 0.1``. ``sum_p w_i(p)`` is read
off the rasteriser exactly as the gradient of the rendered image's sum with respect to a constant
per-Gaussian colour of 1 (the image is linear in the colours), so the CPU rasteriser's backward pass
gives it with no kernel of our own. The splat is then cut to the ``keep`` fraction with the highest
significance.

The views come from a Splat Forge work folder (``--scene-dir work/SCENE``: aligned/, images/,
views.json, :func:`splatforge_core.train.data.load_scene`) or from an Inria-layout folder
(``--inria DIR``: cameras.json + images/, :func:`splatforge_core.inria.load_views`); either way the
held-out views are the trainer's split (every 8th frame) and only the training views rank the
Gaussians.

``--finetune N`` then finetunes the pruned splat for N steps on the training views only (never the
held-out ones) with :func:`splatforge_core.finetune.finetune` (Adam on every parameter, no
densification), as LightGaussian does after pruning.

``prune_curve`` writes held-out PSNR (against the held-out photos, black background, no masks) for
several kept fractions and rankings: LightGaussian significance, random choice and opacity (the
baselines a ranking must beat).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import write_json
from .log import get_logger

__all__ = ["significance", "random_score", "opacity_score", "prune_splat", "heldout_psnr", "load_data", "prune_curve",
           "main", "cli"]

_LOG = get_logger("prune")
BETA = 0.1


def _tensors(splat: dict):
    import torch

    return {k: torch.as_tensor(np.array(v, np.float32)) for k, v in splat.items() if k != "sh_degree"}


def significance(splat: dict, views, beta: float = BETA) -> np.ndarray:
    """Global significance [N] float64 of each Gaussian over ``views`` (each with ``K`` [3, 3],
    ``viewmat`` [4, 4] cam_from_world and ``width``/``height`` in pixels); see the module doc."""
    import torch
    from tqdm import tqdm

    from .render import rasterization

    t = _tensors(splat)
    n = len(t["means"])
    acc = torch.zeros(n, dtype=torch.float64)
    scales, opac = torch.exp(t["scales"]), torch.sigmoid(t["opacities"])
    for v in tqdm(views, desc="significance", unit="view", disable=None):
        ones = torch.ones(n, 1, requires_grad=True)
        img, _, _ = rasterization(t["means"], t["quats"], scales, opac, ones,
                                  torch.as_tensor(np.asarray(v.viewmat, np.float32))[None],
                                  torch.as_tensor(np.asarray(v.K, np.float32))[None], v.width, v.height)
        img.sum().backward()
        acc += ones.grad[:, 0].double()
    vol = np.prod(np.exp(np.asarray(splat["scales"], np.float64)), axis=1)
    vnorm = vol / max(float(np.percentile(vol, 90)), 1e-30)
    return acc.numpy() * np.power(np.clip(vnorm, 1e-12, None), beta)


def random_score(splat: dict, seed: int = 0) -> np.ndarray:
    """[N] float64 uniform random scores (seeded): pruning by them is a random choice."""
    return np.random.default_rng(seed).random(len(splat["means"]))


def opacity_score(splat: dict) -> np.ndarray:
    """[N] float64 opacities in (0, 1) (sigmoid of the stored logits): pruning keeps the most opaque."""
    return 1.0 / (1.0 + np.exp(-np.asarray(splat["opacities"], np.float64).reshape(-1)))


def prune_splat(splat: dict, score: np.ndarray, keep: float) -> dict:
    """The ``ceil(keep * N)`` Gaussians of highest ``score`` (file order kept).

    Raises:
        InputError: keep outside (0, 1] or a score of another length.
    """
    if not 0 < keep <= 1:
        raise InputError(f"--keep {keep}: the kept fraction must be in (0, 1]")
    n = len(splat["means"])
    if len(score) != n:
        raise InputError(f"significance has {len(score)} entries for {n} Gaussians")
    k = max(1, math.ceil(keep * n))
    idx = np.sort(np.argsort(-score, kind="stable")[:k])
    return {key: (v[idx] if isinstance(v, np.ndarray) and len(v) == n else v) for key, v in splat.items()}


def heldout_psnr(splat: dict, views) -> float:
    """Mean PSNR (dB, peak 255) of renders of ``splat`` against the views' photos (uint8 [H, W, 3])."""
    from .viewer import render_view

    vals = []
    for v in views:
        img = render_view(splat, v.viewmat, v.K, v.width, v.height)
        mse = np.mean((img.astype(np.float64) - v.image.astype(np.float64)) ** 2)
        vals.append(10 * math.log10(255.0 ** 2 / max(mse, 1e-12)))
    return float(np.mean(vals))


def _subset(views: list, max_views: int) -> list:
    """All ``views`` (``max_views`` <= 0 or >= their count), else a seeded random subset: a stride
    over the name-sorted views would miss whole view directions of a panorama rig (on the demo, every
    6th view gave 17.8 dB at keep 0.5 where every 3rd gave 24.3 dB)."""
    if max_views <= 0 or max_views >= len(views):
        return list(views)
    idx = np.sort(np.random.default_rng(0).choice(len(views), max_views, replace=False))
    return [views[i] for i in idx]


def load_data(scene_dir=None, inria_dir=None, max_side: int = 128, eval_every_n: int = 8):
    """The posed views (train / held-out, resized to ``max_side`` pixels on the longer side) of
    exactly one of a Splat Forge work folder ``scene_dir`` or an Inria folder ``inria_dir``.

    Returns:
        :class:`splatforge_core.train.data.SceneData`.

    Raises:
        InputError: neither or both given, or an unreadable folder (naming it).
    """
    if (scene_dir is None) == (inria_dir is None):
        raise InputError("prune: give exactly one of --scene-dir (a Splat Forge work folder) or --inria "
                         "(a folder with cameras.json and images/)")
    if inria_dir is not None:
        from .inria import load_views

        return load_views(Path(inria_dir), max_side=max_side, eval_every_n=eval_every_n)
    from .train.data import load_scene

    d = Path(scene_dir)
    if not (d / "aligned").is_dir():
        raise InputError(f"{d}: no aligned/ model; --scene-dir takes a Splat Forge work folder (work/SCENE), "
                         "use --inria for a folder with cameras.json and images/")
    return load_scene(d / "aligned", d / "images", d / "views.json", max_side=max_side, eval_every_n=eval_every_n)


def prune_curve(splat: dict, data, score: np.ndarray, keeps=(1.0, 0.5, 0.25, 0.1), baselines: bool = False,
                finetune=None) -> dict:
    """Held-out PSNR against the kept fraction on the held-out views of ``data``
    (:func:`load_data`).

    Args:
        splat: splat dict; score: [N] :func:`significance`.
        baselines: also rank by :func:`random_score` and :func:`opacity_score`.
        finetune: None, or ``(name, fn)`` with ``fn(pruned_splat) -> splat`` (trained on the
            training views only); adds a column ``name`` for the significance-pruned splats.

    Returns:
        ``{"keep", "gaussians", "heldout_psnr_db" (significance), "heldout_views", "methods":
        {name: [PSNR dB per keep]}}`` (PSNR None without held-out views).
    """
    scores = {"significance": score}
    if baselines:
        scores.update(random=random_score(splat), opacity=opacity_score(splat))
    out = {"keep": [], "gaussians": [], "heldout_views": len(data.test), "methods": {m: [] for m in scores}}
    if finetune is not None:
        out["methods"][finetune[0]] = []
    for k in keeps:
        out["keep"].append(k)
        for m, sc in scores.items():
            p = prune_splat(splat, sc, k)
            if m == "significance":
                out["gaussians"].append(int(len(p["means"])))
            out["methods"][m].append(heldout_psnr(p, data.test) if data.test else None)
            _LOG.info("keep %.2f by %s: %d Gaussians, held-out PSNR %s dB", k, m, len(p["means"]),
                      out["methods"][m][-1])
            if m == "significance" and finetune is not None:
                ft = finetune[1](p)
                out["methods"][finetune[0]].append(heldout_psnr(ft, data.test) if data.test else None)
                _LOG.info("keep %.2f by significance, %s: held-out PSNR %s dB", k, finetune[0],
                          out["methods"][finetune[0]][-1])
    out["heldout_psnr_db"] = out["methods"]["significance"]
    return out


def finetune_fn(data, iterations: int):
    """``splat -> splat`` finetuning on ``data.train`` (never ``data.test``) for ``iterations`` steps
    with :func:`splatforge_core.finetune.finetune` (its default options)."""
    from .finetune import finetune

    def run(splat: dict) -> dict:
        out, log = finetune(splat, data.train, iterations, scene_scale=data.scene_scale)
        _LOG.info("finetuned %d Gaussians for %d steps (loss %.4f -> %.4f, %.1f s)", len(splat["means"]),
                  iterations, log["loss_first"] or 0.0, log["loss_last"] or 0.0, log["wall_secs"])
        return out

    return run


def main(splat_path, out_path, keep: float, scene_dir=None, curve_path=None, max_side: int = 128, max_views: int = 0,
         inria_dir=None, baselines: bool = False, finetune: int = 0) -> dict:
    """Prune ``splat_path`` to ``keep`` by significance on the training views of ``scene_dir`` (a
    Splat Forge work folder) or ``inria_dir`` (an Inria folder) -- all, or a random ``max_views``
    of them, rendered at ``max_side`` pixels; write ``out_path`` (any format of
    :mod:`splatforge_core.formats`) and, with ``curve_path``, the held-out PSNR curve JSON
    (with ``baselines`` also for random and opacity ranking). ``finetune`` > 0: finetune the pruned
    splat that many steps on the training views (:func:`finetune_fn`) before writing it, and add a
    finetuned column to the curve.

    Raises:
        InputError: unreadable splat or views, neither or both folders, keep outside (0, 1],
            negative ``finetune``.
    """
    from .formats import read_any, write_any

    if not 0 < keep <= 1:
        raise InputError(f"--keep {keep}: the kept fraction must be in (0, 1]")
    if finetune < 0:
        raise InputError(f"--finetune {finetune}: the finetune step count must be >= 0")
    data = load_data(scene_dir, inria_dir, max_side)
    splat = read_any(splat_path)
    if not data.train:
        raise InputError(f"{scene_dir or inria_dir}: no training views to rank the Gaussians on")
    train = _subset(data.train, max_views)
    score = significance(splat, train)
    pruned = prune_splat(splat, score, keep)
    ft = finetune_fn(data, finetune) if finetune else None
    if ft is not None:
        pruned = ft(pruned)
    write_any(out_path, pruned)
    info = {"input": str(splat_path), "output": str(out_path), "keep": keep, "gaussians_in": int(len(splat["means"])),
            "gaussians_out": int(len(pruned["means"])), "significance_views": len(train), "render_side_px": max_side,
            "views_from": str(scene_dir or inria_dir), "finetune_steps": finetune}
    if curve_path:
        write_json(curve_path, {**info, "curve": prune_curve(
            splat, data, score, baselines=baselines, finetune=(f"significance+finetune{finetune}", ft) if ft else None)})
    return info


def cli(argv: list[str]) -> int:
    """``splatforge prune IN OUT --keep F (--scene-dir work/SCENE | --inria DIR) [--curve curve.json]``."""
    ap = argparse.ArgumentParser(prog="splatforge prune", description=(
        "Keep the most significant fraction of a splat's Gaussians (LightGaussian global significance "
        "on the training views of work/SCENE: aligned/, images/, views.json, or of an Inria folder: "
        "cameras.json, images/)."))
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--keep", type=float, required=True, help="kept fraction in (0, 1], e.g. 0.25")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--scene-dir", help="the scene's work folder (work/SCENE)")
    src.add_argument("--inria", help="an Inria-layout folder (cameras.json + images/); held out: every 8th camera")
    ap.add_argument("--curve", help="also write held-out PSNR at keep 1.0, 0.5, 0.25, 0.1 to this JSON")
    ap.add_argument("--baselines", action="store_true", help="add random and opacity ranking to the --curve")
    ap.add_argument("--finetune", type=int, default=0, metavar="N",
                    help="finetune the pruned splat N steps on the training views (and add a finetuned column to --curve)")
    ap.add_argument("--max-side", type=int, default=128, help="render size for significance and PSNR (pixels)")
    ap.add_argument("--max-views", type=int, default=0, help="training views used for significance (0: all)")
    a = ap.parse_args(argv)
    print(json.dumps(main(a.input, a.output, a.keep, a.scene_dir, a.curve, a.max_side, a.max_views, a.inria, a.baselines,
                                a.finetune)))
    return 0
