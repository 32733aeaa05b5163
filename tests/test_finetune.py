"""Finetune of a trained splat (splatforge_core.finetune): loss goes down, held-out views unused, STE, errors."""

import dataclasses

import numpy as np
import pytest
import torch

from splatforge_core.errors import InputError
from splatforge_core.inria import load_views
from splatforge_core.splat import read_splat_ply
from splatforge_core.finetune import FinetuneOptions, evaluate, finetune, straight_through
from splatforge_core.train.synthetic_inria import make_inria_folder


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("inria")
    make_inria_folder(root, n=150, sh_degree=2, n_views=9, size=32, seed=3)
    return root, load_views(root, eval_every_n=8), read_splat_ply(root / "point_cloud.ply")


def _perturbed(splat, seed=1):
    rng = np.random.default_rng(seed)
    out = dict(splat)
    out["sh0"] = splat["sh0"] + rng.normal(0, 0.3, splat["sh0"].shape).astype(np.float32)
    return out


def test_finetune_from_perturbed_splat_recovers_views(scene):
    _, data, splat = scene
    assert data.test and data.train
    exact = evaluate(splat, data.train)["psnr"]
    pert = _perturbed(splat)
    before = evaluate(pert, data.train)["psnr"]
    out, log = finetune(pert, data, 12, options=FinetuneOptions(sh0_lr=0.03), device="cpu")
    after = evaluate(out, data.train)["psnr"]
    assert exact > 40 and before < exact - 10
    assert after > before + 1.0, (before, after)
    assert log["iterations"] == 12 and log["loss_last"] < log["loss_first"] and not log["quantisation_aware"]
    assert out["sh_degree"] == splat["sh_degree"] and out["shN"].shape == splat["shN"].shape
    assert not np.array_equal(out["sh0"], pert["sh0"])


def test_held_out_views_never_used_and_seeded(scene):
    """Same seed -> identical result; garbage in the held-out images changes nothing."""
    _, data, splat = scene
    spoilt = dataclasses.replace(data, test=[dataclasses.replace(v, image=np.full_like(v.image, 255))
                                             for v in data.test])
    pert = _perturbed(splat)
    a, _ = finetune(pert, spoilt, 3, device="cpu")
    b, _ = finetune(pert, list(data.train), 3, device="cpu", scene_scale=data.scene_scale)
    for k in ("means", "scales", "quats", "opacities", "sh0", "shN"):
        np.testing.assert_array_equal(a[k], b[k])


def test_straight_through_estimator():
    x = torch.tensor([0.12, -0.37, 0.5], requires_grad=True)
    y = straight_through(x, lambda t: torch.round(t * 10) / 10)
    assert torch.equal(y.detach(), torch.tensor([0.1, -0.4, 0.5]))
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([1.0, 2.0, 3.0]))


def test_qat_trains_the_float_coefficients(scene):
    _, data, splat = scene
    grid = 0.05
    out, log = finetune(splat, data, 2, quantise=lambda t: torch.round(t / grid) * grid, device="cpu")
    assert log["quantisation_aware"] and not np.array_equal(out["shN"], splat["shN"])
    assert not np.allclose(out["shN"] / grid, np.round(out["shN"] / grid))  # floats kept, not snapped


def test_bad_arguments(scene):
    _, data, splat = scene
    same, log = finetune(splat, data, 0, device="cpu")
    np.testing.assert_array_equal(same["shN"], splat["shN"])
    assert log["iterations"] == 0
    with pytest.raises(InputError, match="iterations"):
        finetune(splat, data, -1)
    with pytest.raises(InputError, match="no training views"):
        finetune(splat, [], 1, scene_scale=1.0)
    with pytest.raises(InputError, match="scene scale"):
        finetune(splat, list(data.train), 1)
    with pytest.raises(InputError, match="lacks"):
        finetune({"means": splat["means"]}, data, 1)
    with pytest.raises(InputError, match="no views"):
        evaluate(splat, [])
