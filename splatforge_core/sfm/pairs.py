"""SfM pairs stage: ``pairs.txt`` (one ``name1 name2`` per line) from the capture positions.

* With GPS (every frame of ``views.json`` has ``enu``): each capture position (frame: one
  panorama or one photo) is paired with its ``num_neighbors`` nearest positions in ENU
  (Euclidean distance in metres, ties broken by frame order); the relation is made
  symmetric. For panoramas every view of frame i is paired with every view of frame j
  (the relative heading of two panoramas is unknown, so no view can be left out); views of
  the same frame are never paired (their relative pose is known from the rig).
* Without GPS (any frame without ``enu``): ``no_gps = "sequential"`` pairs each frame with
  the next ``num_neighbors`` frames in ``views.json`` order (capture order), ``"exhaustive"``
  pairs every frame with every other.
* Logs the number of pairs against all possible cross-frame pairs.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import InputError
from ..io import atomic_path, write_json
from ..log import get_logger
from ..options import build_options
from . import load_views

log = get_logger("sfm.pairs")

FALLBACKS = ("sequential", "exhaustive")


@dataclass(frozen=True)
class PairsOptions:
    """Options of the pairs stage (config section ``sfm.pairs``).

    Attributes:
        num_neighbors: K, the nearest capture positions (ENU metres) each frame is paired
            with; also the window of the sequential fallback. Default 8.
        no_gps: fallback without GPS: ``"sequential"`` (default) or ``"exhaustive"``.
        max_distance_m: drop neighbours farther than this (metres); None = no limit.
    """

    num_neighbors: int = field(default=8, metadata={"min": 1})
    no_gps: str = "sequential"
    max_distance_m: float | None = field(default=None, metadata={"gt": 0})

    def __post_init__(self) -> None:
        if self.num_neighbors < 1:
            raise ValueError(f"num_neighbors must be >= 1, got {self.num_neighbors}")
        if self.no_gps not in FALLBACKS:
            raise ValueError(f"no_gps must be one of {FALLBACKS}, got {self.no_gps!r}")


def frame_pairs(enu: np.ndarray | None, num_frames: int, opts: PairsOptions) -> tuple[list[tuple[int, int]], str]:
    """Pairs of frame indices ``(i, j)``, ``i < j``, and the method used.

    Args:
        enu: (N, 3) float64 ENU positions in metres, or None when not every frame has GPS.
        num_frames: N.
        opts: the options.

    Returns:
        (sorted list of index pairs, ``"gps_knn" | "sequential" | "exhaustive"``).
    """
    pairs: set[tuple[int, int]] = set()
    if enu is not None:
        d = np.linalg.norm(enu[:, None, :] - enu[None, :, :], axis=-1)
        np.fill_diagonal(d, np.inf)
        k = min(opts.num_neighbors, num_frames - 1)
        for i in range(num_frames):
            for j in np.argsort(d[i], kind="stable")[:k]:
                if opts.max_distance_m is None or d[i, j] <= opts.max_distance_m:
                    pairs.add((min(i, int(j)), max(i, int(j))))
        method = "gps_knn"
    elif opts.no_gps == "sequential":
        for i in range(num_frames):
            for j in range(i + 1, min(num_frames, i + 1 + opts.num_neighbors)):
                pairs.add((i, j))
        method = "sequential"
    else:
        pairs = {(i, j) for i in range(num_frames) for j in range(i + 1, num_frames)}
        method = "exhaustive"
    return sorted(pairs), method


def main(views_path: str | os.PathLike, pairs_path: str | os.PathLike, options: dict | PairsOptions | None = None) -> dict:
    """Write ``pairs.txt`` for ``views.json``.

    Args:
        views_path: ``views.json`` (frames with optional ``enu``).
        pairs_path: output text file, one ``name1 name2`` per line (names relative to
            ``images/``), written atomically.
        options: :class:`PairsOptions` or a dict of its fields.

    Returns:
        Stats: ``method``, ``num_pairs``, ``num_all_pairs`` (all cross-frame image pairs),
        ``num_frame_pairs``, ``wall_s``.

    Raises:
        InputError: bad views.json or options, fewer than 2 frames.
    """
    t0 = time.perf_counter()
    opts = build_options(PairsOptions, options, "sfm pairs")
    views = load_views(views_path)
    frames = views["frames"]
    if len(frames) < 2:
        raise InputError(f"{views_path}: {len(frames)} frame(s); pairs need at least 2 capture positions")
    has_gps = all(fr.get("enu") is not None for fr in frames)
    enu = np.array([fr["enu"] for fr in frames], dtype=np.float64) if has_gps else None
    if not has_gps:
        log.warning("pairs: %d of %d frames have no GPS; falling back to %s pairs",
                    sum(fr.get("enu") is None for fr in frames), len(frames), opts.no_gps)
    spaced = [n for fr in frames for n in fr["images"].values() if len(n.split()) != 1]
    if spaced:
        raise InputError(f"{views_path}: image names with white space cannot go into pairs.txt "
                         f"(COLMAP splits its lines on spaces), e.g. {spaced[:3]}")
    fpairs, method = frame_pairs(enu, len(frames), opts)
    lines = []
    for i, j in fpairs:
        for a in frames[i]["images"].values():
            for b in frames[j]["images"].values():
                lines.append(f"{a} {b}\n")
    sizes = [len(fr["images"]) for fr in frames]
    n_all = (sum(sizes) ** 2 - sum(s * s for s in sizes)) // 2
    with atomic_path(pairs_path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)
    stats = {"method": method, "num_pairs": len(lines), "num_all_pairs": int(n_all),
             "num_frame_pairs": len(fpairs), "options": asdict(opts), "wall_s": round(time.perf_counter() - t0, 3)}
    log.info("pairs (%s): %d image pairs of %d possible (%.1f %%), %d frame pairs",
             method, len(lines), n_all, 100.0 * len(lines) / max(n_all, 1), len(fpairs))
    return stats


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("views")
    p.add_argument("pairs_txt")
    p.add_argument("--num-neighbors", type=int, default=PairsOptions.num_neighbors)
    p.add_argument("--no-gps", choices=FALLBACKS, default=PairsOptions.no_gps)
    p.add_argument("--max-distance-m", type=float, default=None)
    p.add_argument("--stats", help="optional JSON file for the stats")


def run_args(a: argparse.Namespace) -> dict:
    s = main(a.views, a.pairs_txt, {"num_neighbors": a.num_neighbors, "no_gps": a.no_gps, "max_distance_m": a.max_distance_m})
    if a.stats:
        write_json(a.stats, s)
    return s
