"""The Snakemake workflow itself: config validation, the DAG, and a tiny end-to-end run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "workflow" / "tiny.yaml"


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--cores", "2", *args]
    env = dict(os.environ, GLOG_minloglevel="2")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_dry_run_has_every_stage(tmp_path):
    r = snakemake(tmp_path, "-n", "results/scene.ply")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    for rule in ["demo", "ingest", "project", "sfm_extract", "sfm_pairs", "sfm_match", "sfm_map",
                 "sfm_align", "train", "export_mesh", "compress", "report", "publish"]:
        assert f"rule {rule}:" in out or f"\n{rule} " in out, rule


def test_invalid_config_is_rejected_at_start(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenes:\n  scene:\n    input: x\ningest:\n  min_images: 0\n")
    r = snakemake(tmp_path, "-n", f"--configfile={bad}")
    assert r.returncode != 0
    assert "min_images" in (r.stdout + r.stderr)


def test_unknown_config_key_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenes:\n  scene:\n    input: x\nprojekt: {size: 10}\n")
    r = snakemake(tmp_path, "-n", f"--configfile={bad}")
    assert r.returncode != 0
    assert "projekt" in (r.stdout + r.stderr)


@pytest.mark.slow
def test_tiny_workflow_through_alignment_and_rerun_does_nothing(tmp_path):
    """Demo -> ingest -> project -> SfM -> geo-align on the tiny config; a rerun does nothing."""
    target = "work/scene/alignment.json"
    r = snakemake(tmp_path, f"--configfile={TINY}", target)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    import json

    report = json.loads((tmp_path / target).read_text())
    manifest = json.loads((tmp_path / "work/scene/manifest.json").read_text())
    assert manifest["camera_kind"] == "equirectangular" and len(manifest["images"]) == 8
    assert (tmp_path / "work/scene/sparse/0/images.bin").exists()
    assert (tmp_path / "work/scene/aligned").is_dir()
    assert report  # the alignment report exists and is not empty
    for rule in ["demo", "ingest", "project", "sfm_extract", "sfm_map", "sfm_align"]:
        bench = tmp_path / "work" / ("demo" if rule == "demo" else "scene") / "benchmarks" / f"{rule}.tsv"
        assert bench.exists(), bench
    again = snakemake(tmp_path, f"--configfile={TINY}", target)
    assert again.returncode == 0
    assert "Nothing to be done" in (again.stdout + again.stderr)


def test_unimplemented_or_failing_stage_leaves_no_output(tmp_path):
    """A stage that fails leaves none of its outputs behind (here: ingest on a folder of non-JPEGs)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"not a jpeg")
    r = snakemake(tmp_path, "work/scene/manifest.json", "--config", f"input={photos}")
    assert r.returncode != 0
    assert not (tmp_path / "work/scene/manifest.json").exists()
    log = (tmp_path / "work/scene/logs/ingest.log").read_text()
    assert "photos" in log


@pytest.mark.slow
def test_killed_during_sfm_then_rerun_finishes(tmp_path):
    """Kill the whole Snakemake run while SIFT extraction runs; the same command then finishes."""
    import signal
    import time

    target = "work/scene/alignment.json"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
           "--cores", "2", f"--configfile={TINY}", target]
    env = dict(os.environ, GLOG_minloglevel="2")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    log = tmp_path / "work/scene/logs/sfm_extract.log"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and "start" in log.read_text()):
        assert proc.poll() is None, "the run ended before extraction started"
        time.sleep(0.05)
    time.sleep(0.5)  # inside extraction
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / target).exists()
    r = snakemake(tmp_path, f"--configfile={TINY}", target)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    assert (tmp_path / target).exists()
    # no temporary leftovers that look like finished outputs
    leftovers = [p.name for p in (tmp_path / "work/scene/colmap").iterdir() if ".tmp" in p.name]
    assert leftovers == []


@pytest.mark.slow
def test_tiny_workflow_end_to_end(tmp_path):
    """The main job on the tiny config: splat, meshes, compressed PLY and run report."""
    import json

    r = snakemake(tmp_path, f"--configfile={TINY}", "results/scene.ply", timeout=1500)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    res = tmp_path / "results"
    from plyfile import PlyData

    ply = PlyData.read(str(res / "scene.ply"))
    assert ply["vertex"].count > 1000
    names = [p.name for p in ply["vertex"].properties]
    assert names[:6] == ["x", "y", "z", "nx", "ny", "nz"] and "opacity" in names and "rot_3" in names
    for ext in ["glb", "obj", "mtl", "png", "fbx"]:
        assert (res / f"scene_mesh.{ext}").stat().st_size > 0, ext
    comp = json.loads((res / "scene.compressed.json").read_text())
    assert comp["status"] == "ok" and comp["bitexact_roundtrip"] is True
    metrics = json.loads((tmp_path / "work/scene/splat/metrics.json").read_text())
    assert metrics
    report = (res / "scene_report" / "report.md").read_text()
    assert "registered" in report
    again = snakemake(tmp_path, f"--configfile={TINY}", "results/scene.ply")
    assert "Nothing to be done" in (again.stdout + again.stderr)
