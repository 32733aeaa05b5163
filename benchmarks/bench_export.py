"""Benchmark the export stage: Poisson, trim, decimate, UV, texture bake, files, per step.

Inputs:
* the demo result (``--demo``, default ``results/scene.ply``) when it exists (the trainer writes it), otherwise the
  real trained splats in ``../shared/data/ply`` (see SOURCES.md);
* a synthetic splat of ``--n`` (default 1,000,000) flat Gaussians on a 1 m sphere
  (:func:`splatforge_core.export.synthetic.sphere_splat`), default options
  (300k faces, 4096^2 texture, Poisson depth 9), all three formats written and read back.

Each input runs in a fresh subprocess pinned to ``--cores`` CPUs (``os.sched_setaffinity``)
with numba/OpenMP/BLAS threads set to that count; peak RSS is the child's VmHWM.

Usage: python benchmarks/bench_export.py [--n 1000000] [--cores 2] [--skip-real] [--picture docs/mesh_vs_splat.png]
Writes benchmarks/results/export.md and prints the same Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPLATFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))
STEPS = ["read", "normals", "poisson", "trim", "decimate", "uv", "bake", "write_verify", "total"]


def _child(ply: str, out: str, opts: dict, cores: int) -> None:
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
    sys.path.insert(0, str(REPO))
    from splatforge_core.export import main

    rep = main(ply, out, options=opts)
    with open("/proc/self/status") as fh:
        hwm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM"))
    print("RESULT " + json.dumps({"counts": rep["counts"], "timings_s": rep["timings_s"],
                                  "peak_rss_gb": round(hwm / 2 ** 30, 2),
                                  "verify": rep["verify"]}))


def run(label: str, ply: Path, opts: dict, cores: int, workdir: Path) -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(cores)
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from benchmarks.bench_export import _child; "
            f"_child({str(ply)!r}, {str(workdir / label)!r}, {json.dumps(opts)}, {cores})")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode or not line:
        raise RuntimeError(f"{label} failed:\n{p.stderr[-3000:]}")
    res = json.loads(line[0][7:])
    res["label"] = label
    res["wall_s"] = round(wall, 1)
    return res


def table(rows: list[dict], note: str) -> str:
    head = ["input", "Gaussians", "faces", "texture"] + STEPS + ["peak RSS GB"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        c, t = r["counts"], r["timings_s"]
        out.append("| " + " | ".join([r["label"], f"{c['gaussians_used']:,}", f"{c['faces']:,}",
                                       f"{c['texture_size']}^2"] + [f"{t.get(s, 0):.1f}" for s in STEPS]
                                      + [str(r["peak_rss_gb"])]) + " |")
    return "\n".join(out) + "\n\n" + note + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--demo", default=str(REPO / "results" / "scene.ply"),
                    help="the trained demo splat (default results/scene.ply from `make demo`)")
    ap.add_argument("--demo-aligned", default=str(REPO / "work" / "scene" / "aligned"),
                    help="the demo's aligned COLMAP model: its extent is the crop_box, as in the workflow")
    ap.add_argument("--picture", help="also write the mesh-vs-splat comparison PNG of the first real input")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from splatforge_core.export.synthetic import sphere_splat, write_ply

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_export.") as tmp:
        tmp = Path(tmp)
        inputs = []
        demo = Path(a.demo)
        if demo.is_file():
            demo_opts = {}
            if Path(a.demo_aligned).is_dir():
                from splatforge_core.export import crop_box_from_model

                demo_opts = {"crop_box": crop_box_from_model(a.demo_aligned)}
            inputs.append(("demo", demo, demo_opts))
        elif not a.skip_real:
            for name in ("mipsplat_sh0_45624.ply", "inria3dgs_layout_zero_sh_14051.ply"):
                if (SHARED / "ply" / name).is_file():
                    inputs.append((name.removesuffix(".ply"), SHARED / "ply" / name, {}))
        syn = write_ply(tmp / "sphere.ply", sphere_splat(a.n))
        inputs.append((f"synthetic sphere {a.n:,}", syn, {}))
        for label, ply, opts in inputs:
            r = run(label.replace(" ", "_").replace(",", ""), ply, opts, a.cores, tmp)
            r["label"] = label
            rows.append(r)
            print(f"{label}: {r['timings_s']}", file=sys.stderr)
            if a.picture and len(rows) == 1 and not label.startswith("synthetic"):
                from splatforge_core.export.preview import compare_png

                res = compare_png(ply, tmp / (label.replace(" ", "_") + ".glb"), a.picture)
                print(f"picture {a.picture}: {res}", file=sys.stderr)
    ncpu = os.cpu_count()
    note = (f"Seconds per step, default options (target 300k faces, 4096^2 texture, Poisson depth 9, "
            f"1 Poisson thread, k=8 Gaussians per texel), all of glb/obj/fbx written and read back. "
            f"Each run pinned to {a.cores} of {ncpu} cores (sched_setaffinity) on {platform.machine()} "
            f"{platform.processor() or ''}, Python {platform.python_version()}; measured "
            f"{time.strftime('%Y-%m-%d')} (load average at the end {os.getloadavg()[0]:.1f}: above ~1 means "
            "other jobs shared the machine and times are pessimistic). "
            "Target: 1M Gaussians in <= 300 s total on 2 cores."
            + ("" if demo.is_file() else f" {demo} did not exist when this ran (the trainer "
               "had not produced it), so the real trained splats from ../shared/data/ply stand in."))
    md = "# Export stage benchmark\n\n" + table(rows, note)
    outp = REPO / "benchmarks" / "results" / "export.md"
    outp.parent.mkdir(parents=True, exist_ok=True)
    outp.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
