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
