"""Split a scene into spatial clusters by the frames' ENU capture positions (issue #12).

A scene of many panoramas is mapped and trained per cluster, then merged
(``splatforge_core.sfm.merge`` for the sparse models, ``splatforge_core.merge`` for the splats),
as the city-scale methods do (VastGaussian, CityGaussian, Hierarchical 3DGS): each cluster is
trained on an expanded region and cropped back to its own cell.

The split (:func:`split`):

1. k-means (``scipy.cluster.vq.kmeans2``, k-means++ start, fixed seed) on the frames' east/north
   positions into ``ceil(n / max_panoramas)`` clusters (or ``n_clusters``): the *core* members.
2. A cluster whose core has fewer than ``min_frames`` frames is merged into the cluster with the
   nearest centre (logged), repeatedly, until every core has ``min_frames`` or one is left.
3. Centres = mean ENU position of each core. A cluster's *cell* is the 2-D (east, north) Voronoi
   cell of its centre (:func:`cell_labels`); the splat merge keeps each cluster's Gaussians in
   its cell only.
4. *Members* = core, plus every frame in the cell, plus every frame within ``margin_m`` metres
   (east/north) of a core frame, plus the ``k_neighbors`` frames outside the core nearest to it, so
   neighbouring clusters share frames (the SfM merge uses them to compare the clusters' poses,
   and training sees past its cell's border).

Training (:func:`train_job_options`): with ``coarse_fraction`` > 0 (default 0.9) one coarse pass
over the whole merged model trains the first part of the schedule and every cluster continues that
run on its own members (CityGaussian's coarse-to-fine recipe); all of them hold out the scene's
held-out frames (:func:`scene_held_out_frames`), at which the merged splat is evaluated.

Clusters are named ``c0``, ``c1``, ... in order of their centre's east, then north coordinate.
``work/{scene}/clusters.json`` (:func:`main`) holds the split; schema in ``docs/formats.md``.
The one-cluster case (the default for scenes of up to ``max_panoramas`` frames) is not run at
all by the workflow: the scene is mapped and trained as one block (see rules/common.smk).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

from .errors import InputError
from .io import read_json, write_json
from .log import get_logger
from .options import build_options

log = get_logger("cluster")

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ClusterOptions:
    """Options of the cluster split (config section ``cluster``).

    Attributes:
        max_panoramas: about the most frames (panoramas or photos) per cluster; the number of
            clusters is ``ceil(frames / max_panoramas)``. Default 250. A scene with at most this
            many input images is mapped and trained as one block, exactly as without clusters.
        n_clusters: number of clusters; 0 (default) = from ``max_panoramas``. A value > 1 turns
            the clustered workflow on for scenes of any size.
        margin_m: overlap margin in metres (east/north): a frame within this distance of a
            cluster's core frame is also a member of that cluster. Default 10.0.
        k_neighbors: the cluster also takes the K frames outside its core nearest to it
            (whatever the margin), so neighbouring clusters share at least K frames even where
            the walk has a gap. Default 2 (0 = margin only).
        min_frames: a core with fewer frames is merged into the nearest cluster. Default 3
            (the least a model can be mapped and geo-aligned from).
        seed: seed of the k-means++ start. Default 0.
        coarse_fraction: share of the training schedule spent on one coarse pass over the whole
            merged model before the clusters (CityGaussian, Liu et al. 2024): the coarse pass
            trains the first ``coarse_fraction`` of the schedule (steps, learning-rate decay,
            densification of the train section), every cluster continues it from the coarse
            splat (all its Gaussians) for the rest on its own members, and is cropped
            to its cell. Each cluster then learns the far field (walls, sky) that every view sees
            from the same start, instead of each refitting it from its own SfM points with its
            own sky sphere. Measured on the 24-panorama demo, 2 clusters, the same 400 total
            steps as one block at 128 px (``benchmarks/results/cluster.md``): merged held-out
            PSNR against the block -0.79 dB at 0.75, -0.52 at 0.85, -0.23 at 0.9. 0 = no coarse
            pass (each cluster trains the whole schedule from its own SfM points). Default 0.9.
        coarse_max_side: longer image side (pixels) of the coarse pass; None (default) = the train
            section's (``max_side`` on CUDA, ``cpu_max_side`` on CPU). A scene too large for one
            machine at full resolution gets its coarse pass at a lower one.
    """

    max_panoramas: int = 250
    n_clusters: int = 0
    margin_m: float = 10.0
    k_neighbors: int = 2
    min_frames: int = 3
    seed: int = 0
    coarse_fraction: float = 0.9
    coarse_max_side: Optional[int] = None

    def __post_init__(self) -> None:
        if self.max_panoramas < 3:
            raise ValueError(f"max_panoramas must be >= 3, got {self.max_panoramas}")
        if self.n_clusters < 0:
            raise ValueError(f"n_clusters must be >= 0 (0 = from max_panoramas), got {self.n_clusters}")
        if not (math.isfinite(self.margin_m) and self.margin_m >= 0):
            raise ValueError(f"margin_m must be a finite number >= 0, got {self.margin_m}")
        if self.k_neighbors < 0:
            raise ValueError(f"k_neighbors must be >= 0, got {self.k_neighbors}")
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {self.min_frames}")
        if not (math.isfinite(self.coarse_fraction) and 0 <= self.coarse_fraction < 1):
            raise ValueError(f"coarse_fraction must be in [0, 1) (0 = no coarse pass), got {self.coarse_fraction}")
        if self.coarse_max_side is not None and self.coarse_max_side < 16:
            raise ValueError(f"coarse_max_side must be >= 16 pixels or null, got {self.coarse_max_side}")

    def num_clusters(self, n_frames: int) -> int:
        """Clusters asked for ``n_frames`` frames (before small clusters are merged)."""
        k = self.n_clusters or math.ceil(n_frames / self.max_panoramas)
        return max(1, min(k, n_frames))


def scene_held_out_frames(views_path: str | os.PathLike, train_options: dict | None) -> list[str]:
    """The frames a clustered scene holds out: the train section's rule
    (``eval_every_n``/``eval_offset``, :func:`splatforge_core.train.data.held_out_frame_indices`)
    over all frames of ``views.json`` sorted by name, or its ``eval_frames`` when given. The
    coarse pass and every cluster hold out exactly these, so that no cluster trains on a frame
    the merged splat is evaluated on.

    Raises:
        InputError: unreadable ``views.json`` (named).
    """
    from .train.data import held_out_frame_indices

    t = dict(train_options or {})
    if t.get("eval_frames") is not None:
        return list(t["eval_frames"])
    names = sorted(f["frame"] for f in read_json(views_path)["frames"])
    every = t.get("eval_every_n", 8)
    return [names[i] for i in held_out_frame_indices(len(names), every, t.get("eval_offset"))]


def coarse_train_options(train_options: dict | None, cluster_options: dict | ClusterOptions | None,
                         held_out: list[str]) -> dict:
    """Train options of the whole-scene coarse pass: the train section, stopped at
    ``coarse_fraction`` of its schedule, at ``coarse_max_side`` pixels when set, holding out ``held_out``.

    Raises:
        InputError: ``coarse_fraction`` is 0 (no coarse pass is configured), bad cluster options.
    """
    c = build_options(ClusterOptions, cluster_options, "cluster")
    if c.coarse_fraction <= 0:
        raise InputError("cluster option coarse_fraction is 0: this scene has no coarse pass")
    out = {**(train_options or {}), "schedule_stop": c.coarse_fraction, "eval_frames": list(held_out)}
    if c.coarse_max_side is not None:
        out.update(max_side=c.coarse_max_side, cpu_max_side=c.coarse_max_side)
    return out


def cluster_train_options(train_options: dict | None, cluster_options: dict | ClusterOptions | None,
                          held_out: list[str]) -> dict:
    """Train options of one cluster: the train section holding out ``held_out``; with a coarse
    pass, the rest of its schedule (``schedule_start`` = ``coarse_fraction``, continued from the
    coarse splat, whose sky the cluster keeps: no sky sphere of its own is added).

    Raises:
        InputError: bad cluster options.
    """
    c = build_options(ClusterOptions, cluster_options, "cluster")
    out = {**(train_options or {}), "eval_frames": list(held_out)}
    if c.coarse_fraction > 0:
        out["schedule_start"] = c.coarse_fraction
    return out


TRAIN_ROLES = ("scene", "coarse", "cluster")


def train_job_options(role: str, train_options: dict | None, cluster_options: dict | ClusterOptions | None,
                      views_path: str | os.PathLike) -> dict:
    """Train options of one training job of the workflow (``scripts/train.py``).

    Args:
        role: "scene" (a one-block scene: the train section as it is), "coarse" (the coarse
            pass of a clustered scene, :func:`coarse_train_options`) or "cluster" (one cluster,
            :func:`cluster_train_options`); the last two hold out :func:`scene_held_out_frames`.
        train_options, cluster_options: the scene's ``train`` and ``cluster`` sections.
        views_path: the scene's ``views.json``.

    Raises:
        InputError: unknown role, bad cluster options, unreadable ``views.json``.
    """
    if role not in TRAIN_ROLES:
        raise InputError(f"train job role must be one of {list(TRAIN_ROLES)}, got {role!r}")
    if role == "scene":
        return dict(train_options or {})
    held = scene_held_out_frames(views_path, train_options)
    if role == "coarse":
        return coarse_train_options(train_options, cluster_options, held)
    return cluster_train_options(train_options, cluster_options, held)


def has_coarse_pass(cluster_options: dict | ClusterOptions | None) -> bool:
    """Whether a clustered scene trains a whole-scene coarse pass first (``coarse_fraction`` > 0)."""
    return build_options(ClusterOptions, cluster_options, "cluster").coarse_fraction > 0


def is_clustered(options: dict | ClusterOptions | None, n_images: int) -> bool:
    """Whether a scene of about ``n_images`` input images runs the clustered workflow.

    Decided before the workflow runs (rules/common.smk), from the config and the number of
    input images, so that a one-cluster scene's jobs are exactly those without clusters.
    """
    opts = build_options(ClusterOptions, options, "cluster")
    return opts.n_clusters > 1 or (opts.n_clusters == 0 and n_images > opts.max_panoramas)


def cell_labels(points_en: np.ndarray, centres_en: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (2-D Voronoi cell) of every point.

    Args:
        points_en: (N, >=2) float positions; the first two columns (east, north, metres) are used.
        centres_en: (K, >=2) float cluster centres, same frame.

    Returns:
        (N,) int64 indices into ``centres_en``; ties go to the lower index.
    """
    p = np.asarray(points_en, dtype=np.float64)[:, :2]
    c = np.asarray(centres_en, dtype=np.float64)[:, :2]
    if len(p) == 0:
        return np.zeros(0, dtype=np.int64)
    # chunked so 10^7 Gaussians x K centres stay small
    out = np.empty(len(p), dtype=np.int64)
    step = 1 << 20
    for i in range(0, len(p), step):
        d = ((p[i:i + step, None, :] - c[None, :, :]) ** 2).sum(-1)
        out[i:i + step] = np.argmin(d, axis=1)
    return out


def kmeans_labels(xy: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means labels (N,) int64 of the (N, 2) positions ``xy`` (metres), k-means++ start.

    ``scipy.cluster.vq.kmeans2`` with a fixed seed; every point is finally given its nearest
    centre, so the cores are the Voronoi cells of the k-means centres.
    """
    from scipy.cluster.vq import kmeans2

    if k <= 1:
        return np.zeros(len(xy), dtype=np.int64)
    centres, _ = kmeans2(np.asarray(xy, dtype=np.float64), k, iter=50, minit="++", seed=seed)
    return cell_labels(xy, centres)


def merge_small(labels: np.ndarray, xy: np.ndarray, min_frames: int, names: list[str] | None = None) -> tuple[np.ndarray, list[dict]]:
    """Merge every cluster with fewer than ``min_frames`` frames into the nearest other one.

    Args:
        labels: (N,) int cluster label of each frame.
        xy: (N, 2) positions, metres.
        min_frames: smallest cluster kept.
        names: frame names for the log lines and the record (default: indices).

    Returns:
        (labels relabelled 0..K'-1 in no particular order, list of merges
        ``{"frames": [...], "into_centre_en": [e, n]}``). The smallest cluster is merged first;
        the centre of a cluster is the mean of its frames.
    """
    labels = np.asarray(labels, dtype=np.int64).copy()
    names = names if names is not None else [str(i) for i in range(len(labels))]
    merges: list[dict] = []
    while True:
        ids, counts = np.unique(labels, return_counts=True)
        if len(ids) <= 1 or counts.min() >= min_frames:
            break
        small = ids[np.argmin(counts)]
        centres = {i: xy[labels == i].mean(0) for i in ids}
        others = [i for i in ids if i != small]
        into = min(others, key=lambda i: float(np.linalg.norm(centres[i] - centres[small])))
        frames = [names[j] for j in np.flatnonzero(labels == small)]
        log.info("cluster: a cluster of %d frame(s) (%s) is smaller than min_frames=%d: merged into the nearest "
                 "cluster (centre %.1f m away)", len(frames), ", ".join(frames), min_frames,
                 float(np.linalg.norm(centres[into] - centres[small])))
        merges.append({"frames": frames, "into_centre_en": [float(v) for v in centres[into]]})
        labels[labels == small] = into
    _, labels = np.unique(labels, return_inverse=True)
    return labels.astype(np.int64), merges


def split(names: list[str], enu: np.ndarray, options: dict | ClusterOptions | None = None) -> dict[str, Any]:
    """Split frames into clusters (see the module docstring).

    Args:
        names: N frame names.
        enu: (N, 3) float ENU positions, metres.
        options: :class:`ClusterOptions` or a dict of its fields.

    Returns:
        ``{"clusters": [{"name", "centre_enu", "core", "members"}], "merged_small": [...],
        "options": {...}}``; ``core``/``members`` are frame names in input order.

    Raises:
        InputError: bad options, no frames, positions not (N, 3) finite, fewer frames than
            ``min_frames``.
    """
    opts = build_options(ClusterOptions, options, "cluster")
    enu = np.asarray(enu, dtype=np.float64)
    if enu.ndim != 2 or enu.shape != (len(names), 3) or not np.isfinite(enu).all():
        raise InputError(f"cluster: positions must be ({len(names)}, 3) finite ENU metres, got shape {enu.shape}")
    n = len(names)
    if n < opts.min_frames:
        raise InputError(f"cluster: {n} frame(s), fewer than min_frames={opts.min_frames}: too few to map")
    xy = enu[:, :2]
    labels = kmeans_labels(xy, opts.num_clusters(n), opts.seed)
    labels, merges = merge_small(labels, xy, opts.min_frames, names)
    k = int(labels.max()) + 1
    centres = np.stack([enu[labels == i].mean(0) for i in range(k)])
    order = np.lexsort((centres[:, 1], centres[:, 0]))  # by east, then north
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    labels, centres = rank[labels], centres[order]
    cells = cell_labels(xy, centres)
    d = np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=-1) if n <= 20000 else None
    clusters = []
    for i in range(k):
        core = labels == i
        member = core | (cells == i)
        if d is not None:
            to_core = d[core].min(0)
        else:  # very large scenes: no N x N matrix
            to_core = np.full(n, np.inf)
            for j in np.flatnonzero(core):
                to_core = np.minimum(to_core, np.linalg.norm(xy - xy[j], axis=1))
        member |= to_core <= opts.margin_m
        if opts.k_neighbors and k > 1:
            outside = np.flatnonzero(~core)
            member[outside[np.argsort(to_core[outside], kind="stable")[:opts.k_neighbors]]] = True
        clusters.append({
            "name": f"c{i}",
            "centre_enu": [float(v) for v in centres[i]],
            "core": [names[j] for j in np.flatnonzero(core)],
            "members": [names[j] for j in np.flatnonzero(member)],
        })
    return {"clusters": clusters, "merged_small": merges, "options": asdict(opts)}


def frames_of_views(views: dict, views_path: str | os.PathLike = "views.json") -> tuple[list[str], np.ndarray]:
    """Frame names and (N, 3) ENU positions of a views.json dict.

    Raises:
        InputError: a frame without an ENU position (naming ``views_path`` and the frame).
    """
    names, enu = [], []
    for fr in views.get("frames") or []:
        if fr.get("enu") is None:
            raise InputError(f"{views_path}: frame {fr.get('frame')!r} has no GPS position; a clustered scene needs "
                             "every frame's position (turn clustering off or drop the frame)")
        names.append(fr["frame"])
        enu.append(fr["enu"])
    if not names:
        raise InputError(f"{views_path}: no frames to cluster")
    return names, np.asarray(enu, dtype=np.float64).reshape(-1, 3)


def main(views_path: str | os.PathLike, clusters_path: str | os.PathLike, options: dict | ClusterOptions | None = None) -> dict:
    """Split the frames of ``views.json`` and write ``clusters.json``.

    Args:
        views_path: the scene's ``views.json`` (frames with ``enu`` and ``images``).
        clusters_path: output JSON: ``schema_version``, ``num_frames``, ``margin_m``,
            ``k_neighbors``, ``options``, ``merged_small``, ``clusters`` (each ``name``,
            ``centre_enu`` [e, n, u] m, ``core`` and ``members`` (frame names), ``images``
            (image names of the members, relative to ``images/``), ``core_images``).
        options: :class:`ClusterOptions` or a dict of its fields.

    Returns:
        The written dict.

    Raises:
        InputError: unreadable ``views.json``, a frame without position, too few frames.
    """
    try:
        views = read_json(views_path)
    except (OSError, ValueError) as e:
        raise InputError(f"{views_path}: cannot read views.json ({e})") from e
    names, enu = frames_of_views(views, views_path)
    out = split(names, enu, options)
    images = {fr["frame"]: sorted(fr["images"].values()) for fr in views["frames"]}
    for c in out["clusters"]:
        c["images"] = [im for f in c["members"] for im in images[f]]
        c["core_images"] = [im for f in c["core"] for im in images[f]]
    doc = {"schema_version": SCHEMA_VERSION, "num_frames": len(names), "margin_m": out["options"]["margin_m"],
           "k_neighbors": out["options"]["k_neighbors"], **out}
    write_json(clusters_path, doc)
    log.info("cluster: %d frames -> %d cluster(s): %s", len(names), len(out["clusters"]),
             ", ".join(f"{c['name']} {len(c['core'])} core / {len(c['members'])} members" for c in out["clusters"]))
    return doc


def read_clusters(path: str | os.PathLike) -> dict:
    """Read and check ``clusters.json``.

    Raises:
        InputError: unreadable file, wrong schema version, no clusters.
    """
    try:
        doc = read_json(path)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read clusters.json ({e}); rerun the cluster rule") from e
    if not isinstance(doc, dict) or doc.get("schema_version") != SCHEMA_VERSION or not doc.get("clusters"):
        raise InputError(f"{path}: not a clusters.json with schema_version {SCHEMA_VERSION} and clusters; "
                         "rerun the cluster rule")
    return doc


def cluster_names(path: str | os.PathLike) -> list[str]:
    """Names of the clusters in ``clusters.json`` (``c0``, ``c1``, ...)."""
    return [c["name"] for c in read_clusters(path)["clusters"]]
