"""Benchmark of the training stage: held-out PSNR / wall time, and CPU seconds per step.

Usage::

    # a real scene (e.g. the demo after sfm align), CPU defaults, 2 threads:
    python benchmarks/bench_train.py scene --aligned work/demo/aligned --images work/demo/images \
        --views work/demo/views.json --name demo [--set iterations=2000 ...]

    # CPU seconds per training step on a synthetic scene at the CPU default resolution
    # (cpu_max_side x cpu_max_side views, like the demo's square panorama views), no
    # densification, for several Gaussian counts:
    python benchmarks/bench_train.py speed [--counts 10000 30000 100000] [--steps 40]

Prints a Markdown table and writes (appends a section to) ``benchmarks/results/train.md``.
Gate (issue): demo capture, CPU default, 2 cores: held-out PSNR >= 25 dB within 15 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULT = REPO / "benchmarks" / "results" / "train.md"


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(n))


def _load_note() -> str:
    try:
        la = os.getloadavg()[0]
    except OSError:
        la = float("nan")
    return f"{platform.node()}, {os.cpu_count()} cores, load average {la:.2f} at start"


def _write(section: str) -> None:
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    old = RESULT.read_text() if RESULT.exists() else "# Training benchmarks (splatforge_core.train)\n"
    RESULT.write_text(old.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n")


def bench_scene(args) -> str:
    from splatforge_core.log import setup_logging
    from splatforge_core.train import main

    setup_logging()
    opts = {"device": "cpu"}
    for item in args.set:
        k, v = item.split("=", 1)
        try:
            opts[k] = json.loads(v)
        except json.JSONDecodeError:
            opts[k] = v
    out = Path(args.out or tempfile.mkdtemp(prefix=f"bench_train_{args.name}_"))
    note = _load_note()
    t0 = time.perf_counter()
    m = main(args.aligned, args.images, args.views, out / "splat", out / f"{args.name}.ply", opts)
    wall = time.perf_counter() - t0
    fin = m["final"]
    ok = fin.get("psnr", 0) >= 25 and wall <= 900
    rows = [
        f"## Scene `{args.name}` on CPU ({args.threads} threads)",
        "",
        f"Machine: {note}. Options: `{json.dumps({k: v for k, v in opts.items()})}` (rest default).",
        "",
        "| scene | views train/test | resolution | iterations | Gaussians | held-out PSNR (dB) | SSIM | "
        "train s | s/step | wall s (incl. load, eval, PLY) | gate 25 dB in 15 min |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {args.name} | {m['n_train_views']}/{m['n_test_views']} | {m['resolution']['first_train_view'][0]}x"
        f"{m['resolution']['first_train_view'][1]} | {m['iterations']} | {m['num_gaussians']} | "
        f"{fin.get('psnr', float('nan')):.2f} | {fin.get('ssim', float('nan')):.4f} | {m['train_seconds']:.0f} | "
        f"{m['sec_per_iter']:.3f} | {wall:.0f} | {'PASS' if ok else 'FAIL'} |",
        "",
        "Held-out PSNR during the run (step: dB @ Gaussians): "
        + ", ".join(f"{e['step']}: {e['psnr']:.2f} @ {e['num_gaussians']}" for e in m["evals"] if "psnr" in e)
        + f". Load average at end: {_load_note().rsplit('load average ', 1)[-1].replace(' at start', '')}.",
        "",
        f"LPIPS: {m['lpips_note']}. Outputs in `{out}`.",
    ]
    return "\n".join(rows)


def bench_speed(args) -> str:
    import torch

    from splatforge_core.log import setup_logging
    from splatforge_core.train import TrainOptions, main
    from splatforge_core.train.synthetic import make_synthetic_scene

    setup_logging("WARNING")
    side = TrainOptions().cpu_max_side
    note = _load_note()
    rows = [f"## CPU seconds per training step ({args.threads} threads, synthetic scene)", "",
            f"Machine: {note}. Synthetic scene (`splatforge_core.train.synthetic`), 12 views of "
            f"{side}x{side} (= `cpu_max_side`, the demo's square views after CPU downscaling), SH degree 3 "
            f"active from step 0, L1+SSIM, Adam, DefaultStrategy statistics but no densification "
            f"(Gaussian count fixed), {args.steps} steps each; includes data transfer and optimiser.", "",
            "CPU s/step = process CPU time (all threads, incl. scene load/PLY, so an upper bound) per step; "
            "'uncontended est.' = CPU s/step / threads, the wall time per step if the threads had the cores "
            "to themselves (numba/OpenMP spin-waiting under contention inflates CPU time, so this is "
            "pessimistic too).", "",
            "| Gaussians | wall s/step | CPU s/step | uncontended est. s/step | steps in 14 min (wall) | "
            "steps in 14 min (est.) |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.counts:
            p = make_synthetic_scene(Path(tmp) / f"s{n}", n_cameras=12, width=side, height=side,
                                     n_gaussians=max(n, 2000), n_points=n, seed=0)
            c0 = time.process_time()
            m = main(p["aligned"], p["images"], None, Path(tmp) / f"o{n}", Path(tmp) / f"o{n}.ply",
                     {"device": "cpu", "iterations": args.steps, "refine_start": 10 ** 6, "sh_degree_interval": 1,
                      "eval_every_n": 0, "eval_steps": [], "progress": False, "checkpoint_every": 10 ** 6})
            cpu = (time.process_time() - c0) / args.steps
            spi = m["sec_per_iter"]
            est = cpu / args.threads
            rows.append(f"| {m['num_gaussians']} | {spi:.3f} | {cpu:.3f} | {est:.3f} | {int(840 / spi)} | "
                        f"{int(840 / est)} |")
            print(rows[-1], flush=True)
    del torch
    return "\n".join(rows)


def main_cli() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch/numba threads (2 = the gate's setting)")
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("scene", help="train a real scene on CPU, report PSNR and time")
    s.add_argument("--aligned", required=True)
    s.add_argument("--images", required=True)
    s.add_argument("--views", default=None)
    s.add_argument("--name", default="scene")
    s.add_argument("--out", default=None, help="output folder (default: a temp folder)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="train option override")
    sp = sub.add_parser("speed", help="CPU s/step at the CPU default resolution (synthetic)")
    sp.add_argument("--counts", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    sp.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    _threads(args.threads)
    table = bench_scene(args) if args.mode == "scene" else bench_speed(args)
    print(table)
    _write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main_cli())
