"""Merge the splats of a clustered scene (issue #12): crop each cluster to its cell, concatenate.

Each cluster is trained on its expanded region (core + overlap, ``clusters.json``), then keeps
only the Gaussians whose centre lies in its own cell: the 2-D (east, north) Voronoi cell of its
centre among all the cluster centres (:func:`splatforge_core.cluster.cell_labels`). The cells
partition the plane, so every point of the scene is covered by exactly one cluster: no doubled
Gaussians in the overlaps, no gaps between cells (as VastGaussian / CityGaussian crop their
blocks). The merged splat is the concatenation in the Inria layout (:mod:`splatforge_core.splat`).
Clusters trained to different SH degrees are brought to the highest one (missing coefficients
are zero).

:func:`overlap_density` measures the no-doubling / no-hole gate: Gaussians per square metre in
the overlap bands (within ``band_m`` of a cell border) against the cores (farther than
``band_m``), over the capture's footprint.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .cluster import cell_labels, read_clusters
from .errors import InputError
from .io import read_json, write_json
from .log import get_logger
from .splat import read_splat_ply, sh_degree_from_rest, write_splat_ply

log = get_logger("splat_merge")

_KEYS = ("means", "scales", "quats", "opacities", "sh0")


def crop_to_cell(splat: dict[str, np.ndarray], centres_en: np.ndarray, index: int) -> np.ndarray:
    """Boolean mask (N,) of the Gaussians of ``splat`` whose centre is in cell ``index``.

    Args:
        splat: :func:`splatforge_core.splat.read_splat_ply` dict (``means`` [N, 3] ENU metres).
        centres_en: (K, >=2) cluster centres, ENU metres.
        index: the cluster's row in ``centres_en``.
    """
    return cell_labels(splat["means"], centres_en) == index


def concatenate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate splat dicts (Gaussians in order); SH raised to the highest degree present
    (``sh_degree`` of the result).

    Raises:
        InputError: no parts.
    """
    if not parts:
        raise InputError("splat merge: nothing to concatenate")
    k = max(p["shN"].shape[1] for p in parts)
    out = {key: np.concatenate([p[key] for p in parts], axis=0) for key in _KEYS}
    out["shN"] = np.concatenate([np.pad(p["shN"], ((0, 0), (0, k - p["shN"].shape[1]), (0, 0))) for p in parts], axis=0)
    out["sh_degree"] = sh_degree_from_rest(k)
    return out


def _border_distance(xy: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N,) distance (metres) of each point to the border of its Voronoi cell: half the
    difference of the distances to the nearest and second-nearest centres, projected on
    the line between them (exact for the bisector of those two centres)."""
    d = np.linalg.norm(xy[:, None, :] - centres[None, :, :2], axis=-1)
    order = np.argsort(d, axis=1)
    a, b = centres[order[:, 0], :2], centres[order[:, 1], :2]
    ab = b - a
    # signed distance to the bisector of a and b
    mid = 0.5 * (a + b)
    return np.abs(((xy - mid) * ab).sum(1)) / np.maximum(np.linalg.norm(ab, axis=1), 1e-12)


def overlap_density(means: np.ndarray, centres_en: np.ndarray, frames_en: np.ndarray, band_m: float = 2.0,
                    footprint_m: float = 3.0, cell_m: float = 0.5) -> dict[str, Any]:
    """Gaussian density in the overlap bands against the cores, over the capture's footprint.

    The footprint is the set of ``cell_m`` grid cells within ``footprint_m`` (east/north) of a
    capture position; a grid cell is in the *band* when its centre is within ``band_m`` of a
    Voronoi border of the cluster centres, else in a *core*. Density = Gaussians / m^2.

    Args:
        means: (N, 3) Gaussian centres, ENU metres.
        centres_en: (K, >=2) cluster centres.
        frames_en: (F, >=2) capture positions.

    Returns:
        ``band_per_m2``, ``core_per_m2``, ``ratio`` (band / core; None when either area is
        empty), ``band_area_m2``, ``core_area_m2``, ``band_m``, ``footprint_m``.
    """
    fr = np.asarray(frames_en, dtype=np.float64)[:, :2]
    lo, hi = fr.min(0) - footprint_m, fr.max(0) + footprint_m
    nx, ny = np.ceil((hi - lo) / cell_m).astype(int)
    gx, gy = np.meshgrid(lo[0] + (np.arange(nx) + 0.5) * cell_m, lo[1] + (np.arange(ny) + 0.5) * cell_m, indexing="ij")
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    near = np.min(np.linalg.norm(grid[:, None, :] - fr[None], axis=-1), axis=1) <= footprint_m
    band = _border_distance(grid, np.asarray(centres_en, dtype=np.float64)) <= band_m
    m = np.asarray(means, dtype=np.float64)[:, :2]
    ij = np.floor((m - lo) / cell_m).astype(np.int64)
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < nx) & (ij[:, 1] >= 0) & (ij[:, 1] < ny)
    counts = np.bincount(ij[inside, 0] * ny + ij[inside, 1], minlength=nx * ny).astype(np.float64)
    area = cell_m * cell_m
    b_area, c_area = float((near & band).sum() * area), float((near & ~band).sum() * area)
    b = counts[near & band].sum() / b_area if b_area else None
    c = counts[near & ~band].sum() / c_area if c_area else None
    return {"band_per_m2": b, "core_per_m2": c, "ratio": (b / c) if b is not None and c else None,
            "band_area_m2": b_area, "core_area_m2": c_area, "band_m": band_m, "footprint_m": footprint_m}


def merge_splats(splats: dict[str, dict[str, np.ndarray]], clusters: list[dict]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Crop every cluster's splat to its cell and concatenate.

    Args:
        splats: cluster name -> splat dict (:func:`splatforge_core.splat.read_splat_ply`).
        clusters: ``clusters.json``'s ``clusters`` (``name``, ``centre_enu``).

    Returns:
        (merged splat dict, ``{"clusters": {name: {"trained", "kept"}}, "num_gaussians"}``).

    Raises:
        InputError: a cluster of ``clusters`` without a splat.
    """
    centres = np.array([c["centre_enu"] for c in clusters], dtype=np.float64)
    parts, rep = [], {}
    for i, c in enumerate(clusters):
        if c["name"] not in splats:
            raise InputError(f"splat merge: cluster {c['name']} has no trained splat")
        s = splats[c["name"]]
        keep = crop_to_cell(s, centres, i)
        parts.append({k: s[k][keep] for k in (*_KEYS, "shN")})
        rep[c["name"]] = {"trained": int(len(keep)), "kept": int(keep.sum())}
    merged = concatenate(parts)
    return merged, {"clusters": rep, "num_gaussians": int(len(merged["means"]))}


def _run_summary(m: dict) -> dict:
    """What the merged metrics keep of one training run's ``metrics.json``; ``steps`` = the steps
    it trained (a run continuing the coarse pass starts at ``start_step``)."""
    steps = None if m.get("final_step") is None else int(m["final_step"]) - int(m.get("start_step") or 0)
    return {"final": m.get("final"), "num_gaussians": m.get("num_gaussians"), "n_test_views": m.get("n_test_views"),
            "test_frames": m.get("test_frames"), "iterations": m.get("iterations"), "steps": steps,
            "train_seconds": m.get("train_seconds")}


def _trained_max_side(metrics_paths: dict) -> Optional[int]:
    """Longer image side the clusters trained at (their metrics.json ``resolution``), or None."""
    for p in metrics_paths.values():
        if p and Path(p).is_file():
            side = (read_json(p).get("resolution") or {}).get("max_side")
            if side:
                return int(side)
    return None


def evaluate_merged(merged: dict, aligned_dir: str | os.PathLike, images_dir: str | os.PathLike,
                    views_path: str | os.PathLike, train_options: dict | None,
                    max_side: Optional[int], png: Optional[str | os.PathLike] = None) -> Optional[dict]:
    """Held-out PSNR (dB) / SSIM of the merged splat at the scene's held-out views.

    Args:
        merged: splat dict (:func:`merge_splats`). aligned_dir: the merged COLMAP model.
        images_dir, views_path: the scene's images and ``views.json``.
        train_options: the ``train`` section (held-out rule,
            :func:`splatforge_core.cluster.scene_held_out_frames`; ``cpu_max_side`` when
            ``max_side`` is None). max_side: longer image side in pixels the clusters trained at.
        png: also write render | ground truth of 3 held-out views there (``renders.png``).

    Returns:
        ``{"psnr", "ssim", "n_views", "per_view", "frames"}``, or None when no frame is held out.

    Raises:
        InputError: unreadable model or images (named).
    """
    from .cluster import scene_held_out_frames
    from .finetune import evaluate
    from .train.data import load_scene
    from .train.options import TrainOptions

    held = scene_held_out_frames(views_path, train_options)
    if not held:
        return None
    if max_side is None:
        max_side = TrainOptions.from_dict(train_options).cpu_max_side
    scene = load_scene(aligned_dir, images_dir, views_path, max_side=max_side, eval_frames=held)
    if not scene.test:
        return None
    ev = evaluate(merged, scene.test, png=png)
    ev["frames"] = list(scene.test_frames)
    return ev


def main(clusters_path: str | os.PathLike, splat_paths: dict[str, str | os.PathLike], metrics_paths: dict[str, str | os.PathLike],
         views_path: str | os.PathLike, ply_path: str | os.PathLike, metrics_path: str | os.PathLike,
         merge_path: str | os.PathLike, aligned_dir: str | os.PathLike | None = None,
         images_dir: str | os.PathLike | None = None, train_options: dict | None = None,
         coarse_metrics_path: str | os.PathLike | None = None) -> dict:
    """The ``splat_merge`` rule: the clusters' ``splat.ply`` -> the scene's ``splat/splat.ply``.

    Args:
        clusters_path: ``clusters.json``.
        splat_paths: cluster name -> ``clusters/{cluster}/splat/splat.ply``.
        metrics_paths: cluster name -> ``clusters/{cluster}/splat/metrics.json``.
        views_path: ``views.json`` (capture positions for the density check).
        ply_path: output merged splat (Inria layout, written atomically).
        metrics_path: output ``metrics.json`` of the merged splat: ``final`` = held-out
            ``psnr``/``ssim`` of the merged splat rendered at the scene's held-out views
            (:func:`splatforge_core.cluster.scene_held_out_frames`, which no cluster trained on)
            when ``aligned_dir`` is given, else the clusters' own held-out metrics averaged with
            the number of held-out views as weights (``eval_note`` says which);
            ``clusters_final`` (that weighted average), ``num_gaussians``, ``clusters`` (each
            cluster's ``final``, ``num_gaussians``, ``n_test_views``).
        merge_path: output ``merge.json``: per cluster trained/kept Gaussians, the overlap
            density check (:func:`overlap_density`), ``wall_s``.
        aligned_dir, images_dir: the merged model and the scene's images, for the held-out
            render (None: no render).
        train_options: the scene's ``train`` section (held-out rule; image size when a cluster's
            metrics do not give it).
        coarse_metrics_path: the coarse pass's ``metrics.json`` when the scene has one: its
            held-out metrics, steps and time go to ``coarse`` and into the totals.

    Returns:
        The merge report.

    Raises:
        InputError: unreadable inputs (named), a cluster without splat.
    """
    t0 = time.perf_counter()
    doc = read_clusters(clusters_path)
    splats = {c["name"]: read_splat_ply(splat_paths[c["name"]]) for c in doc["clusters"] if c["name"] in splat_paths}
    merged, report = merge_splats(splats, doc["clusters"])
    views = read_json(views_path)
    frames = np.array([f["enu"] for f in views["frames"] if f.get("enu") is not None], dtype=np.float64).reshape(-1, 3)
    centres = np.array([c["centre_enu"] for c in doc["clusters"]], dtype=np.float64)
    if len(centres) > 1 and len(frames):
        report["overlap_density"] = overlap_density(merged["means"], centres, frames)
    write_splat_ply(ply_path, merged["means"], merged["scales"], merged["quats"], merged["opacities"], merged["sh0"],
                    merged["shN"])
    per = {}
    for c in doc["clusters"]:
        p = metrics_paths.get(c["name"])
        m = read_json(p) if p and Path(p).is_file() else {}
        per[c["name"]] = _run_summary(m)
    coarse = _run_summary(read_json(coarse_metrics_path)) if coarse_metrics_path else None
    w = {k: float(v.get("n_test_views") or 0) for k, v in per.items() if (v.get("final") or {}).get("psnr") is not None}
    clusters_final = {}
    if w and sum(w.values()) > 0:
        for key in ("psnr", "ssim"):
            vals = [(per[k]["final"].get(key), w[k]) for k in w if per[k]["final"].get(key) is not None]
            if vals:
                clusters_final[key] = float(sum(v * x for v, x in vals) / sum(x for _, x in vals))
    final, note, per_view, test_frames = clusters_final, (
        "clustered scene: held-out metrics are the clusters' own (each cluster's splat on its held-out views), "
        "averaged weighted by held-out views; not a render of the merged splat"), {}, None
    if aligned_dir is not None and images_dir is not None:
        ev = evaluate_merged(merged, aligned_dir, images_dir, views_path, train_options,
                             _trained_max_side(metrics_paths), png=Path(metrics_path).parent / "renders.png")
        if ev is not None:
            final = {k: ev[k] for k in ("psnr", "ssim")}
            per_view, test_frames = ev["per_view"], ev["frames"]
            note = (f"clustered scene: the merged splat rendered at the scene's held-out views ({ev['n_views']} "
                    f"views of frames {', '.join(ev['frames'])}, which no cluster trained on)")
    metrics = {
        "schema_version": 1,
        "clustered": True,
        "final": final,
        "clusters_final": clusters_final,
        "final_per_view": per_view,
        "eval_note": note,
        "num_gaussians": report["num_gaussians"],
        # steps and seconds trained in all (the coarse pass and every cluster)
        "steps": sum(int(v["steps"] or 0) for v in [*per.values(), *([coarse] if coarse else [])]),
        "train_seconds": sum(float(v.get("train_seconds") or 0.0) for v in [*per.values(), *([coarse] if coarse else [])]),
        "coarse": coarse,
        "test_frames": test_frames if test_frames is not None
        else sorted({f for v in per.values() for f in (v.get("test_frames") or [])}),
        "clusters": per,
        "ply": str(ply_path),
    }
    report["wall_s"] = round(time.perf_counter() - t0, 3)
    write_json(metrics_path, metrics)
    write_json(merge_path, report)
    od = report.get("overlap_density") or {}
    log.info("splat merge: %d clusters -> %d Gaussians (%s); overlap-band / core density %s",
             len(splats), report["num_gaussians"],
             ", ".join(f"{k} {v['kept']}/{v['trained']}" for k, v in report["clusters"].items()),
             None if od.get("ratio") is None else round(od["ratio"], 3))
    return report
