"""Niantic SPZ's own C++ encoder side by side with the ``quantised`` preset (#20).

Per file: SPZ's ``ply_to_spz`` (C++, zstd level 12, one thread per stream) wall time, our
``quantised`` encoder (``splatforge_core.codec.quantised.encode_quantised`` without the
optional render PSNR; the in-process decode self-check included) before the #20 speed-up
(the module as of commit ``880670f``, loaded from git) and after, the ratio, the output sizes,
and the render PSNR of each decoded splat against the original (the protocol of
``benchmarks/results/codec.md``: 8 orbit views at 256x256, ``quantised.orbit_cameras`` /
``render_splat``, CPU rasteriser; SPZ decoded with its own ``spz_to_ply``). Also our encoder
with ``zstd_level`` 12 (SPZ's level) and 3, to show what the default level 16 costs: the
default output must stay byte-identical, so only an explicit option changes the level.

Building SPZ (nianticlabs/spz at commit 21715c3b7a609ea6fb7c69b8ae42181a12b59f22; needs
cmake, g++, zlib1g-dev and libzstd-dev from apt)::

    git -C SPZ_REPO archive HEAD CMakeLists.txt cmake src cli_tools LICENSE | tar -x -C spz-src
    cmake -S spz-src -B /work/scratch/h20-spz/spz-build -DCMAKE_BUILD_TYPE=Release
    cmake --build /work/scratch/h20-spz/spz-build -j 2

Usage (from the repository root)::

    python benchmarks/bench_spz.py [--spz-build DIR] [--files A.ply B.ply ...] [--synthetic N] [--out MD]

Default files: every PLY in ``../shared/data/ply``, the demo splat (``work/scene/splat/splat.ply``
of the main checkout, if present) and a synthetic SH3 PLY of ``--synthetic`` Gaussians (200,000;
written to a temporary folder; no PSNR: its SH are white noise). Timings: median of ``--repeats``
(3) runs, a third of them for files above 20 MB, the variants interleaved, warm page cache; the machine's load (``uptime``) is recorded
since the machine is shared.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from splatforge_core.codec import CodecOptions, decompress  # noqa: E402
from splatforge_core.codec import quantised as Q  # noqa: E402
from splatforge_core.codec.layout import map_file, parse_header, read_body  # noqa: E402
from splatforge_core.codec.synthetic import synthetic_splat, write_ply  # noqa: E402

SHARED = Path(os.environ.get("SPLATFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))
BEFORE_COMMIT = "880670f"


def load_before(tmp: Path):
    """The ``quantised`` module as of :data:`BEFORE_COMMIT` (the encoder before #20), imported
    inside the package so its relative imports resolve."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{BEFORE_COMMIT}:splatforge_core/codec/quantised.py"],
                         check=True, capture_output=True).stdout
    path = tmp / "quantised_before.py"
    path.write_bytes(src)
    spec = importlib.util.spec_from_file_location("splatforge_core.codec._quantised_before", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def timed(fns: dict, repeats: int) -> dict:
    """Median wall and CPU seconds of each zero-argument callable in ``fns``, the repeats interleaved
    (A B C A B C ...) so that every variant sees the same share of a shared machine's load.

    CPU seconds = user + system time of this process (all its threads) and of its waited-for
    children (the SPZ subprocess): far less sensitive to other jobs than wall time.
    Returns {name: (wall_s, cpu_s)}.
    """
    import resource

    def cpu() -> float:
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    ts: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t, c = time.perf_counter(), cpu()
            fn()
            ts[k].append((time.perf_counter() - t, cpu() - c))
    return {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in ts.items()}


def vertices(path: Path) -> np.ndarray:
    return read_body(parse_header(path), map_file(path)).vertices


def psnr_vs(ref_imgs: np.ndarray, v: np.ndarray, vm, Ks, size: int) -> tuple[float, float]:
    """(pooled PSNR dB, worst view dB) of the renders of ``v`` against ``ref_imgs`` [V, H, W, 3]."""
    b = Q.render_splat(v, vm, Ks, size)
    mse = ((ref_imgs.astype(np.float64) - b) ** 2).reshape(len(b), -1).mean(1)
    db = lambda m: float("inf") if m == 0 else 10 * math.log10(1 / m)  # noqa: E731
    return db(float(mse.mean())), min(db(float(m)) for m in mse)


def bench_file(src: Path, tmp: Path, spz_build: Path, before, repeats: int, psnr: bool) -> dict:
    size_in = src.stat().st_size
    reps = max(1, repeats // 3) if size_in > 20e6 else repeats
    label = f"{src.parent.parent.name}/{src.name}" if src.name == "splat.ply" else src.name
    row: dict = {"file": label, "gaussians": len(vertices(src)), "ply_bytes": size_in}
    spz_out, spz_back = tmp / "out.spz", tmp / "spz_back.ply"
    run = lambda *a: subprocess.run([str(x) for x in a], check=True, capture_output=True)  # noqa: E731
    opts = CodecOptions(evaluate_psnr=False)
    ours, ours_before = tmp / "after.sfz", tmp / "before.sfz"
    o12, o3 = CodecOptions(evaluate_psnr=False, zstd_level=12), CodecOptions(evaluate_psnr=False, zstd_level=3)
    t = timed({"spz": lambda: run(spz_build / "ply_to_spz", src, spz_out),
               "after": lambda: Q.encode_quantised(src, ours, opts),
               "before": lambda: before.encode_quantised(src, ours_before, opts),
               "l12": lambda: Q.encode_quantised(src, tmp / "l12.sfz", o12),
               "l3": lambda: Q.encode_quantised(src, tmp / "l3.sfz", o3)}, reps)
    for k, (w, c) in t.items():
        row[f"{k}_s"], row[f"{k}_cpu"] = w, c
    row["spz_bytes"] = spz_out.stat().st_size
    run(spz_build / "spz_to_ply", spz_out, spz_back)
    row["identical"] = ours.read_bytes() == ours_before.read_bytes()
    row["sfz_bytes"] = ours.stat().st_size
    for lvl in (12, 3):
        row[f"l{lvl}_bytes"] = (tmp / f"l{lvl}.sfz").stat().st_size
    decompress(ours, tmp / "back.ply")
    decompress(tmp / "l3.sfz", tmp / "back3.ply")  # only the zstd level differs: the same decoded PLY
    row["l3_same_decode"] = (tmp / "back.ply").read_bytes() == (tmp / "back3.ply").read_bytes()
    if psnr:
        orig = vertices(src)
        vm, Ks = Q.orbit_cameras(Q._cols(orig, ["x", "y", "z"]), 8, 256)
        ref = Q.render_splat(orig, vm, Ks, 256)
        row["psnr_sfz"] = psnr_vs(ref, vertices(tmp / "back.ply"), vm, Ks, 256)
        row["psnr_spz"] = psnr_vs(ref, vertices(spz_back), vm, Ks, 256)
    return row


def fmt_psnr(p) -> str:
    return "n/a" if p is None else f"{p[0]:.1f} (min view {p[1]:.1f})"


def table(rows: list[dict], load: str, cmd: str) -> str:
    mb = lambda b: f"{b / 1e6:.2f}"  # noqa: E731
    lines = [
        "# SPZ's C++ encoder vs the `quantised` preset (#20)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs, Python {platform.python_version()}; "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Load average (`uptime`) before / after: {load}.",
        f"Reproduce: `{cmd}` (SPZ build steps in the script's docstring).",
        "",
        "Encode time in seconds, wall / CPU (user + system of all threads; CPU time is what the load of other jobs "
        "disturbs least): SPZ = `ply_to_spz` (C++, PLY read + pack + zstd level 12, streams in parallel threads); "
        "ours = `encode_quantised` (PLY map + quantise + zstd level 16 + the in-process decode self-check; no render "
        "PSNR), before = the encoder of commit 880670f, after = this commit; runs interleaved, median of the repeats; "
        "`identical`: the two .sfz are byte for byte equal. Sizes in MB (1e6 bytes). PSNR: decoded splat vs the "
        "original, 8 orbit views at 256x256. The level 12 / 3 outputs decode to the same PLY as level 16 "
        f"(checked: {'yes' if all(r['l3_same_decode'] for r in rows) else '**no**'}), so they have the same PSNR.",
        "",
        "| file | Gaussians | PLY MB | SPZ s | ours before s | ours after s | after / SPZ (wall, CPU) | identical | SPZ MB "
        "| .sfz MB | .sfz lvl 12: s / MB | .sfz lvl 3: s / MB | PSNR SPZ dB | PSNR .sfz dB |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        wc = lambda k: f"{r[k + '_s']:.2f} / {r[k + '_cpu']:.2f}"  # noqa: E731
        lines.append(
            f"| {r['file']} | {r['gaussians']:,} | {mb(r['ply_bytes'])} | {wc('spz')} | {wc('before')} | {wc('after')} | "
            f"{r['after_s'] / r['spz_s']:.1f}x, {r['after_cpu'] / r['spz_cpu']:.1f}x | {'yes' if r['identical'] else '**no**'} | "
            f"{mb(r['spz_bytes'])} | {mb(r['sfz_bytes'])} | {wc('l12')} / {mb(r['l12_bytes'])} | "
            f"{wc('l3')} / {mb(r['l3_bytes'])} | {fmt_psnr(r.get('psnr_spz'))} | {fmt_psnr(r.get('psnr_sfz'))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spz-build", type=Path, default=Path("/work/scratch/h20-spz/spz-build"))
    ap.add_argument("--files", type=Path, nargs="*")
    ap.add_argument("--synthetic", type=int, default=200_000, help="synthetic SH3 Gaussians (0: none)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "spz.md")
    a = ap.parse_args(argv)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        before = load_before(tmp)
        files = a.files
        if files is None:
            files = sorted((SHARED / "ply").glob("*.ply"))
            demo = REPO.parent / "main" / "work" / "scene" / "splat" / "splat.ply"
            files += [demo] if demo.exists() else []
        jobs = [(f, True) for f in files]
        if a.synthetic:
            syn = tmp / f"synthetic_sh3_{a.synthetic}.ply"
            write_ply(syn, synthetic_splat(a.synthetic, 3, seed=0))
            jobs.append((syn, False))
        rows = []
        for f, psnr in jobs:
            print(f"{f} ...", file=sys.stderr, flush=True)
            rows.append(bench_file(f, tmp, a.spz_build, before, a.repeats, psnr))
    load1 = os.getloadavg()
    load = f"{load0[0]:.1f} / {load1[0]:.1f} (1-min)"
    md = table(rows, load, "python benchmarks/bench_spz.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    a.out.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
