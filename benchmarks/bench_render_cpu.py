"""Benchmark the CPU Gaussian rasteriser: forward+backward time and peak memory.

Scene: N Gaussians uniformly in a frustum 2-8 m in front of one pinhole camera
(fx = fy = 0.8 * width), log-normal scales around 3 cm (so the average splat covers a few
16x16 tiles at 256x256), random rotations, opacities U(0.1, 1), SH degree 3.
Each configuration runs in a fresh subprocess (so VmHWM is that configuration's peak);
time = median of ``--iters`` forward+backward passes after 2 warm-up passes (the first
includes Numba compilation / cache load).

Usage: python benchmarks/bench_render_cpu.py [--threads 2] [--iters 10]
Writes benchmarks/results/render_cpu.md and prints the same Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = [(128, 128, 5000), (256, 256, 20000), (512, 512, 50000)]


def _vm(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def run_one(width: int, height: int, n: int, threads: int, iters: int) -> dict:
    import math

    import torch

    torch.set_num_threads(threads)
    from splatforge_core.render import cpu_rasterization

    g = torch.Generator().manual_seed(0)
    fx = 0.8 * width
    z = torch.rand(n, generator=g) * 6 + 2
    x = (torch.rand(n, generator=g) - 0.5) * z * width / fx
    y = (torch.rand(n, generator=g) - 0.5) * z * height / fx
    means = torch.stack([x, y, z], -1).requires_grad_(True)
    quats = torch.randn(n, 4, generator=g).requires_grad_(True)
    log_s = torch.randn(n, 3, generator=g) * 0.5 + math.log(0.03)
    scales_p = log_s.requires_grad_(True)
    opac_p = torch.logit(torch.rand(n, generator=g) * 0.9 + 0.1).requires_grad_(True)
    sh = (torch.randn(n, 16, 3, generator=g) * 0.2).requires_grad_(True)
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[[fx, 0, width / 2], [0, fx, height / 2], [0, 0, 1]]])
    target = torch.rand(1, height, width, 3, generator=g)
    rss0 = _vm("VmRSS")

    def step():
        img, alpha, info = cpu_rasterization(
            means, quats, torch.exp(scales_p), torch.sigmoid(opac_p), sh, viewmats, Ks,
            width, height, sh_degree=3)
        loss = (img - target).abs().mean()
        loss.backward()
        return info

    t0 = time.perf_counter()
    info = step()
    first = time.perf_counter() - t0
    step()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    n_isect = int(info["flatten_ids"].numel())
    return {"width": width, "height": height, "n": n, "threads": threads,
            "median_s": times[len(times) // 2], "min_s": times[0], "first_s": first,
            "peak_rss_mb": _vm("VmHWM") / 2**20, "base_rss_mb": rss0 / 2**20,
            "isect_per_gauss": n_isect / n,
            "visible": int((info["radii"] > 0).all(-1).sum())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--note", default="describe the machine load here (--note)")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(*args.child, args.threads, args.iters)))
        return 0
    root = Path(__file__).resolve().parents[1]
    rows = []
    for w, h, n in CONFIGS:
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
                   NUMBA_NUM_THREADS=str(args.threads))
        out = subprocess.run([sys.executable, __file__, "--child", str(w), str(h), str(n),
                              "--threads", str(args.threads), "--iters", str(args.iters)],
                             capture_output=True, text=True, cwd=root, env=env, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    lines = [
        f"# CPU rasteriser (splatforge_core.render.cpu), {args.threads} threads",
        "",
        f"Note: {args.note}. Forward+backward incl. projection, SH degree 3, L1 loss; "
        f"median of {args.iters} after warm-up. Peak RSS = VmHWM of a fresh process "
        "(includes torch/gsplat/numba imports, = 'base').",
        "",
        "| size | Gaussians | visible | isect/Gaussian | median fwd+bwd (s) | min (s) "
        "| first call (s) | peak RSS (MB) | base RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['width']}x{r['height']} | {r['n']} | {r['visible']} | "
                     f"{r['isect_per_gauss']:.2f} | {r['median_s']:.3f} | {r['min_s']:.3f} | "
                     f"{r['first_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['base_rss_mb']:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out_path = root / "benchmarks" / "results" / "render_cpu.md"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    from splatforge_core.io import atomic_path

    with atomic_path(out_path) as tmp:
        Path(tmp).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
