"""`train_scene_data` (the trainer on an already loaded scene, e.g. an Inria folder) trains exactly
like `main` on the same views, and never resumes a checkpoint of other inputs."""

from __future__ import annotations

import numpy as np
import pytest

from splatforge_core.train import main, read_splat_ply
from splatforge_core.train.data import load_scene
from splatforge_core.train.synthetic import make_synthetic_scene
from splatforge_core.train.trainer import scene_fingerprint, train_scene_data

OPTS = {"iterations": 60, "eval_steps": [], "checkpoint_every": 30, "progress": False, "seed": 3, "sky_points": 0,
        "device": "cpu", "cpu_max_side": 64}


@pytest.mark.slow  # two 60-step runs: ~20 s on a quiet 2-core machine
def test_same_result_as_main_on_the_same_views(tmp_path):
    s = make_synthetic_scene(tmp_path / "syn", n_cameras=16, width=64, height=48, n_gaussians=2000, n_points=400)
    ref = main(s["aligned"], s["images"], s["views"], tmp_path / "a", tmp_path / "a.ply", OPTS)
    scene = load_scene(s["aligned"], s["images"], s["views"], max_side=64)
    got = train_scene_data(scene, tmp_path / "b", tmp_path / "b.ply", OPTS)
    assert got["n_test_views"] == ref["n_test_views"] == 2 and got["final_step"] == 60
    assert got["final"]["psnr"] == pytest.approx(ref["final"]["psnr"], abs=1e-3)
    np.testing.assert_allclose(read_splat_ply(tmp_path / "b.ply")["means"], read_splat_ply(tmp_path / "a.ply")["means"],
                               atol=1e-5)
    # a finished run of the same inputs resumes at its end; other points start afresh
    again = train_scene_data(scene, tmp_path / "b", tmp_path / "b.ply", OPTS)
    assert again["resumed_from"] == [] and again["final"]["psnr"] == pytest.approx(got["final"]["psnr"], abs=1e-6)
    moved = load_scene(s["aligned"], s["images"], s["views"], max_side=64)
    moved.points = moved.points + 0.01
    assert scene_fingerprint(moved, OPTS) != scene_fingerprint(scene, OPTS)
