"""Tests of runs that train part of a schedule and of runs that continue them (issue #12's
coarse pass and per-cluster finetune): ``schedule_start``/``schedule_stop``, ``init_from``,
``state_path``, ``eval_frames``, and the cluster options and merge render built on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from splatforge_core import cluster, splat_merge
from splatforge_core.errors import InputError
from splatforge_core.splat import read_splat_ply, write_splat_ply
from splatforge_core.train.checkpoint import list_checkpoints
from splatforge_core.train.data import View, held_out_frame_indices, load_scene
from splatforge_core.train.init import seen_by_views
from splatforge_core.train.synthetic import make_synthetic_scene
from splatforge_core.train.trainer import main

OPTS = {"iterations": 80, "checkpoint_every": 1000, "progress": False, "sh_degree_interval": 30, "seed": 3,
        "sky_points": 200, "refine_start": 20, "refine_every": 20, "refine_stop": 70}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """16 views of 48x36 (2 held out), 400 SfM points."""
    return make_synthetic_scene(tmp_path_factory.mktemp("syn"), n_cameras=16, width=48, height=36,
                                n_gaussians=2000, n_points=400)


@pytest.fixture(scope="module")
def split_run(scene, tmp_path_factory):
    """The first half of an 80-step run (with its state) and the second half continuing it."""
    d = tmp_path_factory.mktemp("split")
    first = main(scene["aligned"], scene["images"], scene["views"], d / "a", d / "a.ply",
                 {**OPTS, "schedule_stop": 0.5}, state_path=d / "state.pt")
    second = main(scene["aligned"], scene["images"], scene["views"], d / "b", d / "b.ply",
                  {**OPTS, "schedule_start": 0.5}, init_from=d / "state.pt")
    return d, first, second


def test_first_part_stops_where_asked_and_writes_its_state(split_run):
    d, first, _ = split_run
    assert first["iterations"] == 80 and first["start_step"] == 0 and first["final_step"] == 40
    # the SH degree reached at step 40 of a 30-step-per-degree schedule: 1
    assert first["sh_degree"] == 1 and read_splat_ply(d / "a.ply")["sh_degree"] == 1
    st = torch.load(d / "state.pt", weights_only=True)
    assert st["step"] == 40 and st["iterations"] == 80
    assert len(st["params"]["means"]) == first["num_gaussians"]


def test_continuation_runs_the_rest_of_the_schedule_with_the_carried_state(split_run, scene, tmp_path):
    d, first, second = split_run
    assert second["start_step"] == 40 and second["final_step"] == 80 and second["iterations"] == 80
    assert second["sh_degree"] == 2  # (80 - 1) // 30
    ck = torch.load(list_checkpoints(d / "b" / "checkpoints")[-1], weights_only=True)
    # Adam moments carried: the optimiser has taken 40 + 40 steps
    assert float(ck["optimizers"]["sh0"]["state"][0]["step"]) == 80
    # the means learning rate ends where a whole 80-step run ends it
    whole = main(scene["aligned"], scene["images"], scene["views"], tmp_path / "w", tmp_path / "w.ply", OPTS)
    ckw = torch.load(list_checkpoints(tmp_path / "w" / "checkpoints")[-1], weights_only=True)
    assert ck["optimizers"]["means"]["param_groups"][0]["lr"] == pytest.approx(
        ckw["optimizers"]["means"]["param_groups"][0]["lr"], rel=1e-9)
    # the second half trains (densifying as the whole run does after step 40): its held-out views
    # end near the whole run's and better than where it started (SSIM; PSNR dips after a
    # densification on this tiny scene, for the whole run too)
    assert abs(second["final"]["psnr"] - whole["final"]["psnr"]) < 1.0, (second["final"], whole["final"])
    assert second["final"]["ssim"] > first["final"]["ssim"] + 0.05
    assert second["num_gaussians"] > first["num_gaussians"]


def test_a_ply_start_continues_with_a_fresh_optimiser(split_run, scene, tmp_path):
    d, first, _ = split_run
    m = main(scene["aligned"], scene["images"], scene["views"], tmp_path / "p", tmp_path / "p.ply",
             {**OPTS, "schedule_start": 0.5}, init_from=d / "a.ply")
    ck = torch.load(list_checkpoints(tmp_path / "p" / "checkpoints")[-1], weights_only=True)
    assert float(ck["optimizers"]["sh0"]["state"][0]["step"]) == 40
    assert m["final"]["ssim"] > first["final"]["ssim"]


def test_gaussians_no_training_view_sees_are_carried_unchanged(split_run, scene, tmp_path):
    """A cluster is cropped to its cell after training: a Gaussian of its cell that only another
    cluster's views see must come through, or it is lost to both."""
    d, _, _ = split_run
    s = read_splat_ply(d / "a.ply")
    far = np.array([[0.0, 0.0, 40.0 + i] for i in range(5)], np.float32)  # straight above the ring of cameras
    assert not seen_by_views(far, load_scene(scene["aligned"], scene["images"], scene["views"]).train).any()
    n = len(far)
    init = tmp_path / "init.ply"
    write_splat_ply(init, np.concatenate([s["means"], far]), np.concatenate([s["scales"], np.full((n, 3), -3, np.float32)]),
                    np.concatenate([s["quats"], np.tile(np.float32([1, 0, 0, 0]), (n, 1))]),
                    np.concatenate([s["opacities"], np.full(n, 2.0, np.float32)]),
                    np.concatenate([s["sh0"], np.zeros((n, 3), np.float32)]),
                    np.concatenate([s["shN"], np.zeros((n,) + s["shN"].shape[1:], np.float32)]))
    main(scene["aligned"], scene["images"], scene["views"], tmp_path / "c", tmp_path / "c.ply",
         {**OPTS, "schedule_start": 0.5}, init_from=init)
    out = read_splat_ply(tmp_path / "c.ply")["means"]
    for p in far:
        assert (np.abs(out - p).max(1) == 0).any(), p


def test_continuation_errors_name_what_is_wrong(split_run, scene, tmp_path):
    d, _, _ = split_run
    with pytest.raises(InputError, match="no run to continue"):
        main(scene["aligned"], scene["images"], scene["views"], tmp_path / "x", tmp_path / "x.ply",
             {**OPTS, "schedule_start": 0.5})
    with pytest.raises(InputError, match="stopped at step 40.*starts at step 20"):
        main(scene["aligned"], scene["images"], scene["views"], tmp_path / "y", tmp_path / "y.ply",
             {**OPTS, "schedule_start": 0.25}, init_from=d / "state.pt")
    with pytest.raises(InputError, match="schedule_start"):
        main(scene["aligned"], scene["images"], scene["views"], tmp_path / "z", tmp_path / "z.ply",
             {**OPTS, "schedule_start": 0.5, "schedule_stop": 0.5})
    with pytest.raises(InputError, match="scaffold"):
        main(scene["aligned"], scene["images"], scene["views"], tmp_path / "s", tmp_path / "s.ply",
             {**OPTS, "model": "scaffold", "schedule_stop": 0.5})
    # a splat of another place: nothing in front of any training view
    s = read_splat_ply(d / "a.ply")
    far = tmp_path / "elsewhere.ply"
    write_splat_ply(far, s["means"] + np.float32(5000.0), s["scales"], s["quats"], s["opacities"], s["sh0"], s["shN"])
    with pytest.raises(InputError, match="elsewhere.ply.*none of its"):
        main(scene["aligned"], scene["images"], scene["views"], tmp_path / "e", tmp_path / "e.ply",
             {**OPTS, "schedule_start": 0.5}, init_from=far)


@pytest.mark.hostile(cls="checkpoint", expect="clear_error")
def test_a_state_that_is_not_a_checkpoint_is_refused(scene, tmp_path):
    bad = tmp_path / "state.pt"
    torch.save({"format": "something else"}, bad)
    with pytest.raises(InputError, match="state.pt.*not a valid Splat Forge checkpoint"):
        main(scene["aligned"], scene["images"], scene["views"], tmp_path / "b", tmp_path / "b.ply",
             {**OPTS, "schedule_start": 0.5}, init_from=bad)


@pytest.mark.hostile(cls="checkpoint", expect="clear_error")
@pytest.mark.parametrize("name", ["state.pt", "coarse.ply"])
def test_a_truncated_state_or_splat_is_a_clear_error(split_run, scene, tmp_path, name):
    d, _, _ = split_run
    src = d / ("state.pt" if name == "state.pt" else "a.ply")
    bad = tmp_path / name
    bad.write_bytes(src.read_bytes()[:5000])
    with pytest.raises(InputError, match=name.replace(".", r"\.")):
        main(scene["aligned"], scene["images"], scene["views"], tmp_path / "b", tmp_path / "b.ply",
             {**OPTS, "schedule_start": 0.5}, init_from=bad)


@pytest.mark.hostile(cls="checkpoint", expect="clear_error")
def test_a_state_with_adam_moments_of_the_wrong_shape_is_refused(split_run, scene, tmp_path):
    d, _, _ = split_run
    st = torch.load(d / "state.pt", weights_only=True)
    st["optimizers"]["means"]["state"][0]["exp_avg"] = torch.zeros(3, 3)
    bad = tmp_path / "state.pt"
    torch.save(st, bad)
    with pytest.raises(InputError, match="state.pt.*Adam state 'exp_avg' of 'means'"):
        main(scene["aligned"], scene["images"], scene["views"], tmp_path / "b", tmp_path / "b.ply",
             {**OPTS, "schedule_start": 0.5}, init_from=bad)


def test_seen_by_views_keeps_what_a_camera_sees():
    K = np.array([[50.0, 0, 50], [0, 50.0, 50], [0, 0, 1]], np.float32)
    v = View("v", "f", np.zeros((100, 100, 3), np.uint8), K, np.eye(4, dtype=np.float32), None)
    pts = np.array([[0, 0, 5], [0, 0, -5], [20, 0, 5], [5.5, 0, 5], [6.5, 0, 5]], np.float32)  # u = 50, -, 250, 105, 115
    # in front / behind / far outside / just outside (inside the 10 % margin) / outside the margin
    assert seen_by_views(pts, [v]).tolist() == [True, False, False, True, False]
    assert seen_by_views(pts, [v], margin=0.0).tolist() == [True, False, False, False, False]


def test_eval_frames_hold_out_exactly_those_frames(scene):
    sc = load_scene(scene["aligned"], scene["images"], scene["views"], eval_frames=["pano_0002", "pano_0009", "nope"])
    assert sc.test_frames == ["pano_0002", "pano_0009"]
    assert not {v.frame for v in sc.train} & {"pano_0002", "pano_0009"} and len(sc.test) == 2


# ----------------------------------------------------------------- cluster options and merge
def test_cluster_train_options_by_role(scene):
    train = {"cpu_iterations": 100, "eval_every_n": 8}
    names = sorted(f["frame"] for f in json.loads(Path(scene["views"]).read_text())["frames"])
    held = [names[i] for i in held_out_frame_indices(len(names), 8)]
    assert cluster.scene_held_out_frames(scene["views"], train) == held
    assert cluster.train_job_options("scene", train, {}, scene["views"]) == train
    coarse = cluster.train_job_options("coarse", train, {"coarse_max_side": 64}, scene["views"])
    assert coarse == {**train, "schedule_stop": 0.9, "eval_frames": held, "max_side": 64, "cpu_max_side": 64}
    one = cluster.train_job_options("cluster", train, {}, scene["views"])
    assert one == {**train, "schedule_start": 0.9, "eval_frames": held}
    none = cluster.train_job_options("cluster", train, {"coarse_fraction": 0}, scene["views"])
    assert none == {**train, "eval_frames": held} and not cluster.has_coarse_pass({"coarse_fraction": 0})
    with pytest.raises(InputError, match="coarse_fraction"):
        cluster.train_job_options("coarse", train, {"coarse_fraction": 1.0}, scene["views"])
    with pytest.raises(InputError, match="role"):
        cluster.train_job_options("block", train, {}, scene["views"])
    with pytest.raises(InputError, match="coarse_fraction is 0"):
        cluster.coarse_train_options(train, {"coarse_fraction": 0}, held)


def test_merge_renders_the_merged_splat_at_the_scenes_held_out_views(split_run, scene, tmp_path):
    """Two 'clusters' that both hold the whole trained splat: cropped to their cells and merged, every
    Gaussian is kept once, so the merged render equals the splat's own at the held-out views."""
    d, _, second = split_run
    s = read_splat_ply(d / "b.ply")
    x = s["means"][:, 0]
    clusters = {"schema_version": 1, "clusters": [
        {"name": "c0", "centre_enu": [float(np.percentile(x, 25)), 0.0, 0.0], "core": [], "members": []},
        {"name": "c1", "centre_enu": [float(np.percentile(x, 75)), 0.0, 0.0], "core": [], "members": []}]}
    (tmp_path / "clusters.json").write_text(json.dumps(clusters))
    mets = {}
    for c in ("c0", "c1"):
        mets[c] = tmp_path / f"{c}.json"
        mets[c].write_text(json.dumps({"final": {"psnr": 1.0, "ssim": 0.1}, "n_test_views": 1, "start_step": 40,
                                       "final_step": 80, "train_seconds": 2.0, "resolution": {"max_side": 48}}))
    splat_merge.main(tmp_path / "clusters.json", {"c0": d / "b.ply", "c1": d / "b.ply"}, mets, scene["views"],
                     tmp_path / "m.ply", tmp_path / "metrics.json", tmp_path / "merge.json",
                     aligned_dir=scene["aligned"], images_dir=scene["images"], train_options={},
                     coarse_metrics_path=d / "a" / "metrics.json")
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert len(read_splat_ply(tmp_path / "m.ply")["means"]) == len(s["means"])
    assert m["test_frames"] == second["test_frames"]
    assert m["final"]["psnr"] == pytest.approx(second["final"]["psnr"], abs=1e-3)
    assert m["clusters_final"]["psnr"] == pytest.approx(1.0)
    assert "merged splat rendered" in m["eval_note"]
    from PIL import Image

    with Image.open(tmp_path / "renders.png") as im:  # render | ground truth of the held-out views, for the report
        assert im.format == "PNG" and min(im.size) >= 64
    # steps trained in all: the coarse pass (the first run, 0-40) and each cluster (40-80)
    assert m["steps"] == 40 + 2 * 40 and m["coarse"]["steps"] == 40
    assert m["train_seconds"] == pytest.approx(m["coarse"]["train_seconds"] + 4.0)
