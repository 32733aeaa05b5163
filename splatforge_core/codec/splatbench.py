"""SplatBench (#20): every codec preset, and SPZ, on a set of scenes, with quality on held-out views.

A *scene* is an Inria-layout folder (:mod:`splatforge_core.inria`): ``point_cloud.ply`` (the
trained splat), ``cameras.json`` and ``images/``. For each scene and each preset of the
registry :data:`splatforge_core.codec.presets.PRESETS` (a preset added later is benchmarked
without a change here; a preset whose entry has a true ``needs_bundle`` attribute is given the
scene folder, every other preset the PLY), the bench

1. encodes with :func:`splatforge_core.codec.main` (the preset's own report; ``train_wall_secs``
   in it, when present, is the finetune time, the rest of the wall time is the encode time;
   the ``quantised`` tier's optional orbit-view PSNR is switched off so it is not timed),
2. decodes with :func:`splatforge_core.codec.decompress` and reads the result with
   :func:`splatforge_core.splat.read_splat_ply`,
3. renders the input splat and the decoded splat from the scene's held-out cameras
   (:func:`splatforge_core.inria.load_views` with ``eval_every_n=8``: every 8th frame, the
   trainer's split) with the CPU rasteriser (:func:`splatforge_core.viewer.render_view`, black
   background, 8-bit output) and compares each with the held-out photos: PSNR (peak 255, mean
   over views) and SSIM (:func:`splatforge_core.metrics.ssim`, mean over views).

SPZ (Niantic's format, written and read back through :func:`splatforge_core.formats.write_any`
/ :func:`~splatforge_core.formats.read_any`, i.e. PlayCanvas splat-transform) is one more row;
with ``spz_build`` (a build folder of nianticlabs/spz with ``ply_to_spz`` / ``spz_to_ply``, see
``benchmarks/bench_spz.py``) also Niantic's own C++ encoder and decoder (row ``spz (C++)``).
The table (:func:`to_markdown`) has: scene, preset, Gaussians, size in/out (MB, 1e6 bytes; "in"
is the scene's PLY), save %, delta PSNR/SSIM (decoded minus input, on the same held-out views),
the absolute held-out PSNR of the input and the output, encode and finetune seconds. A lossless
preset decodes to the identical splat, so its deltas are exactly 0.

A Scaffold-GS scene (issue #15) is a folder in the Scaffold bundle layout
(:mod:`.scaffold_bundle`: anchor ``point_cloud.ply``, the MLPs, ``cfg_args``, ``cameras.json``,
``images/``), recognised by its anchor columns; it is validated as a bundle, its input and each
decoded anchor PLY are rendered with the bundle's MLPs (:func:`scaffold_heldout_quality`), its
"Gaussians" column counts anchors, and it has no SPZ row (SPZ stores 3DGS splats). The 3DGS
presets refuse its PLY (failed rows): bench it with ``--presets qat-scaffold qat-bundle``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from ..errors import InputError, SplatForgeError
from ..io import atomic_path
from ..log import get_logger

log = get_logger("splatbench")

#: Name of the SPZ row (not a codec preset: an ecosystem format, :mod:`splatforge_core.formats`).
SPZ = "spz"

#: Table columns, in order (``to_markdown``; also the keys of every row dict).
COLUMNS = ["scene", "preset", "gaussians", "size_in_mb", "size_out_mb", "save_pct", "delta_psnr_db", "delta_ssim",
           "psnr_in_db", "psnr_out_db", "encode_s", "encode_cpu_s", "finetune_s", "status", "report"]

#: Keys of a preset's own report copied into the row's ``report`` (e.g. a QAT preset's comparison of the input,
#: post-hoc quantised, QAT and fp32-finetuned splats on its held-out views), when present.
REPORT_PREFIXES = ("psnr_", "ssim_", "delta_psnr", "delta_ssim", "finetune_iters", "comparison", "four_way")

#: Options per preset for the bench (the ``quantised`` render PSNR is an extra the bench does itself).
DEFAULT_OPTIONS: dict[str, dict] = {"quantised": {"evaluate_psnr": False}}


@dataclass(frozen=True)
class Scene:
    """One benchmark scene: ``name`` (table label), ``root`` (Inria folder), ``ply`` (its splat)."""

    name: str
    root: Path
    ply: Path
    kind: str = "3dgs"


def open_scene(spec: str | os.PathLike) -> Scene:
    """A scene from ``PATH`` or ``NAME=PATH`` (an Inria-layout folder; name default: the folder's name).

    Raises:
        InputError: the folder, its ``point_cloud.ply`` or its ``cameras.json`` is missing.
    """
    s = str(spec)
    name, _, path = s.partition("=") if "=" in s else ("", "", s)
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{root}: scene folder not found (a scene is an Inria-layout folder with point_cloud.ply, "
                         "cameras.json and images/)")
    for f in ("point_cloud.ply", "cameras.json"):
        if not (root / f).is_file():
            raise InputError(f"{root / f}: missing; a SplatBench scene needs point_cloud.ply, cameras.json and images/ "
                             "(write one with splatforge_core.inria.write_dataset)")
    from .bundle import _is_scaffold_ply

    kind = "scaffold" if _is_scaffold_ply(root / "point_cloud.ply") else "3dgs"
    return Scene(name or root.resolve().name, root, root / "point_cloud.ply", kind)


def heldout_quality(splat: dict, views: list) -> tuple[float, float]:
    """Mean PSNR (dB, peak 255) and mean SSIM of renders of ``splat`` against the views' photos.

    Args:
        splat: :func:`splatforge_core.splat.read_splat_ply` dict.
        views: :class:`splatforge_core.train.data.View` list (``image`` uint8 [H, W, 3], ``K``, ``viewmat``).

    Returns:
        (psnr_db, ssim); ``inf`` PSNR for a pixel-exact render.

    Raises:
        InputError: no views (a scene needs at least one held-out camera).
    """
    import torch

    from ..metrics import ssim
    from ..viewer import render_view

    if not views:
        raise InputError("no held-out views: the scene needs at least 8 cameras (every 8th frame is held out)")
    ps, ss = [], []
    for v in views:
        img = render_view(splat, v.viewmat, v.K, v.width, v.height)
        mse = float(np.mean((img.astype(np.float64) - v.image.astype(np.float64)) ** 2))
        ps.append(float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse))
        a = torch.from_numpy(img.astype(np.float32) / 255.0)[None]
        b = torch.from_numpy(v.image.astype(np.float32) / 255.0)[None]
        with torch.no_grad():
            ss.append(float(ssim(a, b)))
    return float(np.mean(ps)), float(np.mean(ss))


def scaffold_heldout_quality(model, anchors, views: list) -> tuple[float, float]:
    """:func:`heldout_quality` of a Scaffold-GS model: ``anchors`` with ``model``'s MLPs and config
    (:func:`splatforge_core.scaffold.render.render_model`, black background, appearance row 0),
    rendered to 8 bits as the 3DGS rows are.

    Raises:
        InputError: no views.
    """
    import dataclasses

    import torch

    from ..metrics import ssim
    from ..scaffold.render import render_model

    if not views:
        raise InputError("no held-out views: the scene needs at least 8 cameras (every 8th frame is held out)")
    m = dataclasses.replace(model, anchors=anchors)
    ps, ss = [], []
    for v in views:
        img = (render_model(m, v.viewmat, v.K, v.width, v.height) * 255.0 + 0.5).astype(np.uint8)
        mse = float(np.mean((img.astype(np.float64) - v.image.astype(np.float64)) ** 2))
        ps.append(float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse))
        with torch.no_grad():
            ss.append(float(ssim(torch.from_numpy(img.astype(np.float32) / 255.0)[None],
                                 torch.from_numpy(v.image.astype(np.float32) / 255.0)[None])))
    return float(np.mean(ps)), float(np.mean(ss))


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and of its finished children (node for SPZ)."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _row(scene: Scene, preset: str, n: int, size_out: Optional[int], q_in, q_out, encode_s, finetune_s,
         status: str = "ok", encode_cpu_s: Optional[float] = None) -> dict[str, Any]:
    size_in = scene.ply.stat().st_size
    r = {"scene": scene.name, "preset": preset, "gaussians": n, "size_in_mb": size_in / 1e6,
         "size_out_mb": None if size_out is None else size_out / 1e6,
         "save_pct": None if size_out is None else 100.0 * (1 - size_out / size_in),
         "delta_psnr_db": None, "delta_ssim": None, "psnr_in_db": q_in[0], "psnr_out_db": None,
         "encode_s": encode_s, "encode_cpu_s": encode_cpu_s, "finetune_s": finetune_s, "status": status,
         "report": {}}
    if q_out is not None:
        r["psnr_out_db"] = q_out[0]
        r["delta_psnr_db"] = q_out[0] - q_in[0] if q_out[0] != q_in[0] else 0.0
        r["delta_ssim"] = q_out[1] - q_in[1]
    return r


def run_preset(scene: Scene, preset: str, views: list, q_in: tuple[float, float], n: int, tmp: Path,
               options: Optional[dict] = None, measure: Optional[Callable] = None) -> dict[str, Any]:
    """One table row: encode ``scene`` with ``preset``, decode, measure on ``views`` against ``q_in``.

    ``measure(decoded_path) -> (count, (psnr, ssim))`` (default: a 3DGS splat, :func:`heldout_quality`).

    A :class:`SplatForgeError` of the preset (e.g. a preset that refuses this scene) gives a row
    with ``status`` "failed: <message>" instead of stopping the bench.
    """
    from ..splat import read_splat_ply
    from . import decompress, main
    from .presets import PRESETS

    spec = PRESETS[preset]
    src = scene.root if getattr(spec, "needs_bundle", False) else scene.ply
    out, back = tmp / f"out{spec.suffix}", tmp / "back.ply"
    try:
        t, c = time.perf_counter(), cpu_seconds()
        rep = main(src, out, None, preset, options)
        wall, cpu = time.perf_counter() - t, cpu_seconds() - c
        finetune = float(rep.get("train_wall_secs") or 0.0)
        decompress(out, back)
        if measure is None:
            dec = read_splat_ply(back)
            n_out, q_out = len(dec["means"]), heldout_quality(dec, views)
        else:
            n_out, q_out = measure(back)
    except SplatForgeError as e:
        log.warning("%s / %s: %s", scene.name, preset, e)
        return _row(scene, preset, n, None, q_in, None, None, None, "failed: " + " ".join(str(e).split()))
    row = _row(scene, preset, n_out, out.stat().st_size, q_in, q_out, wall - finetune,
               finetune if "train_wall_secs" in rep else None,
               encode_cpu_s=None if "train_wall_secs" in rep else cpu)  # a finetune's CPU time is not separable
    row["report"] = {k: v for k, v in rep.items() if k.startswith(REPORT_PREFIXES) and v is not None and not isinstance(v, str)}
    out.unlink()
    back.unlink()
    return row


def run_spz(scene: Scene, splat: dict, views: list, q_in: tuple[float, float], tmp: Path) -> dict[str, Any]:
    """The SPZ row: ``write_any`` (timed as encode) then ``read_any``; a missing tool gives a failed row."""
    from ..formats import read_any, write_any

    out = tmp / "out.spz"
    try:
        t, c = time.perf_counter(), cpu_seconds()
        write_any(out, splat)
        enc, cpu = time.perf_counter() - t, cpu_seconds() - c
        dec = read_any(out)
    except SplatForgeError as e:
        log.warning("%s / spz: %s", scene.name, e)
        return _row(scene, SPZ, len(splat["means"]), None, q_in, None, None, None, "failed: " + " ".join(str(e).split()))
    row = _row(scene, SPZ, len(dec["means"]), out.stat().st_size, q_in, heldout_quality(dec, views), enc, None,
               encode_cpu_s=cpu)
    out.unlink()
    return row


def read_spz_cpp_ply(path: Path) -> dict:
    """The PLY that SPZ's ``spz_to_ply`` writes, as a splat dict. Its opacity of a Gaussian stored
    with alpha 255 is +inf (the logit of 1); it becomes 30, whose float32 sigmoid is 1.0 as well."""
    import plyfile

    from .qat_lowbit import read_splat_ply_records

    sp = read_splat_ply_records(plyfile.PlyData.read(str(path))["vertex"].data)
    sp["opacities"] = np.clip(np.nan_to_num(sp["opacities"], nan=0.0), -30.0, 30.0)
    return sp


def run_spz_cpp(scene: Scene, views: list, q_in: tuple[float, float], tmp: Path, build: Path) -> dict[str, Any]:
    """The ``spz (C++)`` row: Niantic's ``ply_to_spz`` on the scene's PLY (timed), ``spz_to_ply`` back."""
    import subprocess

    out, back = tmp / "cpp.spz", tmp / "cpp_back.ply"
    name = SPZ + " (C++)"
    try:
        t, c = time.perf_counter(), cpu_seconds()
        subprocess.run([str(build / "ply_to_spz"), str(scene.ply), str(out)], check=True, capture_output=True)
        enc, cpu = time.perf_counter() - t, cpu_seconds() - c
        subprocess.run([str(build / "spz_to_ply"), str(out), str(back)], check=True, capture_output=True)
        dec = read_spz_cpp_ply(back)
    except (OSError, subprocess.CalledProcessError) as e:
        log.warning("%s / %s: %s", scene.name, name, e)
        return _row(scene, name, 0, None, q_in, None, None, None, "failed: " + " ".join(str(e).split()))
    row = _row(scene, name, len(dec["means"]), out.stat().st_size, q_in, heldout_quality(dec, views), enc, None,
               encode_cpu_s=cpu)
    out.unlink()
    back.unlink()
    return row


def bench(scenes: Iterable[Scene], presets: Optional[list[str]] = None, spz: bool = True, max_side: int = 256,
          max_views: int = 0, options: Optional[dict[str, dict]] = None,
          on_row: Optional[Callable[[dict], None]] = None, spz_build: Optional[Path] = None) -> list[dict[str, Any]]:
    """Rows of the SplatBench table (one per scene x preset, plus SPZ when ``spz``).

    Args:
        scenes: :class:`Scene` list.
        presets: preset names (default: every preset of the registry, in its order).
        spz: add the SPZ row.
        max_side: held-out photos and cameras resized so the longer side is at most this (pixels).
        max_views: at most this many held-out views per scene (evenly spaced; 0: all).
        options: per-preset option dicts (default :data:`DEFAULT_OPTIONS`).
        on_row: called with each row as it is done (progress, partial tables).
        spz_build: SPZ's C++ build folder: add the ``spz (C++)`` row (:func:`run_spz_cpp`).

    Raises:
        InputError: an unknown preset name, or a scene without held-out views.
    """
    from ..inria import load_views
    from ..splat import read_splat_ply
    from .presets import PRESETS, check_preset

    names = list(PRESETS) if presets is None else list(presets)
    for p in names:
        check_preset(p)
    options = {**DEFAULT_OPTIONS, **(options or {})}
    rows = []
    for sc in scenes:
        data = load_views(sc.root, max_side=max_side, eval_every_n=8)
        views = data.test
        if max_views and len(views) > max_views:
            views = [views[i] for i in np.linspace(0, len(views) - 1, max_views).round().astype(int)]
        tmp = Path(tempfile.mkdtemp(prefix="splatbench-"))
        measure = None
        try:
            if sc.kind == "scaffold":
                from ..scaffold.layout import read_anchor_ply
                from .bundle import open_bundle

                model = open_bundle(sc.root, tmp, kind="scaffold").model  # validated before its MLPs run
                n = model.anchors.n
                q_in = scaffold_heldout_quality(model, model.anchors, views)
                cfg = model.config

                def measure(p, model=model, cfg=cfg, views=views):
                    a = read_anchor_ply(p, cfg.feat_dim, cfg.n_offsets)
                    return a.n, scaffold_heldout_quality(model, a, views)
            else:
                splat = read_splat_ply(sc.ply)
                n = len(splat["means"])
                q_in = heldout_quality(splat, views)
            log.info("%s: %d %s, %d held-out views", sc.name, n, "anchors" if measure else "Gaussians", len(views))
            for p in names:
                rows.append(run_preset(sc, p, views, q_in, n, tmp, options.get(p), measure))
                if on_row:
                    on_row(rows[-1])
            if spz and sc.kind != "scaffold":
                rows.append(run_spz(sc, splat, views, q_in, tmp))
                if on_row:
                    on_row(rows[-1])
            if spz_build is not None:
                rows.append(run_spz_cpp(sc, views, q_in, tmp, Path(spz_build)))
                if on_row:
                    on_row(rows[-1])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return rows


def _fmt(v: Any, spec: str) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, spec)


def _report_cell(rep: Optional[dict]) -> str:
    """A preset report's quality fields, compact JSON (``|`` escaped for Markdown)."""
    import json

    if not rep:
        return ""
    return json.dumps(rep, separators=(",", ":"), default=str).replace("|", "\\|")


def to_markdown(rows: list[dict[str, Any]], note: str = "") -> str:
    """The SplatBench table as Markdown (one line per row, :data:`COLUMNS` order)."""
    head = ["scene", "preset", "Gaussians", "size in MB", "size out MB", "save %", "delta PSNR dB", "delta SSIM",
            "held-out PSNR in dB", "held-out PSNR out dB", "encode s", "encode CPU s", "finetune s", "status",
            "preset's own report"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * 11 + "---|---|"]
    for r in rows:
        cells = [r["scene"], r["preset"], _fmt(r["gaussians"], ","), _fmt(r["size_in_mb"], ".2f"),
                 _fmt(r["size_out_mb"], ".2f"), _fmt(r["save_pct"], ".1f"), _fmt(r["delta_psnr_db"], "+.3f"),
                 _fmt(r["delta_ssim"], "+.4f"), _fmt(r["psnr_in_db"], ".2f"), _fmt(r["psnr_out_db"], ".2f"),
                 _fmt(r["encode_s"], ".2f"), _fmt(r["encode_cpu_s"], ".2f"), _fmt(r["finetune_s"], ".1f"), r["status"],
                 _report_cell(r.get("report"))]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return (note + "\n\n" if note else "") + "\n".join(lines) + "\n"


def _parse_options(items: list[str]) -> dict[str, dict]:
    """``PRESET.KEY=VALUE`` strings -> {preset: {key: value}} (values parsed as JSON when they parse)."""
    import json

    out: dict[str, dict] = {}
    for it in items:
        key, eq, val = it.partition("=")
        preset, dot, opt = key.partition(".")
        if not eq or not dot or not preset or not opt:
            raise InputError(f"--option {it!r}: expected PRESET.KEY=VALUE, e.g. quantised.sh_bits=5")
        try:
            v: Any = json.loads(val)
        except ValueError:
            v = val
        out.setdefault(preset, {})[opt] = v
    return out


def cli(argv: list[str] | None = None) -> int:
    """``splatforge bench``: run SplatBench and write its table (Markdown)."""
    import json

    from .presets import PRESETS

    ap = argparse.ArgumentParser(prog="splatforge bench", description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--scenes", nargs="+", required=True, metavar="[NAME=]DIR",
                    help="Inria-layout folders (point_cloud.ply, cameras.json, images/)")
    ap.add_argument("--presets", nargs="+", default=None, help=f"default: all ({', '.join(PRESETS)})")
    ap.add_argument("--no-spz", action="store_true", help="leave out the SPZ row")
    ap.add_argument("--spz-build", type=Path, default=None, metavar="DIR",
                    help="nianticlabs/spz build folder (ply_to_spz, spz_to_ply): add a row for SPZ's own C++ encoder")
    ap.add_argument("--max-side", type=int, default=256, help="held-out image size, longer side in pixels (256)")
    ap.add_argument("--max-views", type=int, default=0, help="at most this many held-out views per scene (0: all)")
    ap.add_argument("--option", action="append", default=[], metavar="PRESET.KEY=VALUE", help="a preset option")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/splatbench.md"),
                    help="the Markdown table; the rows also go to the same name with .json")
    a = ap.parse_args(argv)
    scenes = [open_scene(s) for s in a.scenes]
    opts = _parse_options(a.option)
    load0 = os.getloadavg()[0]
    rows: list[dict] = []

    def write(_row: Optional[dict] = None) -> None:
        if _row is not None:
            rows.append(_row)
        note = (f"SplatBench ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()} "
                f"{os.cpu_count()} cores, load average {load0:.1f} -> {os.getloadavg()[0]:.1f}); held-out views at "
                f"max side {a.max_side} px{f', at most {a.max_views} per scene' if a.max_views else ''}. "
                f"Command: `splatforge bench {' '.join(argv if argv is not None else [])}`")
        a.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(a.out) as tmp:
            Path(tmp).write_text(to_markdown(rows, note))
        with atomic_path(a.out.with_suffix(".json")) as tmp:
            Path(tmp).write_text(json.dumps(rows, indent=1, default=str))

    bench(scenes, a.presets, spz=not a.no_spz, max_side=a.max_side, max_views=a.max_views, options=opts, on_row=write,
          spz_build=a.spz_build)
    write()
    print(to_markdown(rows))
    return 0
