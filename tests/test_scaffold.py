"""Scaffold-GS layout (anchor PLY, cfg_args), neural-Gaussian generation and rendering (issue #15)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from plyfile import PlyData

from splatforge_core.errors import InputError
from splatforge_core.scaffold.layout import (
    Anchors, ScaffoldConfig, ScaffoldModel, anchor_property_names, load_scaffold, parse_cfg_args_text, read_anchor_ply,
    read_cfg_args, save_scaffold, write_anchor_ply,
)
from splatforge_core.scaffold.model import anchor_tensors, build_mlps, generate_neural_gaussians
from splatforge_core.scaffold.render import camera_center, render_model


def random_anchors(n: int, f: int, k: int, seed: int = 0) -> Anchors:
    r = np.random.default_rng(seed)
    return Anchors(r.normal(size=(n, 3)).astype(np.float32), r.normal(size=(n, k, 3)).astype(np.float32),
                   r.normal(size=(n, f)).astype(np.float32), np.full((n, 1), -2.197, np.float32),
                   np.log(r.uniform(0.05, 0.2, size=(n, 6))).astype(np.float32),
                   np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)))


# --------------------------------------------------------------------------- anchor PLY


def test_anchor_ply_roundtrip_and_transposed_offsets(tmp_path):
    a = random_anchors(7, 8, 3)
    p = tmp_path / "point_cloud.ply"
    write_anchor_ply(p, a)
    v = PlyData.read(str(p))["vertex"]
    assert [q.name for q in v.properties] == anchor_property_names(8, 3)
    assert all(v[q.name].dtype == np.float32 for q in v.properties)
    # stored transposed: f_offset_0..k-1 are the x of the k offsets, then the y, then the z
    np.testing.assert_array_equal(v["f_offset_1"], a.offset[:, 1, 0])
    np.testing.assert_array_equal(v["f_offset_4"], a.offset[:, 1, 1])
    np.testing.assert_array_equal(v["nx"], 0)
    b = read_anchor_ply(p, feat_dim=8, n_offsets=3)
    for name in ("anchor", "offset", "anchor_feat", "opacity", "scaling", "rotation"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name))


@pytest.mark.hostile(cls="scaffold", expect="clear_error")
def test_anchor_ply_bad_property_order(tmp_path):
    a = random_anchors(4, 4, 2)
    p = tmp_path / "point_cloud.ply"
    write_anchor_ply(p, a)
    raw = p.read_bytes()
    swapped = raw.replace(b"property float scale_0\n", b"property float TMP\n").replace(
        b"property float opacity\n", b"property float scale_0\n").replace(b"property float TMP\n", b"property float opacity\n")
    p.write_bytes(swapped)
    with pytest.raises(InputError, match=r"point_cloud\.ply.*property \d+ is 'scale_0'"):
        read_anchor_ply(p)


@pytest.mark.hostile(cls="scaffold", expect="clear_error")
@pytest.mark.parametrize("feat_dim,n_offsets,what", [(16, 2, "feat_dim=16"), (4, 5, "n_offsets=5")])
def test_anchor_ply_counts_disagree_with_cfg_args(tmp_path, feat_dim, n_offsets, what):
    p = tmp_path / "point_cloud.ply"
    write_anchor_ply(p, random_anchors(3, 4, 2))
    with pytest.raises(InputError, match=rf"point_cloud\.ply.*{what}"):
        read_anchor_ply(p, feat_dim=feat_dim, n_offsets=n_offsets)


@pytest.mark.hostile(cls="scaffold", expect="clear_error")
def test_anchor_ply_nan(tmp_path):
    a = random_anchors(5, 4, 2)
    a.anchor_feat[3, 2] = np.nan
    p = tmp_path / "point_cloud.ply"
    write_anchor_ply(p, a)
    with pytest.raises(InputError, match=r"point_cloud\.ply.*f_anchor_feat_2.*NaN"):
        read_anchor_ply(p)


@pytest.mark.hostile(cls="scaffold", expect="clear_error")
def test_anchor_ply_vanilla_3dgs_refused(tmp_path, shared_data):
    with pytest.raises(InputError, match=r"inria3dgs_sh3_9080\.ply.*not a Scaffold-GS anchor PLY"):
        read_anchor_ply(shared_data / "ply" / "inria3dgs_sh3_9080.ply")


# --------------------------------------------------------------------------- cfg_args


def test_cfg_args_parses_printed_namespace():
    ns = argparse.Namespace(feat_dim=32, n_offsets=10, voxel_size=0.001, eval=True, source_path="/a b/'q'", lod=0,
                            resolution=-1, data_device="cuda", white_background=False, ratio=None, test_iterations=[-1, 7000],
                            scale=-1.5e-3)
    assert parse_cfg_args_text(str(ns)) == vars(ns)


def test_cfg_args_of_shared_inria_run(shared_data):
    cfg = read_cfg_args(shared_data / "snowmiku" / "cfg_args")
    assert cfg["sh_degree"] == 3 and cfg["white_background"] is False and cfg["source_path"].startswith("D:\\noname")


@pytest.mark.hostile(cls="scaffold", expect="clear_error")
@pytest.mark.parametrize("text", [
    "Namespace(feat_dim=__import__('os').system('true'))",
    "Namespace(feat_dim=32, n_offsets=open('/etc/passwd').read())",
    "Namespace(**{'feat_dim': 32})",
    "print('x')",
    "Namespace(feat_dim=32",
    "Namespace(x=[1] * 10)",
], ids=["import-call", "open-call", "kwargs", "not-namespace", "syntax", "operator"])
def test_cfg_args_with_code_refused(tmp_path, text):
    p = tmp_path / "cfg_args"
    p.write_text(text)
    with pytest.raises(InputError, match=r"cfg_args"):
        read_cfg_args(p)


@pytest.mark.hostile(cls="scaffold", expect="clear_error")
def test_cfg_args_wrong_type(tmp_path):
    (tmp_path / "point_cloud.ply").write_bytes(b"")
    write_anchor_ply(tmp_path / "point_cloud.ply", random_anchors(2, 4, 2))
    (tmp_path / "cfg_args").write_text("Namespace(feat_dim='32', n_offsets=2)")
    with pytest.raises(InputError, match=r"cfg_args: feat_dim='32' must be an integer"):
        load_scaffold(tmp_path)


# --------------------------------------------------------------------------- generation vs a float64 reference


def _np_mlp(seq, x):
    """Evaluate an nn.Sequential of Linear/ReLU/Tanh/Sigmoid/Softmax in float64 numpy."""
    for m in seq:
        if isinstance(m, torch.nn.Linear):
            x = x @ m.weight.detach().double().numpy().T + m.bias.detach().double().numpy()
        elif isinstance(m, torch.nn.ReLU):
            x = np.maximum(x, 0)
        elif isinstance(m, torch.nn.Tanh):
            x = np.tanh(x)
        elif isinstance(m, torch.nn.Sigmoid):
            x = 1 / (1 + np.exp(-x))
        elif isinstance(m, torch.nn.Softmax):
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            x = e / e.sum(axis=-1, keepdims=True)
        else:  # pragma: no cover
            raise TypeError(m)
    return x


def _reference_gaussians(a: Anchors, mlps, cfg: ScaffoldConfig, cam: np.ndarray, cam_idx: int):
    """Per-anchor float64 loop written from the paper / reference description, independent of model.py."""
    out = []
    emb = mlps["appearance"].weight.detach().double().numpy()[cam_idx] if "appearance" in mlps else None
    for i in range(a.n):
        d = a.anchor[i].astype(np.float64) - cam
        dist = np.linalg.norm(d)
        view = d / dist
        f = a.anchor_feat[i].astype(np.float64)
        if cfg.use_feat_bank:
            w = _np_mlp(mlps["feature_bank"], np.concatenate([view, [dist]])[None])[0]
            F = f.size
            f = np.tile(f[::4], 4) * w[0] + np.tile(f[::2], 2) * w[1] + f * w[2]
            assert f.size == F
        base = np.concatenate([f, view])
        dbase = np.concatenate([f, view, [dist]])
        op = _np_mlp(mlps["opacity"], (dbase if cfg.add_opacity_dist else base)[None])[0]
        cin = dbase if cfg.add_color_dist else base
        if emb is not None:
            cin = np.concatenate([cin, emb])
        col = _np_mlp(mlps["color"], cin[None])[0].reshape(cfg.n_offsets, 3)
        cov = _np_mlp(mlps["cov"], (dbase if cfg.add_cov_dist else base)[None])[0].reshape(cfg.n_offsets, 7)
        s = np.exp(a.scaling[i].astype(np.float64))
        for j in range(cfg.n_offsets):
            if op[j] > 0:
                q = cov[j, 3:]
                out.append(np.concatenate([a.anchor[i] + a.offset[i, j] * s[:3], col[j], [op[j]],
                                           s[3:] / (1 + np.exp(-cov[j, :3])), q / np.linalg.norm(q)]))
    return np.array(out)


@pytest.mark.parametrize("variant", ["plain", "dist+appearance", "feat_bank"])
def test_generation_matches_float64_reference(variant):
    torch.manual_seed(0)
    cfg = ScaffoldConfig(feat_dim=8, n_offsets=4, appearance_dim=4 if variant == "dist+appearance" else 0,
                         add_opacity_dist=variant != "plain", add_cov_dist=variant != "plain",
                         add_color_dist=variant != "plain", use_feat_bank=variant == "feat_bank")
    mlps = build_mlps(cfg, n_cameras=3)
    a = random_anchors(12, 8, 4, seed=1)
    cam = np.array([0.3, -0.2, -4.0])
    ref = _reference_gaussians(a, mlps, cfg, cam, 2)
    t = anchor_tensors(a, dtype=torch.float64)
    m64 = {k: m.double() for k, m in mlps.items()}
    with torch.no_grad():
        g = generate_neural_gaussians(t, m64, cfg, torch.tensor(cam), camera_index=2)
    got = torch.cat([g["xyz"], g["color"], g["opacity"], g["scaling"], g["rot"]], dim=1).numpy()
    assert 0 < got.shape[0] < 12 * 4  # the tanh opacity drops some and keeps some
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    assert g["mask"].shape == (48,) and int(g["mask"].sum()) == got.shape[0]


def _tiny_model(appearance_dim=0, seed=0):
    torch.manual_seed(seed)
    cfg = ScaffoldConfig(feat_dim=8, n_offsets=4, appearance_dim=appearance_dim)
    a = random_anchors(30, 8, 4, seed=seed)
    a.anchor *= 0.5
    return ScaffoldModel(cfg, a, build_mlps(cfg, n_cameras=2))


def _look_at_origin(dist=4.0):
    vm = np.eye(4, dtype=np.float32)
    vm[2, 3] = dist  # camera at (0, 0, -dist) looking along +z
    K = np.array([[40, 0, 24], [0, 40, 16], [0, 0, 1]], np.float32)
    return vm, K


def test_render_cpu_shows_the_anchors():
    model = _tiny_model()
    vm, K = _look_at_origin()
    img = render_model(model, vm, K, 48, 32)
    assert img.shape == (32, 48, 3) and img.dtype == np.float32
    assert img.max() > 0.05  # something rendered over the black background
    np.testing.assert_allclose(camera_center(torch.tensor(vm)).numpy(), [0, 0, -4.0])
    white = render_model(model, vm, K, 48, 32, background=(1.0, 1.0, 1.0))
    assert white[0, 0].min() > img[0, 0].max() - 1e-6  # the background shows where the splat is thin


def test_save_load_roundtrip_renders_identically(tmp_path):
    model = _tiny_model(appearance_dim=3)
    vm, K = _look_at_origin()
    before = render_model(model, vm, K, 48, 32, camera_index=1)
    save_scaffold(tmp_path / "run", model, iteration=30)
    assert sorted(p.name for p in (tmp_path / "run" / "point_cloud" / "iteration_30").iterdir()) == [
        "color_mlp.pt", "cov_mlp.pt", "embedding_appearance.pt", "opacity_mlp.pt", "point_cloud.ply"]
    loaded = load_scaffold(tmp_path / "run")
    assert loaded.config.appearance_dim == 3 and loaded.anchors.n == 30
    after = render_model(loaded, vm, K, 48, 32, camera_index=1)
    np.testing.assert_allclose(after, before, atol=1e-6)


@pytest.mark.hostile(cls="scaffold", expect="clear_error")
def test_mlp_that_disagrees_with_cfg_args(tmp_path):
    save_scaffold(tmp_path / "run", _tiny_model(), iteration=1)
    txt = (tmp_path / "run" / "cfg_args").read_text().replace("n_offsets=4", "n_offsets=5")
    (tmp_path / "run" / "cfg_args").write_text(txt)
    with pytest.raises(InputError, match=r"point_cloud\.ply.*n_offsets=5"):
        load_scaffold(tmp_path / "run")
    (tmp_path / "run" / "cfg_args").write_text(txt.replace("n_offsets=5", "n_offsets=4").replace("feat_dim=8", "feat_dim=8"))
    (tmp_path / "run" / "point_cloud" / "iteration_1" / "cov_mlp.pt").write_bytes(b"not torchscript")
    with pytest.raises(InputError, match=r"cov_mlp\.pt: not a TorchScript module"):
        load_scaffold(tmp_path / "run")
