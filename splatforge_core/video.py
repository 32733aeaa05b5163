"""Fly-through video of a scene: ``results/{scene}_flythrough.mp4`` (issue #16).

The camera follows the capture trajectory (one point per frame/panorama, from the aligned model:
:func:`splatforge_core.viewer.capture_track`), resampled by arc length and smoothed with a Gaussian
filter, looking along the path's horizontal tangent (level, ENU z up). A capture that does not move
(a tripod, a single panorama) gets a slow 360 degree turn on the spot instead. Frames are rendered by
our CPU rasteriser (:func:`splatforge_core.viewer.render_view`, gsplat on CUDA when the tensors are
there) and encoded as H.264 (yuv420p, plays everywhere) by the ffmpeg binary that the
``imageio-ffmpeg`` wheel ships; a tqdm bar shows progress.

Turntable (``--turntable``, for object captures such as snowmiku): the camera circles the object
once at the capture's median distance and elevation (:func:`turntable_cameras`). The object centre
is the robust least-squares meeting point of the capture cameras' optical axes
(:func:`object_centre`, the point the photographer aimed at); the up axis is the normal of the
plane of the cameras' level x axes (:func:`up_axis`), so it works in any model frame (an Inria
``cameras.json`` is in SfM units with an arbitrary up), not only in ENU.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import atomic_path, write_json
from .log import get_logger

__all__ = ["VideoOptions", "smooth_path", "flythrough_cameras", "write_video", "render_flythrough", "read_poses",
           "object_centre", "up_axis", "turntable_cameras", "render_turntable", "main", "cli"]

_LOG = get_logger("video")


@dataclass(frozen=True)
class VideoOptions:
    """Fly-through settings: ``width`` x ``height`` pixels (even, for yuv420p), ``fps``, ``seconds``,
    ``fov_y_deg`` (vertical field of view), ``smooth`` (Gaussian sigma as a fraction of the path's
    sample count), ``quality`` (imageio-ffmpeg quality 0-10)."""

    width: int = 384
    height: int = 216
    fps: int = 24
    seconds: float = 4.0
    fov_y_deg: float = 70.0
    smooth: float = 0.06
    quality: float = 7.0

    @property
    def n_frames(self) -> int:
        return max(2, int(round(self.fps * self.seconds)))


def smooth_path(points, n: int, sigma_frac: float = 0.06) -> np.ndarray:
    """Resample a polyline [F, 3] to ``n`` points equally spaced by arc length, then smooth them
    with a Gaussian of sigma ``sigma_frac * n`` samples (ends held: ``mode="nearest"``).

    Returns:
        [n, 3] float64 (metres). A path of one point (or of zero length) gives n copies of it.

    Raises:
        InputError: no points or non-finite points.
    """
    from scipy.ndimage import gaussian_filter1d

    p = np.asarray(points, np.float64).reshape(-1, 3)
    if len(p) == 0 or not np.isfinite(p).all():
        raise InputError("capture trajectory is empty or not finite; cannot make a fly-through")
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 1e-9:
        return np.repeat(p[:1], n, axis=0)
    t = np.linspace(0.0, s[-1], n)
    out = np.stack([np.interp(t, s, p[:, i]) for i in range(3)], axis=1)
    sigma = max(sigma_frac * n, 0.0)
    return gaussian_filter1d(out, sigma, axis=0, mode="nearest") if sigma > 0 else out


def flythrough_cameras(centres, opts: VideoOptions = VideoOptions()) -> list[np.ndarray]:
    """cam_from_world matrices [4, 4] (OpenCV axes) of the video's frames along the smoothed path.

    Each camera looks along the horizontal tangent of the path (central difference over a few
    samples); where the path stands still the last heading is kept; a path shorter than 0.5 m turns
    360 degrees on the spot, starting along the first camera's heading (+north when unknown).
    """
    from .viewer import look_at_viewmat

    n = opts.n_frames
    pos = smooth_path(centres, n, opts.smooth)
    length = float(np.linalg.norm(np.diff(pos, axis=0), axis=1).sum())
    mats = []
    if length < 0.5:
        for k in range(n):
            a = 2 * math.pi * k / n
            fwd = np.array([math.sin(a), math.cos(a), 0.0])
            mats.append(look_at_viewmat(pos[k], pos[k] + fwd))
        return mats
    step = max(1, n // 24)
    heading = None
    for k in range(n):
        d = pos[min(n - 1, k + step)] - pos[max(0, k - step)]
        d[2] = 0.0
        if np.linalg.norm(d) > 1e-6:
            heading = d / np.linalg.norm(d)
        if heading is None:  # still at the start: take the first horizontal move ahead
            ahead = pos[-1] - pos[0]
            ahead[2] = 0.0
            heading = ahead / max(np.linalg.norm(ahead), 1e-12) if np.linalg.norm(ahead) > 1e-9 else np.array([0, 1.0, 0])
        mats.append(look_at_viewmat(pos[k], pos[k] + heading))
    return mats


def write_video(path: str | os.PathLike, frames, fps: int, quality: float = 7.0, total: int | None = None) -> int:
    """Encode RGB frames (iterable of uint8 [H, W, 3], all one size, even sides) to H.264 MP4 with
    imageio-ffmpeg's bundled ffmpeg, atomically; returns the number of frames written.

    Raises:
        InputError: no frames, or a frame of another size or odd sides.
    """
    import imageio_ffmpeg
    from tqdm import tqdm

    path = Path(path)
    count = 0
    with atomic_path(path) as tmp:
        writer = None
        try:
            for f in tqdm(frames, total=total, desc="flythrough", unit="frame", disable=None):
                f = np.ascontiguousarray(f, dtype=np.uint8)
                if writer is None:
                    h, w = f.shape[:2]
                    if h % 2 or w % 2:
                        raise InputError(f"{path}: frame size {w}x{h} must be even for H.264 yuv420p")
                    writer = imageio_ffmpeg.write_frames(str(tmp), (w, h), fps=fps, quality=quality,
                                                         pix_fmt_out="yuv420p", codec="libx264",
                                                         macro_block_size=2, ffmpeg_log_level="error")
                    writer.send(None)
                elif f.shape[:2] != (h, w):
                    raise InputError(f"{path}: frame {count} is {f.shape[1]}x{f.shape[0]}, the video is {w}x{h}")
                writer.send(f)
                count += 1
        finally:
            if writer is not None:
                writer.close()
        if count == 0:
            raise InputError(f"{path}: no frames to write")
    return count


def render_flythrough(splat: dict, centres, out_path: str | os.PathLike, opts: VideoOptions = VideoOptions()) -> dict:
    """Render the fly-through of ``splat`` (``read_splat_ply`` dict, ENU) along ``centres`` [F, 3]
    and write it to ``out_path`` (MP4). Returns ``{"frames", "fps", "width", "height", "bytes", "path_m"}``."""
    from .viewer import intrinsics_from_fov, render_view

    mats = flythrough_cameras(centres, opts)
    K = intrinsics_from_fov(opts.fov_y_deg, opts.width, opts.height)
    frames = (render_view(splat, m, K, opts.width, opts.height) for m in mats)
    n = write_video(out_path, frames, opts.fps, opts.quality, total=len(mats))
    c = np.asarray(centres, np.float64).reshape(-1, 3)
    return {"frames": n, "fps": opts.fps, "width": opts.width, "height": opts.height,
            "bytes": Path(out_path).stat().st_size, "path_m": float(np.linalg.norm(np.diff(c, axis=0), axis=1).sum())}


def read_poses(path: str | os.PathLike) -> list[np.ndarray]:
    """cam_from_world [4, 4] float64 (OpenCV axes) of the capture cameras of ``path``: an Inria
    folder (``cameras.json`` inside), a ``cameras.json`` file, or a COLMAP model folder.

    Raises:
        InputError: none of these, or an unreadable one.
    """
    from . import inria

    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        return [c.cam_from_world for c in inria.read_cameras_json(p)]
    if (p / "cameras.json").is_file():
        return [c.cam_from_world for c in inria.read_cameras_json(p / "cameras.json")]
    if not p.is_dir():
        raise InputError(f"{p}: not a COLMAP model folder, an Inria folder with cameras.json, or a cameras.json")
    import pycolmap

    try:
        rec = pycolmap.Reconstruction(str(p))
    except Exception as e:
        raise InputError(f"{p}: cannot read the COLMAP model ({e}); expected cameras/images/points3D .bin or .txt, "
                         "or an Inria folder with cameras.json") from None
    mats = []
    for i in sorted(rec.reg_image_ids()):
        im = rec.images[i]
        if im.has_pose:
            m = np.eye(4)
            m[:3] = np.asarray(im.cam_from_world().matrix(), np.float64)
            mats.append(m)
    if not mats:
        raise InputError(f"{p}: the COLMAP model has no posed images")
    return mats


def _centres_axes(viewmats) -> tuple[np.ndarray, np.ndarray]:
    """Camera centres [C, 3] and unit optical axes [C, 3] (world) of cam_from_world matrices."""
    v = np.asarray(viewmats, np.float64).reshape(-1, 4, 4)
    R, t = v[:, :3, :3], v[:, :3, 3]
    return -np.einsum("cji,cj->ci", R, t), R[:, 2, :]


def object_centre(viewmats, iterations: int = 10) -> np.ndarray:
    """The point the cameras look at: least-squares nearest point to their optical axes, with
    iteratively reweighted Cauchy weights (scale: 2 x the median distance) so a few cameras
    aimed elsewhere do not pull it.

    Args:
        viewmats: [C, 4, 4] cam_from_world (OpenCV axes, z forward), C >= 2.

    Returns:
        [3] float64 in world units.

    Raises:
        InputError: fewer than 2 cameras, or axes (nearly) parallel (a walk, not an orbit).
    """
    c, d = _centres_axes(viewmats)
    if len(c) < 2:
        raise InputError("a turntable needs at least 2 capture cameras to find the object they look at")
    w = np.ones(len(c))
    x = None
    for _ in range(iterations):
        P = np.eye(3)[None] - d[:, :, None] * d[:, None, :]  # projectors orthogonal to each axis
        A = np.einsum("c,cij->ij", w, P)
        b = np.einsum("c,cij,cj->i", w, P, c)
        if np.linalg.cond(A) > 1e6:
            raise InputError("the capture cameras' optical axes are (nearly) parallel: not an object capture "
                             "around a centre; use the fly-through instead of --turntable")
        x = np.linalg.solve(A, b)
        r = np.linalg.norm(np.einsum("cij,cj->ci", P, x - c), axis=1)
        s = 2.0 * max(float(np.median(r)), 1e-9)
        w = 1.0 / (1.0 + (r / s) ** 2)
    return x


def up_axis(viewmats) -> np.ndarray:
    """Unit up vector [3] of the capture.

    Cameras held level have their x (right) axis horizontal whatever their pitch, so up is the
    direction most perpendicular to every camera's x axis (the eigenvector of the smallest
    eigenvalue of sum x x^T), signed to agree with the cameras' mean up (-y of the OpenCV
    camera). When the x axes do not span a plane (every camera facing one way, so that
    direction is undetermined) the normalised mean of -y is used instead; it tilts with the
    cameras' mean pitch, which the x axes do not.

    Raises:
        InputError: the cameras' up vectors cancel out.
    """
    v = np.asarray(viewmats, np.float64).reshape(-1, 4, 4)
    u = -v[:, 1, :3].mean(0)
    if np.linalg.norm(u) < 1e-6:
        raise InputError("the capture cameras have no common up direction; cannot orient a turntable")
    x = v[:, 0, :3]
    w, vec = np.linalg.eigh(x.T @ x / len(x))
    if w[1] > 0.05 and w[0] < 0.2 * w[1]:  # the x axes span a plane: its normal is up
        n = vec[:, 0]
        return n if n @ u > 0 else -n
    return u / np.linalg.norm(u)


def turntable_cameras(viewmats, n: int, radius_scale: float = 1.0, elevation_deg: float | None = None,
                      arc_deg: float = 360.0):
    """cam_from_world matrices [4, 4] of ``n`` frames circling the object.

    The orbit's centre is :func:`object_centre`, its axis :func:`up_axis`; radius = the median
    distance of the capture cameras from the centre x ``radius_scale``; elevation = the median
    capture elevation (degrees above the horizontal plane through the centre) unless given.
    ``arc_deg`` >= 360: one full turn, frame 0 at the first camera's azimuth, counter-clockwise
    seen from above. ``arc_deg`` < 360: a swing over that arc and back (cosine-eased) centred on
    the capture's middle azimuth, for captures that saw only one side (a figure against a wall);
    ``arc_deg`` = 0: the capture's own azimuth span (the shortest arc holding every camera).
    Every frame looks at the centre.

    Returns:
        (list of [4, 4] float64, info dict ``{"centre", "up", "radius", "elevation_deg", "arc_deg"}``).

    Raises:
        InputError: see :func:`object_centre` / :func:`up_axis`; n < 1; arc_deg < 0.
    """
    from .viewer import look_at_viewmat

    if n < 1:
        raise InputError(f"turntable: {n} frames; need at least 1")
    if not arc_deg >= 0:
        raise InputError(f"turntable: arc of {arc_deg} degrees; give 0 (the capture's span) up to 360")
    centre, up = object_centre(viewmats), up_axis(viewmats)
    cams, _ = _centres_axes(viewmats)
    rel = cams - centre
    dist = np.linalg.norm(rel, axis=1)
    radius = float(np.median(dist)) * radius_scale
    if elevation_deg is None:
        elevation_deg = float(np.median(np.degrees(np.arcsin(np.clip(rel @ up / np.maximum(dist, 1e-12), -1, 1)))))
    elevation_deg = float(np.clip(elevation_deg, -85.0, 85.0))
    e0 = rel[0] - (rel[0] @ up) * up  # first camera's azimuth
    if np.linalg.norm(e0) < 1e-9 * max(radius, 1e-12):
        e0 = np.cross(up, [1.0, 0, 0]) if abs(up[0]) < 0.9 else np.cross(up, [0, 1.0, 0])
    e0 /= np.linalg.norm(e0)
    e1 = np.cross(up, e0)
    el = math.radians(elevation_deg)
    if arc_deg >= 360:
        angles = [2 * math.pi * k / n for k in range(n)]
    else:
        mid, span = _azimuth_span(np.arctan2(rel @ e1, rel @ e0))
        half = span / 2 if arc_deg == 0 else math.radians(arc_deg) / 2
        arc_deg = math.degrees(2 * half)
        angles = [mid - half * math.cos(2 * math.pi * k / n) for k in range(n)]  # swing there and back
    mats = []
    for a in angles:
        pos = centre + radius * (math.cos(el) * (math.cos(a) * e0 + math.sin(a) * e1) + math.sin(el) * up)
        mats.append(look_at_viewmat(pos, centre, up))
    return mats, {"centre": [float(x) for x in centre], "up": [float(x) for x in up], "radius": radius,
                  "elevation_deg": elevation_deg, "arc_deg": float(min(arc_deg, 360.0))}


def _azimuth_span(az) -> tuple[float, float]:
    """Middle and width (radians) of the shortest arc holding every azimuth of ``az`` [C] (radians):
    the complement of the widest gap between neighbouring azimuths."""
    a = np.sort(np.mod(np.asarray(az, np.float64), 2 * math.pi))
    gaps = np.diff(np.concatenate([a, a[:1] + 2 * math.pi]))
    i = int(np.argmax(gaps))  # the widest gap runs from a[i] to a[i + 1]
    start = a[(i + 1) % len(a)]
    span = 2 * math.pi - float(gaps[i])
    return float(start + span / 2), span


def render_turntable(splat: dict, viewmats, out_path: str | os.PathLike, opts: VideoOptions = VideoOptions(),
                     radius_scale: float = 1.0, elevation_deg: float | None = None, arc_deg: float = 360.0) -> dict:
    """Render a turntable of ``splat`` around the object the capture cameras ``viewmats`` [C, 4, 4]
    look at (:func:`turntable_cameras`, ``opts.n_frames`` frames) to ``out_path`` (MP4, atomic).

    Returns:
        ``{"frames", "fps", "width", "height", "bytes", "centre", "up", "radius", "elevation_deg", "arc_deg"}``.
    """
    from .viewer import intrinsics_from_fov, render_view

    mats, orbit = turntable_cameras(viewmats, opts.n_frames, radius_scale, elevation_deg, arc_deg)
    K = intrinsics_from_fov(opts.fov_y_deg, opts.width, opts.height)
    frames = (render_view(splat, m, K, opts.width, opts.height) for m in mats)
    n = write_video(out_path, frames, opts.fps, opts.quality, total=len(mats))
    return {"frames": n, "fps": opts.fps, "width": opts.width, "height": opts.height,
            "bytes": Path(out_path).stat().st_size, **orbit}


def main(splat_path: str | os.PathLike, aligned_dir: str | os.PathLike, out_path: str | os.PathLike,
         views_path: str | os.PathLike | None = None, options: dict | None = None,
         report_path: str | os.PathLike | None = None, turntable: bool = False, arc_deg: float = 360.0,
         radius_scale: float = 1.0) -> dict:
    """``results/{scene}_flythrough.mp4`` from the trained splat and the aligned model; with
    ``turntable`` an orbit around the object instead (``aligned_dir`` may then also be an Inria
    folder or a ``cameras.json``, see :func:`read_poses`; ``arc_deg`` and ``radius_scale``: see
    :func:`turntable_cameras`).

    Raises:
        InputError: unreadable splat/model, bad options.
    """
    from .formats import read_any
    from .viewer import capture_track

    try:
        opts = VideoOptions(**(options or {}))
    except TypeError as e:
        raise InputError(f"video options: {e}") from None
    splat = read_any(splat_path)
    if turntable:
        poses = read_poses(aligned_dir)
        try:  # the cameras' geometry first, so that its errors name their file
            turntable_cameras(poses, 1, radius_scale, arc_deg=arc_deg)
        except InputError as e:
            raise InputError(f"{aligned_dir}: {e}") from None
        info = render_turntable(splat, poses, out_path, opts, radius_scale, arc_deg=arc_deg)
    else:
        track = capture_track(aligned_dir, views_path)
        info = render_flythrough(splat, track["centres"], out_path, opts)
    _LOG.info("%s: %s (%d frames, %dx%d, %.1f MB)", "turntable" if turntable else "flythrough", out_path,
              info["frames"], opts.width, opts.height, info["bytes"] / 1e6)
    if report_path:
        write_json(report_path, info)
    return info


def cli(argv: list[str]) -> int:
    """``splatforge flythrough SPLAT ALIGNED_DIR OUT.mp4 [--views views.json] [--turntable] [--width W ...]``."""
    ap = argparse.ArgumentParser(prog="splatforge flythrough",
                                 description="Render a fly-through MP4 of a splat along the smoothed capture trajectory.")
    ap.add_argument("splat")
    ap.add_argument("aligned", help="aligned COLMAP model folder (work/{scene}/aligned); with --turntable also an "
                    "Inria folder (cameras.json) or a cameras.json")
    ap.add_argument("out", help="output .mp4")
    ap.add_argument("--views", help="views.json (frames of panoramas)")
    ap.add_argument("--turntable", action="store_true",
                    help="orbit once around the object the capture cameras look at (object captures)")
    ap.add_argument("--arc", type=float, default=360.0, metavar="DEG",
                    help="turntable: < 360 swings over that arc and back; 0: the capture's own azimuth span")
    ap.add_argument("--radius-scale", type=float, default=1.0, help="turntable: orbit radius / capture distance")
    d = VideoOptions()
    for k in ("width", "height", "fps"):
        ap.add_argument(f"--{k}", type=int, default=getattr(d, k))
    for k in ("seconds", "fov_y_deg", "smooth", "quality"):
        ap.add_argument(f"--{k.replace('_', '-')}", dest=k, type=float, default=getattr(d, k))
    a = ap.parse_args(argv)
    opts = {k: getattr(a, k) for k in ("width", "height", "fps", "seconds", "fov_y_deg", "smooth", "quality")}
    main(a.splat, a.aligned, a.out, a.views, opts, turntable=a.turntable, arc_deg=a.arc, radius_scale=a.radius_scale)
    return 0
