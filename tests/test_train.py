"""Tests of the training stage (splatforge_core.train) on a tiny synthetic scene."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData

from splatforge_core.errors import InputError, SplatForgeError
from splatforge_core.train import TrainOptions, main, read_splat_ply, write_splat_ply
from splatforge_core.train import trainer as trainer_mod
from splatforge_core.train.checkpoint import list_checkpoints
from splatforge_core.train.data import load_scene
from splatforge_core.train.synthetic import make_synthetic_scene

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """16 views of 64x48 (2 held out), 500 SfM points."""
    return make_synthetic_scene(tmp_path_factory.mktemp("syn"), n_cameras=16, width=64, height=48,
                                n_gaussians=3000, n_points=500)


# ---------------------------------------------------------------- PLY ---------------------------


def _random_splat(n, degree, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2 - 1
    return dict(means=torch.randn(n, 3, generator=g), scales=torch.randn(n, 3, generator=g),
                quats=torch.randn(n, 4, generator=g), opacities=torch.randn(n, generator=g),
                sh0=torch.randn(n, 1, 3, generator=g), shN=torch.randn(n, k, 3, generator=g))


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_ply_roundtrip_and_inria_layout(tmp_path, degree):
    s = _random_splat(50, degree)
    path = tmp_path / "a.ply"
    write_splat_ply(path, **s)
    ply = PlyData.read(str(path))
    names = [p.name for p in ply["vertex"].properties]
    k = 3 * ((degree + 1) ** 2 - 1)
    assert names == (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                     + [f"f_rest_{i}" for i in range(k)]
                     + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert all(p.val_dtype in ("f4", "float32", "float") for p in ply["vertex"].properties)
    if degree:
        # channel-major: f_rest_0..K-2 are the red coefficients (Inria save_ply)
        v = ply["vertex"].data
        kk = (degree + 1) ** 2 - 1
        np.testing.assert_allclose(v["f_rest_1"], s["shN"][:, 1, 0].numpy(), rtol=1e-6)
        np.testing.assert_allclose(v[f"f_rest_{kk}"], s["shN"][:, 0, 1].numpy(), rtol=1e-6)
    d = read_splat_ply(path)
    assert d["sh_degree"] == degree
    for key in ("means", "scales", "quats", "opacities"):
        np.testing.assert_allclose(d[key], s[key].numpy(), rtol=1e-6)
    np.testing.assert_allclose(d["sh0"], s["sh0"][:, 0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(d["shN"], s["shN"].numpy(), rtol=1e-6)


def test_ply_matches_gsplat_export(tmp_path):
    """gsplat's own exporter (independent code) must read back identically with ours."""
    from gsplat import export_splats

    s = _random_splat(30, 3, seed=1)
    export_splats(**s, format="ply", save_to=str(tmp_path / "g.ply"))
    d = read_splat_ply(tmp_path / "g.ply")
    np.testing.assert_allclose(d["shN"], s["shN"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(d["quats"], s["quats"].numpy(), rtol=1e-6)


def test_read_real_inria_ply(shared_data, tmp_path):
    src = shared_data / "ply" / "inria3dgs_sh3_9080.ply"
    d = read_splat_ply(src)
    assert d["sh_degree"] == 3 and d["means"].shape == (9080, 3) and d["shN"].shape == (9080, 15, 3)
    write_splat_ply(tmp_path / "b.ply", d["means"], d["scales"], d["quats"], d["opacities"], d["sh0"], d["shN"])
    a = PlyData.read(str(src))["vertex"].data
    b = PlyData.read(str(tmp_path / "b.ply"))["vertex"].data
    for name in a.dtype.names:
        np.testing.assert_array_equal(a[name], b[name])


def test_read_ply_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_splat_ply(tmp_path / "missing.ply")
    (tmp_path / "junk.ply").write_text("hello")
    with pytest.raises(InputError, match="junk.ply"):
        read_splat_ply(tmp_path / "junk.ply")


# ---------------------------------------------------------------- options / data ----------------


def test_options_reject_unknown_and_bad_values():
    with pytest.raises(InputError, match="unknown key"):
        TrainOptions.from_dict({"iters": 5})
    with pytest.raises(InputError, match="sh_degree"):
        TrainOptions.from_dict({"sh_degree": 4})
    with pytest.raises(InputError, match="strategy"):
        TrainOptions.from_dict({"strategy": "magic"})
    assert TrainOptions.from_dict({"iterations": 10}).iterations == 10


def test_num_threads_option():
    assert TrainOptions.from_dict({}).num_threads is None  # torch's own default unless the rule says
    assert TrainOptions.from_dict({"num_threads": 2}).num_threads == 2
    with pytest.raises(InputError, match="num_threads"):
        TrainOptions.from_dict({"num_threads": 0})


def test_strategy_registry_matches_options_and_builds():
    """Every ``strategy`` value has a recipe; each builds its gsplat strategy and adds its own loss terms."""
    from gsplat.strategy import MCMCStrategy

    from splatforge_core.train.options import STRATEGY_NAMES
    from splatforge_core.train.strategy import STRATEGIES, SkyAwareDefaultStrategy, get_recipe

    assert sorted(STRATEGIES) == sorted(STRATEGY_NAMES)
    with pytest.raises(InputError, match="strategy"):
        get_recipe("magic")
    opts = TrainOptions.from_dict({"prune_opa": 0.02})
    schedule = (100, 1125, 500, 100)
    st = get_recipe("default").build(opts, torch.device("cpu"), schedule, None, None, cap_fn=lambda: None)
    assert isinstance(st, SkyAwareDefaultStrategy) and st.prune_opa == 0.02
    assert (st.refine_start_iter, st.refine_stop_iter, st.reset_every, st.refine_every) == schedule
    assert get_recipe("default").apply_tier(st, opts, 0.05, 1000) == 0.05 == st.prune_opa
    with pytest.raises(InputError, match="needs CUDA"):
        get_recipe("mcmc").build(opts, torch.device("cpu"), schedule, None, None, cap_fn=lambda: None)
    mcmc = MCMCStrategy(cap_max=5000)
    assert get_recipe("mcmc").apply_tier(mcmc, opts, 0.05, 1000) is None and mcmc.cap_max == 1000
    params, _ = _toy_params(4)
    loss = torch.tensor(1.0)
    assert get_recipe("default").add_loss_terms(loss, params) is loss
    # simple_trainer's MCMC regularisers: 0.01 x mean opacity (0.5) + 0.01 x mean scale (exp(-3))
    got = float(get_recipe("mcmc").add_loss_terms(loss, params).detach())
    assert got == pytest.approx(1.0 + 0.01 * 0.5 + 0.01 * np.exp(-3.0), rel=1e-6)
    assert get_recipe("mcmc").init_opacity_scale(opts) == (0.5, opts.init_scale * 0.1)
    assert get_recipe("default").init_opacity_scale(opts) == (opts.init_opacity, opts.init_scale)


def test_panoramas_held_out_whole(tmp_path):
    p = make_synthetic_scene(tmp_path, n_cameras=18, width=32, height=24, n_gaussians=500, n_points=100,
                             views_per_frame=2)
    # 9 frames sorted by name: the Mip-NeRF 360 protocol (offset 0) holds out pano_0000 and
    # pano_0008, each with both views
    sc = load_scene(p["aligned"], p["images"], p["views"], eval_every_n=8, eval_offset=0)
    assert sc.test_frames == ["pano_0000", "pano_0008"]
    assert sorted(v.name for v in sc.test) == ["v0/pano_0000.png", "v0/pano_0008.png",
                                               "v1/pano_0000.png", "v1/pano_0008.png"]
    assert len(sc.train) == 14 and not {v.frame for v in sc.train} & set(sc.test_frames)
    # the default holds out an interior frame (index min(8 // 2, (9 - 1) // 2) = 4), never an end
    sc = load_scene(p["aligned"], p["images"], p["views"], eval_every_n=8)
    assert sc.test_frames == ["pano_0004"]
    assert sorted(v.name for v in sc.test) == ["v0/pano_0004.png", "v1/pano_0004.png"]


def test_downscale_scales_intrinsics(scene):
    full = load_scene(scene["aligned"], scene["images"], scene["views"])
    half = load_scene(scene["aligned"], scene["images"], scene["views"], max_side=32)
    assert (full.train[0].width, full.train[0].height) == (64, 48)
    assert (half.train[0].width, half.train[0].height) == (32, 24)
    np.testing.assert_allclose(half.train[0].K[:2], full.train[0].K[:2] / 2, rtol=1e-6)


def test_missing_model_is_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        main(tmp_path / "nope", tmp_path, None, tmp_path / "o", tmp_path / "o.ply", {"iterations": 1})


# ---------------------------------------------------------------- training ----------------------


@pytest.mark.slow  # 150 steps + 2 evaluations: 5.6 s on a quiet 2-core machine, 18-39 s when it is shared
def test_training_improves_heldout_psnr(scene, tmp_path):
    out = tmp_path / "splat"
    ply = tmp_path / "res" / "syn.ply"
    m = main(scene["aligned"], scene["images"], scene["views"], out, ply,
             {"iterations": 150, "eval_steps": [1], "checkpoint_every": 50, "progress": False,
              "sh_degree_interval": 50, "seed": 1, "sky_points": 300})
    first, last = m["evals"][0], m["final"]
    assert m["evals"][0]["step"] == 1 and m["evals"][-1]["step"] == 150
    assert m["n_test_views"] == 2 and m["test_images"] == ["img_0004.png", "img_0012.png"]  # interior frames
    assert last["psnr"] > first["psnr"] + 3.0, m["evals"]
    assert last["psnr"] > 20.0 and 0 < last["ssim"] <= 1
    assert "lpips" not in last or np.isfinite(last["lpips"])
    d = read_splat_ply(ply)
    # 150 steps, one degree per 50: degree 2 at the last step; degree 3 was never trained
    assert d["sh_degree"] == m["sh_degree"] == 2 and m["sh_degree_configured"] == 3
    assert len(d["means"]) == m["num_gaussians"]
    assert np.isfinite(d["means"]).all()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["final"] == m["final"] and saved["final_step"] == 150
    from PIL import Image

    for f in ("renders.png", "curve.png"):
        with Image.open(out / f) as im:
            assert im.format == "PNG" and min(im.size) >= 64, (f, im.format, im.size)
    assert (out / "splat.ply").read_bytes() == ply.read_bytes()  # the copy beside the metrics
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["ckpt_0000100.pt", "ckpt_0000150.pt"]


def test_oom_retries_with_culling_tiers(scene, tmp_path, monkeypatch):
    """A CUDA OOM (simulated) restarts from the last checkpoint with the next culling tier."""
    real = trainer_mod._rasterization()
    calls = {"n": 0}

    def flaky(means, *a, **k):
        calls["n"] += 1
        if calls["n"] == 25:  # once, after the step-20 checkpoint
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(means, *a, **k)

    monkeypatch.setattr(trainer_mod, "_rasterization", lambda: flaky)
    m = main(scene["aligned"], scene["images"], scene["views"], tmp_path / "s", tmp_path / "s.ply",
             {"iterations": 40, "checkpoint_every": 20, "progress": False, "eval_steps": [],
              "oom_tiers": [[0.05, 300], [0.1, 100]], "sky_points": 0})
    assert m["oom_tier"] == 1 and m["final_step"] == 40
    assert m["num_gaussians"] <= 300
    assert (read_splat_ply(tmp_path / "s.ply")["opacities"] > -1e9).all()


def test_oom_last_tier_says_farm_out(scene, tmp_path, monkeypatch):
    def always_oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(trainer_mod, "_rasterization", lambda: always_oom)
    with pytest.raises(SplatForgeError, match="farm the training job out"):
        main(scene["aligned"], scene["images"], scene["views"], tmp_path / "s", tmp_path / "s.ply",
             {"iterations": 10, "progress": False, "oom_tiers": [[0.1, 100]], "sky_points": 0})
    assert not (tmp_path / "s.ply").exists()


def test_mcmc_refused_on_cpu(scene, tmp_path):
    with pytest.raises(InputError, match="mcmc"):
        main(scene["aligned"], scene["images"], scene["views"], tmp_path / "s", tmp_path / "s.ply",
             {"iterations": 5, "strategy": "mcmc", "device": "cpu", "progress": False})


@pytest.mark.slow  # two interpreter start-ups + training: ~15 s idle, ~40 s on the shared 2-core machine
def test_kill_and_resume_subprocess(scene, tmp_path):
    """SIGKILL the CLI after its first checkpoint; the same command resumes and finishes."""
    out = tmp_path / "splat"
    ply = tmp_path / "res.ply"
    iters = 120
    cmd = [sys.executable, "-m", "splatforge_core.train.trainer", "--aligned", str(scene["aligned"]),
           "--images", str(scene["images"]), "--views", str(scene["views"]), "--out", str(out),
           "--ply", str(ply), "--set", f"iterations={iters}", "--set", "checkpoint_every=10",
           "--set", "eval_steps=[]", "--set", "progress=false", "--set", "keep_checkpoints=100",
           "--set", "sky_points=200"]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    try:
        while not list_checkpoints(out / "checkpoints"):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() - t0 < 120, "no checkpoint after 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not ply.exists()
    done = int(list_checkpoints(out / "checkpoints")[-1].stem.split("_")[1])
    assert 10 <= done < iters
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from checkpoint" in r.stderr and f"at step {done} of {iters}" in r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["resumed_from"] == [done] and m["final_step"] == iters
    assert len(read_splat_ply(ply)["means"]) == m["num_gaussians"] > 0


def _one_camera_model(tmp_path, model, params, n_images=2):
    import cv2
    import pycolmap

    (tmp_path / "images").mkdir()
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=1, model=model, width=40, height=30, params=params))
    rng = np.random.default_rng(0)
    for i in range(n_images):
        img = np.zeros((30, 40, 3), np.uint8)
        img[:, ::4] = 255  # vertical lines: radial distortion bends them
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), img)
        rec.add_image_with_trivial_frame(pycolmap.Image(name=f"{i}.png", camera_id=1, image_id=i + 1),
                                         pycolmap.Rigid3d(pycolmap.Rotation3d(np.eye(3)), np.array([i, 0, 0.0])))
    for _ in range(5):
        rec.add_point3D(rng.normal(0, 1, 3) + [0, 0, 5], pycolmap.Track(), np.array([1, 2, 3], np.uint8))
    (tmp_path / "m").mkdir()
    rec.write(str(tmp_path / "m"))
    return tmp_path / "m", tmp_path / "images"


def test_simple_radial_is_undistorted(tmp_path):
    m, imgs = _one_camera_model(tmp_path, "SIMPLE_RADIAL", [35.0, 20.5, 15.5, 0.3])
    sc = load_scene(m, imgs, None, eval_every_n=0)
    v = sc.train[0]
    np.testing.assert_allclose(v.K, [[35, 0, 20.5], [0, 35, 15.5], [0, 0, 1]])
    import cv2

    raw = cv2.cvtColor(cv2.imread(str(imgs / "0.png")), cv2.COLOR_BGR2RGB)
    assert v.image.shape == raw.shape and not np.array_equal(v.image, raw)
    # the centre column (on the principal point's vertical) is unchanged by radial distortion
    np.testing.assert_array_equal(v.image[2:-2, 20], raw[2:-2, 20])  # (edge rows sample outside)


def test_fisheye_model_rejected(tmp_path):
    m, imgs = _one_camera_model(tmp_path, "OPENCV_FISHEYE", [35.0, 35.0, 20.0, 15.0, 0.1, 0, 0, 0])
    with pytest.raises(InputError, match="OPENCV_FISHEYE"):
        load_scene(m, imgs, None)


def test_dispatcher_reports_bad_input(tmp_path):
    from splatforge_core.cli import main as cli_main

    rc = cli_main(["train", "--aligned", str(tmp_path / "nope"), "--images", str(tmp_path), "--out",
                   str(tmp_path / "o"), "--ply", str(tmp_path / "o.ply"), "--set", "iterations=1"])
    assert rc == 1 and not (tmp_path / "o.ply").exists()
    with pytest.raises(SystemExit):
        cli_main(["train", "--help"])


def test_sky_sphere_colours_from_views(scene):
    from splatforge_core.train.init import sky_sphere

    sc = load_scene(scene["aligned"], scene["images"], scene["views"])
    pts, col, c, radius = sky_sphere(sc, 400, 1.5)
    assert pts.shape == (400, 3) and col.shape == (400, 3)
    np.testing.assert_allclose(np.linalg.norm(pts - c, axis=1), radius, rtol=1e-4)
    # synthetic images have a black background: points seen by a camera are sampled dark,
    # points seen by none get the 0.5 grey default
    assert (col < 0.1).all(axis=1).sum() > 50 and np.isclose(col, 0.5).all(axis=1).sum() > 50


# ------------------------------------------------- densification schedule / Gaussian cap ---------


def test_refine_schedule_short_run_floors():
    """Short (CPU) runs get refine_every >= 100 etc.; the 30k schedule is gsplat's."""
    from splatforge_core.train.strategy import refine_schedule as rs

    assert trainer_mod.refine_schedule is rs  # re-exported for existing imports
    assert rs(30_000) == (500, 15_000, 3000, 100)
    assert rs(800) == (100, 600, 500, 100)  # (start, stop, reset_every, every)
    assert rs(2000) == (100, 1500, 500, 100)
    assert rs(800, refine_start=50, refine_stop=70, reset_every=30, refine_every=10) == (50, 70, 30, 10)


def _toy_params(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = {"means": torch.randn(n, 3, generator=g), "scales": torch.full((n, 3), -3.0),
         "quats": torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
         "opacities": torch.zeros(n), "sh0": torch.zeros(n, 1, 3), "shN": torch.zeros(n, 3, 3)}
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in t.items()})
    opts = {k: torch.optim.Adam([{"params": params[k], "lr": 1e-3, "name": k}]) for k in params}
    return params, opts


@pytest.mark.parametrize("cap, expect_grow", [(13, 3), (10, 0), (100, 6)])
def test_budgeted_growth_keeps_cap_and_highest_gradients(cap, expect_grow):
    """At the cap, only the highest-gradient candidates grow; nothing is deleted to make room."""
    params, opts = _toy_params(10)
    from splatforge_core.train.strategy import SkyAwareDefaultStrategy

    st = SkyAwareDefaultStrategy(cap_fn=lambda: cap, refine_start_iter=0, refine_every=1, reset_every=10_000,
                                 grow_grad2d=0.5)
    state = st.initialize_state(scene_scale=10.0)  # all scales 0.05 <= 0.01 * 10: duplicates
    grads = torch.tensor([0.9, 0.1, 0.8, 0.6, 0.2, 0.95, 0.7, 0.3, 0.55, 0.0])  # 6 above 0.5
    state["grad2d"], state["count"] = grads.clone(), torch.ones(10)
    means0 = params["means"].detach().clone()
    n_dupli, n_split = st._grow_gs(params, opts, state, step=1)
    assert n_dupli + n_split == expect_grow and len(params["means"]) == 10 + expect_grow
    assert len(params["means"]) <= max(cap, 10)
    torch.testing.assert_close(params["means"][:10].detach(), means0)  # originals kept in place
    if expect_grow == 3:  # copies of the 3 highest gradients: 0.95, 0.9, 0.8
        new = params["means"][10:].detach()
        want = means0[[5, 0, 2]]
        assert sorted(new[:, 0].tolist()) == sorted(want[:, 0].tolist())


@pytest.mark.slow  # 200 steps + 3 evaluations: ~25 s idle, ~30-55 s on the shared 2-core machine
def test_capped_training_does_not_collapse(scene, tmp_path):
    """Regression (demo collapse): with the Gaussian count at the cap, training must keep
    improving. The old code grew every 25 steps and then deleted the least opaque Gaussians
    down to the cap; that selected for opacity (mean opacity -> 1), deleted the sky sphere
    and freshly split Gaussians, and the held-out PSNR fell (here 20.9 dB at step 100, 17.3 at 150)."""
    m = main(scene["aligned"], scene["images"], scene["views"], tmp_path / "s", tmp_path / "s.ply",
             {"iterations": 200, "eval_steps": [100, 150], "checkpoint_every": 1000, "progress": False,
              "seed": 3, "sky_points": 300, "max_gaussians": 1000, "refine_every": 25, "refine_start": 50,
              "refine_stop": 150, "reset_every": 30, "sh_degree_interval": 100})
    ev = [e["psnr"] for e in m["evals"]]
    assert len(ev) == 3 and m["num_gaussians"] <= 1000
    for a, b in zip(ev, ev[1:]):  # no evaluation may fall more than 0.5 dB below the previous one
        assert b > a - 0.5, m["evals"]
    d = read_splat_ply(tmp_path / "s.ply")
    opa = 1 / (1 + np.exp(-d["opacities"]))
    assert len(opa) <= 1000
    assert (opa > 0.99).mean() < 0.5, "opacities saturated: the cap is selecting for opacity"
    # measured: fixed code 20.98 -> 21.78 -> 22.10 dB; old code 20.85 -> 17.34 -> 18.76 dB
    assert ev[-1] > 21.5, m["evals"]


class _NanGradRow0(torch.autograd.Function):
    """Identity whose backward puts NaN into row 0 of the gradient (a degenerate Gaussian)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        g[0] = float("nan")
        return g


def test_nonfinite_gradients_do_not_poison_the_splat(scene, tmp_path, monkeypatch):
    """One NaN gradient must not turn a Gaussian into NaN for good (seen on the demo on CPU)."""
    real = trainer_mod._rasterization()
    monkeypatch.setattr(trainer_mod, "_rasterization",
                        lambda: lambda means, *a, **k: real(_NanGradRow0.apply(means), *a, **k))
    m = main(scene["aligned"], scene["images"], scene["views"], tmp_path / "s", tmp_path / "s.ply",
             {"iterations": 12, "progress": False, "eval_steps": [], "sky_points": 0})
    assert m["nonfinite_grad_gaussians"] == 12  # Gaussian 0, once per step
    d = read_splat_ply(tmp_path / "s.ply")
    assert all(np.isfinite(d[k]).all() for k in ("means", "scales", "quats", "opacities"))
