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
(:func:`object_centre`, the point the photographer aimed at); the up axis is the mean of the
cameras' up vectors (-y of the OpenCV camera), so it works in any model frame (an Inria
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
    """Unit up vector [3]: the normalised mean of the cameras' up directions (-y of each OpenCV
    camera in world coordinates). Raises InputError when they cancel out."""
    v = np.asarray(viewmats, np.float64).reshape(-1, 4, 4)
    u = -v[:, 1, :3].mean(0)
    if np.linalg.norm(u) < 1e-6:
        raise InputError("the capture cameras have no common up direction; cannot orient a turntable")
    return u / np.linalg.norm(u)


def turntable_cameras(viewmats, n: int, radius_scale: float = 1.0, elevation_deg: float | None = None):
    """cam_from_world matrices [4, 4] of ``n`` frames circling the object once.

    The orbit's centre is :func:`object_centre`, its axis :func:`up_axis`; radius = the median
    distance of the capture cameras from the centre x ``radius_scale``; elevation = the median
    capture elevation (degrees above the horizontal plane through the centre) unless given;
    frame 0 starts at the first camera's azimuth and the orbit turns counter-clockwise seen from
    above. Every frame looks at the centre.

    Returns:
        (list of [4, 4] float64, info dict ``{"centre", "up", "radius", "elevation_deg"}``).

    Raises:
        InputError: see :func:`object_centre` / :func:`up_axis`; n < 1.
    """
    from .viewer import look_at_viewmat

    if n < 1:
        raise InputError(f"turntable: {n} frames; need at least 1")
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
    mats = []
    for k in range(n):
        a = 2 * math.pi * k / n
        pos = centre + radius * (math.cos(el) * (math.cos(a) * e0 + math.sin(a) * e1) + math.sin(el) * up)
        mats.append(look_at_viewmat(pos, centre, up))
    return mats, {"centre": [float(x) for x in centre], "up": [float(x) for x in up], "radius": radius,
                  "elevation_deg": elevation_deg}


def render_turntable(splat: dict, viewmats, out_path: str | os.PathLike, opts: VideoOptions = VideoOptions(),
                     radius_scale: float = 1.0, elevation_deg: float | None = None) -> dict:
    """Render a turntable of ``splat`` around the object the capture cameras ``viewmats`` [C, 4, 4]
    look at (:func:`turntable_cameras`, ``opts.n_frames`` frames) to ``out_path`` (MP4, atomic).

    Returns:
        ``{"frames", "fps", "width", "height", "bytes", "centre", "up", "radius", "elevation_deg"}``.
    """
    from .viewer import intrinsics_from_fov, render_view

    mats, orbit = turntable_cameras(viewmats, opts.n_frames, radius_scale, elevation_deg)
    K = intrinsics_from_fov(opts.fov_y_deg, opts.width, opts.height)
    frames = (render_view(splat, m, K, opts.width, opts.height) for m in mats)
    n = write_video(out_path, frames, opts.fps, opts.quality, total=len(mats))
    return {"frames": n, "fps": opts.fps, "width": opts.width, "height": opts.height,
            "bytes": Path(out_path).stat().st_size, **orbit}


def main(splat_path: str | os.PathLike, aligned_dir: str | os.PathLike, out_path: str | os.PathLike,
         views_path: str | os.PathLike | None = None, options: dict | None = None,
         report_path: str | os.PathLike | None = None, turntable: bool = False) -> dict:
    """``results/{scene}_flythrough.mp4`` from the trained splat and the aligned model; with
    ``turntable`` an orbit around the object instead (``aligned_dir`` may then also be an Inria
    folder or a ``cameras.json``, see :func:`read_poses`).

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
        info = render_turntable(splat, read_poses(aligned_dir), out_path, opts)
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
    d = VideoOptions()
    for k in ("width", "height", "fps"):
        ap.add_argument(f"--{k}", type=int, default=getattr(d, k))
    for k in ("seconds", "fov_y_deg", "smooth", "quality"):
        ap.add_argument(f"--{k.replace('_', '-')}", dest=k, type=float, default=getattr(d, k))
    a = ap.parse_args(argv)
    opts = {k: getattr(a, k) for k in ("width", "height", "fps", "seconds", "fov_y_deg", "smooth", "quality")}
    main(a.splat, a.aligned, a.out, a.views, opts, turntable=a.turntable)
    return 0
