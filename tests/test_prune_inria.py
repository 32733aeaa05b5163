"""`splatforge prune --inria DIR` (#16): significance from an Inria folder's training views, the
held-out PSNR curve with random and opacity baselines, on a tiny synthetic scene whose photos are
renders of a known splat (so the right pruning loses nothing)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from splatforge_core import inria
from splatforge_core.errors import InputError
from splatforge_core.formats import read_any
from splatforge_core.prune import cli, load_data
from splatforge_core.splat import write_splat_ply
from splatforge_core.train.data import View
from splatforge_core.viewer import intrinsics_from_fov, look_at_viewmat, render_view

W, H, N_CAMS = 48, 36, 16


def _splat(means, rng, logit=3.0, scale=0.12) -> dict:
    n = len(means)
    return {"means": np.asarray(means, np.float32), "scales": np.full((n, 3), np.log(scale), np.float32),
            "quats": np.tile(np.float32([1, 0, 0, 0]), (n, 1)), "opacities": np.full(n, logit, np.float32),
            "sh0": rng.normal(0, 1.2, (n, 3)).astype(np.float32), "shN": np.zeros((n, 0, 3), np.float32), "sh_degree": 0}


def _cat(a: dict, b: dict) -> dict:
    return {k: (np.concatenate([a[k], b[k]]) if k != "sh_degree" else a[k]) for k in a}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """An Inria folder of 16 cameras circling a coloured blob (photos = renders of ``core``) and a
    splat of ``core`` + as many Gaussians that no camera sees (below the floor, facing away)."""
    rng = np.random.default_rng(0)
    core = _splat(rng.normal(0, 0.35, (150, 3)), rng)
    hidden = _splat(rng.normal([0, 0, -30], 0.5, (150, 3)), rng, logit=4.0)  # opaque, never in view
    root = tmp_path_factory.mktemp("inria")
    K = intrinsics_from_fov(45, W, H)
    views = []
    for i in range(N_CAMS):
        a = 2 * math.pi * i / N_CAMS
        vm = look_at_viewmat([3 * math.cos(a), 3 * math.sin(a), 0.8], [0, 0, 0])
        views.append(View(f"cam{i:02d}", f"cam{i:02d}", render_view(core, vm, K, W, H), K.astype(np.float32),
                          vm.astype(np.float32)))
    inria.write_dataset(views, root)
    full = _cat(core, hidden)
    write_splat_ply(root / "point_cloud.ply", full["means"], full["scales"], full["quats"], full["opacities"],
                    full["sh0"], full["shN"])
    return root


def test_inria_views_split_like_the_trainer(scene: Path):
    data = load_data(inria_dir=scene, max_side=W)
    assert len(data.train) == 14 and len(data.test) == 2  # every 8th of 16 held out
    ref = inria.load_views(scene, eval_every_n=8)
    assert [v.name for v in data.test] == [v.name for v in ref.test]


def test_prune_on_an_inria_folder_keeps_what_the_cameras_see(scene: Path, tmp_path: Path, capsys):
    """keep 0.5 drops exactly the never-seen half: held-out PSNR unchanged, while random and
    opacity ranking (the hidden Gaussians are the more opaque) lose the object."""
    out, curve = tmp_path / "pruned.ply", tmp_path / "curve.json"
    assert cli([str(scene / "point_cloud.ply"), str(out), "--keep", "0.5", "--inria", str(scene), "--max-side", str(W),
                "--curve", str(curve), "--baselines"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["gaussians_in"] == 300 and info["gaussians_out"] == 150 and info["significance_views"] == 14
    kept = read_any(out)
    assert len(kept["means"]) == 150 and float(np.max(np.abs(kept["means"][:, 2]))) < 5  # only the core
    c = json.loads(curve.read_text())["curve"]
    assert c["keep"] == [1.0, 0.5, 0.25, 0.1] and c["heldout_views"] == 2
    m = c["methods"]
    assert set(m) == {"significance", "random", "opacity"}
    assert m["significance"][0] > 35  # the splat renders the photos (PNG rounding only)
    assert m["significance"][1] == pytest.approx(m["significance"][0], abs=0.5)
    assert m["opacity"][1] < m["significance"][1] - 10 and m["random"][1] < m["significance"][1] - 3
    assert m["significance"][3] < m["significance"][2] < m["significance"][1]  # fewer of the core: worse


@pytest.mark.hostile(cls="prune", expect="clear_error")
def test_inria_folder_without_cameras_json(tmp_path: Path, scene: Path):
    bad = tmp_path / "nocams"
    (bad / "images").mkdir(parents=True)
    with pytest.raises(InputError, match="cameras.json"):
        cli([str(scene / "point_cloud.ply"), str(tmp_path / "o.ply"), "--keep", "0.5", "--inria", str(bad)])
    assert not (tmp_path / "o.ply").exists()


@pytest.mark.hostile(cls="prune", expect="clear_error")
def test_scene_dir_that_is_an_inria_folder_is_named(scene: Path):
    with pytest.raises(InputError, match="--inria"):
        load_data(scene_dir=scene)
    with pytest.raises(InputError, match="exactly one"):
        load_data(scene_dir=scene, inria_dir=scene)


@pytest.mark.slow  # 4 finetunes of 40 steps at 48x36 + renders: ~15 s on a loaded 2-core machine
def test_finetune_after_pruning_recovers_and_never_sees_held_out_views(scene: Path, tmp_path: Path, capsys):
    """``--finetune 40`` raises the held-out PSNR of the 0.25 / 0.1 pruned splats (the remaining
    Gaussians grow into the gaps), and the finetuned splat does not depend on the held-out photos."""
    from splatforge_core.prune import finetune_fn, prune_splat, significance

    out, curve = tmp_path / "pruned.ply", tmp_path / "curve.json"
    assert cli([str(scene / "point_cloud.ply"), str(out), "--keep", "0.25", "--inria", str(scene), "--max-side", str(W),
                "--curve", str(curve), "--finetune", "40"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["finetune_steps"] == 40 and info["gaussians_out"] == 75
    m = json.loads(curve.read_text())["curve"]["methods"]
    ft = m["significance+finetune40"]
    # measured with the finetune's learning-rate warm-up (finetune.py): +1.42 and +0.82 dB at keep 0.25 / 0.1
    assert ft[2] > m["significance"][2] + 0.5 and ft[3] > m["significance"][3] + 0.5, m
    data = load_data(inria_dir=scene, max_side=W)
    splat = read_any(scene / "point_cloud.ply")
    p = prune_splat(splat, significance(splat, data.train), 0.25)
    a = finetune_fn(data, 10)(p)
    for v in data.test:
        v.image[:] = 255 - v.image  # other held-out photos: the finetune must not change
    b = finetune_fn(data, 10)(p)
    np.testing.assert_array_equal(a["sh0"], b["sh0"])
    assert not np.array_equal(a["sh0"], p["sh0"])
