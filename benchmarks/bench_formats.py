"""Ecosystem formats (#16) next to the codec presets: file size and render PSNR of .splat, SPZ and
SOG written from real splats, with the codec benchmark's protocol (8 orbit views at 256x256, CPU
rasteriser, the decoded splat vs the original: splatforge_core.codec.quantised.render_psnr).

    python benchmarks/bench_formats.py [--out benchmarks/results/formats_table.md]

Prints a Markdown table (and writes it to --out when given). Needs the shared data and the npm
packages of vendor/js (scripts/install.sh).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import plyfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from splatforge_core.codec.quantised import render_psnr  # noqa: E402
from splatforge_core.formats import read_any, write_any  # noqa: E402
from splatforge_core.splat import write_splat_ply  # noqa: E402

DATA = Path(os.environ.get("SPLATFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))
FILES = ["ply/inria3dgs_layout_zero_sh_14051.ply", "ply/inria3dgs_sh3_9080.ply", "ply/mipsplat_sh0_45624.ply",
         "splat/plant.splat"]


def _vertices(splat: dict, tmp: Path, name: str):
    p = tmp / f"{name}.ply"
    write_splat_ply(p, splat["means"], splat["scales"], splat["quats"], splat["opacities"], splat["sh0"], splat["shN"])
    return plyfile.PlyData.read(str(p))["vertex"].data, p.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    a = ap.parse_args()
    rows = ["| file | format | Gaussians | PLY MB | out MB | ratio | write s | render PSNR dB |", "|---|---|---:|---:|---:|---:|---:|---|"]
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for rel in FILES:
            src = DATA / rel
            orig = read_any(src)
            v0, ply_bytes = _vertices(orig, tmp, "orig")
            for fmt in (".splat", ".spz", ".sog"):
                out = tmp / f"x{fmt}"
                t0 = time.perf_counter()
                write_any(out, orig)
                dt = time.perf_counter() - t0
                back = read_any(out)
                v1, _ = _vertices(back, tmp, "back")
                r = render_psnr(v0, v1)
                ps = "identical" if r["psnr_db"] == float("inf") else f"{r['psnr_db']:.1f} (min view {r['psnr_min_view_db']:.1f})"
                rows.append(f"| {src.name} | {fmt} | {len(orig['means']):,} | {ply_bytes / 1e6:.2f} | "
                            f"{out.stat().st_size / 1e6:.2f} | {ply_bytes / out.stat().st_size:.2f}x | {dt:.1f} | {ps} |")
                print(rows[-1], flush=True)
    text = "\n".join(rows) + "\n"
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
