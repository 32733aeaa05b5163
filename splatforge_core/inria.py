"""The Inria 3DGS dataset layout: ``cameras.json`` + ``images/`` (+ ``point_cloud.ply``).

This is the layout the reference trainer (graphdeco-inria/gaussian-splatting) writes next to a
trained splat and the layout of the codec's bundles (:mod:`splatforge_core.codec.bundle`):

* ``cameras.json`` -- ``utils/camera_utils.py::camera_to_JSON``: a JSON list with one record per
  training camera, ``{id, img_name, width, height, position, rotation, fx, fy}``. ``position`` is
  the camera centre in world coordinates, ``rotation`` the 3x3 ``world_from_cam`` rotation
  (COLMAP/OpenCV camera axes: x right, y down, z forward), ``fx``/``fy`` the focal lengths in
  pixels of a ``width`` x ``height`` undistorted pinhole image with the principal point at the
  image centre (the trainer uses field-of-view only). ``img_name`` is the image's file name
  without its extension. Splat Forge adds one optional key, ``frame`` (the panorama a view was
  cut from), which other readers ignore; it keeps a panorama's views together in the held-out
  split.
* ``images/`` -- the undistorted training images; an image may be smaller than its camera's
  ``width`` x ``height`` (the trainer's ``-r`` downscale): the intrinsics scale with it.

Only this module reads or writes ``cameras.json`` for training, finetuning and bundles;
:func:`splatforge_core.sfm.compare.poses_from_inria_cameras` reads poses for comparison only.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from .errors import InputError
from .io import atomic_path

#: Image suffixes looked for when an ``img_name`` has none (the Inria trainer strips it).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")

#: Caps on a ``cameras.json`` from outside (bundles are hostile until validated).
MAX_CAMERAS = 100_000
MAX_CAMERAS_JSON_BYTES = 64 << 20
MAX_IMAGE_SIDE = 16_384


@dataclass(frozen=True)
class InriaCamera:
    """One record of an Inria ``cameras.json``.

    Attributes:
        id: the record's ``id`` (int).
        img_name: image file name without extension (no folder part).
        width, height: pixels of the image the intrinsics are for.
        position: [3] float64, camera centre in world coordinates (the scene's units).
        rotation: [3, 3] float64, ``world_from_cam`` rotation.
        fx, fy: focal lengths in pixels at ``width`` x ``height``.
        frame: optional frame (panorama) name; None: the camera is its own frame.
    """

    id: int
    img_name: str
    width: int
    height: int
    position: np.ndarray
    rotation: np.ndarray
    fx: float
    fy: float
    frame: Optional[str] = None

    @property
    def cam_from_world(self) -> np.ndarray:
        """[4, 4] float64 ``cam_from_world`` (OpenCV axes): ``x_cam = R^T (x_world - position)``."""
        m = np.eye(4)
        m[:3, :3] = self.rotation.T
        m[:3, 3] = -self.rotation.T @ self.position
        return m

    def K(self, width: Optional[int] = None, height: Optional[int] = None) -> np.ndarray:
        """[3, 3] float64 pinhole intrinsics for an image of ``width`` x ``height`` pixels.

        The focal lengths scale with the image size (the trainer's downscale); the principal
        point is the image centre, as the Inria trainer assumes. Default: the record's size.
        """
        w = self.width if width is None else width
        h = self.height if height is None else height
        return np.array([[self.fx * w / self.width, 0.0, w / 2.0],
                         [0.0, self.fy * h / self.height, h / 2.0],
                         [0.0, 0.0, 1.0]])

    def to_json(self) -> dict:
        """The record as ``camera_to_JSON`` writes it (plus ``frame`` when set)."""
        d = {"id": int(self.id), "img_name": self.img_name, "width": int(self.width), "height": int(self.height),
             "position": [float(x) for x in self.position], "rotation": [[float(x) for x in r] for r in self.rotation],
             "fy": float(self.fy), "fx": float(self.fx)}
        if self.frame is not None:
            d["frame"] = self.frame
        return d


def _bad(path, i, what: str) -> InputError:
    return InputError(f"{path}: camera record {i}: {what}; expected Inria cameras.json records "
                      "{id, img_name, width, height, position[3], rotation[3][3], fx, fy}")


def _finite(x, shape, path, i, key) -> np.ndarray:
    try:
        a = np.asarray(x, np.float64)
    except (TypeError, ValueError):
        raise _bad(path, i, f"{key!r} is not numeric") from None
    if a.shape != shape:
        raise _bad(path, i, f"{key!r} has shape {list(a.shape)}, not {list(shape)}")
    if not np.isfinite(a).all():
        raise _bad(path, i, f"{key!r} holds NaN or Inf")
    return a


def parse_camera(rec, path="cameras.json", i: int = 0) -> InriaCamera:
    """Validate one ``cameras.json`` record (see the module docstring) and return it.

    Raises:
        InputError: a missing or mistyped field, a non-positive or huge size or focal length,
            a rotation that is not orthonormal (|R^T R - I| > 1e-3, det not +1), or an
            ``img_name`` with a folder part.
    """
    if not isinstance(rec, dict):
        raise _bad(path, i, "not a JSON object")
    missing = [k for k in ("id", "img_name", "width", "height", "position", "rotation", "fx", "fy") if k not in rec]
    if missing:
        raise _bad(path, i, f"missing {', '.join(missing)}")
    name = rec["img_name"]
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise _bad(path, i, f"img_name {name!r} is not a plain file name")
    for k in ("id", "width", "height"):
        if not isinstance(rec[k], int) or isinstance(rec[k], bool):
            raise _bad(path, i, f"{k!r} is not an integer")
    w, h = rec["width"], rec["height"]
    if not (0 < w <= MAX_IMAGE_SIDE and 0 < h <= MAX_IMAGE_SIDE):
        raise _bad(path, i, f"image size {w}x{h} is outside 1..{MAX_IMAGE_SIDE} pixels")
    pos = _finite(rec["position"], (3,), path, i, "position")
    rot = _finite(rec["rotation"], (3, 3), path, i, "rotation")
    if np.abs(rot.T @ rot - np.eye(3)).max() > 1e-3 or np.linalg.det(rot) < 0:
        raise _bad(path, i, "rotation is not a proper rotation matrix")
    fx, fy = (float(_finite(rec[k], (), path, i, k)) for k in ("fx", "fy"))
    if not (0 < fx < 100 * w and 0 < fy < 100 * h):
        raise _bad(path, i, f"focal lengths fx={fx}, fy={fy} px are not plausible for {w}x{h}")
    frame = rec.get("frame")
    if frame is not None and not isinstance(frame, str):
        raise _bad(path, i, "'frame' is not a string")
    return InriaCamera(rec["id"], name, w, h, pos, rot, fx, fy, frame)


def read_cameras_json(path: str | os.PathLike, max_cameras: int = MAX_CAMERAS) -> list[InriaCamera]:
    """Read and validate an Inria ``cameras.json``.

    Returns:
        list of :class:`InriaCamera` in file order.

    Raises:
        InputError (naming the file): missing, over 64 MiB, not JSON, not a non-empty list, more
            than ``max_cameras`` records, a bad record (:func:`parse_camera`), or two records
            with the same ``img_name``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: cameras.json not found")
    if path.stat().st_size > MAX_CAMERAS_JSON_BYTES:
        raise InputError(f"{path}: {path.stat().st_size} bytes, over the {MAX_CAMERAS_JSON_BYTES >> 20} MiB cap "
                         "for a cameras.json")
    try:
        recs = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(recs, list) or not recs:
        raise InputError(f"{path}: expected a non-empty JSON list of camera records")
    if len(recs) > max_cameras:
        raise InputError(f"{path}: {len(recs)} cameras, over the cap of {max_cameras}")
    cams = [parse_camera(r, path, i) for i, r in enumerate(recs)]
    seen: set[str] = set()
    for c in cams:
        if c.img_name in seen:
            raise InputError(f"{path}: img_name {c.img_name!r} appears twice")
        seen.add(c.img_name)
    return cams


def write_cameras_json(path: str | os.PathLike, cameras: Iterable[InriaCamera]) -> None:
    """Write ``cameras`` as an Inria ``cameras.json`` (atomically)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps([c.to_json() for c in cameras], indent=1))


def camera_from_pinhole(id: int, img_name: str, K: np.ndarray, cam_from_world: np.ndarray, width: int, height: int,
                        frame: Optional[str] = None) -> InriaCamera:
    """An :class:`InriaCamera` from pinhole intrinsics ``K`` [3, 3] and ``cam_from_world`` [4, 4] or [3, 4].

    The Inria record has no principal point: an off-centre ``K`` (|c - size/2| > 1 px) is
    refused, since a reader would render the image shifted.

    Raises:
        InputError: off-centre principal point.
    """
    K = np.asarray(K, np.float64)
    if abs(K[0, 2] - width / 2) > 1.0 or abs(K[1, 2] - height / 2) > 1.0:
        raise InputError(f"{img_name}: principal point ({K[0, 2]:.1f}, {K[1, 2]:.1f}) px is not the image centre "
                         f"of {width}x{height}; cameras.json cannot store it (crop or re-project the image first)")
    cfw = np.asarray(cam_from_world, np.float64)
    R = cfw[:3, :3]
    t = cfw[:3, 3]
    return InriaCamera(int(id), img_name, int(width), int(height), -R.T @ t, R.T.copy(), float(K[0, 0]),
                       float(K[1, 1]), frame)


def find_image(images_dir: str | os.PathLike, img_name: str) -> Path:
    """The file in ``images_dir`` for ``img_name`` (as named, or with one of :data:`IMAGE_SUFFIXES`).

    Raises:
        InputError: no such file.
    """
    d = Path(images_dir)
    for cand in [img_name] + [img_name + s for s in IMAGE_SUFFIXES]:
        p = d / cand
        if p.is_file():
            return p
    raise InputError(f"{d}: no image for camera {img_name!r} (looked for {img_name} with "
                     f"{', '.join(IMAGE_SUFFIXES)}); every camera in cameras.json needs its image")


def fov_deg(cam: InriaCamera) -> tuple[float, float]:
    """Horizontal and vertical field of view in degrees (``2 atan(size / 2f)``)."""
    return (math.degrees(2 * math.atan(cam.width / (2 * cam.fx))), math.degrees(2 * math.atan(cam.height / (2 * cam.fy))))


def load_views(root: str | os.PathLike, cameras: Optional[list[InriaCamera]] = None, max_side: Optional[int] = None,
               eval_every_n: int = 8, eval_offset: Optional[int] = None, images_dir: Optional[str | os.PathLike] = None):
    """Posed views of an Inria-layout folder, split into train / held-out like the trainer does.

    Args:
        root: folder with ``cameras.json`` and ``images/``.
        cameras: already validated cameras (default: read ``root/cameras.json``).
        max_side: resize so the longer side is at most this many pixels (``cv2.INTER_AREA``,
            no upscaling); intrinsics scale with the image.
        eval_every_n, eval_offset: the held-out split over frames sorted by name
            (:func:`splatforge_core.train.data.held_out_frame_indices`; a camera without a
            ``frame`` is its own frame). ``eval_every_n=0``: nothing held out.
        images_dir: default ``root/images``.

    Returns:
        :class:`splatforge_core.train.data.SceneData` with ``train`` / ``test`` views
        (``image`` [H, W, 3] uint8, ``K`` [3, 3] float32, ``viewmat`` [4, 4] float32
        cam_from_world), no points (``points`` [0, 3]) and ``scene_scale`` from the camera
        centres.

    Raises:
        InputError: a missing or unreadable image, or an image whose aspect ratio differs from
            its camera's by more than 1%.
    """
    import cv2

    from .train.data import SceneData, View, held_out_frame_indices

    root = Path(root)
    cams = read_cameras_json(root / "cameras.json") if cameras is None else cameras
    images_dir = Path(images_dir) if images_dir is not None else root / "images"
    views = []
    for c in cams:
        p = find_image(images_dir, c.img_name)
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(f"{p}: unreadable image (camera {c.img_name!r} of {root / 'cameras.json'})")
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        h, w = img.shape[:2]
        if abs(w / h - c.width / c.height) > 0.01 * (c.width / c.height):
            raise InputError(f"{p}: image is {w}x{h} but its camera is {c.width}x{c.height} (another aspect ratio)")
        if max_side and max(h, w) > max_side:
            s = max_side / max(h, w)
            img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            h, w = img.shape[:2]
        views.append(View(p.name, c.frame or c.img_name, np.ascontiguousarray(img), c.K(w, h).astype(np.float32),
                          c.cam_from_world.astype(np.float32)))
    frames = sorted({v.frame for v in views})
    test_frames = [frames[i] for i in held_out_frame_indices(len(frames), eval_every_n, eval_offset)]
    held = set(test_frames)
    centres = np.array([c.position for c in cams])
    scale = max(float(np.linalg.norm(centres - centres.mean(0), axis=1).max()) * 1.1, 1e-6)
    return SceneData([v for v in views if v.frame not in held], [v for v in views if v.frame in held],
                     np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), scale, test_frames)


def write_dataset(views, out_dir: str | os.PathLike, first_id: int = 0) -> list[InriaCamera]:
    """Write posed pinhole views as an Inria-layout folder: ``images/<name>.png`` + ``cameras.json``.

    Args:
        views: :class:`splatforge_core.train.data.View` list (``image`` [H, W, 3] uint8 RGB,
            ``K`` [3, 3] with the principal point at the image centre, ``viewmat`` [4, 4]
            cam_from_world), e.g. ``SceneData.train + SceneData.test`` of
            :func:`splatforge_core.train.data.load_scene` (undistorted, resized).
        out_dir: folder to write into (created; existing files of the same names are replaced).
        first_id: ``id`` of the first record.

    Returns:
        the written cameras (``img_name`` = the view's name with ``/`` replaced by ``__`` and
        its extension dropped; ``frame`` = the view's frame, so :func:`load_views` with the
        trainer's ``eval_every_n``/``eval_offset`` holds out the same frames as the trainer).

    Raises:
        InputError: a view whose principal point is off-centre (:func:`camera_from_pinhole`),
            or two views that map to the same ``img_name``.
    """
    import cv2

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    cams, seen = [], set()
    for i, v in enumerate(views):
        name = os.path.splitext(v.name.replace("/", "__"))[0]
        if name in seen:
            raise InputError(f"{out}: two views map to the image name {name!r}")
        seen.add(name)
        cams.append(camera_from_pinhole(first_id + i, name, v.K, v.viewmat, v.width, v.height, v.frame))
        with atomic_path(out / "images" / f"{name}.png") as tmp:
            if not cv2.imwrite(str(tmp), cv2.cvtColor(v.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3]):
                raise OSError(f"{tmp}: cv2.imwrite failed")
    write_cameras_json(out / "cameras.json", cams)
    return cams


def write_scene_dataset(workdir: str | os.PathLike, out_dir: str | os.PathLike,
                        max_side: Optional[int] = None) -> list[InriaCamera]:
    """Write a Splat Forge scene's registered views as an Inria-layout folder (a bundle's images).

    Reads ``workdir/aligned`` (COLMAP model), ``workdir/images`` and ``workdir/views.json`` (its
    frames; absent: one frame per image) with :func:`splatforge_core.train.data.load_scene`
    (undistorted to pinhole, resized so the longer side is at most ``max_side``) and writes
    them, sorted by name, with :func:`write_dataset` (``frame`` kept: :func:`load_views` holds
    out the trainer's frames). The Inria layout has no masks: the operator masks that
    ``views.json`` names (paths relative to the project folder) are neither read nor written.

    Returns:
        the written cameras.

    Raises:
        InputError: an unreadable model or image (:func:`~splatforge_core.train.data.load_scene`),
            an off-centre principal point.
    """
    import tempfile

    from .io import read_json, write_json
    from .train.data import load_scene

    wd = Path(workdir)
    with tempfile.TemporaryDirectory(prefix="splatforge-views-") as tmp:
        views_json = None
        if (wd / "views.json").is_file():  # its frames only: drop the masks, which are not written
            doc = read_json(wd / "views.json")
            if isinstance(doc, dict):
                doc.pop("mask_dir", None)
            views_json = Path(tmp) / "views.json"
            write_json(views_json, doc)
        data = load_scene(wd / "aligned", wd / "images", views_json, max_side=max_side)
    return write_dataset(sorted(data.train + data.test, key=lambda v: v.name), out_dir)
