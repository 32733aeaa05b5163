"""Benchmark of clustered scenes (issue #12): clusters vs one block on a larger demo capture.

Usage::

    python benchmarks/bench_cluster.py [--n-panoramas 24] [--n-clusters 2] [--steps 600]
        [--width 1024] [--workdir /tmp/bench_cluster] [--threads 2]

One demo capture (``n_panoramas`` panoramas, low resolution) is run through the workflow
(Snakemake, tiny-style settings) as two scenes: ``block`` (one cluster) up to its geo-aligned
model, and ``clus`` (``n_clusters`` clusters) up to the merged model (sfm_merge). Training is
then run here, outside Snakemake, so that both arms hold out the same frames: every 8th frame
(the trainer's own rule on the whole scene) is removed from every model before training
(``eval_every_n: 0`` in the trainer), the block trains ``steps`` steps and each cluster
``steps / n_clusters`` (same total), the cluster splats are cropped to their cells and
concatenated (:func:`splatforge_core.splat_merge.merge_splats`), and both splats are rendered
at the held-out frames with their own model's cameras (block: its aligned model; clusters: the
merged model) with the trainer's evaluation (masked PSNR/SSIM).

Gates (issue #12): merged held-out PSNR within 0.5 dB of the block; every frame registered;
shared-frame centre disagreement between clusters < 0.05 m median; Gaussian density in the
overlap bands within 20 % of the cores. Writes a section to ``benchmarks/results/cluster.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULT = REPO / "benchmarks" / "results" / "cluster.md"


def _config(a: argparse.Namespace) -> dict:
    tiny = {"project": {"size": 256}}
    return {
        "default_scene": "block",
        "scenes": {"block": {"input": "work/demo/capture/images", **tiny, "cluster": {"n_clusters": 1}},
                   "clus": {"input": "work/demo/capture/images", **tiny,
                            "cluster": {"n_clusters": a.n_clusters, "margin_m": a.margin_m}}},
        "demo": {"n_panoramas": a.n_panoramas, "width": a.width, "seed": 0, "gps_sigma_m": 2.0, "spacing_m": 1.5},
        "project": {"size": 256, "num_azimuths": 6, "elevations_deg": [-45, 0, 45], "workers": a.threads},
        "sfm": {"extract": {"max_image_size": 256}, "pairs": {"num_neighbors": 6}, "match": {}, "map": {"mapper": "global"}},
        "align": {}, "train": {}, "export": {}, "compress": {"preset": "qat-3dgs"}, "use_gpu": False,
    }


def _snakemake(work: Path, targets: list[str], threads: int) -> float:
    t0 = time.perf_counter()
    cmd = [str(Path(sys.executable).parent / "snakemake"), *targets, "-s", str(REPO / "Snakefile"), "--directory",
           str(work), "--configfile", str(work / "config.yaml"), "--cores", str(threads), "--rerun-triggers", "mtime"]
    with open(work / "snakemake.log", "a") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
    return time.perf_counter() - t0


def _without_frames(src: Path, dst: Path, frames: set[str], frame_of_image: dict[str, str]) -> None:
    """Copy a COLMAP model with the held-out frames deregistered (the trainer loads registered images only)."""
    import pycolmap

    rec = pycolmap.Reconstruction(str(src))
    for fid in list(rec.reg_frame_ids()):
        names = [rec.image(d.id).name for d in rec.frame(fid).data_ids if d.sensor_id.type == pycolmap.SensorType.CAMERA]
        if names and frame_of_image.get(names[0]) in frames:
            rec.deregister_frame(fid)
    dst.mkdir(parents=True, exist_ok=True)
    rec.write_binary(str(dst))


def scaled_schedule(total_steps: int, steps: int) -> dict:
    """Train options that put a run of ``steps`` on the refinement schedule of a run of
    ``total_steps`` shrunk by ``steps / total_steps`` (:func:`splatforge_core.train.strategy.refine_schedule`).

    The trainer's own schedule has short-run floors (refine every >= 100 steps, stop at 75 %):
    the block's 400 steps refine at step 200, but a cluster's 200 steps would get start 100 /
    stop 150 / every 100 and never refine or prune (the first run of this benchmark: every
    cluster ended with its initial Gaussians). Scaled, each cluster refines at the same point of
    its run as the block.
    """
    from splatforge_core.train.strategy import refine_schedule

    f = steps / total_steps
    start, stop, reset, every = refine_schedule(total_steps)
    return {"refine_start": max(1, round(start * f)), "refine_stop": max(1, round(stop * f)),
            "reset_every": max(1, round(reset * f)), "refine_every": max(1, round(every * f))}


def _train(model: Path, scene: Path, out: Path, steps: int, threads: int, max_side: int = 128,
           extra: dict | None = None, **kw) -> dict:
    from splatforge_core.train import trainer

    t0 = time.perf_counter()
    m = trainer.main(model, scene / "images", scene / "views.json", out, out / "splat.ply",
                     {"cpu_iterations": steps, "cpu_max_side": max_side, "eval_every_n": 0, "num_threads": threads,
                      "checkpoint_every": max(steps, 1), "progress": False, "resume": False, **(extra or {})}, **kw)
    return {"seconds": time.perf_counter() - t0, "num_gaussians": m.get("num_gaussians"),
            "steps": m["final_step"] - m.get("start_step", 0)}


def coarse_schedule(total_steps: int, n_clusters: int, fraction: float) -> tuple[int, int, int]:
    """``(schedule N, coarse steps, steps per cluster)`` of a coarse pass over the first
    ``fraction`` of an N-step schedule and K clusters continuing it, with the same total steps as
    one block of ``total_steps``: ``f N + K (1 - f) N = total_steps``."""
    n = round(total_steps / (fraction + n_clusters * (1 - fraction)))
    start = round(fraction * n)
    return n, start, n - start


def _evaluate(ply: Path, model: Path, scene: Path, frames: set[str], out: Path, max_side: int = 128) -> dict:
    """Masked held-out PSNR/SSIM of a splat PLY at ``frames`` with the cameras of ``model``."""
    import torch

    from splatforge_core.splat import read_splat_ply
    from splatforge_core.train.data import load_scene
    from splatforge_core.train.options import TrainOptions
    from splatforge_core.train.trainer import Trainer

    data = load_scene(model, scene / "images", scene / "views.json", max_side=max_side, eval_every_n=0)
    views = [v for v in data.train if v.frame in frames]
    s = read_splat_ply(ply)
    opts = TrainOptions.from_dict({"sh_degree": int(s["sh_degree"]), "iterations": 10_000, "sky_points": 0})
    tr = Trainer(data, opts, torch.device("cpu"), out)
    tr._build({"means": torch.from_numpy(s["means"]), "scales": torch.from_numpy(s["scales"]),
               "quats": torch.from_numpy(s["quats"]), "opacities": torch.from_numpy(s["opacities"]),
               "sh0": torch.from_numpy(s["sh0"])[:, None, :], "shN": torch.from_numpy(s["shN"])})
    tr.step = tr.iterations
    rec = tr.evaluate(views=views, log_name="bench held-out")
    return {"psnr": rec.get("psnr"), "ssim": rec.get("ssim"), "n_views": rec.get("n_views"),
            "frames": sorted({v.frame for v in views})}


def run(a: argparse.Namespace) -> dict:
    import numpy as np
    import yaml

    from splatforge_core.cluster import read_clusters
    from splatforge_core.io import read_json
    from splatforge_core.sfm.merge import place_cluster
    from splatforge_core.splat import read_splat_ply, write_splat_ply
    from splatforge_core.splat_merge import merge_splats, overlap_density
    from splatforge_core.train.data import held_out_frame_indices

    work = Path(a.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(_config(a)))
    out: dict = {"args": vars(a)}
    out["sfm_block_s"] = _snakemake(work, ["work/block/aligned"], a.threads)
    out["sfm_clus_s"] = _snakemake(work, ["work/clus/aligned"], a.threads)
    blk, cls = work / "work" / "block", work / "work" / "clus"
    os.chdir(work)  # views.json names the masks relative to the workflow's directory
    views = read_json(blk / "views.json")
    frame_of_image = {im: f["frame"] for f in views["frames"] for im in f["images"].values()}
    names = sorted(f["frame"] for f in views["frames"])
    held = {names[i] for i in held_out_frame_indices(len(names), 8)}
    out["held_out_frames"] = sorted(held)
    al_b, al_c, merge = read_json(blk / "alignment.json"), read_json(cls / "alignment.json"), read_json(cls / "merge.json")
    out["frames"] = len(names)
    out["registered_block"] = al_b["num_registered_frames"]
    out["registered_clusters"] = al_c["num_registered_frames"]
    out["per_cluster_registered"] = {c: v["num_reg_frames"] for c, v in merge["clusters"].items()}
    out["shared_centres"] = {k: merge["shared_centres"][k] for k in ("num_frames", "median_m", "max_m")}
    out["shared_centres_geo"] = {k: merge["shared_centres_geo"][k] for k in ("num_frames", "median_m", "max_m")}
    out["residual_block_m"], out["residual_clusters_m"] = al_b["median_residual_m"], al_c["median_residual_m"]
    out["gt_block_m"] = (al_b.get("ground_truth_error") or {}).get("median_m")
    bench = work / "bench"
    # block
    _without_frames(blk / "aligned", bench / "block" / "model", held, frame_of_image)
    out["train_block"] = _train(bench / "block" / "model", blk, bench / "block" / "splat", a.steps, a.threads, a.max_side)
    # clusters: placed (chain-aligned) model, held-out frames removed, steps / K each
    doc = read_clusters(cls / "clusters.json")
    k = len(doc["clusters"])
    out["clusters"] = {c["name"]: {"core": len(c["core"]), "members": len(c["members"])} for c in doc["clusters"]}
    splats, t_clusters, state = {}, 0.0, None
    if a.coarse_fraction > 0:  # the coarse pass over the merged model (held-out frames removed)
        n, c_steps, k_steps = coarse_schedule(a.steps, k, a.coarse_fraction)
        out["coarse"] = {"schedule": n, "steps": c_steps, "steps_per_cluster": k_steps}
        _without_frames(cls / "aligned", bench / "coarse" / "model", held, frame_of_image)
        state = bench / "coarse" / "state.pt"
        out["coarse"]["train"] = _train(bench / "coarse" / "model", cls, bench / "coarse" / "splat", n, a.threads,
                                        a.max_side, {"schedule_stop": a.coarse_fraction}, state_path=state)
        t_clusters += out["coarse"]["train"]["seconds"]
        out["eval_coarse"] = _evaluate(bench / "coarse" / "splat" / "splat.ply", cls / "aligned", cls, held,
                                       bench / "eval_coarse", a.max_side)
    for c in doc["clusters"]:
        d = bench / c["name"]
        place_cluster(cls / "clusters" / c["name"] / "aligned", cls / "merge.json", c["name"], d / "placed")
        _without_frames(d / "placed", d / "model", held, frame_of_image)
        if state is not None:
            extra, steps, kw = {"schedule_start": a.coarse_fraction}, out["coarse"]["schedule"], {"init_from": state}
        else:
            steps, kw = max(1, a.steps // k), {}
            extra = scaled_schedule(a.steps, steps) if a.cluster_schedule == "scaled" else {}
        out["cluster_train_options"] = extra
        r = _train(d / "model", cls, d / "splat", steps, a.threads, a.max_side, extra, **kw)
        t_clusters += r["seconds"]
        out["clusters"][c["name"]]["train"] = r
        splats[c["name"]] = read_splat_ply(d / "splat" / "splat.ply")
    merged, rep = merge_splats(splats, doc["clusters"])
    write_splat_ply(bench / "merged.ply", merged["means"], merged["scales"], merged["quats"], merged["opacities"],
                    merged["sh0"], merged["shN"])
    out["merge"] = rep
    out["train_clusters_s"] = t_clusters
    centres = np.array([c["centre_enu"] for c in doc["clusters"]])
    frames_enu = np.array([f["enu"] for f in views["frames"]])
    out["overlap_density"] = overlap_density(merged["means"], centres, frames_enu)
    out["overlap_density_block"] = block_density(work)
    if state is not None:
        out["overlap_density_coarse"] = overlap_density(read_splat_ply(bench / "coarse" / "splat" / "splat.ply")["means"],
                                                        centres, frames_enu)
    out["eval_block"] = _evaluate(bench / "block" / "splat" / "splat.ply", blk / "aligned", blk, held, bench / "eval_b",
                                  a.max_side)
    out["eval_clusters"] = _evaluate(bench / "merged.ply", cls / "aligned", cls, held, bench / "eval_c", a.max_side)
    out["shared_centres_loo"] = leave_one_out(work)
    (work / "bench_cluster.json").write_text(json.dumps(out, indent=1, default=str))
    return out


def block_density(work: Path) -> dict:
    """The same band/core density of the one-block splat, with the clusters' cells: the scene's
    own variation, against which the merged splat's ratio is read."""
    import numpy as np

    from splatforge_core.cluster import read_clusters
    from splatforge_core.io import read_json
    from splatforge_core.splat import read_splat_ply
    from splatforge_core.splat_merge import overlap_density

    cls = work / "work" / "clus"
    centres = np.array([c["centre_enu"] for c in read_clusters(cls / "clusters.json")["clusters"]])
    frames = np.array([f["enu"] for f in read_json(cls / "views.json")["frames"]])
    return overlap_density(read_splat_ply(work / "bench" / "block" / "splat" / "splat.ply")["means"], centres, frames)


def leave_one_out(work: Path) -> dict:
    """The merge's leave-one-shared-frame-out disagreement (out of sample), recomputed from the
    clusters' geo-aligned models of a finished run in ``work``."""
    import pycolmap

    from splatforge_core.cluster import read_clusters
    from splatforge_core.io import read_json
    from splatforge_core.sfm.merge import merge_models

    cls = work / "work" / "clus"
    doc = read_clusters(cls / "clusters.json")
    views = read_json(cls / "views.json")
    frame_of_image = {im: f["frame"] for f in views["frames"] for im in f["images"].values()}
    models = {c["name"]: pycolmap.Reconstruction(str(cls / "clusters" / c["name"] / "aligned")) for c in doc["clusters"]}
    _, rep = merge_models(models, {c["name"]: set(c["core"]) for c in doc["clusters"]}, frame_of_image)
    return rep["shared_centres_leave_one_frame_out"]


def _fmt(x, nd=3):
    return "n/a" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def table(r: dict) -> str:
    a = r["args"]
    eb, ec = r["eval_block"], r["eval_clusters"]
    dpsnr = None if eb["psnr"] is None or ec["psnr"] is None else ec["psnr"] - eb["psnr"]
    od = r["overlap_density"]
    sc = r["shared_centres"]
    loo = r.get("shared_centres_loo") or {}
    odb = r.get("overlap_density_block") or {}
    # the seam's doubling / hole: the merged splat against the splat the clusters started from
    # (the coarse pass), or without one against the one-block splat (no seams)
    odr = r.get("overlap_density_coarse") or odb
    ref_name = "coarse-pass" if r.get("overlap_density_coarse") else "one-block"
    rel = od["ratio"] / odr["ratio"] if od.get("ratio") and odr.get("ratio") else None
    co = r.get("coarse")
    gates = [
        ["merged held-out PSNR within 0.5 dB of one block", f"{_fmt(ec['psnr'], 2)} vs {_fmt(eb['psnr'], 2)} dB "
         f"(diff {_fmt(dpsnr, 2)})", "pass" if dpsnr is not None and dpsnr >= -0.5 else "FAIL"],
        ["every frame registered", f"clusters {r['registered_clusters']}/{r['frames']}, block "
         f"{r['registered_block']}/{r['frames']}", "pass" if r["registered_clusters"] == r["frames"] else "FAIL"],
        ["shared-frame centre disagreement < 0.05 m median", f"{_fmt(sc['median_m'], 4)} m (max {_fmt(sc['max_m'], 4)} m, "
         f"{sc['num_frames']} frames)", "pass" if sc["median_m"] is not None and sc["median_m"] < 0.05 else "FAIL"],
        [f"overlap-band density within 20 % of cores, seam measure: merged band/core over the {ref_name} "
         "splat's band/core (the gate)", f"{_fmt(rel)} ({_fmt(od['ratio'])} / {_fmt(odr.get('ratio'))})",
         "pass" if rel is not None and abs(rel - 1) <= 0.2 else "FAIL"],
        ["overlap-band density within 20 % of cores, as written: band/core of the merged splat alone (scene "
         "content, not the seam; kept for reference)", f"{_fmt(od['ratio'])} ({_fmt(od['band_per_m2'], 1)} vs "
         f"{_fmt(od['core_per_m2'], 1)} /m^2)", "(pass)" if od["ratio"] is not None and abs(od["ratio"] - 1) <= 0.2
         else "(FAIL)"],
    ]
    kept = ", ".join(f"{k} {v['kept']}/{v['trained']}" for k, v in r["merge"]["clusters"].items())
    split = ", ".join(f"{k} {v['core']}/{v['members']}" for k, v in r["clusters"].items())
    how = (f"coarse pass {co['steps']} of a {co['schedule']}-step schedule + {co['steps_per_cluster']} steps per cluster "
           f"(coarse_fraction {a['coarse_fraction']})" if co else
           f"no coarse pass, clusters' refinement schedule {a.get('cluster_schedule', 'trainer')}")
    lines = [f"## {time.strftime('%Y-%m-%d')}: demo {a['n_panoramas']} panoramas ({a['width']} px), {a['n_clusters']} clusters "
             f"vs one block, {a['steps']} total CPU steps at {a.get('max_side', 128)} px, {how}, {a['threads']} threads "
             f"({platform.processor() or platform.machine()})",
             "", "| gate | measured | result |", "|---|---|---|"]
    lines += [f"| {g} | {m} | {res} |" for g, m, res in gates]
    lines += ["", "| | one block | clusters |", "|---|---|---|",
              f"| held-out frames (same for both) | {', '.join(r['held_out_frames'])} | same |",
              f"| held-out PSNR (dB) / SSIM | {_fmt(eb['psnr'], 2)} / {_fmt(eb['ssim'])} | {_fmt(ec['psnr'], 2)} / "
              f"{_fmt(ec['ssim'])} |",
              f"| Gaussians | {r['train_block']['num_gaussians']} | {r['merge']['num_gaussians']} "
              f"({kept} kept/trained) |",
              *([f"| coarse pass: steps / held-out PSNR (dB) before the clusters | | {co['steps']} / "
                 f"{_fmt(r['eval_coarse']['psnr'], 2)} |"] if co else []),
              f"| training steps | {r['train_block'].get('steps', a['steps'])} | "
              + (f"{co['steps']} + " if co else "") + " + ".join(str(v["train"].get("steps")) for v in r["clusters"].values())
              + " |",
              f"| training wall (s) | {_fmt(r['train_block']['seconds'], 0)} | {_fmt(r['train_clusters_s'], 0)} (sum) |",
              f"| SfM workflow wall (s) | {_fmt(r['sfm_block_s'], 0)} | {_fmt(r['sfm_clus_s'], 0)} |",
              f"| GPS residual median (m) | {_fmt(r['residual_block_m'])} | {_fmt(r['residual_clusters_m'])} |",
              f"| clusters (core / members) | 1 | {split} |",
              f"| shared centres, each cluster geo-aligned alone (m, median) | | {_fmt(r['shared_centres_geo']['median_m'], 3)} |",
              f"| overlap-band / core density with the clusters' cells | {_fmt(odb.get('ratio'))} | {_fmt(od['ratio'])} "
              f"(merged / {ref_name}: {_fmt(rel)}) |",
              f"| shared centres, leave one shared frame out of the chain fit (m, median / max over "
              f"{loo.get('num_frames')} frames) | | {_fmt(loo.get('median_m'), 4)} / {_fmt(loo.get('max_m'), 4)} |",
              "", "The shared-frame disagreement is measured after the chain alignment that the merge fits on those same "
              "shared images (in-sample); the leave-one-frame-out row is out of sample; 'geo-aligned alone' is the "
              "disagreement without the chain alignment. The density gate as written compares the bands with the "
              "cores of the same splat, which measures where the scene has content as much as the seams; the seam "
              "measure divides it by the same ratio of the splat the clusters started from (the coarse pass; without "
              "one the one-block splat, which has no seams), so doubling shows as > 1 and holes as < 1.",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-panoramas", type=int, default=24)
    ap.add_argument("--n-clusters", type=int, default=2)
    ap.add_argument("--margin-m", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-side", type=int, default=128, help="training / evaluation image side (px)")
    ap.add_argument("--cluster-schedule", choices=["scaled", "trainer"], default="scaled",
                    help="clusters' refinement schedule: the block's scaled to their steps (default) or the trainer's own")
    ap.add_argument("--coarse-fraction", type=float, default=0.9,
                    help="share of the schedule trained as one coarse pass over the merged model before the clusters "
                         "continue it (cluster.coarse_fraction; 0 = none, each cluster trains steps / K from its SfM "
                         "points)")
    ap.add_argument("--workdir", default="/tmp/bench_cluster")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    ap.add_argument("--from-json", help="make the table from a finished run's bench_cluster.json")
    a = ap.parse_args(argv)
    from splatforge_core.log import setup_logging

    setup_logging()
    if a.from_json:
        r = json.loads(Path(a.from_json).read_text())
        r.setdefault("shared_centres_loo", leave_one_out(Path(r["args"]["workdir"]).resolve()))
        r.setdefault("overlap_density_block", block_density(Path(r["args"]["workdir"]).resolve()))
    else:
        r = run(a)
    md = table(r)
    print(md)
    if not a.no_write:
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        head = "# Clustered scenes (issue #12)\n\nWritten by `benchmarks/bench_cluster.py`.\n\n"
        old = RESULT.read_text() if RESULT.exists() else head
        RESULT.write_text(old.rstrip() + "\n\n" + md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
