"""SfM match stage: match the pairs of ``pairs.txt`` and verify them geometrically.

* Input ``colmap/features.db`` (extract) is never modified: it is copied to a temporary path
  beside ``colmap/database.db``, matched there (``pycolmap.match_image_pairs`` with
  ``ImportedPairingOptions``: SIFT brute-force matching, then RANSAC two-view geometry) and
  renamed to ``database.db`` only when matching has fully succeeded. A killed run therefore
  never leaves a ``database.db`` that looks finished; a rerun starts from the features again.
* Rig-aware: when the database has a rig with several sensors (panoramas), matching uses
  ``rig_verification`` (verification with the known ``cam_from_rig``) and skips pairs of
  images of the same frame (``skip_image_pairs_in_same_frame``).
* Every name in ``pairs.txt`` must be an image of the database: an unknown name is an error
  naming the line (COLMAP would silently skip it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pycolmap

from ..errors import InputError
from ..io import atomic_path, require_free_space
from ..log import get_logger
from ..options import build_options
from . import DEVICES, colmap_device, read_pairs, remove_stale_temporaries

log = get_logger("sfm.match")


@dataclass(frozen=True)
class MatchOptions:
    """Options of the match stage (config section ``sfm.match``).

    Attributes:
        max_ratio: Lowe's ratio test threshold. Default 0.8 (COLMAP's).
        max_num_matches: cap on putative matches per pair. Default 32768.
        min_num_inliers: a pair with fewer RANSAC inliers is not verified. Default 15.
        max_error_px: RANSAC epipolar error threshold in pixels. Default 4.0 (COLMAP's).
        rig_verification: verify with the known rig poses when there is a rig. Default True.
        num_threads: CPU threads, -1 = all.
        device: ``"auto" | "cpu" | "cuda"``.
    """

    max_ratio: float = field(default=0.8, metadata={"gt": 0, "max": 1})
    max_num_matches: int = field(default=32768, metadata={"min": 1})
    min_num_inliers: int = field(default=15, metadata={"min": 1})
    max_error_px: float = field(default=4.0, metadata={"gt": 0})
    rig_verification: bool = True
    num_threads: int = field(default=-1, metadata={"min": -1})
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if not 0 < self.max_ratio <= 1:
            raise ValueError(f"max_ratio must be in (0, 1], got {self.max_ratio}")


def check_features_db(db_path: Path) -> dict[str, int]:
    """Open a features database and return image name -> image id.

    Raises:
        InputError: missing file, not a COLMAP database, no images, or images without
            keypoints/descriptors (a database left by a killed extract).
    """
    if not db_path.is_file():
        raise InputError(f"{db_path}: features database not found (run 'splatforge sfm extract' first)")
    try:
        with pycolmap.Database.open(db_path) as db:
            images = db.read_all_images()
            bad = [im.name for im in images if not (db.exists_keypoints(im.image_id) and db.exists_descriptors(im.image_id))]
    except Exception as e:  # pycolmap raises RuntimeError/ValueError for a corrupt SQLite file
        raise InputError(f"{db_path}: not a readable COLMAP database ({e}); delete it and rerun extract") from e
    if not images:
        raise InputError(f"{db_path}: the database holds no images (left by a killed run?); rerun extract")
    if bad:
        raise InputError(f"{db_path}: {len(bad)} image(s) without features, e.g. {bad[:3]} "
                         "(a database left by a killed extract?); rerun extract")
    return {im.name: im.image_id for im in images}


def main(
    features_path: str | os.PathLike,
    pairs_path: str | os.PathLike,
    database_path: str | os.PathLike,
    options: dict | MatchOptions | None = None,
) -> dict:
    """Match and verify the image pairs of ``pairs.txt``; write ``database.db``.

    Args:
        features_path: ``colmap/features.db`` from :func:`splatforge_core.sfm.extract.main`
            (read only).
        pairs_path: ``pairs.txt`` (``name1 name2`` per line, names as in the database).
        database_path: output ``colmap/database.db`` (features + matches + two-view
            geometries); replaced whole, atomically.
        options: :class:`MatchOptions` or a dict of its fields.

    Returns:
        Stats: ``num_pairs`` (in the file), ``num_matched_pairs``, ``num_verified_pairs``,
        ``rig`` (bool), ``wall_s``.

    Raises:
        InputError: bad features database (see :func:`check_features_db`), a pairs file
            that is missing, malformed, empty or names an image not in the database.
    """
    t0 = time.perf_counter()
    opts = build_options(MatchOptions, options, "sfm match")
    features_path, pairs_path, database_path = Path(features_path), Path(pairs_path), Path(database_path)
    ids = check_features_db(features_path)
    if not pairs_path.is_file():
        raise InputError(f"{pairs_path}: pairs file not found (run 'splatforge sfm pairs' first)")
    pairs = read_pairs(pairs_path)
    if not pairs:
        raise InputError(f"{pairs_path}: no pairs")
    for k, (a, b) in enumerate(pairs, 1):
        for n in (a, b):
            if n not in ids:
                raise InputError(f"{pairs_path}: pair {k} names image {n!r}, which is not in {features_path}")
    with pycolmap.Database.open(features_path) as db:
        rig = any(len(r.non_ref_sensors) > 0 for r in db.read_all_rigs())

    mopts = pycolmap.FeatureMatchingOptions()
    mopts.num_threads = opts.num_threads
    mopts.use_gpu = opts.device == "cuda" or (opts.device == "auto" and bool(pycolmap.has_cuda))
    mopts.max_num_matches = opts.max_num_matches
    mopts.sift.max_ratio = opts.max_ratio
    mopts.rig_verification = bool(rig and opts.rig_verification)
    mopts.skip_image_pairs_in_same_frame = rig
    vopts = pycolmap.TwoViewGeometryOptions()
    vopts.min_num_inliers = opts.min_num_inliers
    vopts.ransac.max_error = opts.max_error_px
    popts = pycolmap.ImportedPairingOptions()
    popts.match_list_path = pairs_path

    remove_stale_temporaries(database_path)
    if database_path.exists():
        database_path.unlink()  # redo from scratch, never half-reused
    # a copy of the features database plus the matches and two-view geometries (at most as big)
    require_free_space(database_path, 2 * Path(features_path).stat().st_size + 2**24,
                       f"a copy of {features_path} with its matches")
    with atomic_path(database_path) as tmp:
        shutil.copyfile(features_path, tmp)
        pycolmap.match_image_pairs(tmp, matching_options=mopts, pairing_options=popts,
                                   verification_options=vopts, device=colmap_device(opts.device))
        with pycolmap.Database.open(tmp) as db:
            n_matched = db.num_matched_image_pairs()
            _, inliers = db.read_two_view_geometry_num_inliers()
            n_verified = sum(int(n) > 0 for n in inliers)  # num_verified_image_pairs counts failed ones too
    stats = {"num_pairs": len(pairs), "num_matched_pairs": int(n_matched), "num_verified_pairs": int(n_verified),
             "rig": rig, "options": asdict(opts), "wall_s": round(time.perf_counter() - t0, 3)}
    log.info("match: %d pairs listed, %d matched, %d verified (rig=%s) in %.1f s",
             len(pairs), n_matched, n_verified, rig, stats["wall_s"])
    if n_verified == 0:
        log.warning("match: no pair passed geometric verification: the images do not overlap")
    return stats


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("features_db")
    p.add_argument("pairs_txt")
    p.add_argument("database_db")
    p.add_argument("--max-ratio", type=float, default=MatchOptions.max_ratio)
    p.add_argument("--min-num-inliers", type=int, default=MatchOptions.min_num_inliers)
    p.add_argument("--num-threads", type=int, default=MatchOptions.num_threads)
    p.add_argument("--device", choices=DEVICES, default=MatchOptions.device)


def run_args(a: argparse.Namespace) -> dict:
    return main(a.features_db, a.pairs_txt, a.database_db, {
        "max_ratio": a.max_ratio, "min_num_inliers": a.min_num_inliers, "num_threads": a.num_threads, "device": a.device})
