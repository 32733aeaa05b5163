"""Turntable video (#16, object captures): the orbit's centre is where the capture cameras look,
its axis their common up; checked on a tiny synthetic splat by decoding the MP4 and by the
rendered alpha's centroid staying at the image centre all the way round."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from splatforge_core.errors import InputError
from splatforge_core.video import VideoOptions, object_centre, read_poses, render_turntable, turntable_cameras, up_axis
from splatforge_core.viewer import intrinsics_from_fov, look_at_viewmat

C0 = 0.28209479177387814
CENTRE = np.array([1.5, -2.0, 0.7])
UP = np.array([0.2, 0.3, 1.0]) / np.linalg.norm([0.2, 0.3, 1.0])  # a tilted model frame, not ENU


def _basis(up):
    e0 = np.cross(up, [1.0, 0, 0])
    e0 /= np.linalg.norm(e0)
    return e0, np.cross(up, e0)


def _capture(n: int = 12, radius: float = 3.0, elev_deg: float = 25.0, aim_noise: float = 0.0, seed: int = 0,
             arc: float = 2 * math.pi):
    """``n`` cameras on a ring (or an ``arc`` radians of it) around CENTRE (tilted up axis UP)
    aiming at it (+- aim_noise m)."""
    rng = np.random.default_rng(seed)
    e0, e1 = _basis(UP)
    el = math.radians(elev_deg)
    mats = []
    for k in range(n):
        a = arc * k / n + 0.3 if arc >= 2 * math.pi else 2.0 + arc * k / (n - 1)
        pos = CENTRE + radius * (math.cos(el) * (math.cos(a) * e0 + math.sin(a) * e1) + math.sin(el) * UP)
        mats.append(look_at_viewmat(pos, CENTRE + rng.normal(0, aim_noise, 3), UP))
    return mats


def _white_blob(n: int = 300, seed: int = 1) -> dict:
    """White Gaussians in a 0.3 m ball around CENTRE, plus far floaters on one side (they would
    pull a centre taken as the Gaussians' mean)."""
    rng = np.random.default_rng(seed)
    ball = CENTRE + rng.normal(0, 0.15, (n, 3))
    floaters = CENTRE + np.array([8.0, 0, 0]) + rng.normal(0, 0.5, (n // 3, 3))
    means = np.concatenate([ball, floaters]).astype(np.float32)
    m = len(means)
    opac = np.concatenate([np.full(n, 3.0), np.full(m - n, -4.0)]).astype(np.float32)
    return {"means": means, "scales": np.full((m, 3), np.log(0.06), np.float32),
            "quats": np.tile(np.float32([1, 0, 0, 0]), (m, 1)), "opacities": opac,
            "sh0": np.full((m, 3), 0.5 / C0, np.float32), "shN": np.zeros((m, 0, 3), np.float32), "sh_degree": 0}


def test_centre_and_up_from_the_capture_cameras():
    mats = _capture(aim_noise=0.02)
    np.testing.assert_allclose(object_centre(mats), CENTRE, atol=0.05)
    np.testing.assert_allclose(up_axis(mats), UP, atol=0.01)  # the aim noise tilts each camera a little
    np.testing.assert_allclose(up_axis(_capture()), UP, atol=1e-9)
    # two cameras aimed far off do not move the robust centre much
    bad = _capture(n=2, radius=3.0, seed=3)
    off = [look_at_viewmat(np.linalg.inv(m)[:3, 3], CENTRE + [0, 0, 3.0], UP) for m in bad]
    assert np.linalg.norm(object_centre(mats + off) - CENTRE) < 0.15


@pytest.mark.hostile(cls="video", expect="clear_error")
def test_parallel_cameras_are_refused(tmp_path: Path):
    """A walk (all cameras facing the same way) has no object to orbit: a clear error naming the
    cameras.json, and no video."""
    from splatforge_core import inria
    from splatforge_core.splat import write_splat_ply
    from splatforge_core.video import main

    mats = [look_at_viewmat([x, 0, 1.5], [x, 5, 1.5]) for x in np.linspace(0, 6, 8)]
    with pytest.raises(InputError, match="parallel"):
        object_centre(mats)
    cams = [inria.camera_from_pinhole(i, f"im{i}", intrinsics_from_fov(50, 64, 48), m, 64, 48) for i, m in enumerate(mats)]
    inria.write_cameras_json(tmp_path / "cameras.json", cams)
    s = _white_blob(20)
    write_splat_ply(tmp_path / "s.ply", s["means"], s["scales"], s["quats"], s["opacities"], s["sh0"], s["shN"])
    with pytest.raises(InputError, match="parallel") as e:
        main(tmp_path / "s.ply", tmp_path / "cameras.json", tmp_path / "o.mp4", turntable=True)
    assert str(tmp_path / "cameras.json") in str(e.value) and not (tmp_path / "o.mp4").exists()


def test_orbit_keeps_radius_and_elevation_and_looks_at_the_centre():
    mats = _capture(radius=3.0, elev_deg=25.0)
    cams, info = turntable_cameras(mats, 36)
    assert len(cams) == 36
    assert info["radius"] == pytest.approx(3.0, rel=0.02) and info["elevation_deg"] == pytest.approx(25.0, abs=1.0)
    pos = np.array([np.linalg.inv(m)[:3, 3] for m in cams])
    rel = pos - CENTRE
    np.testing.assert_allclose(np.linalg.norm(rel, axis=1), info["radius"], rtol=1e-9)
    fwd = np.array([m[2, :3] for m in cams])
    np.testing.assert_allclose(np.einsum("ij,ij->i", fwd, -rel / np.linalg.norm(rel, axis=1)[:, None]), 1.0, atol=1e-3)
    e0, e1 = _basis(UP)
    az = np.unwrap(np.arctan2(rel @ e1, rel @ e0))
    assert az[-1] - az[0] == pytest.approx(2 * math.pi * 35 / 36, abs=0.02)  # one turn, evenly


def test_partial_capture_swings_over_its_own_arc():
    """A capture that saw one side only (azimuths 2.0 .. 2.0 + 150 deg): ``arc_deg=0`` swings over that
    span and back, centred on it; a 90-degree arc stays inside it."""
    mats = _capture(n=10, arc=math.radians(150))
    e0, e1 = _basis(UP)

    def azimuths(cams):
        rel = np.array([np.linalg.inv(m)[:3, 3] for m in cams]) - CENTRE
        return np.degrees(np.unwrap(np.arctan2(rel @ e1, rel @ e0)))

    cams, info = turntable_cameras(mats, 40, arc_deg=0)
    az = azimuths(cams)
    assert info["arc_deg"] == pytest.approx(150, abs=0.5)
    assert az.min() == pytest.approx(np.degrees(2.0), abs=0.5) and az.max() == pytest.approx(np.degrees(2.0) + 150, abs=0.5)
    assert np.argmax(az) == 20 and az[0] == az.min()  # there (half the frames) and back
    az90 = azimuths(turntable_cameras(mats, 40, arc_deg=90)[0])
    assert az90.max() - az90.min() == pytest.approx(90, abs=0.5)
    assert (az90.max() + az90.min()) / 2 == pytest.approx(np.degrees(2.0) + 75, abs=0.5)


@pytest.mark.slow
def test_turntable_video_keeps_the_object_centred(tmp_path: Path):
    """48-px MP4 of 12 frames from an Inria cameras.json: frame count and size as asked, and in
    every decoded frame the object's brightness centroid is within 8% of the image centre."""
    import imageio_ffmpeg

    from splatforge_core import inria

    cams = [inria.camera_from_pinhole(i, f"im{i:02d}", intrinsics_from_fov(50, 64, 48), m, 64, 48)
            for i, m in enumerate(_capture())]
    inria.write_cameras_json(tmp_path / "cameras.json", cams)
    assert len(read_poses(tmp_path)) == 12
    opts = VideoOptions(width=64, height=48, fps=6, seconds=2, fov_y_deg=40, quality=9)
    out = tmp_path / "tt.mp4"
    info = render_turntable(_white_blob(), read_poses(tmp_path), out, opts)
    assert info["frames"] == 12 and out.stat().st_size == info["bytes"] > 0
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, no temporary left
    reader = imageio_ffmpeg.read_frames(str(out))
    assert tuple(next(reader)["size"]) == (64, 48)
    frames = [np.frombuffer(f, np.uint8).reshape(48, 64, 3).mean(2) for f in reader]
    assert len(frames) == 12
    ys, xs = np.mgrid[:48, :64]
    for f in frames:
        w = np.clip(f - 16, 0, None)
        assert w.sum() > 100 * 255 * 0.05  # the object is in view
        cx, cy = (w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()
        assert abs(cx - 31.5) < 0.08 * 64 and abs(cy - 23.5) < 0.08 * 48, (cx, cy)


@pytest.mark.hostile(cls="video", expect="clear_error")
def test_turntable_cli_refuses_a_folder_without_cameras(tmp_path: Path):
    """``splatforge flythrough --turntable`` on a folder that is neither an Inria folder nor a COLMAP
    model: a one-line error naming the folder, no traceback."""
    import subprocess
    import sys

    from splatforge_core.splat import write_splat_ply

    s = _white_blob(20)
    write_splat_ply(tmp_path / "s.ply", s["means"], s["scales"], s["quats"], s["opacities"], s["sh0"], s["shN"])
    empty = tmp_path / "nocams"
    empty.mkdir()
    r = subprocess.run([sys.executable, "-m", "splatforge_core.cli", "flythrough", str(tmp_path / "s.ply"), str(empty),
                        str(tmp_path / "o.mp4"), "--turntable"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "nocams" in r.stderr, r.stderr
    assert not (tmp_path / "o.mp4").exists()
