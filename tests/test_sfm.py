"""Tests of the SfM stages (splatforge_core.sfm): small demo capture, Lund (slow), bad input."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pycolmap
import pytest

from splatforge_core.errors import InputError
from splatforge_core.io import read_json, write_json
from splatforge_core.sfm import align, extract, mapping, match, pairs
from splatforge_core.sfm.cli import cli

# Small demo: 8 panoramas (the demo's minimum) of 1024 x 512, 4 horizontal 90-degree views of
# 320 px each (32 images): the whole chain in a few seconds per stage on 2 cores.
DEMO_OPTS = {"n_panoramas": 8, "width": 1024}
PROJECT_OPTS = {"size": 320, "num_azimuths": 4, "elevations_deg": [0.0], "workers": 1}
EXTRACT_OPTS = {"max_num_features": 2048}


@pytest.fixture(scope="module")
def demo_scene(tmp_path_factory) -> dict:
    """Demo capture -> ingest -> project -> extract -> pairs -> match (shared by the tests)."""
    from splatforge_core import demo, ingest, project

    w = tmp_path_factory.mktemp("demo_sfm")
    demo.main(w / "demo", DEMO_OPTS)
    ingest.main(w / "demo" / "images", w / "manifest.json", {})
    project.main(w / "manifest.json", w / "images", w / "views.json", PROJECT_OPTS)
    ex = extract.main(w / "images", w / "views.json", w / "colmap" / "features.db", EXTRACT_OPTS)
    pr = pairs.main(w / "views.json", w / "pairs.txt", {})
    ma = match.main(w / "colmap" / "features.db", w / "pairs.txt", w / "colmap" / "database.db", {})
    gt = align.demo_ground_truth(w / "demo" / "ground_truth.json", w / "manifest.json")
    return {"dir": w, "extract": ex, "pairs": pr, "match": ma, "gt": gt}


def test_demo_extract_pairs_match(demo_scene):
    ex, pr, ma = demo_scene["extract"], demo_scene["pairs"], demo_scene["match"]
    assert ex["num_images"] == 32 and ex["num_frames"] == 8 and ex["num_keypoints"] > 32 * 100
    assert ex["num_rigs"] == 1  # one rig for all panoramas, 4 sensors
    with pycolmap.Database.open(demo_scene["dir"] / "colmap" / "features.db") as db:
        rigs = db.read_all_rigs()
        assert len(rigs) == 1 and rigs[0].num_sensors() == 4
    # 8 frames, K = 8 -> every frame pair; 4 x 4 view pairs per frame pair; no same-frame pair
    assert pr["num_frame_pairs"] == 28 and pr["num_pairs"] == 28 * 16 == pr["num_all_pairs"]
    assert ma["rig"] and ma["num_verified_pairs"] > 40
    assert not list((demo_scene["dir"] / "colmap").glob(".*tmp*"))  # no temporaries left


@pytest.mark.parametrize("mapper", ["incremental", "global", "hierarchical"])
def test_demo_mapper_backends_register_all_and_align(demo_scene, mapper, tmp_path):
    w = demo_scene["dir"]
    s = mapping.main(w / "colmap" / "database.db", w / "images", tmp_path / "sparse", tmp_path / "summary.json", {"mapper": mapper})
    assert s["num_reg_frames"] == 8, s  # every panorama registered
    assert s["num_reg_images"] == 32 and s["num_points3D"] > 200
    assert 0 < s["mean_reprojection_error_px"] < 2.0
    assert read_json(tmp_path / "summary.json")["mapper"] == mapper
    rec = pycolmap.Reconstruction(str(tmp_path / "sparse" / "0"))
    assert rec.num_reg_images() == 32
    rep = align.main(tmp_path / "sparse" / "0", w / "views.json", tmp_path / "aligned", tmp_path / "alignment.json",
                     {}, ground_truth_path=w / "demo" / "ground_truth.json", manifest_path=w / "manifest.json")
    assert rep["method"] == "up_constrained_ransac" and rep["num_inliers"] == 8
    assert len(rep["residuals"]) == 8 and rep["max_residual_m"] < 4 * 2.0 * 3
    gte = rep["ground_truth_error"]
    # averaging, not copying the noise: far below the raw GPS error. (Half the GPS sigma,
    # 1.0 m, is not reachable in expectation with 8 positions; see benchmarks/results/sfm.md.)
    assert gte["median_m"] < 0.6 * gte["gps_median_m"], gte
    assert gte["median_m"] < 0.9 * 2.0, gte
    # the aligned model is in ENU metres with Z up: camera centres at the GPS-aligned positions,
    # the rig -y axis (up) close to +Z
    aligned = pycolmap.Reconstruction(str(tmp_path / "aligned"))
    for im in aligned.images.values():
        r = np.asarray(im.cam_from_world().rotation.matrix())
        assert r.T @ np.array([0.0, -1.0, 0.0]) @ np.array([0, 0, 1.0]) > 0.99
    c = np.array([np.asarray(im.projection_center()).ravel() for im in aligned.images.values()])
    assert np.all(np.abs(c[:, 2] - np.median(c[:, 2])) < 0.5)  # the demo cameras share one height


def test_pairs_gps_knn_and_fallbacks(tmp_path):
    frames = [{"frame": f"p{i}", "source": f"p{i}.jpg", "enu": [float(i * i), 0.0, 0.0], "images": {"v": f"v/p{i}.jpg", "w": f"w/p{i}.jpg"}}
              for i in range(6)]
    cam = {"model": "PINHOLE", "width": 10, "height": 10, "params": [5, 5, 5, 5],
           "cam_from_rig": {"rotation": np.eye(3).tolist(), "translation": [0, 0, 0]}}
    views = {"schema_version": 1, "camera_kind": "equirectangular", "cameras": [dict(cam, view="v"), dict(cam, view="w")], "frames": frames}
    write_json(tmp_path / "views.json", views)
    s = pairs.main(tmp_path / "views.json", tmp_path / "pairs.txt", {"num_neighbors": 1})
    got = {tuple(sorted(ln.split())) for ln in (tmp_path / "pairs.txt").read_text().splitlines()}
    # nearest of each: 0-1, 1-0, 2-1, 3-2, 4-3, 5-4 -> frame pairs (0,1),(1,2),(2,3),(3,4),(4,5)
    assert s["method"] == "gps_knn" and s["num_frame_pairs"] == 5 and s["num_pairs"] == 5 * 4 == len(got)
    assert ("v/p0.jpg", "w/p1.jpg") in got and not any(a.split("/")[1] == b.split("/")[1] for a, b in got)
    assert s["num_all_pairs"] == (12 * 12 - 6 * 4) // 2
    frames[3]["enu"] = None  # one frame without GPS -> fallback
    write_json(tmp_path / "views.json", views)
    s = pairs.main(tmp_path / "views.json", tmp_path / "pairs.txt", {"num_neighbors": 2})
    assert s["method"] == "sequential" and s["num_frame_pairs"] == 5 + 4
    s = pairs.main(tmp_path / "views.json", tmp_path / "pairs.txt", {"no_gps": "exhaustive"})
    assert s["method"] == "exhaustive" and s["num_pairs"] == s["num_all_pairs"]
    with pytest.raises(InputError, match="unknown sfm pairs option.*'k'"):
        pairs.main(tmp_path / "views.json", tmp_path / "pairs.txt", {"k": 3})


def test_match_pairs_naming_unknown_image(demo_scene, tmp_path):
    w = demo_scene["dir"]
    (tmp_path / "pairs.txt").write_text("az000_el+00/pano_0001.jpg az000_el+00/nope.jpg\n")
    with pytest.raises(InputError, match="nope.jpg"):
        match.main(w / "colmap" / "features.db", tmp_path / "pairs.txt", tmp_path / "database.db")
    assert not (tmp_path / "database.db").exists()


def test_database_left_by_killed_extract_is_refused(demo_scene, tmp_path):
    # a database with images but no features (what a killed extract would leave)
    db_path = tmp_path / "features.db"
    with pycolmap.Database.open(db_path) as db:
        cid = db.write_camera(pycolmap.Camera(model="PINHOLE", width=10, height=10, params=[5, 5, 5, 5]))
        db.write_image(pycolmap.Image(name="a.jpg", camera_id=cid))
    with pytest.raises(InputError, match="without features"):
        match.main(db_path, demo_scene["dir"] / "pairs.txt", tmp_path / "database.db")
    with pytest.raises(InputError, match="not found"):
        match.main(tmp_path / "missing.db", demo_scene["dir"] / "pairs.txt", tmp_path / "database.db")


def test_failed_extract_leaves_nothing_and_rerun_starts_fresh(demo_scene, tmp_path):
    w = demo_scene["dir"]
    images = tmp_path / "images"
    shutil.copytree(w / "images", images)
    views = read_json(w / "views.json")
    write_json(tmp_path / "views.json", views)
    out = tmp_path / "colmap" / "features.db"
    out.parent.mkdir()
    out.write_bytes(b"stale half database")
    (out.parent / ".features.abc.tmp.db").write_bytes(b"temp of a killed run")
    victim = images / views["frames"][0]["images"]["az000_el+00"]
    victim.write_bytes(b"")  # unreadable image -> no features -> error
    with pytest.raises(InputError, match="could not be read"):
        extract.main(images, tmp_path / "views.json", out, EXTRACT_OPTS)
    assert not out.exists() and not list(out.parent.iterdir())  # stale db and temporaries gone


def test_too_few_images_and_no_overlap(demo_scene, tmp_path):
    w = demo_scene["dir"]
    views = read_json(w / "views.json")
    views["frames"] = views["frames"][:1]
    views["frames"][0]["images"] = dict(list(views["frames"][0]["images"].items())[:2])
    write_json(tmp_path / "views.json", views)
    with pytest.raises(InputError, match="at least 3"):
        extract.main(w / "images", tmp_path / "views.json", tmp_path / "f.db")
    with pytest.raises(InputError, match="at least 2 capture positions"):
        pairs.main(tmp_path / "views.json", tmp_path / "pairs.txt")
    # one panorama with all its views: refused before any SIFT work, pointing at the projection-only target
    one = read_json(w / "views.json")
    one["frames"] = one["frames"][:1]
    assert len(one["frames"][0]["images"]) >= 3
    write_json(tmp_path / "one.json", one)
    t = time.perf_counter()
    with pytest.raises(InputError, match=r"1 capture position\(s\); SfM needs at least 2.*work/<scene>/views.json"):
        extract.main(w / "images", tmp_path / "one.json", tmp_path / "one.db")
    assert time.perf_counter() - t < 2 and not (tmp_path / "one.db").exists()
    # features but no verified pair: no model can be built
    with pytest.raises(InputError, match="do not overlap"):
        mapping.main(w / "colmap" / "features.db", w / "images", tmp_path / "sparse", tmp_path / "s.json")
    assert not (tmp_path / "sparse").exists()


def test_align_refusals_and_degenerate_line(demo_scene, tmp_path):
    w = demo_scene["dir"]
    mapping.main(w / "colmap" / "database.db", w / "images", tmp_path / "sparse", tmp_path / "s.json", {"mapper": "incremental"})
    views = read_json(w / "views.json")
    for k, fr in enumerate(views["frames"]):
        fr["enu"] = [3.0 * k, 0.0, 0.0]  # all on one line
    write_json(tmp_path / "line.json", views)
    with pytest.raises(InputError, match="one line"):
        align.main(tmp_path / "sparse" / "0", tmp_path / "line.json", tmp_path / "al", tmp_path / "a.json", {"up_prior": "off"})
    rep = align.main(tmp_path / "sparse" / "0", tmp_path / "line.json", tmp_path / "al", tmp_path / "a.json", {})
    assert rep["degenerate_line"] and rep["up_prior"]  # roll fixed by the panoramas' up direction
    for fr in views["frames"]:
        fr["enu"] = [1.0, 2.0, 0.0] if fr["frame"] != "pano_0001" else [5.0, 2.0, 0.0]
    write_json(tmp_path / "two.json", views)
    with pytest.raises(InputError, match="2 distinct GPS position"):
        align.main(tmp_path / "sparse" / "0", tmp_path / "two.json", tmp_path / "al2", tmp_path / "a2.json", {})
    assert not (tmp_path / "al2").exists()


@pytest.mark.parametrize("use_up", [True, False])
def test_align_estimators_recover_transform_with_outlier(use_up):
    rng = np.random.default_rng(3)
    src = rng.uniform(-5, 5, (12, 3))
    from scipy.spatial.transform import Rotation  # noqa: F401  (scipy ships with scikit-image)

    r = Rotation.from_euler("xyz", [80, -10, 35], degrees=True).as_matrix()
    tgt = 3.0 * src @ r.T + np.array([10.0, -4.0, 2.0])
    tgt[5] += [40.0, 0, 0]  # GPS outlier
    if use_up:
        up = r.T @ np.array([0, 0, 1.0])
        sim, inl = align.estimate_up_constrained(src, tgt, up, 1.0)
    else:
        sim, inl = align.estimate_full(src, tgt, 1.0)
    assert not inl[5] and inl.sum() == 11
    m = np.asarray(sim.matrix())
    np.testing.assert_allclose(sim.scale, 3.0, rtol=1e-6)
    np.testing.assert_allclose(m[:, :3] / 3.0, r, atol=1e-6)


def test_cli_pairs(demo_scene, tmp_path, capsys):
    assert cli(["pairs", str(demo_scene["dir"] / "views.json"), str(tmp_path / "p.txt"), "--num-neighbors", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "gps_knn"
    with pytest.raises(SystemExit):
        cli(["nope"])


@pytest.mark.slow
def test_lund_default_config(lund_dir, tmp_path):
    """29 real photos without camera model: >= 27 registered, median geo residual <= 5 m."""
    from splatforge_core import ingest, project

    ingest.main(lund_dir, tmp_path / "manifest.json", {})
    project.main(tmp_path / "manifest.json", tmp_path / "images", tmp_path / "views.json", {"workers": 1})
    extract.main(tmp_path / "images", tmp_path / "views.json", tmp_path / "colmap" / "features.db")
    pairs.main(tmp_path / "views.json", tmp_path / "pairs.txt")
    match.main(tmp_path / "colmap" / "features.db", tmp_path / "pairs.txt", tmp_path / "colmap" / "database.db")
    s = mapping.main(tmp_path / "colmap" / "database.db", tmp_path / "images", tmp_path / "sparse", tmp_path / "summary.json")
    assert s["num_reg_images"] >= 27, s
    rep = align.main(tmp_path / "sparse" / "0", tmp_path / "views.json", tmp_path / "aligned", tmp_path / "alignment.json")
    assert rep["median_residual_m"] <= 5.0, rep["median_residual_m"]
    assert len(rep["residuals"]) == s["num_reg_frames"]


def test_rig_view_masks_partition_the_overlap():
    def view(az_deg):
        a = np.radians(az_deg)
        rot = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
        return {"view": f"az{az_deg:03d}", "model": "PINHOLE", "width": 64, "height": 64, "params": [32, 32, 32, 32],
                "cam_from_rig": {"rotation": rot.tolist(), "translation": [0, 0, 0]}}

    def masks(azs):
        cams = [view(a) for a in azs]
        v = {"cameras": cams, "camera_by_view": {c["view"]: c for c in cams},
             "frames": [{"frame": "p", "images": {c["view"]: f"{c['view']}/p.jpg" for c in cams}}]}
        return extract.rig_view_masks(v)

    four = masks([0, 90, 180, 270])  # 90-degree views 90 degrees apart: no overlap, (almost) all kept
    assert all(m.mean() / 255 > 0.95 for m in four.values())
    six = masks([0, 60, 120, 180, 240, 300])  # 60 degrees apart: boundaries at +-30 deg azimuth,
    frac = [m.mean() / 255 for m in six.values()]  # i.e. columns within 32 tan(30 deg) = 18.5 px of the centre
    assert all(abs(f - 2 * 32 * np.tan(np.radians(30)) / 64) < 1.5 / 64 for f in frac), frac
    m = six["az000"]
    assert m[32, 32] == 255 and m[32, 0] == 0 and m[32, 63] == 0  # centre kept, side edges given away


def test_rig_config_puts_reference_sensor_first_whatever_the_view_order():
    """views.json lists the el -45 ring first by default; COLMAP needs the reference first."""
    from splatforge_core.cameras import view_rotation
    from splatforge_core.sfm.extract import reference_view, rig_config

    names = ["az000_el-45", "az180_el-45", "az000_el+00", "az180_el+00"]
    angles = [(0, -45), (180, -45), (0, 0), (180, 0)]
    cams = {
        n: {"view": n, "model": "PINHOLE", "width": 64, "height": 64, "params": [32, 32, 32, 32],
            "cam_from_rig": {"rotation": view_rotation(a, e).tolist(), "translation": [0, 0, 0]}}
        for n, (a, e) in zip(names, angles)
    }
    views = {"camera_by_view": cams, "cameras": list(cams.values()),
             "frames": [{"frame": "p1", "kind": "equirectangular", "images": {n: f"{n}/p1.jpg" for n in names}}]}
    assert reference_view(views) == "az000_el+00"
    cfg = rig_config(views)
    assert cfg is not None
    assert cfg.cameras[0].ref_sensor and cfg.cameras[0].image_prefix == "az000_el+00/"
    assert sum(c.ref_sensor for c in cfg.cameras) == 1


def test_masks_work_with_relative_paths(tmp_path, monkeypatch):
    """Snakemake passes relative paths: mask symlinks must still resolve."""
    from pathlib import Path

    from splatforge_core.sfm.extract import _write_masks
    from splatforge_core.cameras import view_rotation

    names = ["az000_el+00", "az180_el+00"]
    cams = {
        n: {"view": n, "model": "PINHOLE", "width": 32, "height": 32, "params": [16, 16, 16, 16],
            "cam_from_rig": {"rotation": view_rotation(a, 0).tolist(), "translation": [0, 0, 0]}}
        for n, a in zip(names, [0, 180])
    }
    views = {"camera_by_view": cams, "cameras": list(cams.values()),
             "frames": [{"frame": "p1", "kind": "equirectangular", "images": {n: f"{n}/p1.jpg" for n in names}}]}
    monkeypatch.chdir(tmp_path)
    _write_masks(views, [f"{n}/p1.jpg" for n in names], Path("rel/masks"))
    for n in names:
        link = tmp_path / "rel" / "masks" / n / "p1.jpg.png"
        assert link.exists(), f"broken mask link {link}"


def test_mapper_registry_dispatches_by_name(monkeypatch, tmp_path):
    """A mapper is one function + one MAPPER_BACKENDS entry: options accept it, run_mapper calls it."""
    calls = []

    def fake(db_path, images_dir, out_dir, opts, refine, rig):
        calls.append((opts.mapper, refine, rig))
        return {}

    assert list(mapping.MAPPER_BACKENDS) == ["incremental", "global", "hierarchical"]
    with pytest.raises(InputError, match="mapper must be one of .*got 'fake'"):
        mapping.build_options(mapping.MapOptions, {"mapper": "fake"}, "sfm map")
    monkeypatch.setitem(mapping.MAPPER_BACKENDS, "fake", fake)
    opts = mapping.build_options(mapping.MapOptions, {"mapper": "fake"}, "sfm map")
    assert mapping.run_mapper(tmp_path / "db", tmp_path, tmp_path, opts, rig=True) == {}
    assert calls == [("fake", False, True)]  # rigs: focal length held (refine None -> not rig)
