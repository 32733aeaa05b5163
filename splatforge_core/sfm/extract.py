"""SfM extract stage: SIFT features of every image of ``views.json`` into ``colmap/features.db``.

* Cameras come from ``views.json`` (one COLMAP camera per view of a panorama rig, one per
  perspective photo) and are written to the database *before* extraction, so
  ``pycolmap.extract_features`` uses our intrinsics instead of guessing them from EXIF.
* Views of one panorama form one rig (COLMAP >= 3.12 rigs/frames): a ``pycolmap.RigConfig``
  with one ``RigConfigCamera`` per view (``image_prefix = "{view}/"``), its ``cam_from_rig``
  taken from ``views.json`` relative to the reference view, applied with
  ``pycolmap.apply_rig_config``; images with the same name after the prefix
  (``{frame}.jpg``) become one frame. Perspective photos get a trivial rig and frame each.
* Runs on CUDA when pycolmap was built with it (``device = "auto"``), else on the CPU.
* Atomic: the database is built at a temporary path beside ``features.db`` and renamed only
  after every image has features, so a killed run leaves no ``features.db`` and a rerun starts
  from scratch (a stale temporary database of a killed run is deleted).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pycolmap

from ..errors import InputError
from ..io import atomic_path, require_free_space
from ..log import get_logger
from ..options import build_options
from . import DEVICES, colmap_device, is_rig_frame, load_views, remove_stale_temporaries

log = get_logger("sfm.extract")

@dataclass(frozen=True)
class ExtractOptions:
    """Options of the extract stage (config section ``sfm.extract``).

    Attributes:
        max_image_size: longest image side in pixels SIFT sees (images are downscaled to
            it; keypoints are stored in full-resolution pixels). Default 1600.
        max_num_features: SIFT features kept per image (strongest first). Default 8192.
        num_threads: CPU threads, -1 = all.
        device: ``"auto"`` (CUDA if pycolmap has it), ``"cpu"`` or ``"cuda"``.
        min_images: fewer images than this is an error (SfM needs at least two views).
        share_intrinsics: perspective photos whose views.json cameras are identical (model,
            size, parameters: same EXIF focal length) share one COLMAP camera, as COLMAP's
            ``CameraMode.AUTO`` does. Refining one focal length per photo from a street walk is
            ill-posed (on Lund it diverges and 2 of 29 photos register). Default True.
        rig_masks: for panorama rigs, extract features in each view only where its pixel's
            ray is closer to this view's optical axis than to any other view's (a Voronoi
            partition of the sphere, COLMAP masks; as ``pycolmap.panorama`` does), so every
            direction of a panorama gives features once: overlapping views carry no
            duplicate features, matching is ~4x cheaper. Default True.
        label_masks: leave out the pixels the project stage labelled sky or operator
            (views.json ``masks``, :mod:`splatforge_core.masks`). Default True.
    """

    max_image_size: int = field(default=1600, metadata={"min": 64})
    max_num_features: int = field(default=8192, metadata={"min": 16})
    num_threads: int = field(default=-1, metadata={"min": -1})
    device: str = "auto"
    min_images: int = field(default=3, metadata={"min": 1})
    share_intrinsics: bool = True
    rig_masks: bool = True
    label_masks: bool = True

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.max_image_size < 64 or self.max_num_features < 16:
            raise ValueError("max_image_size must be >= 64 and max_num_features >= 16")


def _rotation(c: dict) -> np.ndarray:
    return np.asarray(c["cam_from_rig"]["rotation"], dtype=np.float64).reshape(3, 3)


def reference_view(views: dict) -> str | None:
    """The rig's reference view: the one whose ``cam_from_rig`` is the identity (the rig frame
    of ``docs/formats.md``), else the first view used by a panorama frame; None without rigs."""
    used = [v for fr in views["frames"] if is_rig_frame(fr) for v in fr["images"]]
    if not used:
        return None
    for v in dict.fromkeys(used):
        if np.allclose(_rotation(views["camera_by_view"][v]), np.eye(3), atol=1e-9):
            return v
    return used[0]


def rig_config(views: dict) -> pycolmap.RigConfig | None:
    """``pycolmap.RigConfig`` of the panorama views (None when there is no panorama).

    ``cam_from_ref = cam_from_rig @ rig_from_ref`` (translations are zero: the views share
    the panorama's optical centre), the reference view is :func:`reference_view`, so in the
    reconstruction ``rig_from_world`` equals the reference view's ``cam_from_world``.
    """
    ref = reference_view(views)
    if ref is None:
        return None
    # COLMAP requires the reference sensor to be added first (rig.cc: "The reference sensor
    # needs to be added first"), whatever order views.json lists the views in.
    used = dict.fromkeys([ref] + [v for fr in views["frames"] if is_rig_frame(fr) for v in fr["images"]])
    r_ref = _rotation(views["camera_by_view"][ref])
    cams = []
    for v in used:
        c = views["camera_by_view"][v]
        t = np.asarray(c["cam_from_rig"].get("translation", [0, 0, 0]), dtype=np.float64).reshape(3, 1)
        if v == ref:
            cams.append(pycolmap.RigConfigCamera(ref_sensor=True, image_prefix=f"{v}/"))
        else:
            r = _rotation(c) @ r_ref.T
            t_ref = np.asarray(views["camera_by_view"][ref]["cam_from_rig"].get("translation", [0, 0, 0]), dtype=np.float64).reshape(3, 1)
            cam_from_ref = pycolmap.Rigid3d(pycolmap.Rotation3d(r), t - r @ t_ref)
            cams.append(pycolmap.RigConfigCamera(ref_sensor=False, image_prefix=f"{v}/", cam_from_rig=cam_from_ref))
    return pycolmap.RigConfig(cameras=cams)


def rig_view_masks(views: dict) -> dict[str, np.ndarray]:
    """Per rig view: (H, W) uint8 mask, 255 where the pixel's ray is nearest this view's axis.

    The ray of pixel centre (u + 0.5, v + 0.5) is ``cam_from_img`` of the view's camera
    (COLMAP pixel convention), rotated into the rig frame with ``R_cam_from_rig^T``; the view
    axes are ``R_cam_from_rig^T (0, 0, 1)``. Only the views that panorama frames use compete.
    """
    used = list(dict.fromkeys(v for fr in views["frames"] if is_rig_frame(fr) for v in fr["images"]))
    if len(used) < 2:
        return {}
    axes = np.stack([_rotation(views["camera_by_view"][v]).T @ np.array([0.0, 0.0, 1.0]) for v in used])
    masks = {}
    for k, v in enumerate(used):
        c = views["camera_by_view"][v]
        cam = pycolmap.Camera(model=c["model"], width=int(c["width"]), height=int(c["height"]), params=c["params"])
        uu, vv = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
        xy = np.asarray(cam.cam_from_img(np.stack([uu.ravel(), vv.ravel()], axis=1).astype(np.float64)))
        rays = np.concatenate([xy, np.ones((len(xy), 1))], axis=1) @ _rotation(c)  # rows: R^T ray
        nearest = np.argmax(rays @ axes.T, axis=1)
        masks[v] = ((nearest == k) * 255).astype(np.uint8).reshape(cam.height, cam.width)
    return masks


def _label_mask(views: dict, frame: dict, view: str) -> np.ndarray | None:
    """The project stage's label mask of one view image (:mod:`splatforge_core.masks`), or None."""
    from ..masks import read_labels

    rel = (frame.get("masks") or {}).get(view)
    if not rel or not views.get("mask_dir"):
        return None
    return read_labels(Path(views["mask_dir"]) / rel)


def _write_masks(views: dict, names: list[str], mask_dir: Path, rig_masks: bool = True,
                 label_masks: bool = True) -> int:
    """Write COLMAP feature masks ``{mask_dir}/{image name}.png`` (255 = extract features here).

    A pixel is kept when it is in its view's rig Voronoi cell (:func:`rig_view_masks`, when
    ``rig_masks``) and its label is valid (not sky, not operator: the project stage's label
    masks, when ``label_masks`` and views.json has them). Views without label masks share
    one PNG per view (symbolic links). Returns the number of images that got a mask.
    """
    import cv2

    from ..masks import VALID

    vor = rig_view_masks(views) if rig_masks else {}
    # Absolute link targets: a relative target would be resolved from the link's own folder.
    mask_dir = Path(mask_dir).resolve()
    (mask_dir / "_views").mkdir(parents=True)
    for v, m in vor.items():
        cv2.imwrite(str(mask_dir / "_views" / f"{v}.png"), m)
    n = 0
    for fr in views["frames"]:
        for v, name in fr["images"].items():
            lab = _label_mask(views, fr, v) if label_masks else None
            dst = mask_dir / f"{name}.png"
            if lab is None and v not in vor:
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            if lab is None:
                os.symlink(mask_dir / "_views" / f"{v}.png", dst)
            else:
                keep = lab == VALID
                if v in vor:
                    keep &= vor[v] > 0
                cv2.imwrite(str(dst), keep.astype(np.uint8) * 255)
            n += 1
    return n


def main(
    images_dir: str | os.PathLike,
    views_path: str | os.PathLike,
    features_path: str | os.PathLike,
    options: dict | ExtractOptions | None = None,
) -> dict:
    """Extract SIFT features of all images of ``views.json`` into a new COLMAP database.

    Args:
        images_dir: the ``images/`` folder of the project stage (names in ``views.json``
            are relative to it).
        views_path: ``views.json`` (cameras, rig, frames; ``docs/formats.md``).
        features_path: output database (``colmap/features.db``); replaced whole.
        options: :class:`ExtractOptions` or a dict of its fields.

    Returns:
        Stats: ``num_images``, ``num_frames``, ``num_rigs``, ``num_keypoints`` (total),
        ``min_keypoints`` (per image), ``wall_s``, ``device``.

    Raises:
        InputError: bad views.json / options, fewer than ``min_images`` images or 2 frames (capture
            positions), an image file missing or unreadable, or an image left without features.
    """
    t0 = time.perf_counter()
    opts = build_options(ExtractOptions, options, "sfm extract")
    images_dir, features_path = Path(images_dir), Path(features_path)
    views = load_views(views_path)
    names = list(views["image_to_frame"])
    if len(names) < opts.min_images:
        raise InputError(f"{views_path}: {len(names)} image(s), SfM needs at least {opts.min_images}")
    if len(views["frames"]) < 2:
        # before any SIFT work: the pairs stage would refuse it anyway, after extraction (#19)
        raise InputError(f"{views_path}: {len(views['frames'])} capture position(s); SfM needs at least 2. A single "
                         f"panorama runs ingest and projection only: ask for work/<scene>/views.json, not results/<scene>.ply")
    missing = [n for n in names if not (images_dir / n).is_file()]
    if missing:
        raise InputError(f"{images_dir}: {len(missing)} image(s) of {views_path} missing, e.g. {missing[:3]}")

    features_path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(features_path)
    if features_path.exists():
        features_path.unlink()  # never half-reused: extract always starts from scratch

    ext = pycolmap.FeatureExtractionOptions()
    ext.max_image_size = opts.max_image_size
    ext.num_threads = opts.num_threads
    ext.sift.max_num_features = opts.max_num_features
    ext.use_gpu = opts.device == "cuda" or (opts.device == "auto" and bool(pycolmap.has_cuda))
    cfg = rig_config(views)
    # keypoints (6 float32) + descriptors (128 uint8) per feature, and the masks
    require_free_space(features_path, len(names) * (opts.max_num_features * (24 + 128) + 2**20) + 2**24,
                       f"the SIFT features of {len(names)} images")

    with atomic_path(features_path) as tmp:
        with pycolmap.Database.open(tmp) as db:
            view_cam: dict[str, int] = {}
            shared: dict[tuple, int] = {}
            for fr in views["frames"]:
                for view, name in fr["images"].items():
                    c = views["camera_by_view"][view]
                    key = (c["model"], int(c["width"]), int(c["height"]), tuple(float(x) for x in c["params"]))
                    if view not in view_cam and opts.share_intrinsics and not is_rig_frame(fr) and key in shared:
                        view_cam[view] = shared[key]
                    if view not in view_cam:
                        cam = pycolmap.Camera(model=c["model"], width=int(c["width"]), height=int(c["height"]), params=c["params"])
                        # panorama views have exact intrinsics; perspective photos have a prior only
                        # when views.json says so (EXIF focal length).
                        cam.has_prior_focal_length = is_rig_frame(fr) or bool(c.get("prior_focal_length", False))
                        view_cam[view] = db.write_camera(cam)
                        if not is_rig_frame(fr):
                            shared.setdefault(key, view_cam[view])
                    db.write_image(pycolmap.Image(name=name, camera_id=view_cam[view]))
        with tempfile.TemporaryDirectory(prefix=".masks.", dir=features_path.parent) as mask_dir:
            reader = pycolmap.ImageReaderOptions()
            n_masked = 0
            if (opts.rig_masks and cfg is not None) or opts.label_masks:
                n_masked = _write_masks(views, names, Path(mask_dir), opts.rig_masks and cfg is not None,
                                        opts.label_masks)
            if n_masked:
                reader.mask_path = mask_dir
            pycolmap.extract_features(tmp, images_dir, image_names=names, reader_options=reader,
                                      extraction_options=ext, device=colmap_device(opts.device))
        with pycolmap.Database.open(tmp) as db:
            pycolmap.apply_rig_config([cfg] if cfg is not None else [], db)
            counts = {im.name: db.num_keypoints_for_image(im.image_id) for im in db.read_all_images()}
            # COLMAP writes no keypoint record for an image it could not read; a readable image
            # can have 0 features (a masked view of sky), which is allowed
            unread = [im.name for im in db.read_all_images() if not db.exists_keypoints(im.image_id)]
            num_rigs, num_frames = db.num_rigs(), db.num_frames()
        if unread:
            raise InputError(f"{images_dir}: {len(unread)} image(s) could not be read (no features extracted), e.g. {unread[:3]}")
        empty = [n for n in names if counts.get(n, 0) == 0]
        if len(empty) == len(names):
            raise InputError(f"{images_dir}: no SIFT features in any image (blank images?)")
        if empty:
            log.warning("extract: %d image(s) without features (e.g. views of the sky), e.g. %s", len(empty), empty[:3])
    stats = {
        "num_images": len(names),
        "num_frames": num_frames,
        "num_rigs": num_rigs,
        "num_keypoints": int(sum(counts.values())),
        "min_keypoints": int(min(counts.values())),
        "device": "cuda" if ext.use_gpu else "cpu",
        "options": asdict(opts),
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    log.info("extract: %d images, %d frames, %d keypoints in %.1f s", len(names), num_frames, stats["num_keypoints"], stats["wall_s"])
    return stats


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images_dir")
    p.add_argument("views")
    p.add_argument("features_db", help="output database, e.g. work/scene/colmap/features.db")
    p.add_argument("--max-image-size", type=int, default=ExtractOptions.max_image_size)
    p.add_argument("--max-num-features", type=int, default=ExtractOptions.max_num_features)
    p.add_argument("--num-threads", type=int, default=ExtractOptions.num_threads)
    p.add_argument("--device", choices=DEVICES, default=ExtractOptions.device)


def run_args(a: argparse.Namespace) -> dict:
    return main(a.images_dir, a.views, a.features_db, {
        "max_image_size": a.max_image_size, "max_num_features": a.max_num_features,
        "num_threads": a.num_threads, "device": a.device})
