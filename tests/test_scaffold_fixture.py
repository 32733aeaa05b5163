"""A Scaffold-GS output folder made with independent code (plain torch + plyfile + argparse, as the
reference trainer writes it) loads with :func:`load_scaffold` and renders (issue #15 gate)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement
from torch import nn

from splatforge_core.scaffold.layout import load_scaffold
from splatforge_core.scaffold.model import anchor_tensors, generate_neural_gaussians
from splatforge_core.scaffold.render import render_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # the reference format is TorchScript

F, K, APP, N = 32, 10, 32, 40  # the reference defaults feat_dim, n_offsets, appearance_dim


class Embedding(nn.Module):
    """Like the reference's scene/embedding.py: a module holding an nn.Embedding."""

    def __init__(self, n, d):
        super().__init__()
        self.embedding = nn.Embedding(n, d)

    def forward(self, x):
        return self.embedding(x)


def _write_reference_folder(root):
    torch.manual_seed(3)
    mlp_opacity = nn.Sequential(nn.Linear(F + 3, F), nn.ReLU(True), nn.Linear(F, K), nn.Tanh())
    mlp_cov = nn.Sequential(nn.Linear(F + 3, F), nn.ReLU(True), nn.Linear(F, 7 * K))
    mlp_color = nn.Sequential(nn.Linear(F + 3 + APP, F), nn.ReLU(True), nn.Linear(F, 3 * K), nn.Sigmoid())
    emb = Embedding(5, APP)
    it = root / "point_cloud" / "iteration_7000"
    it.mkdir(parents=True)
    for m, name, ex in ((mlp_opacity, "opacity_mlp.pt", torch.rand(1, F + 3)), (mlp_cov, "cov_mlp.pt", torch.rand(1, F + 3)),
                        (mlp_color, "color_mlp.pt", torch.rand(1, F + 3 + APP)),
                        (emb, "embedding_appearance.pt", torch.zeros((1,), dtype=torch.long))):
        m.eval()
        torch.jit.trace(m, ex).save(str(it / name))
    g = torch.Generator().manual_seed(4)
    anchor = torch.rand(N, 3, generator=g) - 0.5
    offset = torch.randn(N, K, 3, generator=g)
    feat = torch.randn(N, F, generator=g)
    scaling = torch.log(torch.full((N, 6), 0.08))
    rotation = torch.zeros(N, 4)
    rotation[:, 0] = 1
    opacity = torch.logit(torch.full((N, 1), 0.1))
    # GaussianModel.save_ply: offsets transposed then flattened
    off_t = offset.transpose(1, 2).flatten(start_dim=1).contiguous()
    names = ["x", "y", "z", "nx", "ny", "nz"] + [f"f_offset_{i}" for i in range(3 * K)] + [
        f"f_anchor_feat_{i}" for i in range(F)] + ["opacity"] + [f"scale_{i}" for i in range(6)] + [f"rot_{i}" for i in range(4)]
    attrs = torch.cat([anchor, torch.zeros(N, 3), off_t, feat, opacity, scaling, rotation], dim=1).numpy()
    el = np.empty(N, dtype=[(n, "f4") for n in names])
    el[:] = list(map(tuple, attrs))
    PlyData([PlyElement.describe(el, "vertex")]).write(str(it / "point_cloud.ply"))
    ns = argparse.Namespace(sh_degree=3, feat_dim=F, n_offsets=K, voxel_size=0.001, update_depth=3, update_init_factor=16,
                            update_hierachy_factor=4, use_feat_bank=False, source_path="/data/scene", model_path=str(root),
                            images="images", resolution=-1, white_background=False, data_device="cuda", eval=True, lod=0,
                            appearance_dim=APP, lowpoly=False, ds=1, ratio=1, undistorted=False, add_opacity_dist=False,
                            add_cov_dist=False, add_color_dist=False)
    (root / "cfg_args").write_text(str(ns))
    cams = [{"id": 0, "img_name": "a", "width": 48, "height": 32, "position": [0.0, 0.0, -3.0],
             "rotation": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], "fy": 40.0, "fx": 40.0}]
    (root / "cameras.json").write_text(json.dumps(cams))
    mods = {"opacity": mlp_opacity, "cov": mlp_cov, "color": mlp_color, "appearance": emb}
    return mods, anchor, offset, feat, scaling


def test_reference_layout_fixture_loads_and_renders(tmp_path):
    mods, anchor, offset, feat, scaling = _write_reference_folder(tmp_path)
    model = load_scaffold(tmp_path)
    assert (model.config.feat_dim, model.config.n_offsets, model.config.appearance_dim) == (F, K, APP)
    assert model.iteration_dir.name == "iteration_7000"
    np.testing.assert_array_equal(model.anchors.offset, offset.numpy())
    np.testing.assert_array_equal(model.anchors.anchor_feat, feat.numpy())
    np.testing.assert_array_equal(model.anchors.anchor, anchor.numpy())
    cam = model.cameras[0]
    vm, Kmat = cam.cam_from_world, cam.K()
    # the loaded TorchScript gives the same neural Gaussians as the original modules
    with torch.no_grad():
        t = anchor_tensors(model.anchors)
        c = torch.tensor(cam.position, dtype=torch.float32)
        ga = generate_neural_gaussians(t, model.mlps, model.config, c, camera_index=2)
        gb = generate_neural_gaussians(t, mods, model.config, c, camera_index=2)
    assert ga["xyz"].shape[0] > 0
    for key in ("xyz", "color", "opacity", "scaling", "rot"):
        torch.testing.assert_close(ga[key], gb[key])
    img = render_model(model, vm, Kmat, cam.width, cam.height, camera_index=2)
    assert img.shape == (32, 48, 3) and img.max() > 0.05 and np.isfinite(img).all()
    other = render_model(model, vm, Kmat, cam.width, cam.height, camera_index=4)
    assert np.abs(other - img).max() > 1e-4  # the appearance embedding is used
