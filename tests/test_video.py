"""Fly-through video (#16): smoothed path, cameras along it, H.264 MP4 through imageio-ffmpeg,
checked by decoding the file and comparing a frame to our own render of the same camera."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from splatforge_core.errors import InputError
from splatforge_core.video import VideoOptions, flythrough_cameras, render_flythrough, smooth_path, write_video
from splatforge_core.viewer import intrinsics_from_fov, render_view


def _tiny_splat(n: int = 400, seed: int = 0) -> dict:
    """Coloured Gaussians on a wall 4 m north of a 6 m east-west path (y = 0, z = 1.5)."""
    rng = np.random.default_rng(seed)
    means = np.stack([rng.uniform(-3, 9, n), rng.uniform(3.5, 4.5, n), rng.uniform(0, 3, n)], axis=1)
    return {"means": means.astype(np.float32), "scales": np.full((n, 3), np.log(0.25), np.float32),
            "quats": np.tile(np.float32([1, 0, 0, 0]), (n, 1)), "opacities": np.full(n, 2.0, np.float32),
            "sh0": rng.normal(0, 1, (n, 3)).astype(np.float32), "shN": np.zeros((n, 0, 3), np.float32), "sh_degree": 0}


def test_smooth_path_resamples_and_keeps_ends():
    pts = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [2, 1, 0]]
    out = smooth_path(pts, 50, sigma_frac=0.0)
    assert out.shape == (50, 3)
    np.testing.assert_allclose(out[0], pts[0]) and np.testing.assert_allclose(out[-1], pts[-1])
    steps = np.linalg.norm(np.diff(out, axis=0), axis=1)
    assert steps.max() - steps.min() < 1e-9 + 0.03  # equal arc length (corners cut at most a little)
    sm = smooth_path(pts, 50, 0.1)
    assert np.abs(np.diff(sm, 2, axis=0)).max() < np.abs(np.diff(out, 2, axis=0)).max()  # smoother
    with pytest.raises(InputError):
        smooth_path([], 10)


def test_cameras_look_along_the_path_and_turn_when_static():
    opts = VideoOptions(fps=10, seconds=2)
    mats = flythrough_cameras([[0, 0, 1.5], [3, 0, 1.5], [6, 0, 1.5]], opts)
    assert len(mats) == 20
    fwd = np.array([m[2, :3] for m in mats])  # camera z axis in world = viewing direction
    np.testing.assert_allclose(fwd[10], [1, 0, 0], atol=1e-6)
    static = flythrough_cameras([[1, 1, 1]], opts)
    yaw = [np.degrees(np.arctan2(m[2, 0], m[2, 1])) % 360 for m in static]
    assert max(yaw) > 300 and min(yaw) < 20  # a full turn


@pytest.mark.slow
def test_flythrough_video_on_a_tiny_splat(tmp_path: Path):
    """The MP4 decodes to the requested frame count and size, and its first frame is our render
    of the first camera (above 28 dB: H.264 at quality 9 on a smooth image; a frame of the wrong
    camera, the last one, scores far lower)."""
    import imageio_ffmpeg

    splat = _tiny_splat()
    opts = VideoOptions(width=96, height=64, fps=8, seconds=2, fov_y_deg=70, quality=9)
    centres = [[0, 0, 1.5], [3, 0.5, 1.5], [6, 0, 1.5]]
    out = tmp_path / "fly.mp4"
    info = render_flythrough(splat, centres, out, opts)
    assert info["frames"] == 16 and out.stat().st_size == info["bytes"] > 0
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    assert tuple(meta["size"]) == (96, 64)
    frames = [np.frombuffer(f, np.uint8).reshape(64, 96, 3) for f in reader]
    assert len(frames) == 16
    K = intrinsics_from_fov(opts.fov_y_deg, 96, 64)
    mats = flythrough_cameras(centres, opts)
    first, last = (render_view(splat, mats[i], K, 96, 64) for i in (0, -1))

    def psnr(a, b):
        return 10 * np.log10(255 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2))

    assert psnr(frames[0], first) > 28
    assert psnr(frames[0], last) < psnr(frames[0], first) - 6


@pytest.mark.hostile(cls="video", expect="clear_error")
def test_write_video_refuses_odd_size(tmp_path: Path):
    out = tmp_path / "odd.mp4"
    with pytest.raises(InputError) as e:
        write_video(out, [np.zeros((33, 48, 3), np.uint8)], fps=4)
    assert str(out) in str(e.value) and not out.exists()
