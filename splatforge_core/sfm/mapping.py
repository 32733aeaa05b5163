"""SfM map stage: camera poses and sparse points from the matched database.

Backends (option ``mapper``, registry :data:`MAPPER_BACKENDS`), all pycolmap 4.2:

* ``incremental`` -- ``pycolmap.incremental_mapping`` (COLMAP's incremental mapper);
* ``global`` -- ``pycolmap.global_mapping`` (GLOMAP: rotation averaging + global positioning);
* ``hierarchical`` -- ``pycolmap.hierarchical_mapping`` (scene partitioned into overlapping
  clusters, each mapped incrementally, then merged).

Panorama views have exact intrinsics and rig poses (rendered by the project stage), so for
rigs the intrinsics and ``sensor_from_rig`` are held constant in bundle adjustment, as
``pycolmap.panorama`` does. Perspective photos get their focal length (and radial
distortion) refined.

The largest model (most registered images) is written as ``sparse/0`` (COLMAP binary,
opens in COLMAP's GUI) together with ``sparse/summary.json``; the ``sparse`` folder is built
in a temporary folder and renamed into place whole.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pycolmap

from ..errors import InputError, SplatForgeError
from ..io import atomic_path, require_free_space, write_json
from ..log import get_logger
from ..options import build_options

log = get_logger("sfm.map")


@dataclass(frozen=True)
class MapOptions:
    """Options of the map stage (config section ``sfm.map``).

    Attributes:
        mapper: ``"global"`` (default, chosen by measurement: on Lund it registers 29/29
            photos where incremental and hierarchical register 4/29 (no good initial pair on
            a forward walk); on the demo all three register every view in about the same
            time; ``benchmarks/results/sfm.md``), ``"incremental"`` or ``"hierarchical"``.
        refine_focal_length: refine focal lengths in bundle adjustment. None (default) =
            True for perspective photos, False when the database has a rig (panorama views
            rendered with exact intrinsics).
        refine_extra_params: refine radial distortion. Default False: on a forward walk
            (Lund) distortion and focal length are barely observable and refining both
            diverges (k = 8, 2 of 29 photos registered, also with COLMAP's defaults);
            with the focal length alone 27 of 29 register.
        min_model_size: smallest model (registered images) kept. Default 3.
        min_num_matches: fewest verified inliers for a pair to be used. Default 15.
        num_threads: CPU threads, -1 = all.
        random_seed: seed of the mappers' RANSAC (reproducible runs). Default 0.
        leaf_max_num_images: hierarchical only: the largest cluster. Default 500.
    """

    mapper: str = "global"
    refine_focal_length: bool | None = None
    refine_extra_params: bool = False
    min_model_size: int = field(default=3, metadata={"min": 2})
    min_num_matches: int = field(default=15, metadata={"min": 1})
    num_threads: int = field(default=-1, metadata={"min": -1})
    random_seed: int = field(default=0, metadata={"min": 0})
    leaf_max_num_images: int = field(default=500, metadata={"min": 2})

    def __post_init__(self) -> None:
        if self.mapper not in MAPPER_BACKENDS:
            raise ValueError(f"mapper must be one of {tuple(MAPPER_BACKENDS)}, got {self.mapper!r}")


def check_database(db_path: Path) -> tuple[int, bool]:
    """Return (number of images, has_rig) of a matched database.

    Raises:
        InputError: missing/unreadable database, no images, or no verified pair.
    """
    if not db_path.is_file():
        raise InputError(f"{db_path}: database not found (run 'splatforge sfm match' first)")
    try:
        with pycolmap.Database.open(db_path) as db:
            n_images = db.num_images()
            rig = any(len(r.non_ref_sensors) > 0 for r in db.read_all_rigs())
            _, inliers = db.read_two_view_geometry_num_inliers()
    except Exception as e:
        raise InputError(f"{db_path}: not a readable COLMAP database ({e}); rerun extract and match") from e
    if n_images < 2:
        raise InputError(f"{db_path}: {n_images} image(s); SfM needs at least 2")
    if not any(int(n) > 0 for n in inliers):
        raise InputError(f"{db_path}: no image pair passed geometric verification: the images do not "
                         "overlap (or the pairs missed the overlapping ones); no model can be built")
    return n_images, rig


def _incremental_options(opts: MapOptions, refine: bool, rig: bool) -> pycolmap.IncrementalPipelineOptions:
    o = pycolmap.IncrementalPipelineOptions()
    o.num_threads = opts.num_threads
    o.random_seed = opts.random_seed
    o.min_model_size = opts.min_model_size
    o.min_num_matches = opts.min_num_matches
    o.ba_refine_focal_length = refine
    o.ba_refine_extra_params = bool(opts.refine_extra_params)
    o.ba_refine_principal_point = False
    o.ba_refine_sensor_from_rig = not rig  # panorama rigs are exact
    return o


def _map_incremental(db_path: Path, images_dir: Path, out_dir: Path, opts: MapOptions, refine: bool,
                     rig: bool) -> dict[int, pycolmap.Reconstruction]:
    """``incremental``: COLMAP's incremental mapper (``pycolmap.incremental_mapping``)."""
    return pycolmap.incremental_mapping(db_path, images_dir, out_dir, _incremental_options(opts, refine, rig))


def _map_global(db_path: Path, images_dir: Path, out_dir: Path, opts: MapOptions, refine: bool,
                rig: bool) -> dict[int, pycolmap.Reconstruction]:
    """``global``: GLOMAP (``pycolmap.global_mapping``): rotation averaging + global positioning."""
    g = pycolmap.GlobalPipelineOptions()
    g.num_threads = opts.num_threads
    g.random_seed = opts.random_seed
    g.min_num_matches = opts.min_num_matches
    g.min_model_size = opts.min_model_size
    g.mapper.num_threads = opts.num_threads
    g.mapper.random_seed = opts.random_seed
    g.mapper.refine_sensor_from_rig = not rig
    g.mapper.bundle_adjustment.refine_focal_length = refine
    g.mapper.bundle_adjustment.refine_extra_params = bool(opts.refine_extra_params)
    g.mapper.bundle_adjustment.refine_principal_point = False
    if not pycolmap.has_cuda:  # else COLMAP warns twice per run that it falls back to the CPU solvers
        g.mapper.global_positioning.use_gpu = False
        g.mapper.bundle_adjustment.ceres.use_gpu = False
    return pycolmap.global_mapping(db_path, images_dir, out_dir, g)


def _map_hierarchical(db_path: Path, images_dir: Path, out_dir: Path, opts: MapOptions, refine: bool,
                      rig: bool) -> dict[int, pycolmap.Reconstruction]:
    """``hierarchical``: clusters mapped incrementally, then merged (``pycolmap.hierarchical_mapping``)."""
    h = pycolmap.HierarchicalPipelineOptions()
    h.num_threads = opts.num_threads
    h.clustering_options.leaf_max_num_images = opts.leaf_max_num_images
    h.incremental_options = _incremental_options(opts, refine, rig)
    return pycolmap.hierarchical_mapping(db_path, images_dir, out_dir, h)


#: Mapper registry: option ``mapper`` -> backend ``f(db_path, images_dir, out_dir, opts, refine, rig)``
#: returning pycolmap's ``{index: Reconstruction}``. A new backend is one function and one entry.
MAPPER_BACKENDS: dict[str, Callable[..., dict[int, pycolmap.Reconstruction]]] = {
    "incremental": _map_incremental,
    "global": _map_global,
    "hierarchical": _map_hierarchical,
}


def run_mapper(db_path: Path, images_dir: Path, out_dir: Path, opts: MapOptions, rig: bool) -> dict[int, pycolmap.Reconstruction]:
    """Run the chosen pycolmap mapper (:data:`MAPPER_BACKENDS`); models are written under ``out_dir`` (scratch)."""
    refine = (not rig) if opts.refine_focal_length is None else bool(opts.refine_focal_length)
    pycolmap.set_random_seed(opts.random_seed)
    return MAPPER_BACKENDS[opts.mapper](db_path, images_dir, out_dir, opts, refine, rig)


def model_summary(rec: pycolmap.Reconstruction) -> dict:
    """Registered images/frames, points, mean reprojection error (px), mean track length."""
    return {
        "num_reg_images": int(rec.num_reg_images()),
        "num_reg_frames": int(rec.num_reg_frames()),
        "num_points3D": int(rec.num_points3D()),
        "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()),
        "mean_track_length": float(rec.compute_mean_track_length()) if rec.num_points3D() else 0.0,
    }


def main(
    database_path: str | os.PathLike,
    images_dir: str | os.PathLike,
    sparse_dir: str | os.PathLike,
    summary_path: str | os.PathLike,
    options: dict | MapOptions | None = None,
) -> dict:
    """Reconstruct; write the largest model to ``sparse_dir/0`` and a JSON summary.

    Args:
        database_path: matched ``colmap/database.db``.
        images_dir: the ``images/`` folder (colours of the 3D points are read from it).
        sparse_dir: output folder (``sparse/``), replaced whole; holds ``0/`` (cameras.bin,
            images.bin, points3D.bin, rigs.bin, frames.bin).
        summary_path: output JSON: ``mapper``, ``num_images`` (in the database),
            ``num_reg_images``, ``num_reg_frames``, ``num_points3D``,
            ``mean_reprojection_error_px``, ``mean_track_length``, ``num_models``,
            ``models`` (registered images per model), ``wall_s``.
        options: :class:`MapOptions` or a dict of its fields.

    Returns:
        The summary dict.

    Raises:
        InputError: bad options or database, no overlap (no model of ``min_model_size``
            images could be built).
    """
    t0 = time.perf_counter()
    opts = build_options(MapOptions, options, "sfm map")
    database_path, images_dir, sparse_dir = Path(database_path), Path(images_dir), Path(sparse_dir)
    n_images, rig = check_database(database_path)
    sparse_dir.parent.mkdir(parents=True, exist_ok=True)
    # the models (points, tracks, poses) are far smaller than the database they come from
    require_free_space(sparse_dir, database_path.stat().st_size // 2 + 2**24, f"the sparse model of {database_path}")
    with tempfile.TemporaryDirectory(prefix=".map.", dir=sparse_dir.parent) as scratch:
        try:
            recs = run_mapper(database_path, images_dir, Path(scratch), opts, rig)
        except (RuntimeError, ValueError) as e:
            raise SplatForgeError(f"{database_path}: {opts.mapper} mapping failed: {e}") from e
        recs = {k: r for k, r in recs.items() if r.num_reg_images() > 0}
        if not recs:
            raise InputError(f"{database_path}: the {opts.mapper} mapper built no model from {n_images} images "
                             "(not enough overlap between the images)")
        order = sorted(recs, key=lambda k: (-recs[k].num_reg_images(), -recs[k].num_points3D()))
        best = recs[order[0]]
        summary = {
            "schema_version": 1,
            "mapper": opts.mapper,
            "num_images": int(n_images),
            **model_summary(best),
            "rig": rig,
            "num_models": len(recs),
            "models": [int(recs[k].num_reg_images()) for k in order],
            "options": asdict(opts),
            "wall_s": round(time.perf_counter() - t0, 3),
        }
        with atomic_path(sparse_dir) as tmp:
            (tmp / "0").mkdir(parents=True)
            best.write_binary(str(tmp / "0"))
    write_json(summary_path, summary)
    log.info("map (%s): %d/%d images registered, %d points, reprojection %.2f px, %.1f s",
             opts.mapper, summary["num_reg_images"], n_images, summary["num_points3D"],
             summary["mean_reprojection_error_px"], summary["wall_s"])
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("database_db")
    p.add_argument("images_dir")
    p.add_argument("sparse_dir")
    p.add_argument("summary_json")
    p.add_argument("--mapper", choices=tuple(MAPPER_BACKENDS), default=MapOptions.mapper)
    p.add_argument("--num-threads", type=int, default=MapOptions.num_threads)
    p.add_argument("--random-seed", type=int, default=MapOptions.random_seed)


def run_args(a: argparse.Namespace) -> dict:
    return main(a.database_db, a.images_dir, a.sparse_dir, a.summary_json,
                {"mapper": a.mapper, "num_threads": a.num_threads, "random_seed": a.random_seed})
