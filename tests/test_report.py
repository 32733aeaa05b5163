"""Tests of the per-scene run report (splatforge_core.report).

The fake scene is built with the real demo -> ingest -> project stages (small sizes); the
later artefacts (alignment.json, sparse/summary.json, benchmark TSVs, splat/metrics.json and
PNGs, export.json, codec report) are written in the exact formats of their modules, with
alignment residuals computed from the demo's ground truth positions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from splatforge_core import demo, ingest, project, report
from splatforge_core.errors import InputError
from splatforge_core.io import read_json, write_json
from splatforge_core.sfm.align import demo_ground_truth
from splatforge_core.metrics import save_comparison_png, save_curve_png

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


@pytest.fixture(scope="module")
def base_scene(tmp_path_factory) -> Path:
    """``root/work/scene`` with manifest.json, views.json, images/ from the real stages."""
    root = tmp_path_factory.mktemp("report_base")
    demo.main(root / "work" / "demo", {"width": 512, "n_panoramas": 8})
    scene = root / "work" / "scene"
    ingest.main(root / "work" / "demo" / "images", scene / "manifest.json")
    project.main(scene / "manifest.json", scene / "images", scene / "views.json", {"size": 128})
    return root


def _alignment(scene: Path, gt_path: Path, unregistered: str) -> dict:
    """alignment.json as sfm/align.py writes it; 'SfM' positions = the demo's true positions."""
    views = read_json(scene / "views.json")
    gt = demo_ground_truth(gt_path, scene / "manifest.json")
    residuals = []
    for fr in views["frames"]:
        if fr["frame"] == unregistered:
            continue
        g, s = np.array(fr["enu"]), np.array(gt[fr["source"]])
        d = s - g
        residuals.append({"frame": fr["frame"], "images": sorted(fr["images"].values()), "enu_gps": g.tolist(),
                          "enu_sfm": s.tolist(), "residual_m": float(np.linalg.norm(d)),
                          "horizontal_m": float(np.linalg.norm(d[:2])), "vertical_m": float(d[2]), "inlier": True})
    residuals[-1]["inlier"] = False
    norms = np.array([r["residual_m"] for r in residuals])
    inl = np.array([r["inlier"] for r in residuals])
    return {
        "schema_version": 1, "method": "up_constrained_ransac", "up_prior": True, "degenerate_line": False,
        "sim3": {"scale": 2.5, "rotation": np.eye(3).tolist(), "translation": [1.0, 2.0, 3.0]},
        "num_frames": len(views["frames"]), "num_registered_frames": len(residuals), "num_inliers": int(inl.sum()),
        "median_residual_m": float(np.median(norms)), "max_residual_m": float(norms.max()),
        "median_inlier_residual_m": float(np.median(norms[inl])), "residuals": residuals,
        "unregistered_frames": [unregistered],
        "options": {"up_prior": "auto", "max_error_m": 10.0, "min_positions": 3, "min_distinct_m": 0.5,
                    "collinear_ratio": 0.02, "random_seed": 0},
        "wall_s": 0.04,
    }


@pytest.fixture
def full_scene(base_scene: Path, tmp_path: Path) -> Path:
    """A copy of the base scene with every artefact the report reads; returns the scene dir."""
    root = tmp_path / "proj"
    shutil.copytree(base_scene / "work" / "scene", root / "work" / "scene", symlinks=True)
    scene = root / "work" / "scene"
    write_json(scene / "alignment.json", _alignment(scene, base_scene / "work" / "demo" / "ground_truth.json",
                                                    "pano_0004"))
    write_json(scene / "sparse" / "summary.json", {
        "schema_version": 1, "mapper": "global", "num_images": 144, "num_reg_images": 126, "num_reg_frames": 7,
        "num_points3D": 3976, "mean_reprojection_error_px": 0.4321, "mean_track_length": 4.6, "rig": True,
        "num_models": 1, "models": [126], "options": {"mapper": "global"}, "wall_s": 12.75})
    bench = scene / "benchmarks"
    bench.mkdir()
    (bench / "sfm_extract.tsv").write_text(BENCH_HEADER + "19.17\t0:00:19\t284.14\t900.0\t270.0\t275.0\t5.0\t1.0\t152.99\t30.23\n")
    (bench / "train.tsv").write_text(BENCH_HEADER + "100.0\t0:01:40\t2048.5\t9000\t2000\t2010\t10\t50\t98.0\t99.0\n"
                                     + "120.0\t0:02:00\t1900.0\t9000\t1900\t1910\t10\t50\t97.0\t118.0\n")
    splat = scene / "splat"
    splat.mkdir()
    save_curve_png(splat / "curve.png", [0, 10, 20], [0.3, 0.2, 0.1], [12.0, 15.0, 18.0], [20], [17.5])
    rng = np.random.default_rng(0)
    img = rng.random((32, 48, 3))
    save_comparison_png(splat / "renders.png", [("pano_0008 az000", img, np.clip(img + 0.05, 0, 1))])
    write_json(splat / "metrics.json", {
        "schema_version": 1, "device": "cpu", "iterations": 20, "final_step": 20, "resumed_from": [],
        "oom_tier": 0, "num_gaussians": 12345, "sh_degree": 3, "strategy": "default",
        "resolution": {"max_side": 320, "first_train_view": [128, 128]}, "test_frames": ["pano_0008"],
        "final_per_view": {"az000_el+00/pano_0008.jpg": {"psnr": 21.25, "ssim": 0.75}},
        "n_train_views": 7, "n_test_views": 1, "final": {"psnr": 23.4567, "ssim": 0.7891},
        "evals": [{"step": 20, "psnr": 23.4567, "ssim": 0.7891, "n_views": 1}],
        "eval_note": "held-out: every 8th frame (Mip-NeRF 360 protocol; panoramas held out whole)",
        "train_seconds": 61.5, "sec_per_iter": 3.075})
    write_json(scene / "export" / "export.json", {
        "schema_version": 1, "input": "results/scene.ply", "outputs": {"glb": "results/scene_mesh.glb"},
        "counts": {"faces": 98765, "vertices": 50001, "texture_coverage": 0.8765},
        "timings_s": {"total": 42.5}, "options": {"target_faces": 100000}})
    write_json(root / "results" / "scene.compressed.json", {
        "status": "ok", "preset": "lossless_zstd", "lossless": True, "size_bytes_in": 5_000_000,
        "size_bytes_out": 2_000_000, "ply_save_pct": 60.0, "compression_ratio": 2.5, "n_vertices": 12345})
    return scene


def _check_png(path: Path) -> None:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 200 and im.height > 150


def test_full_report(full_scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "results" / "scene_report"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("old")  # the folder is replaced whole
    res = report.main(full_scene, out)
    md = (out / "report.md").read_text()
    assert not (out / "stale.txt").exists()
    assert all(v == "ok" for v in res["sections"].values()), res["sections"]
    assert "not available" not in md

    man = read_json(full_scene / "manifest.json")
    assert "| images used | 8 |" in md
    assert f"latitude {man['origin']['lat']:.7f}°" in md and f"longitude {man['origin']['lon']:.7f}°" in md
    east = [im["enu"][0] for im in man["images"]]
    assert f"({max(east) - min(east):.2f} m)" in md
    for s in man["skipped"]:
        assert s["reason"] in md
    al = read_json(full_scene / "alignment.json")
    assert "7 frame(s) registered, 1 not registered." in md
    assert f"| median residual (m) | {al['median_residual_m']:.3f} |" in md
    assert f"| max residual (m) | {al['max_residual_m']:.3f} |" in md
    assert "Not registered: `pano_0004`" in md
    assert "| images registered / total | 126 / 144 |" in md
    assert "| 3D points | 3,976 |" in md and "| mean reprojection error (px) | 0.432 |" in md
    # benchmarks: train is the mean of its two repeats, peak RSS the max; total = 19.17 + 110
    assert "| train | 110.00 | 0:01:50 | 2,048.50 |" in md
    assert "| **total** | 129.17 |" in md
    assert "| held-out PSNR (dB) | 23.4567 |" in md and "| held-out SSIM | 0.7891 |" in md
    assert "| training resolution (px) | 128 x 128 (max side 320) |" in md and "| held-out frames | pano_0008 |" in md
    assert "| az000_el+00/pano_0008.jpg | 21.2500 | 0.7500 |" in md
    assert "| counts.faces | 98,765 |" in md and "| timings_s.total | 42.5000 |" in md
    assert "| ply_save_pct | 60.0000 |" in md and "5.00 MB → 2.00 MB" in md

    assert res["figures"] == ["positions_enu.png", "stage_times.png", "train_curve.png", "train_renders.png"]
    for f in res["figures"]:
        assert f"]({f})" in md
        _check_png(out / f)
    assert (out / "train_renders.png").read_bytes() == (full_scene / "splat" / "renders.png").read_bytes()
    assert not list(out.parent.glob(".scene_report*"))  # no temporary left behind


def test_missing_inputs_say_not_available(full_scene: Path, tmp_path: Path) -> None:
    for rel in ("alignment.json", "sparse/summary.json", "splat/metrics.json", "export/export.json"):
        (full_scene / rel).unlink()
    shutil.rmtree(full_scene / "benchmarks")
    out = tmp_path / "r"
    res = report.main(full_scene, out, {"compress_report": str(tmp_path / "nope.json")})
    md = (out / "report.md").read_text()
    for line in ("not available: sparse/summary.json missing", "not available: splat/metrics.json missing",
                 "not available: export/export.json missing", "not available: benchmarks/*.tsv missing",
                 f"not available: {tmp_path / 'nope.json'} missing", "(not available: alignment.json missing)"):
        assert line in md
    assert res["sections"]["1. Capture"] == "ok"
    assert res["figures"] == ["positions_enu.png"]  # GPS positions only, registration unknown
    _check_png(out / "positions_enu.png")
    assert "frame(s) registered" not in md


def test_empty_scene_and_unreadable_json(tmp_path: Path) -> None:
    scene = tmp_path / "work" / "s"
    scene.mkdir(parents=True)
    res = report.main(scene, tmp_path / "out")
    assert res["figures"] == []
    assert all(v.startswith("not available:") for v in res["sections"].values())
    md = (tmp_path / "out" / "report.md").read_text()
    assert "not available: manifest.json missing" in md
    (scene / "manifest.json").write_text("{not json")
    res = report.main(scene, tmp_path / "out")
    assert res["sections"]["1. Capture"].startswith("not available: manifest.json unreadable")


def test_default_compress_report_location(full_scene: Path, tmp_path: Path) -> None:
    res = report.main(full_scene, tmp_path / "o")
    assert res["sections"]["7. Compression"] == "ok"  # found at <scene_dir>/../../results/scene.compressed.json
    (full_scene.parent.parent / "results" / "scene.compressed.json").unlink()
    res = report.main(full_scene, tmp_path / "o")
    assert res["sections"]["7. Compression"].endswith("results/scene.compressed.json missing")


def test_read_benchmarks_na_and_bad_file(tmp_path: Path) -> None:
    (tmp_path / "a.tsv").write_text(BENCH_HEADER + "2.0\t0:00:02\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n")
    (b,) = report.read_benchmarks(tmp_path)
    assert b["rule"] == "a" and b["s"] == 2.0 and b["max_rss_mb"] is None and b["repeats"] == 1
    (tmp_path / "b.tsv").write_text("x\ty\n")
    with pytest.raises(InputError, match="b.tsv"):
        report.read_benchmarks(tmp_path)


def test_options_and_bad_scene(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown report option"):
        report.ReportOptions.from_dict({"colour": "red"})
    with pytest.raises(InputError, match="dpi"):
        report.ReportOptions.from_dict({"dpi": 0})
    with pytest.raises(InputError, match="not found"):
        report.main(tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli(full_scene: Path, tmp_path: Path, capsys) -> None:
    comp = tmp_path / "c.json"
    comp.write_text(json.dumps({"status": "ok", "preset": "p9", "size_bytes_in": 100, "size_bytes_out": 50,
                                "ply_save_pct": 50.0}))
    out = tmp_path / "cli_out"
    assert report.cli([str(full_scene), str(out), "--compress-report", str(comp), "--dpi", "60"]) == 0
    assert str(out / "report.md") in capsys.readouterr().out
    assert "| preset | p9 |" in (out / "report.md").read_text()
