"""Hostile paths (issue #18): unsafe scene names, writes outside work/ and results/,
temporary files left by a kill, and a full disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from splatforge_core.config import ConfigError, validate_config
from splatforge_core.errors import SplatForgeError
from splatforge_core.workflow import check_output_paths

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, GLOG_minloglevel="2", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))

BAD_NAMES = ["..", ".", "a/b", "../x", ".hidden", "a b", "", "x" * 101]


def _snakemake(workdir: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "1",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


def _tree(root: Path) -> list[str]:
    """Every path under ``root`` except Snakemake's own ``.snakemake`` bookkeeping."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".snakemake" not in p.parts)


# ---- scene names ---------------------------------------------------------------------------------


@pytest.mark.hostile(cls="scene_name", expect="clear_error")
@pytest.mark.parametrize("name", BAD_NAMES)
def test_unsafe_default_scene_rejected(name):
    cfg = {"default_scene": name, "scenes": {"scene": {"input": "x"}}}
    with pytest.raises(ConfigError, match="default_scene .* is not a safe name"):
        validate_config(cfg)


@pytest.mark.hostile(cls="scene_name", expect="clear_error")
@pytest.mark.parametrize("name", BAD_NAMES)
def test_unsafe_scene_key_rejected(name):
    with pytest.raises(ConfigError, match="scene name .* is not a safe name"):
        validate_config({"scenes": {name: {"input": "x"}}})


@pytest.mark.hostile(cls="scene_name", expect="correct")
@pytest.mark.parametrize("name", ["scene", "lund_2024-05", "A9"])
def test_safe_names_accepted(name):
    validate_config({"default_scene": name, "scenes": {name: {"input": "x"}}})


@pytest.mark.hostile(cls="scene_name", expect="clear_error")
@pytest.mark.parametrize("name,dry", [("..", True), (".", True), ("a/b", True), ("../x", True), ("..", False)],
                         ids=["dotdot-dry", "dot-dry", "slash-dry", "up-dry", "dotdot-real"])
def test_snakemake_default_scene_refused_nothing_created(tmp_path, name, dry):
    """Issue #18: ``--config default_scene=..`` replaced a user's images/ folder beside work/.
    Now Snakemake stops at start (a few seconds), names the option, writes nothing."""
    user_images = tmp_path / "images"
    user_images.mkdir()
    (user_images / "IMG_0001.jpg").write_bytes(b"user photo")
    before = _tree(tmp_path)
    r = _snakemake(tmp_path, *(["-n"] if dry else []), "--config", f"default_scene={name}")
    assert r.returncode != 0
    assert f"default_scene {name!r} is not a safe name" in r.stdout + r.stderr
    assert _tree(tmp_path) == before
    assert (user_images / "IMG_0001.jpg").read_bytes() == b"user photo"


@pytest.mark.hostile(cls="scene_name", expect="clear_error")
@pytest.mark.parametrize("path", ["work/../images", "../elsewhere/x.ply", "/tmp/x.ply", "results/../x", "work",
                                  "resultsX/a.ply"])
def test_stage_refuses_outputs_outside_work_and_results(tmp_path, path):
    """The rule scripts' guard (run_stage): no output or log path outside work/ and results/."""
    with pytest.raises(SplatForgeError, match="refusing to write outside"):
        check_output_paths([path], tmp_path)


@pytest.mark.hostile(cls="scene_name", expect="correct")
def test_stage_accepts_project_outputs(tmp_path):
    check_output_paths(["work/scene/images", "results/scene.ply", tmp_path / "work" / "demo" / "capture"], tmp_path)


def test_wildcard_constraint_matches_safe_names():
    """rules/common.smk constrains {scene} to the config's safe set (no '.')."""
    from splatforge_core.config import SAFE_NAME

    text = (REPO / "rules" / "common.smk").read_text()
    assert f'scene="{SAFE_NAME.pattern}"' in text


# ---- leftovers of a killed stage ------------------------------------------------------------------


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _kill_while_temporary(cmd: list[str], folder: Path, tries: int = 4, timeout: float = 120.0) -> list[str]:
    """Start ``cmd``, SIGKILL it as soon as a hidden temporary appears in ``folder``; returns the
    hidden names left after the kill. Retries (the window can be short on a busy machine)."""
    import signal
    import time

    for _ in range(tries):
        proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.time()
        try:
            while proc.poll() is None and time.time() - t0 < timeout:
                if folder.is_dir() and _hidden(folder):
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(30)
                    left = _hidden(folder)
                    if left:
                        return left
                    break
                time.sleep(0.002)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    pytest.fail(f"no temporary caught in {folder} in {tries} tries of {cmd}")


@pytest.fixture(scope="module")
def sphere_ply(tmp_path_factory) -> Path:
    from splatforge_core.export.synthetic import sphere_splat, write_ply

    return write_ply(tmp_path_factory.mktemp("splat") / "sphere.ply", sphere_splat(20000, sh_degree=1))


@pytest.mark.slow  # interpreter start-ups + a few exports: ~20-40 s on the shared 2-core machine
@pytest.mark.hostile(cls="leftover", expect="correct")
def test_kill_during_export_then_rerun_leaves_nothing(sphere_ply, tmp_path):
    """Issue #18: a kill during export left ``results/.export.*.tmp/`` with a complete-looking mesh
    that no rerun removed. Now the rerun removes it and writes correct outputs."""
    import json

    res = tmp_path / "results"
    res.mkdir()
    cmd = [sys.executable, "-m", "splatforge_core.cli", "export", str(sphere_ply), "--out-prefix", str(res / "s_mesh"),
           "--report", str(res / "s_export.json"), "--texture-size", "1024", "--poisson-depth", "7",
           "--target-faces", "20000"]
    left = _kill_while_temporary(cmd, res)
    assert left  # the case: a kill leaves a hidden temporary
    r = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _hidden(res) == [], "leftover temporaries after the rerun"
    rep = json.loads((res / "s_export.json").read_text())
    assert sorted(Path(p).name for p in rep["outputs"].values()) == sorted(
        ["s_mesh.glb", "s_mesh.obj", "s_mesh.mtl", "s_mesh.png", "s_mesh.fbx"])
    assert all(v.get("ok", True) for v in rep.get("verify", {}).values() if isinstance(v, dict))
    import trimesh

    glb = trimesh.load(res / "s_mesh.glb", force="mesh")
    assert len(glb.faces) == rep["counts"]["faces"] > 1000


@pytest.mark.hostile(cls="leftover", expect="correct")
def test_kill_during_compress_then_rerun_leaves_nothing(sphere_ply, tmp_path):
    """A kill while the compressed PLY is being written; the rerun cleans up and decodes right."""
    import numpy as np

    from splatforge_core.codec import decompress
    from splatforge_core.splat import read_splat_ply

    res = tmp_path / "results"
    res.mkdir()
    out = res / "s.compressed.ply"
    cmd = [sys.executable, "-m", "splatforge_core.cli", "compress", "--preset", "qat-3dgs", "-o",
           "evaluate_psnr=true", "-o", "psnr_size=512", str(sphere_ply), str(out), "--report", str(res / "s.json")]
    left = _kill_while_temporary(cmd, res)
    assert left and not out.exists()
    r = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _hidden(res) == []
    dec = tmp_path / "dec.ply"
    decompress(out, dec)
    a, b = read_splat_ply(sphere_ply), read_splat_ply(dec)
    assert len(a["means"]) == len(b["means"]) == 20000
    assert np.allclose(a["means"], b["means"], atol=1e-2)


@pytest.mark.hostile(cls="leftover", expect="correct")
def test_cleanup_touches_only_own_temporaries(tmp_path):
    """The start-of-stage cleanup removes only this output's temporary names: not another
    rule's (``.scene.compressed.*``) and not a user's hidden files."""
    from splatforge_core.io import remove_stale_temporaries

    res = tmp_path / "results"
    res.mkdir()
    own = [res / ".scene.ab12cd_3.tmp.ply", res / ".scene.ply.old.123"]
    others = [res / ".scene.compressed.ab12cd_3.tmp.ply", res / ".scenery.ab12cd_3.tmp.ply", res / ".bashrc",
              res / "scene.ply", res / ".scene.tmp"]
    for p in own + others:
        p.write_text("x")
    (res / ".scene_mesh.zz9.tmp").mkdir()
    removed = remove_stale_temporaries([res / "scene.ply"])
    assert sorted(removed) == sorted(own)
    assert all(p.exists() for p in others) and (res / ".scene_mesh.zz9.tmp").is_dir()


# ---- disk full ------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs (root only); skipped with the reason when mounting is not permitted."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({(r.stderr or r.stdout).strip()[:200]})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.hostile(cls="disk_full", expect="clear_error")
def test_disk_full_write_json(small_disk):
    from splatforge_core.io import DiskFullError, write_json

    dest = small_disk / "work" / "big.json"
    with pytest.raises(DiskFullError) as e:
        write_json(dest, {"x": "a" * (2 << 20)})
    assert str(dest) in str(e.value) and "disk is full" in str(e.value)
    assert not dest.exists() and _hidden(dest.parent) == []  # the temporary is gone: space is freed


@pytest.mark.hostile(cls="disk_full", expect="clear_error")
def test_disk_full_splat_ply(small_disk):
    import torch

    from splatforge_core.io import DiskFullError
    from splatforge_core.splat import write_splat_ply

    n = 20000
    dest = small_disk / "results" / "scene.ply"
    with pytest.raises(DiskFullError, match=str(dest)):
        write_splat_ply(dest, torch.zeros(n, 3), torch.zeros(n, 3), torch.ones(n, 4), torch.zeros(n),
                        torch.zeros(n, 1, 3), torch.zeros(n, 0, 3))
    assert not dest.exists() and _hidden(dest.parent) == []


@pytest.mark.hostile(cls="disk_full", expect="clear_error")
def test_disk_full_checkpoint(small_disk):
    import torch

    from splatforge_core.io import DiskFullError
    from splatforge_core.train.checkpoint import save_checkpoint

    d = small_disk / "checkpoints"
    with pytest.raises(DiskFullError) as e:
        save_checkpoint(d, 10, {"params": {"means": torch.zeros(200_000, 3)}})
    assert str(d / "ckpt_0000010.pt") in str(e.value) and "disk is full" in str(e.value)
    assert list(d.iterdir()) == []


@pytest.mark.hostile(cls="disk_full", expect="clear_error")
def test_disk_full_cli_one_line(small_disk, sphere_ply):
    """The CLI reports a full disk as one line naming the file, exit 1, no traceback."""
    out = small_disk / "s.compressed.ply"
    r = subprocess.run([sys.executable, "-m", "splatforge_core.cli", "compress", "--preset", "lossless-zstd",
                        str(sphere_ply), str(small_disk / "s.sfz")],
                       cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "disk is full" in r.stderr and str(small_disk / "s.sfz") in r.stderr
    assert not out.exists() and _hidden(small_disk) == []


@pytest.mark.hostile(cls="leftover", expect="correct")
def test_kill_during_project_then_rerun_leaves_nothing(pano_path, tmp_path):
    """A kill while the views are projected leaves ``work/<scene>/.images.<random>.tmp/``; the
    rerun removes it and writes every view."""
    import json

    from splatforge_core.ingest import main as ingest

    src = tmp_path / "photos"
    src.mkdir()
    os.symlink(pano_path, src / pano_path.name)
    work = tmp_path / "work" / "s"
    ingest(src, work / "manifest.json", {"min_images": 1})
    cmd = [sys.executable, "-m", "splatforge_core.cli", "project", str(work / "manifest.json"), str(work / "images"),
           str(work / "views.json"), "--size", "128", "--workers", "1"]
    left = _kill_while_temporary(cmd, work)
    assert any(n.startswith(".images.") for n in left) and not (work / "views.json").exists()
    r = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _hidden(work) == []
    views = json.loads((work / "views.json").read_text())
    names = [n for fr in views["frames"] for n in fr["images"].values()]
    assert len(names) == 18 and all((work / "images" / n).is_file() for n in names)


@pytest.mark.hostile(cls="disk_full", expect="clear_error")
def test_disk_full_before_sift_extraction(small_disk, tmp_path, lund_dir):
    """COLMAP aborts natively on a failed write, so SfM checks the free space first: a clear
    error naming the database, before pycolmap runs, and nothing left on the small disk."""
    import shutil

    from splatforge_core import ingest, project
    from splatforge_core.io import DiskFullError
    from splatforge_core.sfm import extract

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted(lund_dir.glob("*.jpg"))[:3]:
        shutil.copy(p, photos / p.name)
    ingest.main(photos, tmp_path / "manifest.json", {})
    project.main(tmp_path / "manifest.json", tmp_path / "images", tmp_path / "views.json", {})
    dest = small_disk / "colmap" / "features.db"
    with pytest.raises(DiskFullError) as e:
        extract.main(tmp_path / "images", tmp_path / "views.json", dest, {})
    assert str(dest) in str(e.value) and "not enough disk space" in str(e.value)
    assert not dest.exists() and list(dest.parent.iterdir()) == []
