"""Tests of the project stage (equirectangular panorama -> pinhole views)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from splatforge_core import project
from splatforge_core.cameras import direction_to_equirect, equirect_directions, pinhole_K, view_rotation
from splatforge_core.errors import InputError
from splatforge_core.project import (
    ProjectOptions,
    View,
    project_equirect,
    sampling_maps,
    view_layout,
    view_name,
)


def f_dir(d: np.ndarray) -> np.ndarray:
    """Smooth test function of a unit direction ``[..., 3]`` -> values in [0.1, 0.9]."""
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    return 0.5 + 0.2 * np.sin(3 * x + 0.5) * np.cos(2 * y) + 0.15 * np.cos(2 * z + x) + 0.05 * x * y


def unit(d: np.ndarray) -> np.ndarray:
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def pixel_rays_rig(params, rotation, width, height) -> np.ndarray:
    """Rig-frame unit rays of all pixel centres from views.json-style PINHOLE params and cam_from_rig."""
    fx, fy, cx, cy = params
    c, r = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    cam = np.stack([(c - cx) / fx, (r - cy) / fy, np.ones_like(c)], -1)
    return unit(cam @ np.asarray(rotation))  # rig = R^T cam  <=>  row vectors @ R


def reflect_pad(img: np.ndarray) -> np.ndarray:
    """Equirect image with one extra row over each pole (same row at lon + 180)."""
    W = img.shape[1]
    return np.concatenate([np.roll(img[:1], W // 2, axis=1), img, np.roll(img[-1:], W // 2, axis=1)], 0)


def bilinear_tolerance(img: np.ndarray) -> float:
    """Error bound of bilinear interpolation + OpenCV's 1/32-px weights, from the sampled image.

    Bilinear interpolation error <= (max|f_uu| + max|f_vv|) / 8 (pixel units; tensor-product
    linear interpolation). The second derivatives are estimated by second differences on the
    wrapped / pole-reflected grid, with a 1.5x margin because the maximum of the samples can
    miss the continuous maximum. OpenCV quantises the bilinear weights to 1/32, i.e. a position
    error <= 1/64 px per axis: <= (max|f_u| + max|f_v|) / 64.
    """
    p = reflect_pad(img.astype(np.float64))
    duu = np.abs(np.roll(p, 1, 1) - 2 * p + np.roll(p, -1, 1)).max()
    dvv = np.abs(p[2:] - 2 * p[1:-1] + p[:-2]).max()
    du = np.abs(np.roll(p, -1, 1) - p).max()
    dv = np.abs(p[1:] - p[:-1]).max()
    return 1.5 * (duu + dvv) / 8 + (du + dv) / 64 + 1e-6


@pytest.fixture(scope="module")
def analytic_pano():
    W, H = 2048, 1024
    img = f_dir(equirect_directions(W, H).astype(np.float64)).astype(np.float32)
    return img, bilinear_tolerance(img)


# ------------------------------------------------------------------ pure geometry


def test_equirect_directions_formula_and_inverse():
    W, H = 64, 32
    d = equirect_directions(W, H)
    assert d.shape == (H, W, 3) and d.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1, atol=1e-6)
    # docs/formats.md: centre column/row (u = W/2, v = H/2) is +z up to half a pixel; lon at u=W/2 is +half px
    half = math.radians(0.5 * 360 / W)
    np.testing.assert_allclose(d[H // 2, W // 2], [math.sin(half) * math.cos(math.radians(-90 / H)),
                                                    math.sin(math.radians(-90 / H)) * -1,
                                                    math.cos(half) * math.cos(math.radians(-90 / H))], atol=1e-6)
    # increasing u = to the right (+x), increasing v = down (+y); top row is near -y (up)
    assert d[H // 2, 3 * W // 4, 0] > 0.99 and d[0, 0, 1] < -0.99 and d[-1, 0, 1] > 0.99
    # u = 0 is just right of lon = -180 (behind, on the left)
    assert d[H // 2, 0, 2] < -0.99 and d[H // 2, 0, 0] < 0
    u, v = direction_to_equirect(d, W, H)
    uu, vv = np.meshgrid(np.arange(W), np.arange(H))
    np.testing.assert_allclose(u, uu, atol=1e-3)
    np.testing.assert_allclose(v, vv, atol=1e-3)


def test_view_rotation_axes():
    np.testing.assert_allclose(view_rotation(0, 0), np.eye(3), atol=1e-12)
    # positive azimuth turns right: forward (row 2 = z axis in rig) of az 90 is rig +x
    np.testing.assert_allclose(view_rotation(90, 0)[2], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(view_rotation(-90, 0)[2], [-1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(view_rotation(180, 0)[2], [0, 0, -1], atol=1e-12)
    # positive elevation looks up (rig -y); x axis stays horizontal, y (down) tilts forward
    R = view_rotation(0, 90)
    np.testing.assert_allclose(R[2], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(R[0], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(R[1], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(view_rotation(0, -45)[2], [0, math.sqrt(0.5), math.sqrt(0.5)], atol=1e-12)
    rng = np.random.default_rng(0)
    for a, e in zip(rng.uniform(-360, 360, 20), rng.uniform(-90, 90, 20)):
        R = view_rotation(a, e)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        # forward axis is the equirect ray of (lon=a, lat=e)
        u, v = direction_to_equirect(R[2], 3600, 1800)
        assert ((u + 0.5) / 3600 * 360 - 180 - a + 180) % 360 - 180 == pytest.approx(0, abs=1e-9)
        assert 90 - (v + 0.5) / 1800 * 180 == pytest.approx(e, abs=1e-9)


def test_pinhole_K():
    K = pinhole_K(1600, 90)
    np.testing.assert_allclose(K, [[800, 0, 800], [0, 800, 800], [0, 0, 1]], atol=1e-9)
    K = pinhole_K((640, 480), 60)
    assert K[0, 0] == pytest.approx(320 / math.tan(math.radians(30)))
    assert (K[0, 2], K[1, 2]) == (320, 240)
    with pytest.raises(ValueError, match=r"fov_deg must be in \(0, 180\), got 180"):
        pinhole_K(100, 180)


def test_view_names_and_layout_options():
    assert view_name(0, 0) == "az000_el+00"
    assert view_name(300, -45) == "az300_el-45"
    assert view_name(-60, 90) == "az300_el+90"
    assert view_name(22.5, 7.5) == "az022p5_el+07p5"
    views = view_layout()
    assert len(views) == 18
    assert {v.name for v in views} >= {"az000_el+00", "az060_el-45", "az300_el+45"}
    assert len(view_layout({"min_elevation_deg": -30})) == 12
    v = view_layout({"num_azimuths": 4, "elevations_deg": [0], "drop_views": ["az180_el+00"]})
    assert [x.name for x in v] == ["az000_el+00", "az090_el+00", "az270_el+00"]
    with pytest.raises(InputError, match="unknown project option"):
        ProjectOptions.from_dict({"fov": 90})
    with pytest.raises(InputError, match="drop_views"):
        ProjectOptions.from_dict({"drop_views": ["az999_el+00"]})
    with pytest.raises(InputError, match="no view"):
        ProjectOptions.from_dict({"min_elevation_deg": 60})
    with pytest.raises(InputError, match="duplicate"):
        ProjectOptions.from_dict({"azimuths_deg": [0, 360]})
    with pytest.raises(InputError, match="fov_deg"):
        ProjectOptions.from_dict({"fov_deg": 180})
    with pytest.raises(InputError, match="elevations_deg"):
        ProjectOptions.from_dict({"elevations_deg": [100]})
    with pytest.raises(InputError, match="size"):
        ProjectOptions.from_dict({"size": True})


def test_default_layout_covers_sphere():
    """Every direction is inside >= 2 default views; each +-45 ring alone covers its hemisphere."""
    d = unit(np.random.default_rng(1).normal(size=(200_000, 3)))
    views = view_layout()
    inside = []
    for v in views:
        c = d @ v.cam_from_rig.T
        t = math.tan(math.radians(v.fov_deg / 2))
        inside.append((c[:, 2] > 0) & (np.abs(c[:, 0]) <= t * c[:, 2]) & (np.abs(c[:, 1]) <= t * c[:, 2]))
    inside = np.array(inside)
    assert inside.sum(0).min() >= 2
    el = np.array([v.elevation_deg for v in views])
    up = d[:, 1] < 0
    assert inside[el == 45][:, up].any(0).all() and inside[el == -45][:, ~up].any(0).all()
    # the horizon ring alone does not reach the poles (so the pitched rings are needed)
    assert not inside[el == 0].any(0).all()


# ------------------------------------------------------------------ resampling accuracy


def _test_views():
    return [
        View("seam", 180.0, 0.0, 96, 90.0),  # centred on the lon +-180 seam
        View("seam_up", 170.0, 30.0, 96, 90.0),
        View("front", 0.0, 10.0, 96, 60.0),
        View("north", 30.0, 90.0, 96, 90.0),  # zenith
        View("south", -120.0, -90.0, 96, 90.0),  # nadir
        View("north_tight", 200.0, 90.0, 65, 2.0),  # 2 deg around the pole: many pole pixels
        View("south_tight", 10.0, -90.0, 64, 1.0),
        View("seam_tight", 180.0, 0.0, 64, 0.5),  # 0.5 deg at the seam: 3 px of panorama
    ]


def test_projection_matches_analytic_function(analytic_pano):
    img, tol = analytic_pano
    H, W = img.shape
    views = _test_views()
    maps = sampling_maps(views, W, H)
    assert maps[5].pole_idx.size > 0 and maps[6].pole_idx.size > 0
    for view, out in zip(views, project_equirect(img, maps)):
        K = view.K
        rays = pixel_rays_rig([K[0, 0], K[1, 1], K[0, 2], K[1, 2]], view.cam_from_rig, view.size, view.size)
        err = np.abs(out.astype(np.float64) - f_dir(rays))
        assert err.max() <= tol, (view.name, err.max(), tol)


def test_accuracy_test_detects_wrong_seam_and_pole_handling(analytic_pano):
    """The tolerance is tight enough: clamping at the seam or at the poles would fail it."""
    img, tol = analytic_pano
    H, W = img.shape
    for view in (View("seam_tight", 180.0, 0.0, 64, 0.5), View("north_tight", 200.0, 90.0, 65, 2.0)):
        K = view.K
        rays = pixel_rays_rig([K[0, 0], K[1, 1], K[0, 2], K[1, 2]], view.cam_from_rig, view.size, view.size)
        u, v = direction_to_equirect(rays, W, H)
        naive = cv2.remap(img, u.astype(np.float32), v.astype(np.float32), cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
        assert np.abs(naive - f_dir(rays)).max() > 3 * tol, view.name


def test_uint8_projection_rounding(analytic_pano):
    img, tol = analytic_pano
    img8 = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    views = _test_views()
    maps = sampling_maps(views, img.shape[1], img.shape[0])
    for view, out8, out in zip(views, project_equirect(img8, maps), project_equirect(img, maps)):
        assert out8.dtype == np.uint8
        # 8-bit input rounding (0.5) + bilinear rounding (0.5) levels
        assert np.abs(out8.astype(np.float64) - out * 255).max() <= 1.0 + tol * 255, view.name


# ------------------------------------------------------------------ stage main / CLI


def _write_pano(path: Path, W: int = 512) -> np.ndarray:
    img = f_dir(equirect_directions(W, W // 2).astype(np.float64))
    rgb = np.stack([img, 1 - img, 0.5 + 0.0 * img], -1)
    bgr = np.clip(np.rint(rgb[..., ::-1] * 255), 0, 255).astype(np.uint8)
    assert cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 98])
    return rgb


def _pano_manifest(tmp_path: Path, names: list[str], W: int = 512) -> Path:
    src = tmp_path / "input"
    src.mkdir()
    images = []
    for i, n in enumerate(names):
        _write_pano(src / n, W)
        images.append({
            "name": n, "path": str(src / n), "width": W, "height": W // 2, "kind": "equirectangular",
            "lat": 55.0, "lon": 13.0, "alt": 10.0, "enu": [float(i), 2.0 * i, 0.5],
            "timestamp": None, "make": None, "model": None, "focal_length_mm": None, "focal_length_35mm": None,
        })
    m = {"schema_version": 1, "input_dir": str(src), "camera_kind": "equirectangular",
         "origin": {"name": names[0], "lat": 55.0, "lon": 13.0, "alt": 10.0}, "images": images, "skipped": []}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(m))
    return path


def test_main_panoramas_end_to_end(tmp_path):
    """views.json intrinsics + cam_from_rig reproduce the rays that made the written images."""
    manifest = _pano_manifest(tmp_path, ["p_01.jpg", "p_02.JPG"])
    images, views_json = tmp_path / "work" / "images", tmp_path / "work" / "views.json"
    r = project.main(manifest, images, views_json, {"size": 64, "workers": 2})
    vj = json.loads(views_json.read_text())
    assert vj["schema_version"] == 1 and vj["camera_kind"] == "equirectangular"
    assert vj["image_dir"] == str(images)
    assert len(vj["cameras"]) == 18 and [f["frame"] for f in vj["frames"]] == ["p_01", "p_02"]
    assert vj["frames"][1]["enu"] == [1.0, 2.0, 0.5] and vj["frames"][1]["source"] == "p_02.JPG"
    assert r["timing"]["workers"] == 2
    files = sorted(p.relative_to(images).as_posix() for p in images.rglob("*") if p.is_file())
    assert len(files) == 36 and "az060_el-45/p_02.jpg" in files
    assert not [p for p in images.parent.iterdir() if p.name.startswith(".")]  # no temp left
    for cam in vj["cameras"]:
        assert cam["model"] == "PINHOLE" and cam["width"] == cam["height"] == 64
        assert cam["cam_from_rig"]["translation"] == [0.0, 0.0, 0.0]
        R = np.array(cam["cam_from_rig"]["rotation"])
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        rays = pixel_rays_rig(cam["params"], R, 64, 64)
        want = f_dir(rays)
        for frame in vj["frames"]:
            got = cv2.imread(str(images / frame["images"][cam["view"]]))[..., ::-1] / 255.0
            assert got.shape == (64, 64, 3)
            # JPEG q95 of a smooth image + 512-px panorama resampling: a few grey levels
            assert np.abs(got[..., 0] - want).max() < 8 / 255, cam["view"]
            assert np.abs(got[..., 1] - (1 - want)).max() < 8 / 255, cam["view"]
            assert np.abs(got[..., 0] - want).mean() < 2 / 255, cam["view"]


def test_main_replaces_images_dir_atomically_and_fails_cleanly(tmp_path):
    manifest = _pano_manifest(tmp_path, ["a.jpg", "b.jpg"])
    images, views_json = tmp_path / "images", tmp_path / "views.json"
    opts = {"size": 32, "workers": 1, "elevations_deg": [0], "num_azimuths": 2}
    project.main(manifest, images, views_json, opts)
    assert sorted(p.name for p in images.iterdir()) == ["az000_el+00", "az180_el+00"]
    before = views_json.read_text()
    # a corrupt panorama: main raises, the old images folder and views.json are untouched
    Path(json.loads(manifest.read_text())["images"][1]["path"]).write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(InputError, match="cannot decode"):
        project.main(manifest, images, views_json, {**opts, "num_azimuths": 3})
    assert sorted(p.name for p in images.iterdir()) == ["az000_el+00", "az180_el+00"]
    assert views_json.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "input", "manifest.json", "views.json"]


def test_main_rejects_bad_manifest(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="m.json"):
        project.main(bad, tmp_path / "i", tmp_path / "v.json")
    manifest = _pano_manifest(tmp_path, ["a.jpg"])
    m = json.loads(manifest.read_text())
    m["images"][0]["path"] += ".missing"
    manifest.write_text(json.dumps(m))
    with pytest.raises(InputError, match="does not exist"):
        project.main(manifest, tmp_path / "i", tmp_path / "v.json", {"size": 16})
    assert not (tmp_path / "i").exists() and not (tmp_path / "v.json").exists()


def test_main_perspective_photos(lund_dir, tmp_path):
    names = ["01.jpg", "02.jpg", "03.jpg"]
    images = []
    for i, n in enumerate(names):
        images.append({"name": n, "path": str(lund_dir / n), "width": 1024, "height": 768, "kind": "perspective",
                       "lat": 55.7, "lon": 13.2, "alt": 40.0, "enu": [0.0, float(i), 0.0], "timestamp": None,
                       "make": None, "model": None, "focal_length_mm": None, "focal_length_35mm": None})
    images[1]["focal_length_35mm"] = 28.0
    images[2]["focal_length_mm"] = 4.0
    m = {"schema_version": 1, "input_dir": str(lund_dir), "camera_kind": "perspective", "origin": None,
         "images": images, "skipped": []}
    mp = tmp_path / "manifest.json"
    mp.write_text(json.dumps(m))
    out = tmp_path / "images"
    project.main(mp, out, tmp_path / "views.json", {"sensor_width_mm": 5.0})
    vj = json.loads((tmp_path / "views.json").read_text())
    for n in names:
        link = out / n
        assert link.is_symlink() and os.readlink(link) == str((lund_dir / n).resolve())
        assert link.read_bytes()[:2] == b"\xff\xd8"
    cams = {c["view"]: c for c in vj["cameras"]}
    assert set(cams) == set(names)
    f_default = 512 / math.tan(math.radians(30))
    assert cams["01.jpg"]["model"] == "SIMPLE_RADIAL"
    assert cams["01.jpg"]["params"] == pytest.approx([f_default, 512, 384, 0.0])
    assert cams["01.jpg"]["focal_source"] == "default_fov" and not cams["01.jpg"]["prior_focal_length"]
    assert cams["02.jpg"]["params"][0] == pytest.approx(28 / math.hypot(36, 24) * 1280)
    assert cams["02.jpg"]["prior_focal_length"]
    assert cams["03.jpg"]["params"][0] == pytest.approx(4.0 / 5.0 * 1024)
    assert cams["03.jpg"]["cam_from_rig"]["rotation"] == np.eye(3).tolist()
    assert [f["images"] for f in vj["frames"]] == [{n: n} for n in names]
    assert [f["frame"] for f in vj["frames"]] == ["01", "02", "03"]
    # PINHOLE model on request
    project.main(mp, out, tmp_path / "views.json", {"perspective_model": "PINHOLE", "default_fov_deg": 90})
    c = json.loads((tmp_path / "views.json").read_text())["cameras"][0]
    assert c["model"] == "PINHOLE" and c["params"] == pytest.approx([512, 512, 512, 384])


def test_real_gopro_panorama_and_cli(pano_path, tmp_path):
    m = {"schema_version": 1, "input_dir": str(pano_path.parent), "camera_kind": "equirectangular", "origin": None,
         "images": [{"name": pano_path.name, "path": str(pano_path), "width": 5760, "height": 2880,
                     "kind": "equirectangular", "enu": [0.0, 0.0, 0.0]}], "skipped": []}
    mp = tmp_path / "manifest.json"
    mp.write_text(json.dumps(m))
    rc = project.cli([str(mp), str(tmp_path / "images"), str(tmp_path / "views.json"),
                      "--size", "33", "--fov", "1", "--workers", "1"])
    assert rc == 0
    pano = cv2.imread(str(pano_path))
    view = cv2.imread(str(tmp_path / "images" / "az000_el+00" / "gopro_max_GSAG2002.jpg"))
    assert view.shape == (33, 33, 3)
    # the centre pixel of the az 0 / el 0 view is the panorama centre (u = W/2 - 0.5, v = H/2 - 0.5)
    want = pano[1439:1441, 2879:2881].reshape(-1, 3).astype(float).mean(0)
    assert np.abs(view[16, 16].astype(float) - want).max() < 20
    # az 180 looks at the seam: the centre pixel is the mean of the first and last columns
    view = cv2.imread(str(tmp_path / "images" / "az180_el+00" / "gopro_max_GSAG2002.jpg"))
    want = pano[1439:1441][:, [0, -1]].reshape(-1, 3).astype(float).mean(0)
    assert np.abs(view[16, 16].astype(float) - want).max() < 20
