"""Fly-through video of a scene: ``results/{scene}_flythrough.mp4`` (issue #16).

The camera follows the capture trajectory (one point per frame/panorama, from the aligned model:
:func:`splatforge_core.viewer.capture_track`), resampled by arc length and smoothed with a Gaussian
filter, looking along the path's horizontal tangent (level, ENU z up). A capture that does not move
(a tripod, a single panorama) gets a slow 360 degree turn on the spot instead. Frames are rendered by
our CPU rasteriser (:func:`splatforge_core.viewer.render_view`, gsplat on CUDA when the tensors are
there) and encoded as H.264 (yuv420p, plays everywhere) by the ffmpeg binary that the
``imageio-ffmpeg`` wheel ships; a tqdm bar shows progress.
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

__all__ = ["VideoOptions", "smooth_path", "flythrough_cameras", "write_video", "render_flythrough", "main", "cli"]

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


def main(splat_path: str | os.PathLike, aligned_dir: str | os.PathLike, out_path: str | os.PathLike,
         views_path: str | os.PathLike | None = None, options: dict | None = None,
         report_path: str | os.PathLike | None = None) -> dict:
    """``results/{scene}_flythrough.mp4`` from the trained splat and the aligned model.

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
    track = capture_track(aligned_dir, views_path)
    info = render_flythrough(splat, track["centres"], out_path, opts)
    _LOG.info("flythrough: %s (%d frames, %dx%d, %.1f MB)", out_path, info["frames"], opts.width, opts.height,
              info["bytes"] / 1e6)
    if report_path:
        write_json(report_path, info)
    return info


def cli(argv: list[str]) -> int:
    """``splatforge flythrough SPLAT ALIGNED_DIR OUT.mp4 [--views views.json] [--width W ...]``."""
    ap = argparse.ArgumentParser(prog="splatforge flythrough",
                                 description="Render a fly-through MP4 of a splat along the smoothed capture trajectory.")
    ap.add_argument("splat")
    ap.add_argument("aligned", help="aligned COLMAP model folder (work/{scene}/aligned)")
    ap.add_argument("out", help="output .mp4")
    ap.add_argument("--views", help="views.json (frames of panoramas)")
    d = VideoOptions()
    for k in ("width", "height", "fps"):
        ap.add_argument(f"--{k}", type=int, default=getattr(d, k))
    for k in ("seconds", "fov_y_deg", "smooth", "quality"):
        ap.add_argument(f"--{k.replace('_', '-')}", dest=k, type=float, default=getattr(d, k))
    a = ap.parse_args(argv)
    opts = {k: getattr(a, k) for k in ("width", "height", "fps", "seconds", "fov_y_deg", "smooth", "quality")}
    main(a.splat, a.aligned, a.out, a.views, opts)
    return 0
