"""Training data: a geo-aligned COLMAP model + its images -> pinhole views and init points.

* Cameras: PINHOLE and SIMPLE_PINHOLE are used as they are. SIMPLE_RADIAL, RADIAL and
  OPENCV are undistorted per image with OpenCV (``cv2.undistort`` with the same K, i.e. the
  result is a PINHOLE image with the model's focal length and principal point). COLMAP's
  radial/OPENCV distortion models are OpenCV's (k1, k2, p1, p2), see COLMAP
  ``src/colmap/sensor/models.h``. Other models (fisheye, spherical) raise InputError.
* Resolution: each image is resized (``cv2.INTER_AREA``) so that its longer side is at most
  ``max_side`` pixels (no upscaling); K is scaled with it (COLMAP pixel convention: pixel
  centres at +0.5, so ``fx, cx`` scale by ``new_w / w``).
* Held-out split: frames sorted by name, every ``eval_every_n``-th frame is held out
  (:func:`held_out_frame_indices`), starting at an interior frame: index ``k = min(n // 2,
  (N - 1) // 2)``, then ``k + n``, ...; the first and last frame are never held out. On a
  walk the first and last frames see ground and facades that no other frame sees from as
  close (their held-out renders measure extrapolation, not the splat); the Mip-NeRF 360
  protocol (index % n == 0, which holds out the first frame) is ``eval_offset = 0``.
  A frame is a panorama (all its views are held out together, from views.json) or a single
  photo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..errors import InputError
from ..io import read_json
from ..log import get_logger

_LOG = get_logger("train.data")

_PINHOLE_MODELS = {"PINHOLE", "SIMPLE_PINHOLE"}
_DISTORTED_MODELS = {"SIMPLE_RADIAL", "RADIAL", "OPENCV"}


@dataclass
class View:
    """One posed pinhole image.

    Attributes:
        name: image name relative to the images folder.
        frame: frame (panorama or photo) the image belongs to.
        image: [H, W, 3] uint8 RGB, undistorted and resized.
        K: [3, 3] float32 pinhole intrinsics of ``image`` (pixels).
        viewmat: [4, 4] float32 cam_from_world (COLMAP/OpenCV axes, metres).
        mask: [H, W] bool, True where the pixel is scene (trained on and evaluated), False on
            the camera operator (the project stage's label masks); None: every pixel.
    """

    name: str
    frame: str
    image: np.ndarray
    K: np.ndarray
    viewmat: np.ndarray
    mask: Optional[np.ndarray] = None

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass
class SceneData:
    """Posed views split into train/test plus the SfM points for initialisation.

    Attributes:
        train, test: lists of :class:`View`.
        points: [P, 3] float32 SfM points (metres, model frame = ENU).
        colors: [P, 3] float32 point colours in [0, 1].
        scene_scale: float, metres: 1.1 x max distance of camera centres from their mean
            (gsplat simple_trainer); falls back to the median point distance when all
            cameras share one centre (a single panorama).
        test_frames: names of the held-out frames.
    """

    train: List[View]
    test: List[View]
    points: np.ndarray
    colors: np.ndarray
    scene_scale: float
    test_frames: List[str] = field(default_factory=list)


def _frames_from_views(views_path: Optional[str | os.PathLike]) -> Dict[str, str]:
    """Map image name -> frame name from views.json (docs/formats.md); {} if no file."""
    if views_path is None or not Path(views_path).is_file():
        if views_path is not None:
            _LOG.warning("%s not found: every image is its own frame for the held-out split", views_path)
        return {}
    doc = read_json(views_path)
    frames = doc.get("frames")
    if not isinstance(frames, list):
        raise InputError(f"{views_path}: no 'frames' list (see docs/formats.md)")
    out: Dict[str, str] = {}
    for fr in frames:
        try:
            for img in fr["images"].values():
                out[str(img)] = str(fr["frame"])
        except (KeyError, AttributeError, TypeError) as e:
            raise InputError(f"{views_path}: malformed frame record {fr!r} ({e})") from None
    return out


def _masks_from_views(views_path: Optional[str | os.PathLike]) -> Dict[str, Path]:
    """Map image name -> label mask file (views.json ``mask_dir`` + frame ``masks``); {} if none."""
    if views_path is None or not Path(views_path).is_file():
        return {}
    doc = read_json(views_path)
    if not doc.get("mask_dir"):
        return {}
    out: Dict[str, Path] = {}
    for fr in doc.get("frames") or []:
        for view, rel in (fr.get("masks") or {}).items():
            img = (fr.get("images") or {}).get(view)
            if img:
                out[str(img)] = Path(doc["mask_dir"]) / rel
    return out


def _load_train_mask(path: Path, shape: tuple) -> np.ndarray:
    """[H, W] bool training mask (label != operator) of a label PNG, resized (nearest) to ``shape``."""
    import cv2

    from ..masks import OPERATOR, read_labels

    lab = read_labels(path)
    if lab.shape[:2] != tuple(shape):
        lab = cv2.resize(lab, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return lab != OPERATOR


def _load_image(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{path}: missing or unreadable image (named in the COLMAP model)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _camera_K_and_dist(cam, model_name: str):
    p = np.asarray(cam.params, dtype=np.float64)
    if model_name == "PINHOLE":
        fx, fy, cx, cy = p[:4]
        dist = None
    elif model_name == "SIMPLE_PINHOLE":
        fx = fy = p[0]
        cx, cy = p[1:3]
        dist = None
    elif model_name == "SIMPLE_RADIAL":
        fx = fy = p[0]
        cx, cy = p[1:3]
        dist = np.array([p[3], 0, 0, 0], np.float64)
    elif model_name == "RADIAL":
        fx = fy = p[0]
        cx, cy = p[1:3]
        dist = np.array([p[3], p[4], 0, 0], np.float64)
    elif model_name == "OPENCV":
        fx, fy, cx, cy = p[:4]
        dist = p[4:8].copy()
    else:  # pragma: no cover - guarded by caller
        raise AssertionError(model_name)
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)
    if dist is not None and not np.any(dist):
        dist = None
    return K, dist


def held_out_frame_indices(num_frames: int, every_n: Optional[int], offset: Optional[int] = None) -> List[int]:
    """Indices (into the frames sorted by name) of the held-out frames.

    Args:
        num_frames: N, the number of frames.
        every_n: hold out every n-th frame; 0 or None: none.
        offset: index of the first held-out frame. None (default): interior,
            ``min(n // 2, (N - 1) // 2)``, and frames 0 and N - 1 are never held out (with
            N < 3 nothing is held out). An explicit offset (0 = the Mip-NeRF 360 protocol)
            is used as given, endpoints included (with N < 2 nothing is held out).

    Returns:
        Sorted list of indices ``offset, offset + n, ...`` below N.

    Raises:
        ValueError: negative ``every_n`` or ``offset``.
    """
    if every_n is not None and every_n < 0 or offset is not None and offset < 0:
        raise ValueError(f"every_n and offset must be >= 0, got {every_n!r}, {offset!r}")
    if not every_n or num_frames < 2:
        return []
    if offset is None:
        if num_frames < 3:
            return []
        k = min(every_n // 2, (num_frames - 1) // 2)
        return [i for i in range(k, num_frames - 1, every_n) if i > 0]
    return list(range(offset, num_frames, every_n))


def load_scene(aligned_dir: str | os.PathLike, images_dir: str | os.PathLike,
               views_path: Optional[str | os.PathLike] = None, max_side: Optional[int] = None,
               eval_every_n: int = 8, eval_offset: Optional[int] = None,
               eval_frames: Optional[List[str]] = None) -> SceneData:
    """Load a COLMAP model and its images for training.

    Args:
        aligned_dir: COLMAP model folder (binary or text; ENU metres for this project).
        images_dir: folder the model's image names are relative to.
        views_path: views.json (frames = panoramas); None or missing: one frame per image.
        max_side: resize so the longer image side is <= this many pixels (None: keep).
        eval_every_n: hold out every n-th frame (sorted by name); 0 or None: no hold-out.
        eval_offset: first held-out frame index; None: interior (:func:`held_out_frame_indices`).
        eval_frames: hold out exactly these frames (names) instead; frames not in the model are
            ignored (the clustered workflow's finetunes get the whole scene's held-out frames).

    Returns:
        :class:`SceneData`.

    Raises:
        InputError: unreadable model, no posed images, no 3D points, an unsupported camera
            model, or a missing image file.
    """
    import cv2
    import pycolmap

    aligned_dir, images_dir = Path(aligned_dir), Path(images_dir)
    if not aligned_dir.is_dir():
        raise InputError(f"{aligned_dir}: COLMAP model folder not found")
    try:
        rec = pycolmap.Reconstruction(str(aligned_dir))
    except Exception as e:
        raise InputError(f"{aligned_dir}: cannot read COLMAP model ({e})") from e
    frame_of = _frames_from_views(views_path)
    mask_of = _masks_from_views(views_path)

    records = []
    for image_id in sorted(rec.reg_image_ids()):
        im = rec.images[image_id]
        if not im.has_pose:
            continue
        cam = rec.cameras[im.camera_id]
        model = cam.model.name
        if model not in _PINHOLE_MODELS | _DISTORTED_MODELS:
            raise InputError(f"{aligned_dir}: camera {im.camera_id} of image {im.name!r} has model "
                             f"{model}; training supports PINHOLE, SIMPLE_PINHOLE and "
                             f"SIMPLE_RADIAL/RADIAL/OPENCV (undistorted here)")
        records.append((im.name, frame_of.get(im.name, im.name), cam, model,
                        np.asarray(im.cam_from_world().matrix(), np.float64)))
    if not records:
        raise InputError(f"{aligned_dir}: the COLMAP model has no registered images")

    views: List[View] = []
    for name, frame, cam, model, cfw in records:
        img = _load_image(images_dir / name)
        if img.shape[1] != cam.width or img.shape[0] != cam.height:
            raise InputError(f"{images_dir / name}: image is {img.shape[1]}x{img.shape[0]} but its "
                             f"camera in {aligned_dir} is {cam.width}x{cam.height}")
        K, dist = _camera_K_and_dist(cam, model)
        if dist is not None:
            # COLMAP puts pixel centres at +0.5, OpenCV at integers: shift the principal point
            # for OpenCV; the undistorted image has COLMAP intrinsics K.
            K_cv = K.copy()
            K_cv[:2, 2] -= 0.5
            img = cv2.undistort(img, K_cv, dist)
        h, w = img.shape[:2]
        if max_side and max(h, w) > max_side:
            s = max_side / max(h, w)
            nw, nh = max(1, round(w * s)), max(1, round(h * s))
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
            K = K.copy()
            K[0, :] *= nw / w
            K[1, :] *= nh / h
        vm = np.eye(4)
        vm[:3, :] = cfw
        mask = _load_train_mask(mask_of[name], img.shape[:2]) if name in mask_of else None
        if mask is not None and mask.all():
            mask = None
        views.append(View(name, frame, np.ascontiguousarray(img), K.astype(np.float32),
                          vm.astype(np.float32), mask))

    frames = sorted({v.frame for v in views})
    if eval_frames is not None:
        test_frames = [f for f in frames if f in set(eval_frames)]
    else:
        test_frames = [frames[i] for i in held_out_frame_indices(len(frames), eval_every_n, eval_offset)]
    if eval_every_n and eval_frames is None and not test_frames:
        _LOG.warning("%d frame(s): nothing can be held out, no held-out evaluation", len(frames))
    test_set = set(test_frames)
    train = [v for v in views if v.frame not in test_set]
    test = [v for v in views if v.frame in test_set]

    pts = [(p.xyz, p.color) for p in rec.points3D.values()]
    if not pts:
        raise InputError(f"{aligned_dir}: the COLMAP model has no 3D points to initialise from")
    points = np.array([p[0] for p in pts], np.float32)
    colors = np.array([p[1] for p in pts], np.float32) / 255.0

    centres = np.array([-v.viewmat[:3, :3].T @ v.viewmat[:3, 3] for v in views])
    c = centres.mean(0)
    scale = float(np.linalg.norm(centres - c, axis=1).max()) * 1.1
    if scale < 1e-6:
        scale = float(np.median(np.linalg.norm(points - c, axis=1)))
    _LOG.info("loaded %d views (%d train, %d held out in %d frames), %d points, scene scale %.3f m",
              len(views), len(train), len(test), len(test_frames), len(points), scale)
    return SceneData(train, test, points, colors, max(scale, 1e-6), test_frames)
