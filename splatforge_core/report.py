"""Per-scene run report: one Markdown page with figures, from whatever artefacts exist.

``main(scene_dir, out_dir)`` reads the artefacts of ``work/{scene}`` (``docs/formats.md``) and
writes ``out_dir/report.md`` plus PNG figures beside it. Every section reads one input file;
when that file is absent the section says ``not available: <file> missing`` (and when it is
not valid JSON, ``not available: <file> unreadable``); no value is ever filled in.

Sections:

1. Capture (``manifest.json``): images, skipped images with reasons, camera kind, WGS84
   origin, ENU extent in metres.
2. Top-down ENU map (``manifest.json``, ``views.json``, ``alignment.json``): GPS positions
   coloured by registration, SfM-aligned positions, residual arrows (true scale, metres).
3. SfM (``sparse/summary.json``, written by :mod:`splatforge_core.sfm.mapping`).
4. Stage timings (``benchmarks/<rule>.tsv``: Snakemake ``benchmark:`` TSV, columns ``s``,
   ``h:m:s``, ``max_rss`` (MB), ``max_vms``, ``max_uss``, ``max_pss``, ``io_in``, ``io_out``,
   ``mean_load``, ``cpu_time``; one row per repeat) -> table and bar chart.
5. Training (``splat/metrics.json`` of :mod:`splatforge_core.train.trainer`; its PNGs
   ``curve.png``, ``renders.png`` and any other ``splat/*.png`` are copied).
6. Export (``export/export.json`` of :mod:`splatforge_core.export`): generic key/value table.
7. Compression (``results/{scene}.compressed.json`` of :mod:`splatforge_core.codec`).

The output folder is built in a temporary folder and renamed into place whole
(:func:`splatforge_core.io.atomic_path`).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .io import atomic_path, read_json
from .log import get_logger
from .options import build_options

log = get_logger("report")

#: Snakemake benchmark TSV columns (snakemake/benchmark.py, ``BenchmarkRecord``); max_* in MB.
BENCHMARK_COLUMNS = ("s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out",
                     "mean_load", "cpu_time")


@dataclass(frozen=True)
class ReportOptions:
    """Options of the report stage (config section ``report``).

    Attributes:
        compress_report: path of the codec report JSON. Default None: look for
            ``<scene_dir>/../../results/{scene}.compressed.json`` (``scene`` = the name of
            ``scene_dir``).
        export_report: path of the export report JSON. Default None: ``<scene_dir>/export/export.json``.
        dpi: resolution of the PNG figures, dots per inch. Default 120.
        label_frames: write frame names next to the positions on the map when there are at
            most this many frames. Default 40.
    """

    compress_report: str | None = None
    export_report: str | None = None
    dpi: int = field(default=120, metadata={"min": 10, "max": 1200})
    label_frames: int = field(default=40, metadata={"min": 0})

    @classmethod
    def from_dict(cls, d: dict | ReportOptions | None) -> ReportOptions:
        """Build from a plain dict; raise :class:`InputError` on unknown keys or bad values."""
        if isinstance(d, cls):
            return d
        o = build_options(cls, d, "report")
        if o.dpi <= 0 or o.label_frames < 0:
            raise InputError("report options: dpi must be > 0 and label_frames >= 0")
        return o


# ------------------------------------------------------------------------------------------
# helpers


def fmt_cell(x: Any, nd: int = 2) -> str:
    """Format a value for a Markdown table cell (floats rounded, pipes escaped)."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x != 0 and (abs(x) >= 1e6 or abs(x) < 10 ** -nd):
            return f"{x:.{nd + 1}g}"
        return f"{x:,.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    s = x if isinstance(x, str) else json.dumps(x)
    if len(s) > 120:
        s = s[:117] + "..."
    return s.replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[Any]], nd: int = 2) -> str:
    """A Markdown table: ``header`` cells, then one row per list, cells through :func:`fmt_cell`."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(fmt_cell(c, nd) for c in r) + " |")
    return "\n".join(out)


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts -> (dotted key, leaf value) pairs; lists stay leaves."""
    if isinstance(d, dict):
        out: list[tuple[str, Any]] = []
        for k, v in d.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return [(prefix, d)]


def load_optional_json(path: Path, scene_dir: Path) -> tuple[Any, str | None]:
    """(JSON content, None) or (None, the 'not available' line)."""
    rel = _rel(path, scene_dir)
    if not path.is_file():
        return None, f"not available: {rel} missing"
    try:
        return read_json(path), None
    except (ValueError, OSError) as e:
        log.warning("report: %s", e)
        return None, f"not available: {rel} unreadable ({e})"


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _num(s: str) -> float | None:
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# ------------------------------------------------------------------------------------------
# readers


def read_benchmarks(bench_dir: str | os.PathLike) -> list[dict]:
    """Read Snakemake benchmark TSVs ``bench_dir/<rule>.tsv``.

    Returns:
        One dict per file, in the order the files were written (modification time): ``rule``, ``repeats`` (rows), ``s`` (mean wall
        seconds over repeats), ``max_rss_mb`` (largest over repeats, MB), ``cpu_time`` (mean,
        seconds), ``mean_load`` (mean, %), ``io_in``/``io_out`` (mean, MB); None where the
        column is absent or ``NA``.

    Raises:
        InputError: a TSV without the ``s`` column or without data rows.
    """
    out = []
    # chronological: Snakemake writes a rule's benchmark file when the rule finishes
    for p in sorted(Path(bench_dir).glob("*.tsv"), key=lambda q: (q.stat().st_mtime, q.name)):
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if not rows or "s" not in rows[0]:
            raise InputError(f"{p}: not a Snakemake benchmark TSV (needs a header with column 's' and a data row)")

        def col(name: str, agg) -> float | None:
            vals = [v for v in (_num(r.get(name)) for r in rows) if v is not None]
            return agg(vals) if vals else None

        mean = lambda v: sum(v) / len(v)  # noqa: E731
        out.append({"rule": p.stem, "repeats": len(rows), "s": col("s", mean), "max_rss_mb": col("max_rss", max),
                    "cpu_time": col("cpu_time", mean), "mean_load": col("mean_load", mean),
                    "io_in": col("io_in", mean), "io_out": col("io_out", mean)})
    return out


# ------------------------------------------------------------------------------------------
# figures


def plot_positions(path: Path, manifest: dict | None, views: dict | None, alignment: dict | None,
                   label_frames: int = 40, dpi: int = 120) -> dict:
    """Top-down ENU map of the capture: GPS positions by registration, aligned SfM positions.

    GPS positions come from ``alignment.json`` residuals (``enu_gps``), else ``views.json``
    frames (``enu``), else ``manifest.json`` images (``enu``). A frame counts as registered
    when ``alignment.json`` lists a residual for it; without ``alignment.json`` registration
    is unknown and the points are grey. Arrows go from the GPS position to the aligned SfM
    position (``enu_sfm``) at true scale.

    Returns:
        Counts: ``registered``, ``not_registered``, ``unknown`` (frames drawn).

    Raises:
        InputError: none of the three inputs gives a position.
    """
    import numpy as np

    plt = _plt()
    pos: dict[str, tuple[float, float]] = {}  # frame/name -> (e, n) GPS
    if views:
        for fr in views.get("frames", []):
            if fr.get("enu") is not None:
                pos[fr["frame"]] = (float(fr["enu"][0]), float(fr["enu"][1]))
    elif manifest:
        for im in manifest.get("images", []):
            if im.get("enu") is not None:
                pos[im["name"]] = (float(im["enu"][0]), float(im["enu"][1]))
    res = {r["frame"]: r for r in (alignment or {}).get("residuals", [])}
    for f, r in res.items():
        pos.setdefault(f, (float(r["enu_gps"][0]), float(r["enu_gps"][1])))
    if not pos:
        raise InputError("no capture position with GPS in manifest.json / views.json / alignment.json")
    names = list(pos)
    xy = np.array([pos[n] for n in names])
    allxy = xy if not res else np.concatenate([xy, np.array([r["enu_sfm"][:2] for r in res.values()], dtype=float)])
    dx, dy = max(float(np.ptp(allxy[:, 0])), 1.0), max(float(np.ptp(allxy[:, 1])), 1.0)
    # figure shaped like the data (equal aspect) so that a long thin path is not a thin strip
    fig, ax = plt.subplots(figsize=(8.5, float(np.clip(7.0 * dy / dx, 2.5, 8.0)) + 2.2))
    counts = {"registered": 0, "not_registered": 0, "unknown": 0}
    if alignment is not None:
        reg = np.array([n in res for n in names])
        counts["registered"], counts["not_registered"] = int(reg.sum()), int((~reg).sum())
        if reg.any():
            ax.scatter(xy[reg, 0], xy[reg, 1], s=45, c="tab:green", edgecolors="k", linewidths=0.5, zorder=3,
                       label=f"GPS, registered ({int(reg.sum())})")
        if (~reg).any():
            ax.scatter(xy[~reg, 0], xy[~reg, 1], s=55, c="tab:red", marker="s", edgecolors="k", linewidths=0.5,
                       zorder=3, label=f"GPS, not registered ({int((~reg).sum())})")
        if res:
            g = np.array([r["enu_gps"][:2] for r in res.values()], dtype=float)
            s = np.array([r["enu_sfm"][:2] for r in res.values()], dtype=float)
            inl = np.array([bool(r.get("inlier", True)) for r in res.values()])
            ax.scatter(s[:, 0], s[:, 1], s=40, c="tab:blue", marker="x", zorder=4, label="SfM, aligned to ENU")
            for k in range(len(g)):
                ax.annotate("", xy=s[k], xytext=g[k], zorder=2,
                            arrowprops=dict(arrowstyle="->", color="tab:orange" if inl[k] else "tab:purple", lw=1.2))
            ax.plot([], [], color="tab:orange", lw=1.2, label="residual GPS → SfM (inlier)")
            if (~inl).any():
                ax.plot([], [], color="tab:purple", lw=1.2, label="residual GPS → SfM (outlier)")
            xy = np.concatenate([xy, s])
    else:
        counts["unknown"] = len(names)
        ax.scatter(xy[:, 0], xy[:, 1], s=45, c="0.6", edgecolors="k", linewidths=0.5, zorder=3,
                   label=f"GPS ({len(names)}; registration unknown: alignment.json missing)")
    ax.scatter([0], [0], s=160, marker="+", c="k", zorder=5, label="ENU origin")
    if len(names) <= label_frames:
        for n in names:
            ax.annotate(Path(n).stem, pos[n], textcoords="offset points", xytext=(5, 5), fontsize=7, color="0.25")
    ax.set_aspect("equal", adjustable="datalim")
    ax.margins(0.08)
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    title = "Capture positions, top-down ENU"
    if alignment is not None:
        title += (f"\nresiduals: median {alignment.get('median_residual_m', float('nan')):.2f} m, "
                  f"max {alignment.get('max_residual_m', float('nan')):.2f} m, "
                  f"{alignment.get('num_inliers', '?')} inliers")
    ax.set_title(title, fontsize=10)
    ax.grid(True, lw=0.4, alpha=0.6)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return counts


def plot_clusters(path: Path, clusters: dict, views: dict | None, merge: dict | None = None, dpi: int = 120) -> list[str]:
    """Top-down ENU map of a clustered scene's split (``clusters.json``, :mod:`splatforge_core.cluster`).

    Frames are coloured by the cluster whose core holds them; a frame shared with other
    clusters (a member of more than one) gets a black ring; centres are stars and the cells'
    borders (2-D Voronoi of the centres, where each cluster's splat is cropped) are drawn on a
    grid. Frame positions come from ``views.json``.

    Returns:
        Markdown lines: one row per cluster (core, members, shared frames) and, with the sparse
        ``merge.json``, the shared-image centre disagreement.
    """
    import numpy as np

    from .cluster import cell_labels

    plt = _plt()
    pos = {f["frame"]: f["enu"] for f in (views or {}).get("frames", []) if f.get("enu") is not None}
    cl = clusters["clusters"]
    centres = np.array([c["centre_enu"] for c in cl], dtype=np.float64)
    count: dict[str, int] = {}
    for c in cl:
        for f in c["members"]:
            count[f] = count.get(f, 0) + 1
    fig, ax = plt.subplots(figsize=(7, 6))
    pts = np.array(list(pos.values()), dtype=np.float64).reshape(-1, 3)
    if len(pts) and len(cl) > 1:
        lo, hi = np.vstack([pts[:, :2], centres[:, :2]]).min(0) - 3, np.vstack([pts[:, :2], centres[:, :2]]).max(0) + 3
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300))
        lab = cell_labels(np.column_stack([gx.ravel(), gy.ravel()]), centres).reshape(gx.shape)
        ax.contour(gx, gy, lab, levels=np.arange(len(cl)) + 0.5, colors="grey", linewidths=1, linestyles="--")
    cmap = plt.get_cmap("tab10")
    for i, c in enumerate(cl):
        xy = np.array([pos[f] for f in c["core"] if f in pos], dtype=np.float64).reshape(-1, 3)
        ax.scatter(xy[:, 0], xy[:, 1], s=25, color=cmap(i % 10), label=f"{c['name']} ({len(c['core'])} core, "
                   f"{len(c['members'])} members)")
        ax.scatter([c["centre_enu"][0]], [c["centre_enu"][1]], marker="*", s=200, color=cmap(i % 10), edgecolors="k")
    shared = np.array([pos[f] for f, n in count.items() if n > 1 and f in pos], dtype=np.float64).reshape(-1, 3)
    if len(shared):
        ax.scatter(shared[:, 0], shared[:, 1], s=80, facecolors="none", edgecolors="k", label="shared frames")
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=8)
    ax.set_title("Clusters: cores, shared frames, cell borders (--)")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    rows = [[c["name"], len(c["core"]), len(c["members"]), sum(count.get(f, 0) > 1 for f in c["members"])] for c in cl]
    lines = [md_table(["cluster", "core frames", "members", "shared frames"], rows),
             "", f"Overlap margin {clusters.get('margin_m')} m, {clusters.get('k_neighbors')} nearest frames."]
    sc = (merge or {}).get("shared_centres") or {}
    if sc.get("median_m") is not None:
        lines += ["", f"Shared images' camera centres between clusters after merging: median {sc['median_m']:.4f} m, "
                      f"max {sc['max_m']:.4f} m over {sc['num_frames']} frame(s)."]
    return lines


def plot_masks(path: Path, views: dict | None, manifest: dict | None = None, max_frames: int = 2) -> list[str]:
    """Draw the sky (blue) and operator (red) labels over the first panoramas of a capture.

    The labels are recomputed from the source panoramas with the options views.json records
    (:func:`splatforge_core.masks.panorama_labels`, the function the project stage used).

    Returns:
        Markdown lines (the figure and its label fractions), empty when no frame has masks.
    """
    import cv2
    import numpy as np

    from .masks import OPERATOR, SKY, panorama_labels

    if not views or not views.get("mask_dir"):
        return []
    opts = views.get("options") or {}
    frames = [f for f in views.get("frames", []) if f.get("masks")][:max_frames]
    paths = {r.get("name"): r.get("path") for r in (manifest or {}).get("images", [])}
    rows = []
    for f in frames:
        src = f.get("source_path") or paths.get(f.get("source"))
        if not src:
            continue
        img = cv2.imread(str(src), cv2.IMREAD_REDUCED_COLOR_4)
        if img is None:
            continue
        small = cv2.resize(img, (960, 480), interpolation=cv2.INTER_AREA)
        lab = cv2.resize(panorama_labels(img, bool(opts.get("sky_mask", True)), float(opts.get("nadir_mask_deg", 0.0))),
                         (960, 480), interpolation=cv2.INTER_NEAREST)
        vis = small.astype(np.float32)
        for k, colour in ((SKY, (255, 80, 0)), (OPERATOR, (0, 0, 255))):
            sel = lab == k
            vis[sel] = vis[sel] * 0.45 + np.array(colour, np.float32) * 0.55
        rows.append(vis.astype(np.uint8))
    if not rows:
        return []
    cv2.imwrite(str(path), np.concatenate(rows, axis=0))
    fr = [f.get("mask_fractions") or {} for f in views["frames"]]
    sky = np.mean([x.get("sky", 0.0) for x in fr])
    op = np.mean([x.get("operator", 0.0) for x in fr])
    return [f"Masks (project stage): sky in blue is left out of SfM features (drifting clouds), the operator "
            f"in red (nadir cap of {fmt_cell(opts.get('nadir_mask_deg'))} deg) is left out of SfM, the training loss "
            f"and the held-out metrics. Over all view pixels: sky {sky:.1%}, operator {op:.1%}.",
            "", f"![Sky and operator masks]({path.name})"]


def plot_benchmarks(path: Path, bench: list[dict], dpi: int = 120) -> None:
    """Two horizontal bar charts per rule: wall time (s) and peak resident memory (MB)."""
    plt = _plt()
    rules = [b["rule"] for b in bench]
    wall = [b["s"] or 0.0 for b in bench]
    rss = [b["max_rss_mb"] or 0.0 for b in bench]
    h = max(2.5, 0.45 * len(rules) + 1.2)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, h), sharey=True)
    y = list(range(len(rules)))
    a1.barh(y, wall, color="tab:blue")
    a1.set_xlabel("wall time (s)")
    a1.set_title(f"Wall time per rule (total {sum(wall):.1f} s)", fontsize=10)
    a2.barh(y, rss, color="tab:orange")
    a2.set_xlabel("peak resident memory, max_rss (MB)")
    a2.set_title(f"Peak memory per rule (max {max(rss) if rss else 0:.0f} MB)", fontsize=10)
    a1.set_yticks(y, rules)
    a1.invert_yaxis()
    for ax, vals, fmt in ((a1, wall, "{:.3g}"), (a2, rss, "{:.3g}")):
        for k, v in enumerate(vals):
            ax.text(v, k, " " + fmt.format(v), va="center", fontsize=8)
        ax.margins(x=0.15)
        ax.grid(True, axis="x", lw=0.4, alpha=0.6)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


# ------------------------------------------------------------------------------------------
# sections


def _capture(man: dict) -> list[str]:
    images = man.get("images", [])
    skipped = man.get("skipped", [])
    o = man.get("origin")
    lines = [md_table(["capture", "value"], [
        ["images used", len(images)],
        ["images skipped", len(skipped)],
        ["camera kind", man.get("camera_kind")],
        ["input folder", man.get("input_dir")],
        ["images without GPS fix", sum(1 for im in images if im.get("enu") is None)],
        ["altitude filled from median", sum(1 for im in images if im.get("alt_filled"))],
    ])]
    if o:
        lines += ["", f"Origin (WGS84, first valid fix `{o.get('name')}`): latitude {o['lat']:.7f}°, "
                      f"longitude {o['lon']:.7f}°, altitude {o['alt']:.2f} m."]
    else:
        lines += ["", "Origin: none (no image has a GPS fix)."]
    enu = [im["enu"] for im in images if im.get("enu") is not None]
    if enu:
        lo = [min(p[i] for p in enu) for i in range(3)]
        hi = [max(p[i] for p in enu) for i in range(3)]
        far = max(math.hypot(p[0], p[1]) for p in enu)
        lines += ["", f"Extent (ENU): east {lo[0]:.2f} … {hi[0]:.2f} m ({hi[0] - lo[0]:.2f} m), "
                      f"north {lo[1]:.2f} … {hi[1]:.2f} m ({hi[1] - lo[1]:.2f} m), "
                      f"up {lo[2]:.2f} … {hi[2]:.2f} m ({hi[2] - lo[2]:.2f} m); "
                      f"farthest image {far:.2f} m from the origin horizontally."]
    if skipped:
        lines += ["", "Skipped images:", "", md_table(["image", "reason"], [[s.get("name"), s.get("reason")] for s in skipped])]
    return lines


def _alignment_text(al: dict) -> list[str]:
    rows = [["method", al.get("method")], ["frames", al.get("num_frames")],
            ["registered frames", al.get("num_registered_frames")], ["inliers", al.get("num_inliers")],
            ["median residual (m)", al.get("median_residual_m")], ["max residual (m)", al.get("max_residual_m")],
            ["median inlier residual (m)", al.get("median_inlier_residual_m")],
            ["positions on one line", al.get("degenerate_line")]]
    sim = al.get("sim3") or {}
    if "scale" in sim:
        rows.append(["Sim3 scale (m per SfM unit)", sim["scale"]])
    gt = al.get("ground_truth_error")
    if gt:
        rows += [["ground truth: aligned error median (m)", gt.get("median_m")],
                 ["ground truth: aligned error max (m)", gt.get("max_m")],
                 ["ground truth: raw GPS error median (m)", gt.get("gps_median_m")]]
    dg = al.get("diagnosis")
    if dg:
        rows += [["GPS extent (m)", dg.get("gps_extent_m")], ["GPS noise estimate (m, 1 sigma)", dg.get("gps_sigma_m")],
                 ["scale uncertainty from GPS (%, 1 sigma)", 100 * dg["scale_error"] if "scale_error" in dg else None],
                 ["heading uncertainty from GPS (deg, 1 sigma)", dg.get("heading_error_deg")]]
    lines = [md_table(["alignment", "value"], rows, nd=3)]
    for problem in (dg or {}).get("problems", []):
        lines += ["", f"**Alignment warning:** {problem}"]
    hc = al.get("heading_check")
    if hc:
        lines += ["", f"Aligned yaw against the photos' EXIF `GPSImgDirection` ({hc['num_frames']} frames): median "
                      f"difference {hc['median_abs_diff_deg']:.1f} deg, max {hc['max_abs_diff_deg']:.1f} deg, constant "
                      f"offset {hc['offset_deg']:.1f} deg (median {hc['median_abs_diff_after_offset_deg']:.1f} deg after "
                      f"removing it); tolerance {fmt_cell(hc.get('tolerance_deg'))} deg"
                      + (f"; **disagreeing: {', '.join(hc['disagreeing'])}**" if hc.get("disagreeing") else "."),
                  "", "<details><summary>Yaw per frame</summary>", "",
                  md_table(["frame", "aligned yaw (deg)", "EXIF heading (deg)", "difference (deg)"],
                           [[f["frame"], f["yaw_deg"], f["exif_heading_deg"], f["diff_deg"]] for f in hc["frames"]], nd=1),
                  "", "</details>"]
    elif al:
        lines += ["", "No EXIF `GPSImgDirection` in the photos: the aligned yaw is not checked against a compass."]
    if al.get("unregistered_frames"):
        lines += ["", "Not registered: " + ", ".join(f"`{f}`" for f in al["unregistered_frames"])]
    res = al.get("residuals", [])
    if res:
        gte = {e["frame"]: e for e in (gt or {}).get("frames", [])}
        hdr = ["frame", "residual (m)", "horizontal (m)", "vertical (m)", "inlier"]
        if gte:
            hdr += ["error vs truth (m)", "GPS error vs truth (m)"]
        rows = []
        for r in res:
            row = [r["frame"], r.get("residual_m"), r.get("horizontal_m"), r.get("vertical_m"), r.get("inlier")]
            if gte:
                e = gte.get(r["frame"], {})
                row += [e.get("error_m"), e.get("gps_error_m")]
            rows.append(row)
        lines += ["", "<details><summary>Per-frame residuals</summary>", "", md_table(hdr, rows), "", "</details>"]
    return lines


def _sfm(s: dict) -> list[str]:
    rows = [["mapper", s.get("mapper")],
            ["images registered / total", f"{s.get('num_reg_images', '?')} / {s.get('num_images', '?')}"],
            ["frames registered", s.get("num_reg_frames")], ["3D points", s.get("num_points3D")],
            ["mean reprojection error (px)", s.get("mean_reprojection_error_px")],
            ["mean track length", s.get("mean_track_length")], ["rig", s.get("rig")],
            ["models (registered images each)", s.get("models")], ["wall time (s)", s.get("wall_s")]]
    return [md_table(["SfM", "value"], rows, nd=3)]


def _training(m: dict, splat_dir: Path, tmp: Path) -> tuple[list[str], list[str]]:
    final = m.get("final") or {}
    rows = [["held-out PSNR (dB)", final.get("psnr")], ["held-out SSIM", final.get("ssim")]]
    tv = m.get("final_train_views") or {}
    if tv:
        rows += [["training-view PSNR (dB)", tv.get("psnr")], ["training-view SSIM", tv.get("ssim")]]
    if "lpips" in final:
        rows.append(["held-out LPIPS", final["lpips"]])
    for label, key in (("iterations", "iterations"), ("final step", "final_step"),
                       ("steps trained (coarse pass + clusters)", "steps"), ("Gaussians", "num_gaussians"),
                       ("SH degree (reached, in the PLY)", "sh_degree"),
                       ("SH degree (configured)", "sh_degree_configured"), ("strategy", "strategy"), ("device", "device"),
                       ("train views", "n_train_views"), ("held-out views", "n_test_views"),
                       ("training time (s)", "train_seconds"), ("s per iteration", "sec_per_iter"),
                       ("resumed from steps", "resumed_from"), ("OOM culling tier", "oom_tier"),
                       ("scene scale (m)", "scene_scale_m")):
        if key in m:
            rows.append([label, m[key]])
    res = m.get("resolution") or {}
    if isinstance(res, dict) and res.get("first_train_view"):
        w, h = res["first_train_view"][:2]
        rows.append(["training resolution (px)", f"{w} x {h} (max side {res.get('max_side') or 'full'})"])
    if m.get("test_frames"):
        rows.append(["held-out frames", ", ".join(map(str, m["test_frames"]))])
    lines = [md_table(["training", "value"], rows, nd=4)]
    for note in ("eval_note", "lpips_note"):
        if m.get(note):
            lines += ["", f"_{m[note]}_"]
    evals = m.get("evals") or []
    if evals:
        keys = [k for k in ("step", "psnr", "ssim", "lpips", "num_gaussians", "n_views") if any(k in e for e in evals)]
        lines += ["", md_table(keys, [[e.get(k) for k in keys] for e in evals], nd=4)]
    per_view = m.get("final_per_view") or {}
    if isinstance(per_view, dict) and per_view:
        keys = [k for k in ("psnr", "ssim", "lpips") if any(isinstance(v, dict) and k in v for v in per_view.values())]
        lines += ["", "<details><summary>Held-out views</summary>", "",
                  md_table(["view", *keys], [[n, *[(v or {}).get(k) for k in keys]] for n, v in per_view.items()], nd=4),
                  "", "</details>"]
    figs = []
    pngs = sorted(splat_dir.glob("*.png"), key=lambda p: ({"curve.png": 0, "renders.png": 1}.get(p.name, 2), p.name))
    for p in pngs:
        dest = f"train_{p.name}"
        shutil.copyfile(p, tmp / dest)
        figs.append(dest)
        caption = {"curve.png": "Training curve", "renders.png": "Held-out views: render | ground truth"}.get(
            p.name, p.stem)
        lines += ["", f"**{caption}**", "", f"![{caption}]({dest})"]
    if not pngs:
        lines += ["", f"(no PNG in {splat_dir.name}/)"]
    return lines, figs


def _generic(d: dict, skip: tuple[str, ...] = ("schema_version",)) -> list[str]:
    rows = [[k, v] for k, v in _flatten(d) if k.split(".")[0] not in skip]
    main_rows = [r for r in rows if not r[0].startswith("options.")]
    opt_rows = [r for r in rows if r[0].startswith("options.")]
    lines = [md_table(["key", "value"], main_rows, nd=4)]
    if opt_rows:
        lines += ["", "<details><summary>Options</summary>", "", md_table(["key", "value"], opt_rows, nd=4), "",
                  "</details>"]
    return lines


def _compression(c: dict) -> list[str]:
    lines = []
    if "size_bytes_in" in c and "size_bytes_out" in c:
        lines += [f"**{c.get('preset', '?')}** ({'lossless' if c.get('lossless') else 'lossy'}): "
                  f"{c['size_bytes_in'] / 1e6:.2f} MB → {c['size_bytes_out'] / 1e6:.2f} MB"
                  + (f", {c['ply_save_pct']:.2f} % smaller" if c.get("ply_save_pct") is not None else "")
                  + (f" (ratio {c['compression_ratio']:.2f})" if c.get("compression_ratio") is not None else "")
                  + ".", ""]
    return lines + _generic(c)


# ------------------------------------------------------------------------------------------
# stage


def main(scene_dir: str | os.PathLike, out_dir: str | os.PathLike, options: dict | ReportOptions | None = None) -> dict:
    """Write ``out_dir/report.md`` and its PNG figures from the artefacts in ``scene_dir``.

    Args:
        scene_dir: ``work/{scene}`` (inputs: ``manifest.json``, ``views.json``,
            ``alignment.json``, ``sparse/summary.json``, ``benchmarks/*.tsv``,
            ``splat/metrics.json`` + ``splat/*.png``, ``export/export.json``; each optional).
        out_dir: output folder (``results/{scene}_report``), built in a temporary folder and
            renamed into place whole (replaces an existing one).
        options: :class:`ReportOptions` or a dict of its fields.

    Returns:
        ``report`` (path of report.md), ``figures`` (PNG file names in ``out_dir``),
        ``sections`` (section title -> ``"ok"`` or its ``"not available: ..."`` line).

    Raises:
        InputError: ``scene_dir`` is not a folder, bad options, a benchmark TSV that is not
            Snakemake's format.
    """
    opts = ReportOptions.from_dict(options)
    scene_dir, out_dir = Path(scene_dir), Path(out_dir)
    if not scene_dir.is_dir():
        raise InputError(f"{scene_dir}: scene folder not found")
    scene = scene_dir.resolve().name
    compress_path = Path(opts.compress_report) if opts.compress_report else \
        scene_dir.resolve().parent.parent / "results" / f"{scene}.compressed.json"
    export_path = Path(opts.export_report) if opts.export_report else scene_dir / "export" / "export.json"

    man, man_na = load_optional_json(scene_dir / "manifest.json", scene_dir)
    views, views_na = load_optional_json(scene_dir / "views.json", scene_dir)
    al, al_na = load_optional_json(scene_dir / "alignment.json", scene_dir)
    sfm, sfm_na = load_optional_json(scene_dir / "sparse" / "summary.json", scene_dir)
    met, met_na = load_optional_json(scene_dir / "splat" / "metrics.json", scene_dir)
    exp, exp_na = load_optional_json(export_path, scene_dir)
    comp, comp_na = load_optional_json(compress_path, scene_dir)

    sections: dict[str, str] = {}
    figures: list[str] = []
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = [f"# Splat Forge report: {scene}", "", f"Scene folder `{scene_dir.resolve()}`, generated {now}.", ""]
    md += [f"Look at it: [interactive viewer](../{scene}_viewer/index.html) (run `python -m http.server` in `results/`, open `http://localhost:8000/{scene}_viewer/`), [fly-through video](../{scene}_flythrough.mp4) (`snakemake results/{scene}_flythrough.mp4` makes it).", ""]  # noqa: E501

    with atomic_path(out_dir, suffix="") as tmp:
        tmp.mkdir(parents=True)

        def section(title: str, na: str | None, body) -> None:
            md.extend([f"## {title}", ""])
            if na is not None:
                md.extend([na, ""])
                sections[title] = na
                return
            md.extend(body())
            md.append("")
            sections[title] = "ok"

        section("1. Capture", man_na, lambda: _capture(man))

        def map_body() -> list[str]:
            counts = plot_positions(tmp / "positions_enu.png", man, views, al, opts.label_frames, opts.dpi)
            figures.append("positions_enu.png")
            lines = []
            for f, na in (("views.json", views_na), ("alignment.json", al_na)):
                if na:
                    lines.append(f"({na})")
            if al is not None:
                lines += [f"{counts['registered']} frame(s) registered, {counts['not_registered']} not registered.", ""]
                lines += _alignment_text(al)
            lines += ["", "![Capture positions, top-down ENU](positions_enu.png)"]
            clusters, _ = load_optional_json(scene_dir / "clusters.json", scene_dir)
            if clusters and clusters.get("clusters"):
                merge, _ = load_optional_json(scene_dir / "merge.json", scene_dir)
                lines += ["", *plot_clusters(tmp / "clusters.png", clusters, views, merge, opts.dpi), "",
                          "![Cluster split, top-down ENU](clusters.png)"]
                figures.append("clusters.png")
            mask_lines = plot_masks(tmp / "masks.png", views, man)
            if mask_lines:
                figures.append("masks.png")
                lines += [""] + mask_lines
            return lines

        has_pos = man is not None or views is not None or al is not None
        section("2. Positions and geo-alignment", None if has_pos else
                "not available: manifest.json, views.json and alignment.json missing", map_body)
        section("3. Structure from motion", sfm_na, lambda: _sfm(sfm))

        bench_dir = scene_dir / "benchmarks"
        # the report rule's own file, if any, is from an earlier run of the report: leave it out
        bench = [b for b in (read_benchmarks(bench_dir) if bench_dir.is_dir() else []) if b["rule"] != "report"]

        def bench_body() -> list[str]:
            plot_benchmarks(tmp / "stage_times.png", bench, opts.dpi)
            figures.append("stage_times.png")
            rows = [[b["rule"], b["s"], str(_dt.timedelta(seconds=round(b["s"]))) if b["s"] is not None else None,
                     b["max_rss_mb"], b["cpu_time"], b["mean_load"], b["repeats"]] for b in bench]
            tot = sum(b["s"] or 0.0 for b in bench)
            peak = max((b["max_rss_mb"] or 0.0 for b in bench), default=0.0)
            cpu = sum(b["cpu_time"] or 0.0 for b in bench)
            rows.append(["**total**", tot, str(_dt.timedelta(seconds=round(tot))), peak, cpu, None, None])
            return [md_table(["rule", "wall (s)", "h:m:s", "peak RSS (MB)", "CPU time (s)", "mean load (%)", "repeats"],
                           rows),
                    "", "Wall times are Snakemake `benchmark:` measurements (mean over repeats); peak RSS is `max_rss`. "
                        "The total is the sum of the rules (the rules may have run in parallel).",
                    "", "![Wall time and peak memory per rule](stage_times.png)"]

        section("4. Stage wall time and peak memory", None if bench else "not available: benchmarks/*.tsv missing",
                bench_body)

        def train_body() -> list[str]:
            lines, figs = _training(met, scene_dir / "splat", tmp)
            figures.extend(figs)
            return lines

        section("5. Training", met_na, train_body)
        section("6. Export", exp_na, lambda: _generic(exp))
        section("7. Compression", comp_na, lambda: _compression(comp))

        (tmp / "report.md").write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")
    log.info("report: %s (%d figures; %d/%d sections available)", out_dir / "report.md", len(figures),
             sum(v == "ok" for v in sections.values()), len(sections))
    return {"report": str(out_dir / "report.md"), "figures": figures, "sections": sections}


def cli(argv: list[str]) -> int:
    """``splatforge report SCENE_DIR OUT_DIR [--compress-report FILE] [--export-report FILE]``."""
    ap = argparse.ArgumentParser(prog="splatforge report", description=__doc__.split("\n")[0])
    ap.add_argument("scene_dir", help="work/{scene}")
    ap.add_argument("out_dir", help="results/{scene}_report")
    ap.add_argument("--compress-report", default=None, help="codec report JSON (results/{scene}.compressed.json)")
    ap.add_argument("--export-report", default=None, help="export report JSON (default SCENE_DIR/export/export.json)")
    ap.add_argument("--dpi", type=int, default=ReportOptions.dpi)
    a = ap.parse_args(argv)
    out = main(a.scene_dir, a.out_dir, {"compress_report": a.compress_report, "export_report": a.export_report,
                                        "dpi": a.dpi})
    print(out["report"])
    return 0
