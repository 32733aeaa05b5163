"""Tests of the embedded demo capture (``splatforge_core.demo``).

Small panoramas (512 x 256, 8 per capture) keep the file fast; the SfM-usability check with
SIFT on pinhole crops is marked slow.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import cv2
import numpy as np
import piexif
import pytest
from PIL import Image

from splatforge_core import demo
from splatforge_core.cameras import equirect_directions
from splatforge_core.errors import InputError
from splatforge_core.io import read_json

W = 512
OPTS = {"n_panoramas": 8, "width": W, "seed": 0}


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def cap(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    demo.main(out, OPTS)
    return out


@pytest.fixture(scope="module")
def gt(cap) -> dict:
    return read_json(cap / "ground_truth.json")


# ---------------------------------------------------------------------------- independent geodesy
def _enu_independent(lat, lon, h, lat0, lon0, h0) -> np.ndarray:
    """WGS84 -> ENU written here independently of the package: pyproj ECEF + standard rotation."""
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)
    x, y, z = tr.transform(np.asarray(lon, float), np.asarray(lat, float), np.asarray(h, float))
    x0, y0, z0 = tr.transform(lon0, lat0, h0)
    p, lam = math.radians(lat0), math.radians(lon0)
    d = np.stack([np.asarray(x) - x0, np.asarray(y) - y0, np.asarray(z) - z0], -1)
    e = -math.sin(lam) * d[..., 0] + math.cos(lam) * d[..., 1]
    n = -math.sin(p) * math.cos(lam) * d[..., 0] - math.sin(p) * math.sin(lam) * d[..., 1] + math.cos(p) * d[..., 2]
    u = math.cos(p) * math.cos(lam) * d[..., 0] + math.cos(p) * math.sin(lam) * d[..., 1] + math.sin(p) * d[..., 2]
    return np.stack([e, n, u], -1)


def _rat(r) -> float:
    return r[0] / r[1]


def _exif_position(path: Path) -> tuple[float, float, float]:
    ex = piexif.load(str(path))
    g = ex["GPS"]
    G = piexif.GPSIFD
    lat = sum(_rat(v) / 60**i for i, v in enumerate(g[G.GPSLatitude]))
    lon = sum(_rat(v) / 60**i for i, v in enumerate(g[G.GPSLongitude]))
    if g[G.GPSLatitudeRef] in (b"S", "S"):
        lat = -lat
    if g[G.GPSLongitudeRef] in (b"W", "W"):
        lon = -lon
    alt = _rat(g[G.GPSAltitude]) * (-1 if g.get(G.GPSAltitudeRef) == 1 else 1)
    return lat, lon, alt


# ---------------------------------------------------------------------------- options
def test_options_validation():
    assert demo.DemoOptions.from_dict({}) == demo.DemoOptions()
    with pytest.raises(InputError, match="unknown demo option"):
        demo.DemoOptions.from_dict({"n_pano": 10})
    with pytest.raises(InputError, match="n_panoramas"):
        demo.DemoOptions(n_panoramas=49)
    with pytest.raises(InputError, match="width"):
        demo.DemoOptions(width=513)
    with pytest.raises(InputError, match="gps_sigma_m"):
        demo.DemoOptions(gps_sigma_m=-1.0)
    with pytest.raises(InputError):
        demo.main("/nonexistent/never", {"width": True})


# ---------------------------------------------------------------------------- layout and sizes
def test_layout_sizes_and_metadata(cap, gt):
    names = sorted(p.name for p in (cap / "images").iterdir())
    assert names == [f"pano_{i:04d}.jpg" for i in range(1, 9)]
    assert [p["name"] for p in gt["panoramas"]] == names
    assert gt["schema_version"] == 1 and gt["width"] == W and gt["height"] == W // 2
    assert gt["seed"] == 0 and gt["gps_sigma_m"] == 2.0
    assert gt["origin"] == {"lat": 55.7047, "lon": 13.1910, "alt": 70.0}
    for name in names:
        with Image.open(cap / "images" / name) as im:
            assert im.format == "JPEG" and im.size == (W, W // 2)
            xmp = im.info.get("xmp")
        assert b'GPano:ProjectionType="equirectangular"' in xmp
        assert f'GPano:FullPanoWidthPixels="{W}"'.encode() in xmp
        ex = piexif.load(str(cap / "images" / name))
        assert ex["0th"][piexif.ImageIFD.Make] == b"SplatForge"
        assert ex["0th"][piexif.ImageIFD.Model] == b"demo"
        assert ex["Exif"][piexif.ExifIFD.DateTimeOriginal].startswith(b"2024:06:01 ")
        assert ex["GPS"][piexif.GPSIFD.GPSDateStamp] == b"2024:06:01"
    # nothing else left behind beside the output folder (atomic build)
    assert sorted(p.name for p in cap.parent.iterdir()) == ["demo"]


def test_path_not_collinear_and_upright_rotations(gt):
    pos = np.array([p["enu_true"] for p in gt["panoramas"]])
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    spacing = demo.DemoOptions().spacing_m
    assert np.all(np.abs(steps - spacing) < 0.05)  # arc spacing (chord within 5 cm)
    centred = pos[:, :2] - pos[:, :2].mean(0)
    sv = np.linalg.svd(centred, compute_uv=False)
    assert sv[1] / sv[0] > 0.05, "positions must not lie on one line"
    assert np.allclose(pos[:, 2], 1.7)
    for p in gt["panoramas"]:
        R = np.array(p["rig_from_world"])
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(R), 1.0)
        assert np.allclose(R @ [0, 0, 1], [0, -1, 0])  # world up = rig -y
        assert np.allclose(R @ p["enu_true"] + p["rig_from_world_translation"], 0)
        yaw = math.radians(p["yaw_deg"])
        assert np.allclose(R.T @ [0, 0, 1], [math.sin(yaw), math.cos(yaw), 0])  # rig z = heading


# ---------------------------------------------------------------------------- determinism
def test_deterministic_and_seed_changes_noise(cap, gt, tmp_path):
    again = tmp_path / "again"
    demo.main(again, OPTS)
    assert _digest(again) == _digest(cap)
    other = tmp_path / "other"
    demo.main(other, {**OPTS, "seed": 1})
    gt1 = read_json(other / "ground_truth.json")
    a = np.array([p["enu_gps"] for p in gt["panoramas"]])
    b = np.array([p["enu_gps"] for p in gt1["panoramas"]])
    assert np.allclose([p["enu_true"] for p in gt["panoramas"]], [p["enu_true"] for p in gt1["panoramas"]])
    assert np.abs(a - b).min() > 0  # every coordinate's noise differs
    assert (a - b).std() > 1.0
    # GPS noise statistics: sigma 2 m per axis
    noise = a - np.array([p["enu_true"] for p in gt["panoramas"]])
    assert 0.8 < noise.std() < 3.5


def test_existing_output_replaced_and_crash_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    demo.main(out, {**OPTS, "width": 256})
    assert not (out / "stale.txt").exists() and (out / "ground_truth.json").exists()

    calls = {"n": 0}
    real = demo.render_panorama

    def boom(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(demo, "render_panorama", boom)
    out2 = tmp_path / "demo2"
    with pytest.raises(RuntimeError, match="simulated crash"):
        demo.main(out2, {**OPTS, "width": 256})
    assert not out2.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


# ---------------------------------------------------------------------------- GPS EXIF
def test_exif_gps_matches_noisy_positions(cap, gt):
    o = gt["origin"]
    for p in gt["panoramas"]:
        lat, lon, alt = _exif_position(cap / "images" / p["name"])
        enu = _enu_independent(lat, lon, alt, o["lat"], o["lon"], o["alt"])
        assert np.linalg.norm(enu - np.array(p["enu_gps"])) < 0.01, p["name"]
        assert np.linalg.norm(enu - np.array(p["enu_true"])) > 1e-3  # noise was really added
        assert abs(lat - p["lat"]) < 1e-9 and abs(lon - p["lon"]) < 1e-9 and abs(alt - p["alt"]) < 1e-3


def test_ingest_reads_demo_as_equirectangular(cap, gt, tmp_path):
    from splatforge_core import ingest

    man = ingest.main(cap / "images", tmp_path / "manifest.json")
    assert man["camera_kind"] == "equirectangular"
    assert [r["name"] for r in man["images"]] == [p["name"] for p in gt["panoramas"]]
    enu = np.array([r["enu"] for r in man["images"]])
    gps = np.array([p["enu_gps"] for p in gt["panoramas"]])
    # ingest's origin is the first fix: same geometry up to the offset (and a ~1e-6 rotation)
    assert np.abs((enu - enu[0]) - (gps - gps[0])).max() < 0.01
    assert all(r["make"] == "SplatForge" and r["model"] == "demo" for r in man["images"])


# ---------------------------------------------------------------------------- ground-truth geometry
def _pixel_of(X, c, R, w):
    """docs/formats.md inverse mapping, written independently of the package."""
    p = R @ (np.asarray(X, float) - np.asarray(c, float))
    lon = math.degrees(math.atan2(p[0], p[2]))
    lat = math.degrees(math.asin(-p[1] / np.linalg.norm(p)))
    h = w // 2
    return (lon + 180) / 360 * w - 0.5, (90 - lat) / 180 * h - 0.5


def test_box_points_project_to_their_pixels(gt):
    """Face centres of the boxes, projected with the ground-truth pose, land on that box at the right depth."""
    w = 1024
    checked = 0
    for k, p in enumerate(gt["panoramas"][:4]):
        c, R = np.array(p["enu_true"]), np.array(p["rig_from_world"])
        _, depth, mat = demo.render_panorama(c, R, w)
        for bi, box in enumerate(gt["scene"]["boxes"]):
            lo, hi = np.array(box["min"]), np.array(box["max"])
            mid = (lo + hi) / 2
            faces = [
                ((mid[0], lo[1], mid[2]), (0, -1, 0)),
                ((hi[0], mid[1], mid[2]), (1, 0, 0)),
                ((mid[0], hi[1], mid[2]), (0, 1, 0)),
                ((lo[0], mid[1], mid[2]), (-1, 0, 0)),
            ]
            for X, nrm in faces:
                X = np.array(X)
                if np.dot(nrm, c - X) <= 0:
                    continue  # back face
                u, v = _pixel_of(X, c, R, w)
                iu, iv = int(round(u)) % w, int(round(v))
                dist = np.linalg.norm(X - c)
                if abs(depth[iv, iu] - dist) > 0.05 * dist:
                    continue  # occluded by another box
                assert mat[iv, iu] == 5 + bi, (p["name"], box["name"])
                checked += 1
    assert checked >= 10


def test_panorama_is_upright_and_matches_ground_truth_pose(cap, gt):
    p = gt["panoramas"][2]
    c, R = np.array(p["enu_true"]), np.array(p["rig_from_world"])
    rgb, depth, mat = demo.render_panorama(c, R, W)
    img = np.asarray(Image.open(cap / "images" / p["name"]).convert("RGB")).astype(np.float32)
    assert np.abs(img - rgb).mean() < 4.0  # the JPEG is this render (only JPEG loss)
    h = W // 2
    assert np.all(mat[0] == -1) and np.all(mat[-1] == 0)  # sky at the top row, ground at the bottom
    assert np.all(mat[: h // 2] != 0)  # upper half never sees the ground
    assert np.all(mat[h // 2 :] != -1)  # lower half never sees the sky
    # the pixel straight below is the ground 1.7 m away
    assert abs(depth[-1, 0] - 1.7) < 0.01
    # the wall straight east: at the horizon, ray of ENU +x hits x = 20 (unless a box is in the way)
    u, v = _pixel_of(c + [10.0, 0, 0], c, R, W)
    iu, iv = int(round(u)) % W, int(round(v))
    if mat[iv, iu] == 2:
        assert abs(depth[iv, iu] - (20.0 - c[0])) < 0.2


def test_textures_are_real_photographs(cap):
    sc = demo._scene()
    for m in sc.materials:
        tex = m.levels[0].astype(np.float32)
        assert tex.std() > 25, m.name
        blocks = tex[: tex.shape[0] // 64 * 64, : tex.shape[1] // 64 * 64].mean(2)
        blocks = blocks.reshape(blocks.shape[0] // 64, 64, -1, 64).std(axis=(1, 3))
        assert np.median(blocks) > 8, m.name  # local detail nearly everywhere, not flat colour
    # the scikit-image astronaut (a real photograph) is among the sources
    import skimage.data

    pool = demo._photo_pool()
    assert any(im.shape == (512, 512, 3) and np.array_equal(im, skimage.data.astronaut()) for im in pool)
    img = np.asarray(Image.open(cap / "images" / "pano_0001.jpg").convert("L"))
    lap = cv2.Laplacian(img[W // 4 :], cv2.CV_64F)  # below the sky
    assert lap.var() > 100


def test_project_to_pixel_roundtrip():
    R = demo.rig_from_world_for_yaw(37.0)
    rays = equirect_directions(64, 32, dtype=np.float64).reshape(-1, 3)
    pts = rays @ R * 5.0 + [1.0, 2.0, 1.7]  # world points along the rays
    uv = demo.project_to_pixel(pts, [1.0, 2.0, 1.7], R, 64)
    uu, vv = np.meshgrid(np.arange(64), np.arange(32))
    assert np.allclose(uv[:, 0], uu.ravel(), atol=1e-6)
    assert np.allclose(uv[:, 1], vv.ravel(), atol=1e-6)


def test_cli(tmp_path, capsys):
    from splatforge_core.cli import main as sf

    rc = sf(["demo", str(tmp_path / "d"), "--n", "8", "--width", "256", "--seed", "3", "--gps-sigma", "0.5"])
    assert rc == 0
    g = read_json(tmp_path / "d" / "ground_truth.json")
    assert g["seed"] == 3 and g["gps_sigma_m"] == 0.5 and len(g["panoramas"]) == 8
    assert "8 panoramas" in capsys.readouterr().out
    assert sf(["demo", str(tmp_path / "e"), "--n", "49"]) == 1  # InputError -> exit code 1
    assert not (tmp_path / "e").exists()


# ---------------------------------------------------------------------------- SfM usability
def _pinhole_crop(pano: np.ndarray, yaw_rig_deg: float, size: int = 768) -> np.ndarray:
    """90 deg pinhole view (COLMAP axes) at rig azimuth ``yaw_rig_deg``, elevation 0, via cv2.remap."""
    h, w = pano.shape[:2]
    f = size / 2
    x, y = np.meshgrid(np.arange(size) + 0.5 - f, np.arange(size) + 0.5 - f)
    a = math.radians(yaw_rig_deg)
    # camera -> rig: rotate about the rig y axis by the azimuth
    rx = math.cos(a) * x + math.sin(a) * f
    rz = -math.sin(a) * x + math.cos(a) * f
    ry = y
    lon = np.degrees(np.arctan2(rx, rz))
    lat = np.degrees(np.arctan2(-ry, np.hypot(rx, rz)))
    mu = ((lon + 180) / 360 * w - 0.5).astype(np.float32)
    mv = ((90 - lat) / 180 * h - 0.5).astype(np.float32)
    return cv2.remap(pano, mu, mv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


@pytest.mark.slow
def test_sift_matches_between_neighbours(tmp_path):
    """Neighbouring panoramas share hundreds of SIFT inliers on 90 deg pinhole crops (pycolmap SIFT)."""
    pycolmap = pytest.importorskip("pycolmap")
    out = tmp_path / "d"
    gt = demo.main(out, {"n_panoramas": 8, "width": 2048, "seed": 0})
    p0, p1 = gt["panoramas"][3], gt["panoramas"][4]
    imgs = [np.asarray(Image.open(out / "images" / p["name"]).convert("L")) for p in (p0, p1)]
    # same world direction in both crops: the ENU direction toward the north wall (azimuth 0)
    inliers = []
    for az_world in (0.0, 90.0, 270.0):
        crops = [_pinhole_crop(im, az_world - p["yaw_deg"]) for im, p in zip(imgs, (p0, p1))]
        sift = pycolmap.FeatureExtractor.create(pycolmap.FeatureExtractionOptions(), device=pycolmap.Device.cpu)
        feats = [sift.extract_from_uint8_array(np.ascontiguousarray(c)) for c in crops]
        (k0, d0), (k1, d1) = [
            (np.array([(kp.x, kp.y) for kp in k], np.float32), np.asarray(d.data)) for k, d in feats
        ]
        bf = cv2.BFMatcher(cv2.NORM_L2)
        m = bf.knnMatch(d0.astype(np.float32), d1.astype(np.float32), k=2)
        good = [a for a, b in m if a.distance < 0.8 * b.distance]
        src = np.float32([k0[g.queryIdx] for g in good])
        dst = np.float32([k1[g.trainIdx] for g in good])
        F, mask = cv2.findFundamentalMat(src, dst, cv2.FM_RANSAC, 1.5, 0.999)
        inliers.append(int(mask.sum()) if mask is not None else 0)
    assert min(inliers) >= 150, inliers
