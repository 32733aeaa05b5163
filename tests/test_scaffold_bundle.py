"""Preset ``qat-bundle`` (#15): Scaffold-GS bundles (packing, validation, hostile members) and int8 anchor
features after a QAT finetune (four-way report, bit-exact decode that the Scaffold renderer loads).

The scene is synthetic: a random Scaffold-GS model (F = 8, k = 4, 60 anchors, the reference MLP
shapes, TorchScript traced by :func:`save_scaffold` into the trainer's output layout) and 9 views of
32 px rendered from the model itself, so the input reproduces its views; the finetunes are a few
steps long, enough to exercise the pipeline (the quality gates are measured on the demo scene,
benchmarks/results/splatbench.md).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import plyfile
import pytest
import torch

from splatforge_core.cli import main as cli_main
from splatforge_core.codec import decompress, info, main
from splatforge_core.codec import scaffold_bundle as sb
from splatforge_core.codec.bundle import open_bundle
from splatforge_core.errors import InputError
from splatforge_core.inria import load_views, write_dataset
from splatforge_core.scaffold.layout import (Anchors, ScaffoldConfig, ScaffoldModel, load_scaffold, read_anchor_ply,
                                             save_scaffold)
from splatforge_core.scaffold.model import build_mlps
from splatforge_core.scaffold.render import render_model
from splatforge_core.splat import write_splat_ply
from splatforge_core.train.data import View
from splatforge_core.train.synthetic import look_at_cam_from_world, make_synthetic_scene

ITERS = 3
F, K, N = 8, 4, 60


def _model(seed: int = 0, **cfg_kw) -> ScaffoldModel:
    torch.manual_seed(seed)
    r = np.random.default_rng(seed)
    cfg = ScaffoldConfig(feat_dim=F, n_offsets=K, **{"appearance_dim": 0, **cfg_kw})
    feat = r.normal(size=(N, F)).astype(np.float32)
    feat[:, 1] = np.abs(feat[:, 1]) + 2.0  # one channel far from zero: the zero-point grid wins there
    a = Anchors((0.5 * r.normal(size=(N, 3))).astype(np.float32), r.normal(size=(N, K, 3)).astype(np.float32), feat,
                np.full((N, 1), -2.197, np.float32), np.log(r.uniform(0.05, 0.2, size=(N, 6))).astype(np.float32),
                np.tile(np.array([1, 0, 0, 0], np.float32), (N, 1)))
    return ScaffoldModel(cfg, a, build_mlps(cfg, n_cameras=4))


def make_scaffold_scene(root: Path, n_views: int = 9, size: int = 32, seed: int = 0, **cfg_kw) -> ScaffoldModel:
    """The trainer's output layout (point_cloud/iteration_30/, cfg_args) + images/ and cameras.json
    rendered from the model on a ring at 3.5 m; view i is frame f{i:03d}."""
    model = _model(seed, **cfg_kw)
    fl = size / 2 / math.tan(math.radians(30))
    Km = np.array([[fl, 0, size / 2], [0, fl, size / 2], [0, 0, 1]], np.float32)
    views = []
    for i in range(n_views):
        ang = 2 * math.pi * i / n_views
        vm = np.eye(4, dtype=np.float32)
        vm[:3] = look_at_cam_from_world(np.array([3.5 * math.cos(ang), 3.5 * math.sin(ang), 0.8]), np.zeros(3))
        img = render_model(model, vm, Km, size, size)
        views.append(View(f"v{i:03d}.png", f"f{i:03d}", (img * 255 + 0.5).astype(np.uint8), Km.copy(), vm))
    write_dataset(views, root)
    save_scaffold(root, model, iteration=30)
    return model


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    root = tmp_path_factory.mktemp("qatb")
    scene = root / "scene"
    model = make_scaffold_scene(scene)
    out = root / "out.ply"
    rep = main(scene, out, root / "report.json", sb.PRESET, {"finetune_iters": ITERS})
    return scene, out, rep, model


# --------------------------------------------------------------------------- the preset


def test_report_has_the_design_fields_and_four_way(encoded):
    scene, out, rep, _ = encoded
    for k in ("status", "size_bytes_in", "size_bytes_out", "ply_save_pct", "delta_psnr_db", "feat_compress_x",
              "projected_ply_save_pct", "constant_strip_bitexact", "finetune_iters", "train_wall_secs", "four_way"):
        assert k in rep, k
    assert rep["status"] == "ok" and not rep["lossless"] and rep["finetune_iters"] == ITERS
    assert rep["constants_detected"] == ["nx", "ny", "nz", "opacity", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert rep["size_bytes_in"] == (scene / "point_cloud" / "iteration_30" / "point_cloud.ply").stat().st_size
    assert rep["size_bytes_out"] == out.stat().st_size
    # 6 + 12 + 8 + 1 + 6 + 4 = 37 floats (148 bytes) -> 21 floats + 8 chars (92 bytes), minus the header comments
    assert rep["projected_ply_save_pct"] == pytest.approx(100 * (3 * F + 32) / (4 * 37), abs=1e-3)
    assert 20 < rep["ply_save_pct"] < rep["projected_ply_save_pct"]  # 60 anchors: the header comments weigh
    fw = rep["four_way"]
    assert set(fw) == {"input", "posthoc_int8", "qat", "fp32_finetune"}
    assert rep["delta_psnr_db"] == pytest.approx(fw["qat"]["psnr"] - fw["input"]["psnr"], abs=2e-4)
    # the model renders its own views (uint8 rounding only); int8 features cost a little, measurably
    assert fw["input"]["psnr"] > 45 and fw["posthoc_int8"]["psnr"] < fw["input"]["psnr"]
    assert rep["posthoc_int8_delta_db"] == pytest.approx(fw["posthoc_int8"]["psnr"] - fw["input"]["psnr"], abs=2e-4)
    assert rep["feat_quant"]["zero_point_channels"] >= 1 and rep["test_frames"] == ["f004"]
    assert rep["finetune_trained"] == ["f_anchor_feat", "f_offset", "scale"]
    assert json.loads((out.parent / "report.json").read_text())["feat_compress_x"] == rep["feat_compress_x"]


def test_output_is_a_valid_anchor_ply_with_char_features(encoded):
    _, out, _, _ = encoded
    v = plyfile.PlyData.read(str(out))["vertex"]
    assert v.data.dtype["f_anchor_feat_0"] == np.int8 and v.data.dtype["f_offset_0"] == np.float32
    assert "nx" not in v.data.dtype.names and "opacity" not in v.data.dtype.names and len(v.data) == N
    assert info(out)["codec"] == sb.PRESET and info(out)["sh_degree"] is None


def test_decode_is_bit_exact_loads_in_the_renderer_and_is_what_was_evaluated(encoded, tmp_path):
    scene, out, rep, model = encoded
    assert decompress(out, tmp_path / "point_cloud.ply")["codec"] == sb.PRESET
    dec = read_anchor_ply(tmp_path / "point_cloud.ply", F, K)
    inner, recs = sb._stored(out)
    s, z = sb.read_quant_meta(inner)
    codes = np.stack([recs[f"f_anchor_feat_{j}"] for j in range(F)], 1)
    want = (codes.astype(np.float32) - z.astype(np.float32)) * s
    np.testing.assert_array_equal(dec.anchor_feat.view(np.uint32), want.view(np.uint32))
    np.testing.assert_array_equal(dec.anchor, model.anchors.anchor)  # never trained
    np.testing.assert_array_equal(dec.rotation, model.anchors.rotation)
    # the decoded PLY + the bundle's MLPs and cfg_args is a Scaffold-GS model that scores psnr_canonical
    it = scene / "point_cloud" / "iteration_30"
    for f in ("opacity_mlp.pt", "cov_mlp.pt", "color_mlp.pt"):
        shutil.copy(it / f, tmp_path / f)
    loaded = load_scaffold(tmp_path, cfg_args=scene / "cfg_args")
    test = load_views(scene).test
    ev = sb.evaluate_anchors(loaded, loaded.anchors, test, device="cpu")
    assert ev["psnr"] == pytest.approx(rep["four_way"]["qat"]["psnr"], abs=1e-3)


def test_quantiser_grids_and_the_choice_between_them():
    rng = np.random.default_rng(1)
    x = np.stack([rng.normal(0, 1, 500), rng.uniform(3, 5, 500)], 1).astype(np.float32)
    zp, mse = sb.choose_zero_points(x)
    # a channel far from zero: the zero-point grid spends its 256 levels on [0, 5], the symmetric one on [-5, 5]
    assert zp[1] and mse["mse_chosen"] <= min(mse["mse_symmetric"], mse["mse_zero_point"])
    s_sym, _ = sb.feat_grid(x, np.zeros(2, bool))
    s_zp, _ = sb.feat_grid(x, np.ones(2, bool))
    assert s_zp[1] < 0.51 * s_sym[1]
    s, z = sb.feat_grid(x, zp)
    q = sb.quantise_feat(x, s, z)
    deq = sb.dequantise_feat(q, s, z)
    assert np.all((-128 <= z) & (z <= 127)) and q.dtype == np.int8
    assert np.all(np.abs(deq - x) <= s / 2 * 1.0001)
    # the QAT forward quantiser is the same grid
    got = sb.fake_quant_torch(zp)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, deq, atol=1e-6)


def test_qat_finetune_lowers_the_loss_of_a_perturbed_model(encoded):
    scene, _, _, model = encoded
    data = load_views(scene)
    a = model.anchors
    bad = Anchors(a.anchor, a.offset, a.anchor_feat + np.random.default_rng(0).normal(0, 0.3, a.anchor_feat.shape)
                  .astype(np.float32), a.opacity, a.scaling, a.rotation)
    pm = ScaffoldModel(model.config, bad, model.mlps)
    zp, _ = sb.choose_zero_points(bad.anchor_feat)
    _, flog = sb.finetune_anchors(pm, data, 12, quantise=sb.fake_quant_torch(zp), device="cpu",
                                  options=sb.AnchorFinetuneOptions(warmup_steps=0, feat_lr=0.02))
    assert flog["quantisation_aware"] and flog["loss_last"] < flog["loss_first"]


def test_a_model_with_appearance_embedding_and_feature_bank(tmp_path):
    """The optional reference MLPs (embedding_appearance.pt, feature_bank_mlp.pt) are validated, loaded and used."""
    scene = tmp_path / "scene"
    make_scaffold_scene(scene, appearance_dim=3, use_feat_bank=True, add_color_dist=True)
    it = scene / "point_cloud" / "iteration_30"
    assert (it / "embedding_appearance.pt").is_file() and (it / "feature_bank_mlp.pt").is_file()
    rep = main(scene, tmp_path / "o.ply", None, sb.PRESET, {"finetune_iters": 2})
    assert rep["status"] == "ok" and rep["four_way"]["input"]["psnr"] > 45
    (it / "feature_bank_mlp.pt").unlink()
    with pytest.raises(InputError, match=r"feature_bank_mlp\.pt: missing"):
        main(scene, tmp_path / "o2.ply", None, sb.PRESET, {"finetune_iters": 2})


# --------------------------------------------------------------------------- packing and validation


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A scene work folder (synthetic) + a Scaffold-GS output folder, packed with --scaffold."""
    root = tmp_path_factory.mktemp("pack")
    wd = root / "syn"
    make_synthetic_scene(wd, n_cameras=16, width=48, height=32, n_gaussians=200, n_points=60, views_per_frame=2)
    save_scaffold(root / "scaffold", _model(), iteration=7, input_ply=None)
    (root / "scaffold" / "input.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
    out = root / "b.tar"
    assert cli_main(["bundle", str(wd), str(out), "--scaffold", str(root / "scaffold")]) == 0
    return wd, root / "scaffold", out


def test_pack_a_scaffold_output_with_the_scenes_images(packed, tmp_path):
    wd, scaffold, out = packed
    with tarfile.open(out) as t:
        names = set(t.getnames())
    assert {"point_cloud.ply", "opacity_mlp.pt", "cov_mlp.pt", "color_mlp.pt", "cfg_args", "input.ply",
            "cameras.json"} <= names and any(n.startswith("images/") for n in names)
    assert any(n.startswith("sparse/0/") for n in names)
    b = open_bundle(out, tmp_path, kind="auto")
    assert b.kind == "scaffold" and b.model.anchors.n == N and len(b.cameras) == 16
    assert b.ply.read_bytes() == (scaffold / "point_cloud" / "iteration_7" / "point_cloud.ply").read_bytes()
    assert b.summary()["feat_dim"] == F


def test_cli_check_reports_a_scaffold_bundle(packed, capsys):
    _, _, out = packed
    assert cli_main(["bundle", "--check", str(out)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["kind"] == "scaffold" and got["n_offsets"] == K


@pytest.mark.slow
def test_bundle_rule_packs_the_scaffold_model_for_qat_bundle(packed, tmp_path):
    """rule bundle (scripts/bundle.py) with compress.preset qat-bundle packs work/{scene}/splat/scaffold."""
    import subprocess
    import sys

    wd0, scaffold, _ = packed
    wd = tmp_path / "work" / "scene"
    shutil.copytree(wd0, wd)
    (wd / "splat").mkdir()
    (wd / "splat" / "splat.ply").write_bytes(_3dgs_ply(tmp_path))  # the baked PLY train.model: scaffold also writes
    (wd / "splat" / "metrics.json").write_text(json.dumps({"resolution": {"max_side": 40}}))
    shutil.copytree(scaffold, wd / "splat" / "scaffold")
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(tmp_path), "--cores", "1",
                        "--allowed-rules", "bundle", "--forcerun", "bundle", "--config", "compress={preset: qat-bundle}",
                        "--", "work/scene/bundle.tar"], capture_output=True, text=True, timeout=600, cwd=repo)
    assert r.returncode == 0, r.stderr[-3000:]
    b = open_bundle(wd / "bundle.tar", tmp_path / "check", kind="auto")
    assert b.kind == "scaffold" and b.model.anchors.n == N and {(c.width, c.height) for c in b.cameras} == {(40, 27)}


def _members(tar: Path) -> dict[str, bytes]:
    with tarfile.open(tar) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}


def _tar(files: dict[str, bytes], extra: tuple = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        for name in extra:
            ti = tarfile.TarInfo(name)
            ti.size = 1
            t.addfile(ti, io.BytesIO(b"x"))
    return buf.getvalue()


def _without(m, *names):
    return {k: v for k, v in m.items() if k not in names}


def _3dgs_ply(tmp: Path) -> bytes:
    rng = np.random.default_rng(0)
    write_splat_ply(tmp / "s.ply", rng.normal(size=(16, 3)), rng.normal(size=(16, 3)) - 3, rng.normal(size=(16, 4)),
                    rng.normal(size=16), rng.normal(size=(16, 3)), rng.normal(size=(16, 3, 3)))
    return (tmp / "s.ply").read_bytes()


class _Payload:
    """Unpickling it creates the folder ``path`` (a stand-in for code a pickle could run)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _pickle_pt(d: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"weight": _Payload(d / "pwned")}, buf)  # a torch.save zip (pickle inside), not TorchScript
    return buf.getvalue()


HOSTILE = {
    "path_traversal": (lambda m, d: _tar(m, extra=("../escape.txt",)), r"\.\./escape\.txt"),
    "missing_mlp": (lambda m, d: _tar(_without(m, "cov_mlp.pt")), r"cov_mlp\.pt: missing"),
    "corrupted_pt_not_zip": (lambda m, d: _tar({**m, "color_mlp.pt": b"\x80\x04garbage" * 10}),
                             r"color_mlp\.pt: not a TorchScript file"),
    "corrupted_pt_truncated": (lambda m, d: _tar({**m, "color_mlp.pt": m["color_mlp.pt"][: len(m["color_mlp.pt"]) // 2]}),
                               r"color_mlp\.pt: not a TorchScript module"),
    "mlp_of_another_model": (lambda m, d: _tar({**m, "color_mlp.pt": m["cov_mlp.pt"]}), r"color_mlp\.pt: output is"),
    "pickle_not_torchscript": (lambda m, d: _tar({**m, "opacity_mlp.pt": _pickle_pt(d)}),
                               r"opacity_mlp\.pt: not a TorchScript module"),
    "missing_cfg_args": (lambda m, d: _tar(_without(m, "cfg_args")), r"cfg_args: missing"),
    "cfg_args_with_code": (lambda m, d: _tar({**m, "cfg_args": b"__import__('os').system('true')"}), r"cfg_args"),
    "cfg_args_other_feat_dim": (lambda m, d: _tar({**m, "cfg_args": m["cfg_args"].replace(b"feat_dim=8", b"feat_dim=16")}),
                                r"point_cloud\.ply: 8 f_anchor_feat_\* columns but cfg_args says feat_dim=16"),
    "truncated_ply": (lambda m, d: _tar({**m, "point_cloud.ply": m["point_cloud.ply"][:-10]}),
                      r"point_cloud\.ply: \d+ bytes but its header describes"),
    "3dgs_ply_to_qat_bundle": (lambda m, d: _tar({**m, "point_cloud.ply": _3dgs_ply(d)}),
                               r"point_cloud\.ply: a 3DGS splat.*'qat-3dgs-bundle' preset"),
}


@pytest.mark.hostile(cls="bundle", expect="clear_error")
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_scaffold_bundle_refused_naming_the_member(packed, tmp_path, case):
    make, match = HOSTILE[case]
    data = make(_members(packed[2]), tmp_path)
    (tmp_path / "in").mkdir()
    p = tmp_path / "in" / "b.tar"
    p.write_bytes(data)
    (tmp_path / "work").mkdir()
    with pytest.raises(InputError, match=match) as ei:
        open_bundle(p, tmp_path / "work", kind="scaffold")
    msg = str(ei.value)
    assert str(p) in msg and "\n" not in msg and str(tmp_path / "work") not in msg
    assert sorted(x.name for x in (tmp_path / "work").iterdir()) == [] and not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "pwned").exists()  # the pickle inside a torch.save file was never run


@pytest.mark.hostile(cls="bundle", expect="clear_error")
def test_scaffold_bundle_to_the_3dgs_preset_points_to_qat_bundle(packed, tmp_path):
    with pytest.raises(InputError, match=r"point_cloud\.ply: a Scaffold-GS anchor PLY.*'qat-bundle' preset"):
        main(packed[2], tmp_path / "o.ply", None, "qat-3dgs-bundle", {"finetune_iters": 1})
    assert [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.hostile(cls="bundle", expect="clear_error")
def test_cli_compress_of_a_bundle_without_mlp_is_one_line(packed, tmp_path, capsys):
    p = tmp_path / "b.tar"
    p.write_bytes(_tar(_without(_members(packed[2]), "opacity_mlp.pt")))
    assert cli_main(["compress", "--preset", "qat-bundle", str(p), str(tmp_path / "o.ply")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "opacity_mlp.pt: missing" in err and not (tmp_path / "o.ply").exists()


# --------------------------------------------------------------------------- hostile outputs


def _edit_header(src: Path, dst: Path, old: bytes, new: bytes, resign: bool = True) -> Path:
    data = src.read_bytes()
    assert old in data
    data = data.replace(old, new, 1)
    dst.write_bytes(sb._sign(data, dst) if resign else data)
    return dst


@pytest.mark.hostile(cls="codec", expect="clear_error")
def test_edited_output_fails_its_checksum(encoded, tmp_path):
    _, out, _, _ = encoded
    data = bytearray(out.read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / "e.ply").write_bytes(bytes(data))
    with pytest.raises(InputError, match=re.escape(str(tmp_path / "e.ply"))):
        decompress(tmp_path / "e.ply", tmp_path / "d.ply")
    assert not (tmp_path / "d.ply").exists()


@pytest.mark.hostile(cls="codec", expect="clear_error")
@pytest.mark.parametrize("what", ["zero_point_out_of_range", "scale_not_hex", "bits", "code_beyond_symmetric_grid"])
def test_re_signed_bad_metadata_is_refused(encoded, tmp_path, what):
    _, out, _, _ = encoded
    head = out.read_bytes()[:out.read_bytes().index(b"end_header")]
    line = re.search(rb"comment splatforge_feat_scale f_anchor_feat_0 ([0-9a-f]{8}) (-?\d+)", head)
    if what == "zero_point_out_of_range":
        old, new = line.group(0), line.group(0)[: line.start(2) - line.start(0)] + b"300"
    elif what == "code_beyond_symmetric_grid":  # zero point set to 0: the channel's code -128 is out of range
        assert int(line.group(2)) != 0 and sb._stored(out)[1]["f_anchor_feat_0"].min() == -128
        old, new = line.group(0), line.group(0)[: line.start(2) - line.start(0)] + b"0"
    elif what == "scale_not_hex":
        old, new = line.group(0), line.group(0).replace(line.group(1), b"zzzzzzzz")
    else:
        old, new = b"comment splatforge_feat_bits 8", b"comment splatforge_feat_bits 4"
    p = _edit_header(out, tmp_path / "m.ply", old, new)
    with pytest.raises(InputError, match=re.escape(str(p))):
        decompress(p, tmp_path / "d.ply")
    with pytest.raises(InputError):
        info(p)


# --------------------------------------------------------------------------- SplatBench


def test_splatbench_rows_of_a_scaffold_scene(encoded, tmp_path):
    from splatforge_core.codec.splatbench import bench, open_scene

    scene, _, _, _ = encoded
    flat = tmp_path / "flat"
    shutil.copytree(scene / "images", flat / "images")
    for f in ("cameras.json", "cfg_args"):
        shutil.copy(scene / f, flat / f)
    for f in (scene / "point_cloud" / "iteration_30").iterdir():
        shutil.copy(f, flat / f.name)
    sc = open_scene(f"syn={flat}")
    assert sc.kind == "scaffold"
    rows = bench([sc], ["qat-scaffold", "qat-bundle"], max_side=32, options={"qat-bundle": {"finetune_iters": 2}})
    assert [r["preset"] for r in rows] == ["qat-scaffold", "qat-bundle"]  # no SPZ row for a Scaffold scene
    lossless_row, qat = rows
    assert lossless_row["status"] == "ok" and lossless_row["delta_psnr_db"] == 0.0 and lossless_row["save_pct"] > 5
    assert qat["status"] == "ok" and qat["gaussians"] == N and qat["psnr_in_db"] > 40 and qat["finetune_s"] > 0
    assert qat["save_pct"] > 20 and "four_way" in qat["report"]
