"""Benchmark of the ``qat-3dgs-bundle`` preset (issue #20): PLY save and the four-way held-out comparison.

Scenes are Inria-layout folders (``point_cloud.ply``, ``cameras.json``, ``images/``: an extracted bundle).
``--make-demo DIR`` first writes one from the demo workflow's outputs (read-only source
``/work/main/work/scene``): its registered, undistorted views (``train.data.load_scene`` at the
trainer's resolution, frames from views.json, so the held-out split is the trainer's) and its splat.

    PYTHONPATH=. python benchmarks/bench_qat.py --make-demo /work/scratch/h20-qat/demo
    PYTHONPATH=. python benchmarks/bench_qat.py --scene demo=/work/scratch/h20-qat/demo \
        --iters 300 --max-side 160 --out benchmarks/results/qat.md

Each scene is encoded with :func:`splatforge_core.codec.qat_bundle.encode_folder`; the table
row and the full JSON report (``<work>/<scene>.report.json``) are written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path


def make_demo(out: Path, scene: Path = Path("/work/main/work/scene"), max_side: int = 320) -> None:
    """Inria folder of the demo scene: views at ``max_side`` (the demo trainer's resolution) + its splat."""
    from splatforge_core.inria import write_dataset
    from splatforge_core.train.data import load_scene

    data = load_scene(scene / "aligned", scene / "images", scene / "views.json", max_side=max_side)
    out.mkdir(parents=True, exist_ok=True)
    write_dataset(data.train + data.test, out)
    shutil.copyfile(scene / "splat" / "splat.ply", out / "point_cloud.ply")
    (out / "SOURCE").write_text(f"{scene}: load_scene(max_side={max_side}) views + splat/splat.ply\n")


def run_scene(name: str, root: Path, work: Path, iters: int, max_side: int | None, sh_bits: int | None = None) -> dict:
    from splatforge_core.codec import CodecOptions
    from splatforge_core.codec.qat_bundle import encode_folder

    work.mkdir(parents=True, exist_ok=True)
    opts = CodecOptions.from_dict({"finetune_iters": iters, "finetune_max_side": max_side, "sh_bits": sh_bits})
    t0 = time.perf_counter()
    tag = f"{name}.b{opts.sh_bits or 8}"
    res, extra = encode_folder(root, work / f"{tag}.qat.ply", opts)
    rep = {"scene": name, "size_bytes_in": res.size_in, "size_bytes_out": res.size_out,
           "ply_save_pct": round(100 * (1 - res.size_out / res.size_in), 2), "n_vertices": res.n_vertices,
           "constants_detected": list(res.constants), "wall_secs": round(time.perf_counter() - t0, 1), **extra}
    (work / f"{tag}.report.json").write_text(json.dumps(rep, indent=2))
    return rep


def reference(name: str, root: Path, work: Path, max_side: int) -> dict:
    """SPZ (splat-transform via ``formats.write_any`` / ``read_any``) and the ``quantised`` preset on the
    held-out views of ``root`` at ``max_side``: {"spz" | "quantised": {bytes, psnr, ssim}}."""
    from splatforge_core.codec import decompress, main as compress
    from splatforge_core.formats import read_any, write_any
    from splatforge_core.inria import load_views
    from splatforge_core.splat import read_splat_ply
    from splatforge_core.finetune import evaluate

    work.mkdir(parents=True, exist_ok=True)
    test = load_views(root, max_side=max_side, eval_every_n=8).test
    splat = read_splat_ply(root / "point_cloud.ply")
    out = {"input": {"bytes": (root / "point_cloud.ply").stat().st_size}}
    out["input"].update({k: v for k, v in evaluate(splat, test).items() if k in ("psnr", "ssim")})
    write_any(work / f"{name}.spz", splat)
    out["spz"] = {"bytes": (work / f"{name}.spz").stat().st_size}
    out["spz"].update({k: v for k, v in evaluate(read_any(work / f"{name}.spz"), test).items() if k in ("psnr", "ssim")})
    rep = compress(root / "point_cloud.ply", work / f"{name}.quantised.sfz", None, "quantised", {"evaluate_psnr": False})
    decompress(work / f"{name}.quantised.sfz", work / f"{name}.quantised.ply")
    q = read_splat_ply(work / f"{name}.quantised.ply")
    out["quantised"] = {"bytes": rep["size_bytes_out"]}
    out["quantised"].update({k: v for k, v in evaluate(q, test).items() if k in ("psnr", "ssim")})
    (work / f"{name}.reference.json").write_text(json.dumps(out, indent=1))
    return out


def row(r: dict) -> str:
    fw = r["four_way"]
    cells = [f"{fw[k]['psnr']:.3f} / {fw[k]['ssim']:.4f}" for k in ("input", "posthoc_int8", "qat", "fp32_finetune")]
    gate = "pass" if r["ply_save_pct"] >= 54 and r["delta_psnr_db"] >= -0.1 else "FAIL"
    return (f"| {r['scene']} | {r['n_vertices']} | {r['sh_degree']} | {r['sh_bits']} | {r['size_bytes_in']} | {r['size_bytes_out']} | "
            f"{r['ply_save_pct']:.2f} | {r['delta_psnr_db']:+.3f} | " + " | ".join(cells) +
            f" | {r['finetune_iters']} | {r['finetune_resolution']} | {r['train_wall_secs']:.0f} | {gate} |")


HEADER = ("| scene | Gaussians | SH | bits | bytes in | bytes out | save % | dPSNR (c-a) dB | (a) input PSNR/SSIM | "
          "(b) post-hoc int8 | (c) QAT | (d) fp32 finetune | iters | res | QAT finetune s | gate |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--make-demo", type=Path)
    ap.add_argument("--scene", action="append", default=[], help="name=inria_folder")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--max-side", type=int, default=None)
    ap.add_argument("--sh-bits", type=int, default=None, help="4..8 (default 8)")
    ap.add_argument("--reference", action="store_true",
                    help="instead of encoding: SPZ and the quantised preset on the same held-out views")
    ap.add_argument("--work", type=Path, default=Path("/work/scratch/h20-qat/bench"))
    ap.add_argument("--out", type=Path, default=None, help="append the rows to this markdown file")
    a = ap.parse_args()
    from splatforge_core.log import setup_logging

    setup_logging()
    if a.make_demo:
        make_demo(a.make_demo)
    rows = []
    for spec in a.scene:
        name, root = spec.split("=", 1)
        if a.reference:
            print(json.dumps(reference(name, Path(root), a.work, a.max_side or 96), indent=1))
            continue
        rep = run_scene(name, Path(root), a.work, a.iters, a.max_side, a.sh_bits)
        rows.append(row(rep))
        print(json.dumps({k: v for k, v in rep.items() if k != "finetune_logs"}, indent=1))
    if rows:
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        text = "\n".join([HEADER, *rows]) + f"\n\nMachine load at the end: `{load}` ({os.cpu_count()} cores).\n"
        print(text)
        if a.out:
            with open(a.out, "a") as f:
                f.write(text)


if __name__ == "__main__":
    main()
