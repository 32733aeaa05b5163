"""Scaling benchmark (issue #12): time and peak memory of pairs, matching, mapping and training
against the number of panoramas, one block vs clusters.

Usage::

    python benchmarks/bench_scale.py [--sizes 12 24 48] [--n-clusters 2] [--steps 60]
        [--workdir /tmp/bench_scale] [--threads 2] [--no-write]

For every size N the demo capture generator renders N panoramas (``spacing_m`` 1.0: 48 is the
most the demo court holds, see :class:`splatforge_core.demo.DemoOptions`; the path is an arc of
radius 16 m in a 40 x 30 m court, and 96 panoramas 1 m apart would be 96 m of arc, more than
the court's walls allow) and the workflow (Snakemake, the tests' tiny-style settings) runs two
scenes on it:

* ``block``: one cluster, up to its trained splat (``work/block/splat/splat.ply``);
* ``clus``: ``n_clusters`` clusters, up to the merged splat. Extraction, pairs and matching are
  scene-wide (issue #12), so the clustered scene starts from a copy of the block's matched
  database (same files, mtimes kept; ``--rerun-triggers mtime``) and runs the split, the
  per-cluster database subsets, mapping, geo-alignment, the sparse merge, the per-cluster
  training (the coarse pass over the merged model for ``cluster.coarse_fraction`` of the
  ``steps``-step schedule, then each cluster the rest, as the workflow does; before the coarse
  pass existed, ``steps`` each from its own SfM points) and the splat merge.

Time (``s``) and peak resident memory (``max_rss``, MB) come from the rules' Snakemake
benchmark TSVs. A clustered stage's time is the sum over its cluster jobs (the work to do; on
several machines the wall time would be the largest one, also listed), its memory the largest
job's. The growth exponent of every stage is the slope of a least-squares line through
(log N, log value). The number of pairs (``pairs.txt`` lines) checks that GPS-nearest pairing
keeps matching linear. Writes ``benchmarks/results/scale.md`` (a dated section) and
``<workdir>/bench_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULT = REPO / "benchmarks" / "results" / "scale.md"

#: files of the block scene the clustered scene reuses (the scene-wide stages up to matching)
SHARED = ("manifest.json", "views.json", "images", "masks", "colmap", "pairs.txt")


def _config(n: int, a: argparse.Namespace) -> dict:
    tiny = {"project": {"size": 256}}
    return {
        "default_scene": "block",
        "scenes": {"block": {"input": "work/demo/capture/images", **tiny, "cluster": {"n_clusters": 1}},
                   "clus": {"input": "work/demo/capture/images", **tiny, "cluster": {"n_clusters": a.n_clusters,
                                                                                "coarse_fraction": a.coarse_fraction}}},
        "demo": {"n_panoramas": n, "width": a.width, "seed": 0, "gps_sigma_m": 2.0, "spacing_m": 1.0},
        "project": {"size": 256, "num_azimuths": 6, "elevations_deg": [-45, 0, 45], "workers": a.threads},
        "sfm": {"extract": {"max_image_size": 256}, "pairs": {"num_neighbors": 6}, "match": {}, "map": {"mapper": "global"}},
        "align": {},
        "train": {"cpu_iterations": a.steps, "cpu_max_side": 64, "checkpoint_every": a.steps, "sky_points": 2000,
                  "cpu_max_gaussians": 30000},
        "export": {}, "compress": {"preset": "qat-3dgs"}, "use_gpu": False,
    }


def _snakemake(work: Path, targets: list[str], threads: int, *extra: str) -> float:
    t0 = time.perf_counter()
    cmd = [str(Path(sys.executable).parent / "snakemake"), *targets, "-s", str(REPO / "Snakefile"), "--directory",
           str(work), "--configfile", str(work / "config.yaml"), "--cores", str(threads), *extra]
    with open(work / "snakemake.log", "a") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
    return time.perf_counter() - t0


def _num(x: str | None) -> float | None:
    return None if x in (None, "-", "NA", "") else float(x)


def read_tsv(path: Path) -> dict:
    """Last row of a Snakemake benchmark TSV: ``{"s": wall seconds, "cpu_s": CPU seconds, "max_rss": MB}``."""
    head, *rows = path.read_text().strip().splitlines()
    row = dict(zip(head.split("\t"), rows[-1].split("\t")))
    return {"s": float(row["s"]), "cpu_s": _num(row.get("cpu_time")), "max_rss": _num(row.get("max_rss"))}


def stage(paths: list[Path]) -> dict | None:
    """Sum of the jobs' wall and CPU times, largest job's wall time and largest ``max_rss`` (None: no TSV)."""
    rows = [read_tsv(p) for p in paths if p.is_file()]
    if not rows:
        return None
    rss = [r["max_rss"] for r in rows if r["max_rss"] is not None]
    cpu = [r["cpu_s"] for r in rows if r["cpu_s"] is not None]
    return {"s": sum(r["s"] for r in rows), "cpu_s": sum(cpu) if cpu else None, "s_max_job": max(r["s"] for r in rows),
            "max_rss": max(rss) if rss else None, "jobs": len(rows)}


def run_size(n: int, a: argparse.Namespace) -> dict:
    """Both arms at ``n`` panoramas; the stage numbers of each."""
    import yaml


    work = Path(a.workdir).resolve() / f"n{n}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(_config(n, a)))
    out: dict = {"n": n}
    out["block_wall_s"] = _snakemake(work, ["work/block/splat/splat.ply"], a.threads)
    blk, cls = work / "work" / "block", work / "work" / "clus"
    cls.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        src, dst = blk / name, cls / name
        if not dst.exists():
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    out["clus_wall_s"] = _snakemake(work, ["work/clus/splat/splat.ply"], a.threads, "--rerun-triggers", "mtime")
    out.update(collect(work))
    return out


def collect(work: Path) -> dict:
    """Stage numbers of a finished size's workdir (``<workdir>/n<N>``): the TSVs, pairs, views,
    registration and cluster sizes."""
    from splatforge_core.io import read_json

    blk, cls = work / "work" / "block", work / "work" / "clus"
    out: dict = {}
    b = blk / "benchmarks"
    cdirs = sorted((cls / "clusters").glob("c*"))
    out["block"] = {"pairs": stage([b / "sfm_pairs.tsv"]), "match": stage([b / "sfm_match.tsv"]),
                    "extract": stage([b / "sfm_extract.tsv"]), "map": stage([b / "sfm_map.tsv"]),
                    "align": stage([b / "sfm_align.tsv"]), "train": stage([b / "train.tsv"])}
    out["clusters"] = {"split": stage([cls / "benchmarks" / "cluster.tsv"]),
                       "database": stage([d / "benchmarks" / "sfm_cluster_database.tsv" for d in cdirs]),
                       "map": stage([d / "benchmarks" / "sfm_map.tsv" for d in cdirs]),
                       "align": stage([d / "benchmarks" / "sfm_align.tsv" for d in cdirs]),
                       "merge": stage([cls / "benchmarks" / "sfm_merge.tsv"]),
                       # the coarse pass over the merged model (cluster.coarse_fraction) and the clusters
                       "train": stage([cls / "benchmarks" / "train_coarse.tsv", *(d / "benchmarks" / "train.tsv"
                                                                                  for d in cdirs)]),
                       "splat_merge": stage([cls / "benchmarks" / "splat_merge.tsv"])}
    # a size stopped part-way (time ran out) keeps the stages it finished
    pairs, views = blk / "pairs.txt", blk / "views.json"
    out["num_pairs"] = sum(1 for line in pairs.read_text().splitlines() if line.strip()) if pairs.is_file() else None
    out["num_views"] = sum(len(f["images"]) for f in read_json(views)["frames"]) if views.is_file() else None
    al_b, al_c = blk / "alignment.json", cls / "alignment.json"
    out["registered"] = {"block": read_json(al_b)["num_registered_frames"] if al_b.is_file() else None,
                         "clusters": read_json(al_c)["num_registered_frames"] if al_c.is_file() else None}
    cj = cls / "clusters.json"
    out["cluster_sizes"] = [len(c["members"]) for c in read_json(cj)["clusters"]] if cj.is_file() else []
    return out


def exponent(ns: list[float], ys: list[float | None]) -> float | None:
    """Least-squares slope of log y against log n (None with fewer than 2 positive values)."""
    import numpy as np

    pts = [(x, y) for x, y in zip(ns, ys) if y is not None and y > 0]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def _f(x, nd=1):
    return "n/a" if x is None else f"{x:.{nd}f}"


def table(r: dict) -> str:
    a, runs = r["args"], r["runs"]
    ns = [x["n"] for x in runs]
    rows = [("pairs", "block", "pairs"), ("matching", "block", "match"), ("(extraction)", "block", "extract"),
            ("mapping, one block", "block", "map"), ("mapping, clusters (sum)", "clusters", "map"),
            ("geo-alignment, one block", "block", "align"), ("geo-alignment, clusters (sum)", "clusters", "align"),
            ("split + database subsets + sparse merge", "clusters", None),
            ("training, one block", "block", "train"), ("training, coarse pass + clusters (sum)", "clusters", "train")]
    lines = [f"## {time.strftime('%Y-%m-%d')}: demo at {', '.join(map(str, ns))} panoramas ({a['width']} px, 1.0 m apart), "
             f"one block vs {a['n_clusters']} clusters, a {a['steps']}-step CPU training schedule at 64 px (the "
             f"clustered arm: the coarse pass and the clusters share it, cluster.coarse_fraction "
             f"{a.get('coarse_fraction', 0.9)}), "
             f"{a['threads']} threads ({platform.processor() or platform.machine()}, shared machine)", "",
             "CPU seconds / wall seconds / peak memory (max_rss, MB) from the rules' benchmark TSVs (on a machine "
             "shared with other jobs wall times are inflated and noisy; the exponents use "
             "CPU time); exponent = least-squares slope of log(value) on log(panoramas).", "",
             "| stage | " + " | ".join(f"N={n}: CPU s / wall s / MB" for n in ns) + " | CPU-time exponent | memory exponent |",
             "|---|" + "---|" * len(ns) + "---|---|"]
    for label, arm, key in rows:
        if key is None:
            vals = []
            for x in runs:
                parts = [x["clusters"].get(k) for k in ("split", "database", "merge")]
                parts = [p for p in parts if p]
                vals.append({"s": sum(p["s"] for p in parts), "cpu_s": sum(p.get("cpu_s") or 0 for p in parts),
                             "max_rss": max((p["max_rss"] or 0) for p in parts)}
                            if parts else None)
        else:
            vals = [x[arm].get(key) for x in runs]
        cells = [f"{_f(v.get('cpu_s'))} / {_f(v['s'])} / {_f(v['max_rss'], 0)}" if v else "n/a" for v in vals]
        et = exponent(ns, [v.get("cpu_s") if v else None for v in vals])
        em = exponent(ns, [v["max_rss"] if v else None for v in vals])
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_f(et, 2)} | {_f(em, 2)} |")
    lines += ["", "| | " + " | ".join(f"N={n}" for n in ns) + " | exponent |", "|---|" + "---|" * len(ns) + "---|",
              "| views | " + " | ".join(str(x["num_views"]) for x in runs) + " | |",
              "| image pairs (pairs.txt) | " + " | ".join(str(x["num_pairs"]) for x in runs)
              + f" | {_f(exponent(ns, [x['num_pairs'] for x in runs]), 2)} |",
              "| largest cluster's mapping (s) | " + " | ".join(
                  _f((x["clusters"]["map"] or {}).get("s_max_job")) for x in runs)
              + f" | {_f(exponent(ns, [(x['clusters']['map'] or {}).get('s_max_job') for x in runs]), 2)} |",
              "| cluster sizes (frames) | " + " | ".join("/".join(map(str, x["cluster_sizes"])) for x in runs) + " | |",
              "| registered frames, block / clusters | " + " | ".join(
                  f"{x['registered']['block']}/{x['registered']['clusters']} of {x['n']}" for x in runs) + " | |",
              "| run complete | " + " | ".join("no: stopped part-way" if x.get("partial") else "yes" for x in runs) + " | |",
              "| workflow wall, block / clusters (s) | " + " | ".join(
                  f"{_f(x['block_wall_s'], 0)} / {_f(x['clus_wall_s'], 0)}" for x in runs) + " | |", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[12, 24, 48])
    ap.add_argument("--n-clusters", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--coarse-fraction", type=float, default=0.9, help="cluster.coarse_fraction of the clustered arm")
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/bench_scale")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    ap.add_argument("--from-json", help="make the table from a finished run's bench_scale.json")
    ap.add_argument("--partial", type=int, nargs="*", default=[],
                    help="with --from-json: sizes stopped part-way whose finished stages are added from their workdir")
    a = ap.parse_args(argv)
    from splatforge_core.log import setup_logging

    setup_logging()
    if a.from_json:
        r = json.loads(Path(a.from_json).read_text())
        for x in r["runs"]:  # re-read the TSVs (CPU time was added after the first runs)
            w = Path(r["args"]["workdir"]).resolve() / f"n{x['n']}"
            if w.is_dir():
                x.update(collect(w))
        for n in a.partial:
            r["runs"].append({"n": n, "partial": True, "block_wall_s": None, "clus_wall_s": None,
                              **collect(Path(r["args"]["workdir"]).resolve() / f"n{n}")})
    else:
        r = {"args": vars(a), "runs": []}
        path = Path(a.workdir).resolve() / "bench_scale.json"
        for n in a.sizes:
            r["runs"].append(run_size(n, a))
            path.write_text(json.dumps(r, indent=1))  # partial results survive a stop
    md = table(r)
    print(md)
    if not a.no_write:
        head = "# Scaling (issue #12)\n\nWritten by `benchmarks/bench_scale.py`.\n\n"
        old = RESULT.read_text() if RESULT.exists() else head
        RESULT.write_text(old.rstrip() + "\n\n" + md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
