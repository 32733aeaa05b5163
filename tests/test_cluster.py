"""Tests of the cluster split (``splatforge_core.cluster``), the per-cluster database and sparse
merge (``splatforge_core.sfm.merge``) and the splat merge (``splatforge_core.splat_merge``)."""

from __future__ import annotations

import json
import logging
import sqlite3

import numpy as np
import pycolmap
import pytest

from splatforge_core import cluster, splat_merge
from splatforge_core.config import ConfigError, validate_config
from splatforge_core.demo import camera_path
from splatforge_core.errors import InputError
from splatforge_core.sfm import merge as sfm_merge
from splatforge_core.splat import read_splat_ply, write_splat_ply


def _blobs(rng, centres, n_each, sigma=1.0):
    pts = np.concatenate([np.asarray(c, float) + rng.normal(0, sigma, (n, 3)) * [1, 1, 0.1]
                          for c, n in zip(centres, n_each)])
    return [f"f{i:03d}" for i in range(len(pts))], pts


# ---------------------------------------------------------------------------- split
def test_two_separated_groups_become_two_clusters_with_shared_frames():
    rng = np.random.default_rng(1)
    names, pts = _blobs(rng, [(0, 0, 0), (30, 0, 0)], [20, 20])
    out = cluster.split(names, pts, {"max_panoramas": 25, "margin_m": 0.0, "k_neighbors": 3})
    cl = out["clusters"]
    assert [c["name"] for c in cl] == ["c0", "c1"]
    assert cl[0]["centre_enu"][0] < cl[1]["centre_enu"][0]  # named west to east
    assert set(cl[0]["core"]) == set(names[:20]) and set(cl[1]["core"]) == set(names[20:])
    # the cores partition the frames; each cluster shares exactly K frames of the other (no margin)
    assert sorted(cl[0]["core"] + cl[1]["core"]) == sorted(names)
    for c, other in ((cl[0], cl[1]), (cl[1], cl[0])):
        extra = set(c["members"]) - set(c["core"])
        assert len(extra) == 3 and extra <= set(other["core"])
        # the shared frames are the other cluster's frames nearest to this core
        core_xy = pts[[names.index(f) for f in c["core"]], :2]
        d = {f: np.min(np.linalg.norm(core_xy - pts[names.index(f), :2], axis=1)) for f in other["core"]}
        assert extra == set(sorted(d, key=d.get)[:3])


def test_margin_adds_every_frame_within_the_distance():
    xy = np.array([[float(i), 0.0, 0.0] for i in range(20)])
    names = [f"p{i}" for i in range(20)]
    out = cluster.split(names, xy, {"n_clusters": 2, "margin_m": 2.5, "k_neighbors": 0})
    c0, c1 = out["clusters"]
    last0 = max(int(f[1:]) for f in c0["core"])
    assert set(c0["members"]) - set(c0["core"]) == {f"p{last0 + 1}", f"p{last0 + 2}"}
    assert set(c1["members"]) - set(c1["core"]) == {f"p{last0}", f"p{last0 - 1}"}


def test_small_cluster_is_merged_into_its_nearest_neighbour_with_a_log_line(caplog):
    rng = np.random.default_rng(2)
    names, pts = _blobs(rng, [(0, 0, 0), (40, 0, 0), (52, 0, 0)], [15, 15, 2], sigma=0.5)
    with caplog.at_level(logging.INFO, logger="splatforge.cluster"):
        out = cluster.split(names, pts, {"n_clusters": 3, "min_frames": 3})
    assert len(out["clusters"]) == 2
    small = set(names[30:])
    assert small <= set(out["clusters"][1]["core"])  # the blob at 40 m, not the one at 0
    assert out["merged_small"] and set(out["merged_small"][0]["frames"]) == small
    assert any("smaller than min_frames=3" in r.getMessage() and names[30] in r.getMessage() for r in caplog.records)


def test_one_cluster_up_to_max_panoramas():
    pts = np.column_stack([np.arange(12.0), np.zeros(12), np.zeros(12)])
    names = [f"p{i}" for i in range(12)]
    assert not cluster.is_clustered({}, 250) and cluster.is_clustered({}, 251)
    assert not cluster.is_clustered({"max_panoramas": 12}, 12) and cluster.is_clustered({"n_clusters": 2}, 12)
    out = cluster.split(names, pts, {"max_panoramas": 12})
    assert len(out["clusters"]) == 1
    assert out["clusters"][0]["core"] == names == out["clusters"][0]["members"]


def test_split_of_the_demo_walk_is_contiguous_and_covers_every_frame():
    pos, _ = camera_path(12, 1.5)
    names = [f"pano_{i + 1:04d}" for i in range(12)]
    out = cluster.split(names, pos, {"n_clusters": 2, "margin_m": 2.0, "k_neighbors": 2})
    cores = [set(c["core"]) for c in out["clusters"]]
    assert set.union(*cores) == set(names) and not cores[0] & cores[1]
    assert all(len(c) >= 3 for c in cores)
    # the Voronoi cells of the centres hold each cluster's core
    labels = cluster.cell_labels(pos, np.array([c["centre_enu"] for c in out["clusters"]]))
    for i, c in enumerate(out["clusters"]):
        assert {names[j] for j in np.flatnonzero(labels == i)} <= set(c["members"])
        assert len(set(c["members"]) - set(c["core"])) >= 2


def test_main_writes_clusters_json_with_images(tmp_path):
    pos, _ = camera_path(10, 1.5)
    views = {"schema_version": 1, "frames": [
        {"frame": f"pano_{i:04d}", "enu": p.tolist(), "images": {"a": f"a/pano_{i:04d}.jpg", "b": f"b/pano_{i:04d}.jpg"}}
        for i, p in enumerate(pos)]}
    (tmp_path / "views.json").write_text(json.dumps(views))
    doc = cluster.main(tmp_path / "views.json", tmp_path / "clusters.json", {"n_clusters": 2})
    assert json.loads((tmp_path / "clusters.json").read_text()) == doc
    assert doc["num_frames"] == 10 and doc["margin_m"] == 10.0
    for c in doc["clusters"]:
        assert c["images"] == [im for f in c["members"] for im in (f"a/{f}.jpg", f"b/{f}.jpg")]
    assert cluster.cluster_names(tmp_path / "clusters.json") == ["c0", "c1"]


@pytest.mark.hostile(cls="missing_gps", expect="clear_error")
def test_frame_without_position_is_a_clear_error(tmp_path):
    views = {"schema_version": 1, "frames": [{"frame": "x", "enu": None, "images": {"v": "x.jpg"}}]}
    (tmp_path / "views.json").write_text(json.dumps(views))
    with pytest.raises(InputError, match=r"views\.json: frame 'x' has no GPS position"):
        cluster.main(tmp_path / "views.json", tmp_path / "clusters.json", {"n_clusters": 2})


@pytest.mark.hostile(cls="truncated_json", expect="clear_error")
def test_broken_clusters_json_names_the_file(tmp_path):
    p = tmp_path / "clusters.json"
    p.write_text('{"schema_version": 1, "clus')
    with pytest.raises(InputError, match=r"clusters\.json: cannot read clusters\.json"):
        cluster.read_clusters(p)


def test_options_checks_and_config_section():
    with pytest.raises(InputError, match="max_panoramas must be >= 3"):
        cluster.split(["a"], np.zeros((1, 3)), {"max_panoramas": 2})
    with pytest.raises(InputError, match="fewer than min_frames"):
        cluster.split(["a", "b"], np.zeros((2, 3)), {})
    validate_config({"scenes": {"s": {"input": "x", "cluster": {"max_panoramas": 100}}}, "cluster": {"margin_m": 5}})
    with pytest.raises(ConfigError, match=r"scenes\.s\.cluster: .*margin_m must be a finite number >= 0"):
        validate_config({"scenes": {"s": {"input": "x", "cluster": {"margin_m": -1.0}}}})


# ---------------------------------------------------------------------------- database subset
def _database(path, n_images=6):
    """A COLMAP database with one camera, n images with keypoints and all pairs matched."""
    db = pycolmap.Database.open(str(path))
    cam = pycolmap.Camera.create_simple(1, "SIMPLE_PINHOLE", 100.0, 100, 100) if hasattr(
        pycolmap.Camera, "create_simple") else pycolmap.Camera(model="SIMPLE_PINHOLE", width=100, height=100,
                                                                 params=[100.0, 50.0, 50.0])
    cid = db.write_camera(cam)
    ids = []
    for i in range(n_images):
        iid = db.write_image(pycolmap.Image(name=f"im{i}.jpg", camera_id=cid))
        db.write_keypoints(iid, np.random.default_rng(i).random((10, 2)).astype(np.float32) * 100)
        ids.append(iid)
    for a in range(n_images):
        for b in range(a + 1, n_images):
            m = np.column_stack([np.arange(5), np.arange(5)]).astype(np.uint32)
            db.write_matches(ids[a], ids[b], m)
            tvg = pycolmap.TwoViewGeometry()
            tvg.inlier_matches = m
            db.write_two_view_geometry(ids[a], ids[b], tvg)
    db.close()
    return ids


def test_filter_database_keeps_only_the_cluster_and_its_ids(tmp_path):
    ids = _database(tmp_path / "db.db")
    keep = ["im1.jpg", "im2.jpg", "im4.jpg"]
    out = sfm_merge.filter_database(tmp_path / "db.db", tmp_path / "c0" / "db.db", keep)
    assert out == {"num_images": 3, "num_removed": 3, "num_verified_pairs": 3}
    con = sqlite3.connect(tmp_path / "c0" / "db.db")
    assert sorted(r[0] for r in con.execute("SELECT name FROM images")) == keep
    kept = {ids[1], ids[2], ids[4]}
    assert {r[0] for r in con.execute("SELECT image_id FROM images")} == kept  # ids unchanged
    assert {r[0] for r in con.execute("SELECT image_id FROM keypoints")} == kept
    for table in ("matches", "two_view_geometries"):
        pairs = [divmod(r[0], sfm_merge.MAX_IMAGE_ID) for r in con.execute(f"SELECT pair_id FROM {table}")]
        assert len(pairs) == 3 and all(a in kept and b in kept for a, b in pairs)
    con.close()
    # the source is untouched
    assert sqlite3.connect(tmp_path / "db.db").execute("SELECT COUNT(*) FROM images").fetchone()[0] == 6


@pytest.mark.hostile(cls="wrong_reference", expect="clear_error")
def test_filter_database_names_a_missing_image(tmp_path):
    _database(tmp_path / "db.db", 3)
    with pytest.raises(InputError, match=r"db\.db: 1 image\(s\) of the cluster are not in the database"):
        sfm_merge.filter_database(tmp_path / "db.db", tmp_path / "out.db", ["im0.jpg", "nope.jpg"])
    assert not (tmp_path / "out.db").exists()


@pytest.mark.hostile(cls="unmappable_cluster", expect="clear_error")
def test_unmappable_cluster_names_the_cluster_and_its_frames_and_keeps_the_others(tmp_path):
    """A cluster whose database subset has no verified match left: its mapping stops with an
    error that names the cluster and its frames; a finished cluster's model is left as it was."""
    _database(tmp_path / "db.db")
    doc = {"schema_version": cluster.SCHEMA_VERSION, "num_frames": 6, "margin_m": 0.0, "k_neighbors": 0,
           "clusters": [{"name": n, "centre_enu": [float(i), 0.0, 0.0], "core": fr, "members": fr,
                         "images": [f"im{f[-1]}.jpg" for f in fr], "core_images": [f"im{f[-1]}.jpg" for f in fr]}
                        for i, (n, fr) in enumerate([("c0", ["pano_0", "pano_1", "pano_2"]),
                                                     ("c1", ["pano_3", "pano_4", "pano_5"])])]}
    (tmp_path / "clusters.json").write_text(json.dumps(doc))
    c1 = tmp_path / "clusters" / "c1"
    sfm_merge.filter_database(tmp_path / "db.db", c1 / "colmap" / "database.db", doc["clusters"][1]["images"])
    con = sqlite3.connect(c1 / "colmap" / "database.db")
    con.execute("DELETE FROM two_view_geometries")
    con.execute("DELETE FROM matches")
    con.commit()
    con.close()
    done = tmp_path / "clusters" / "c0" / "sparse" / "0"  # c0 finished earlier
    done.mkdir(parents=True)
    (done / "cameras.bin").write_bytes(b"c0 model")
    with pytest.raises(InputError) as e:
        sfm_merge.map_cluster(tmp_path / "clusters.json", "c1", c1 / "colmap" / "database.db", tmp_path,
                              c1 / "sparse", c1 / "sparse" / "summary.json", {"mapper": "incremental"})
    msg = str(e.value)
    assert "cluster c1 (3 frames: pano_3, pano_4, pano_5)" in msg
    assert "database.db" in msg and "no image pair passed geometric verification" in msg
    assert not (c1 / "sparse").exists()
    assert (done / "cameras.bin").read_bytes() == b"c0 model"
    with pytest.raises(InputError, match=r"clusters\.json: no cluster 'c7'"):
        sfm_merge.map_cluster(tmp_path / "clusters.json", "c7", c1 / "colmap" / "database.db", tmp_path,
                              c1 / "sparse", c1 / "sparse" / "summary.json")


# ---------------------------------------------------------------------------- splat merge
def _grid_splat(lo, hi, step=0.25):
    x, y = np.meshgrid(np.arange(lo[0], hi[0], step), np.arange(lo[1], hi[1], step), indexing="ij")
    n = x.size
    return {"means": np.column_stack([x.ravel(), y.ravel(), np.zeros(n)]).astype(np.float32),
            "scales": np.full((n, 3), -3.0, np.float32), "quats": np.tile([1, 0, 0, 0], (n, 1)).astype(np.float32),
            "opacities": np.zeros(n, np.float32), "sh0": np.zeros((n, 3), np.float32), "shN": np.zeros((n, 3, 3), np.float32)}


def test_cropped_splats_tile_the_scene_without_doubles_or_gaps(tmp_path):
    # two clusters along east; each "trained" on its expanded region (5 m past the border at 10 m)
    clusters = [{"name": "c0", "centre_enu": [5.0, 0.0, 0.0]}, {"name": "c1", "centre_enu": [15.0, 0.0, 0.0]}]
    full = _grid_splat((-5, -5), (25, 5))  # covers the capture footprint (frames +- 3 m)
    a, b = _grid_splat((-5, -5), (15, 5)), _grid_splat((5, -5), (25, 5))
    merged, rep = splat_merge.merge_splats({"c0": a, "c1": b}, clusters)
    key = lambda m: {tuple(np.round(p, 3)) for p in m}  # noqa: E731
    assert len(merged["means"]) == len(key(merged["means"]))  # nothing doubled
    assert key(merged["means"]) == key(full["means"])  # nothing missing
    assert rep["num_gaussians"] == len(full["means"]) == sum(v["kept"] for v in rep["clusters"].values())
    frames = np.array([[x, 0.0, 0.0] for x in np.arange(1.0, 20.0, 1.5)])
    centres = np.array([c["centre_enu"] for c in clusters])
    ok = splat_merge.overlap_density(merged["means"], centres, frames, band_m=2.0)
    assert ok["ratio"] == pytest.approx(1.0, abs=0.05)
    # without the crop the overlap band is doubled, and the check sees it
    doubled = splat_merge.concatenate([a, b])
    assert splat_merge.overlap_density(doubled["means"], centres, frames, band_m=2.0)["ratio"] > 1.5
    # a hole at the border is seen too
    hole = merged["means"][np.abs(merged["means"][:, 0] - 10.0) > 1.0]
    assert splat_merge.overlap_density(hole, centres, frames, band_m=2.0)["ratio"] < 0.8


def test_merge_main_writes_an_inria_ply_and_weighted_metrics(tmp_path):
    clusters = {"schema_version": 1, "clusters": [{"name": "c0", "centre_enu": [5.0, 0.0, 0.0], "core": [], "members": []},
                                                  {"name": "c1", "centre_enu": [15.0, 0.0, 0.0], "core": [], "members": []}]}
    (tmp_path / "clusters.json").write_text(json.dumps(clusters))
    views = {"frames": [{"frame": f"p{i}", "enu": [float(x), 0.0, 0.0]} for i, x in enumerate(range(1, 20, 2))]}
    (tmp_path / "views.json").write_text(json.dumps(views))
    paths, mets = {}, {}
    for name, (lo, hi), psnr, n in (("c0", ((-5, -5), (15, 5)), 20.0, 18), ("c1", ((5, -5), (25, 5)), 26.0, 36)):
        s = _grid_splat(lo, hi)
        if name == "c1":
            s["shN"] = np.zeros((len(s["means"]), 8, 3), np.float32)  # degree 2 vs degree 1
        paths[name] = tmp_path / f"{name}.ply"
        write_splat_ply(paths[name], s["means"], s["scales"], s["quats"], s["opacities"], s["sh0"], s["shN"])
        mets[name] = tmp_path / f"{name}.json"
        mets[name].write_text(json.dumps({"final": {"psnr": psnr, "ssim": 0.5}, "n_test_views": n, "num_gaussians": 1}))
    rep = splat_merge.main(tmp_path / "clusters.json", paths, mets, tmp_path / "views.json", tmp_path / "m.ply",
                           tmp_path / "metrics.json", tmp_path / "merge.json")
    out = read_splat_ply(tmp_path / "m.ply")
    assert len(out["means"]) == rep["num_gaussians"] == len(_grid_splat((-5, -5), (25, 5))["means"])
    assert out["sh_degree"] == 2
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["final"]["psnr"] == pytest.approx((20.0 * 18 + 26.0 * 36) / 54)
    assert "not a render of the merged splat" in m["eval_note"]
    assert rep["overlap_density"]["ratio"] == pytest.approx(1.0, abs=0.05)


# ---------------------------------------------------------------------------- sparse merge
def _synthetic_clusters():
    """A synthetic rig model (10 frames, 2 cameras each, 300 points) cut into two clusters
    sharing frames 5, 6 and 7; the second one (fewer images) moved by a known similarity."""
    o = pycolmap.SyntheticDatasetOptions()
    o.num_rigs, o.num_cameras_per_rig, o.num_frames_per_rig, o.num_points3D = 1, 2, 10, 300
    pycolmap.set_random_seed(0)
    full = pycolmap.synthesize_dataset(o)
    fids = sorted(full.reg_frame_ids())

    def sub(keep):
        r = pycolmap.Reconstruction(full)
        for f in fids:
            if f not in keep:
                r.deregister_frame(f)
        return r

    a, b = sub(fids[:7]), sub(fids[4:])
    move = pycolmap.Sim3d(1.3, pycolmap.Rotation3d(np.array([0.0, 0.0, np.sin(0.2), np.cos(0.2)])), np.array([4.0, -2.0, 1.0]))
    b.transform(move)
    frame_of_image = {im.name: f"fr{im.frame_id}" for im in full.images.values()}
    return full, a, b, fids, frame_of_image


def test_merge_models_unites_clusters_and_measures_shared_centres():
    full, a, b, fids, frame_of_image = _synthetic_clusters()
    cores = {"a": {f"fr{f}" for f in fids[:5]}, "b": {f"fr{f}" for f in fids[5:]}}
    merged, rep = sfm_merge.merge_models({"a": a, "b": b}, cores, frame_of_image)
    assert rep["num_frames"] == 10 and rep["num_images"] == 20
    assert rep["shared_centres_geo"]["num_frames"] == 3 and rep["shared_centres_geo"]["median_m"] > 1.0
    assert rep["shared_centres"]["median_m"] < 1e-6  # after the chain alignment
    assert rep["chain"]["steps"][0]["aligned"] and rep["chain"]["steps"][0]["scale"] == pytest.approx(1 / 1.3)
    # leaving one shared frame out of the fit still places it (exact synthetic model)
    loo = rep["shared_centres_leave_one_frame_out"]
    assert loo["num_frames"] == 3 and loo["max_m"] < 1e-6
    # every camera centre is where the uncut model has it (the reference cluster did not move)
    for iid, im in full.images.items():
        assert np.allclose(merged.image(iid).projection_center(), im.projection_center(), atol=1e-6)
    # the shared tracks are merged: one 3D point per point of the uncut model, at its place
    assert rep["num_points3D"] == full.num_points3D() and rep["num_merged_points"] > 0
    assert merged.compute_mean_reprojection_error() < 1e-6
    assert rep["owner"]["fr5"] == "a" and rep["owner"][f"fr{fids[5]}"] == "b"


def test_merge_main_writes_model_alignment_and_report(tmp_path):
    full, a, b, fids, frame_of_image = _synthetic_clusters()
    a.write_binary(str((tmp_path / "a").mkdir() or tmp_path / "a"))
    b.write_binary(str((tmp_path / "b").mkdir() or tmp_path / "b"))
    frames, centres = {}, {}
    for im in full.images.values():
        frames.setdefault(f"fr{im.frame_id}", {})[f"v{im.camera_id}"] = im.name
        centres.setdefault(f"fr{im.frame_id}", []).append(im.projection_center())
    # GPS 0.1 m off in east, north and up from each frame's mean camera centre
    views = {"schema_version": 1, "frames": [{"frame": f, "enu": (np.mean(centres[f], axis=0) + 0.1).tolist(), "images": ims}
                                             for f, ims in sorted(frames.items())]}
    (tmp_path / "views.json").write_text(json.dumps(views))
    doc = {"schema_version": 1, "clusters": [
        {"name": "a", "centre_enu": [0, 0, 0], "core": [f"fr{f}" for f in fids[:5]], "members": []},
        {"name": "b", "centre_enu": [1, 0, 0], "core": [f"fr{f}" for f in fids[5:]], "members": []}]}
    (tmp_path / "clusters.json").write_text(json.dumps(doc))
    for c in ("a", "b"):
        (tmp_path / f"{c}.json").write_text(json.dumps({"method": "m", "residuals": [], "options": {"max_error_m": 1.0}}))
    rep = sfm_merge.main(tmp_path / "clusters.json", {"a": tmp_path / "a", "b": tmp_path / "b"},
                         {"a": tmp_path / "a.json", "b": tmp_path / "b.json"}, tmp_path / "views.json",
                         tmp_path / "aligned", tmp_path / "alignment.json", tmp_path / "merge.json")
    assert pycolmap.Reconstruction(str(tmp_path / "aligned")).num_reg_frames() == 10
    al = json.loads((tmp_path / "alignment.json").read_text())
    assert al["num_registered_frames"] == 10 and al["unregistered_frames"] == []
    assert al["median_residual_m"] == pytest.approx(np.sqrt(3) * 0.1, abs=1e-6) and al["num_inliers"] == 10
    assert json.loads((tmp_path / "merge.json").read_text())["shared_centres"] == rep["shared_centres"]


# ---------------------------------------------------------------------------- report
def test_report_draws_the_cluster_map(tmp_path):
    from splatforge_core import report

    scene = tmp_path / "work" / "s"
    scene.mkdir(parents=True)
    pos, _ = camera_path(12, 1.5)
    views = {"schema_version": 1, "frames": [{"frame": f"p{i}", "enu": p.tolist(), "images": {"v": f"p{i}.jpg"}}
                                             for i, p in enumerate(pos)]}
    (scene / "views.json").write_text(json.dumps(views))
    cluster.main(scene / "views.json", scene / "clusters.json", {"n_clusters": 2, "margin_m": 2.0})
    out = report.main(scene, tmp_path / "rep")
    assert "clusters.png" in out["figures"] and (tmp_path / "rep" / "clusters.png").stat().st_size > 1000
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| cluster | core frames | members | shared frames |" in md and "![Cluster split" in md


def test_place_cluster_moves_a_cluster_onto_the_merged_frame(tmp_path):
    full, a, b, fids, frame_of_image = _synthetic_clusters()
    b.write_binary(str((tmp_path / "b").mkdir() or tmp_path / "b"))
    cores = {"a": {f"fr{f}" for f in fids[:5]}, "b": {f"fr{f}" for f in fids[5:]}}
    _, rep = sfm_merge.merge_models({"a": a, "b": pycolmap.Reconstruction(b)}, cores, frame_of_image)
    (tmp_path / "merge.json").write_text(json.dumps(rep))
    sim = sfm_merge.place_cluster(tmp_path / "b", tmp_path / "merge.json", "b", tmp_path / "placed")
    assert sim["scale"] == pytest.approx(1 / 1.3)
    placed = pycolmap.Reconstruction(str(tmp_path / "placed"))
    for iid in placed.reg_image_ids():
        assert np.allclose(placed.image(iid).projection_center(), full.image(iid).projection_center(), atol=1e-6)


# ---------------------------------------------------------------------------- workflow DAG
def _dry_run_jobs(tmp_path, *config: str) -> dict[str, int]:
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(tmp_path), "--cores", "2",
                        "-n", "results/scene.ply", "--configfile", str(repo / "tests" / "workflow" / "tiny.yaml"), *config],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(repo)))
    assert r.returncode == 0, r.stderr[-3000:]
    table = (r.stdout + r.stderr).split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.mark.slow
def test_one_block_scene_has_no_cluster_jobs_and_a_clustered_one_merges(tmp_path):
    block = _dry_run_jobs(tmp_path / "a")
    assert {"sfm_map", "sfm_align", "train"} <= set(block)
    assert not {"cluster", "sfm_merge", "splat_merge", "train_cluster"} & set(block)
    (tmp_path / "two.yaml").write_text("cluster:\n  n_clusters: 2\n")
    clustered = _dry_run_jobs(tmp_path / "b", str(tmp_path / "two.yaml"))
    # the clusters' jobs appear once the checkpoint has run; before, the merges stand for them
    assert {"cluster", "sfm_merge", "splat_merge", "export_mesh", "report"} <= set(clustered)
    assert not {"sfm_map", "sfm_align", "train"} & set(clustered)
