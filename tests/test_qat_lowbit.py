"""Preset qat-3dgs-lowbit (#20): per-band SH bits on zero-centred grids, every attribute finetuned on
the encoder's own quantisers, exact decode, hostile metadata, a small end-to-end run.

Container-level tests use a synthetic splat dict (:func:`train.synthetic_inria.synthetic_splat_dict`);
the end-to-end test a synthetic Inria folder (400 Gaussians of SH degree 3, 9 views of 32 px, one
held out) and a 4-step finetune (the quality gates are measured in benchmarks/results/qat.md).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from splatforge_core.codec import decompress, info, main
from splatforge_core.codec import qat_lowbit as L
from splatforge_core.codec import quantised as Q
from splatforge_core.codec.container import read_container
from splatforge_core.errors import InputError
from splatforge_core.finetune import splat_to_tensors
from splatforge_core.splat import read_splat_ply
from splatforge_core.train.synthetic_inria import make_inria_folder, synthetic_splat_dict

_PRE = struct.Struct("<8sII")  # the container's preamble (magic, version, JSON length)
KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")


def _bits(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, np.float32)).view(np.uint32)


def _rows(sp: dict) -> np.ndarray:
    """Each Gaussian's float32 bit patterns [N, 59]; rows sorted, to compare two splats up to order."""
    n = len(sp["means"])
    m = np.concatenate([_bits(sp[k]).reshape(n, -1) for k in KEYS], axis=1)
    return m[np.lexsort(m.T[::-1])]


@pytest.fixture(scope="module")
def splat() -> dict:
    return synthetic_splat_dict(600, 3, 11)


@pytest.fixture(scope="module")
def stored(splat, tmp_path_factory):
    grid = L.make_grid(splat)
    out = tmp_path_factory.mktemp("lowbit") / "s.sfz"
    L.encode_splat(splat, grid, out)
    return grid, out


def test_grid_has_a_zero_level_and_the_band_bits(splat):
    grid = L.make_grid(splat, (4, 3, 2))
    lo, hi = grid.ranges["rest"]
    bits = Q.rest_column_bits([4, 3, 2], 3)
    assert bits[:3] == [4, 4, 4] and bits[3:8] == [3] * 5 and bits[8:15] == [2] * 7 and bits[15:18] == [4, 4, 4]
    for j, b in enumerate(bits):
        qm = (1 << (b - 1)) - 1
        # the code qm decodes to zero (to float32 rounding of the stored range)
        z = Q._udq(np.array([[qm]], np.uint8), lo[j:j + 1], hi[j:j + 1], b)[0, 0]
        assert abs(z) <= 1e-6 * max(abs(lo[j]), abs(hi[j]), 1e-30)
    assert np.all(lo <= 0) and np.all(hi >= 0) and np.all(lo.astype(np.float32) == lo)


def test_rate_weight_lowers_the_codes_entropy(splat):
    x = L.rest_matrix(splat["shN"])[:, 20].astype(np.float64)

    def entropy(lam: float) -> float:
        lo, hi = L.sh_range(x, 3, lam)
        c = Q._uq(x[:, None].copy(), np.array([lo]), np.array([hi]), 3)[:, 0]
        p = np.bincount(c) / len(c)
        p = p[p > 0]
        return float(-(p * np.log2(p)).sum())

    h = [entropy(lam) for lam in (0.0, 1e-5, 1e-3, 1.0)]
    assert h[0] > h[2] and all(a >= b for a, b in zip(h, h[1:])) and h[3] == 0.0


def test_decode_equals_the_grid_values_bit_for_bit(splat, stored, tmp_path):
    grid, out = stored
    decompress(out, tmp_path / "back.ply")
    dec = read_splat_ply(tmp_path / "back.ply")
    want = L.fake_quant(splat, grid)
    np.testing.assert_array_equal(_rows(dec), _rows(want))
    # and the grid moved every attribute (a lossy tier), not a copy of the input
    assert all(not np.array_equal(_bits(want[k]), _bits(splat[k])) for k in KEYS)


def test_the_finetunes_quantiser_is_the_encoders(splat, stored):
    """What the QAT forward pass renders (torch, through :func:`fake_quant_torch`) is what the file decodes to."""
    grid, out = stored
    t = splat_to_tensors(splat, torch.device("cpu"))
    q = L.fake_quant_torch(grid)({k: v.requires_grad_(True) for k, v in t.items()})
    assert all(q[k].shape == t[k].shape and q[k].dtype == torch.float32 for k in KEYS)
    meta, blocks = read_container(out)
    _, rec = Q.dequantise(meta, blocks, str(out))
    dec = L.read_splat_ply_records(rec)
    got = {k: q[k].detach().numpy() for k in KEYS}
    np.testing.assert_array_equal(_rows(dec), _rows(got))


def test_existing_quantised_container_still_decodes(splat, tmp_path):
    """The plain tier (codec 'quantised', one SH bit count) is untouched: no per-band list in its metadata."""
    from splatforge_core.codec import CodecOptions

    from splatforge_core.splat import write_splat_ply
    ply = tmp_path / "in.ply"
    write_splat_ply(ply, splat["means"], splat["scales"], splat["quats"], splat["opacities"], splat["sh0"], splat["shN"])
    Q.encode_quantised(ply, tmp_path / "q.sfz", CodecOptions(evaluate_psnr=False))
    meta, _ = read_container(tmp_path / "q.sfz")
    assert meta["codec"] == "quantised" and meta["bits"]["rest"] == 4
    assert info(tmp_path / "q.sfz")["codec"] == "quantised"


# ----------------------------------------------------------------------------- hostile


def _edit(src: Path, dst: Path, fn) -> Path:
    """``src`` with its JSON metadata edited by ``fn`` and the checksum recomputed (a crafted file)."""
    data = src.read_bytes()
    magic, ver, jlen = _PRE.unpack_from(data)
    meta = json.loads(data[_PRE.size:_PRE.size + jlen])
    fn(meta)
    js = json.dumps(meta, separators=(",", ":")).encode()
    body = _PRE.pack(magic, ver, len(js)) + js + data[_PRE.size + jlen:-32]
    dst.write_bytes(body + hashlib.sha256(body).digest())
    return dst


def _refused(bad: Path, tmp_path: Path, *needles: str) -> None:
    with pytest.raises(InputError) as ei:
        decompress(bad, tmp_path / "back.ply")
    msg = str(ei.value)
    assert str(bad) in msg and all(n in msg for n in needles), msg
    assert not (tmp_path / "back.ply").exists()


@pytest.mark.hostile(cls="compressed", expect="clear_error")
def test_hostile_truncated(stored, tmp_path):
    bad = tmp_path / "cut.sfz"
    bad.write_bytes(stored[1].read_bytes()[:-100])
    _refused(bad, tmp_path, "corrupt or was edited")


@pytest.mark.hostile(cls="compressed", expect="clear_error")
@pytest.mark.parametrize("bits", [[9, 3, 3], [4, 1, 3], [4, 3], [4, 3, 3, 3], 4, [4.0, 3, 3], [True, 3, 3]],
                         ids=["9", "1", "two-bands", "four-bands", "int", "float", "bool"])
def test_hostile_band_bits_out_of_range(stored, tmp_path, bits):
    def fn(meta):
        meta["bits"]["rest"] = bits

    bad = _edit(stored[1], tmp_path / "bits.sfz", fn)
    _refused(bad, tmp_path, "bits['rest']")


@pytest.mark.hostile(cls="compressed", expect="clear_error")
def test_hostile_plain_quantised_with_a_band_list(stored, tmp_path):
    """The per-band list is only legal under the lowbit codec name."""
    def fn(meta):
        meta["codec"] = "quantised"

    bad = _edit(stored[1], tmp_path / "renamed.sfz", fn)
    _refused(bad, tmp_path, "bits['rest']")


@pytest.mark.hostile(cls="bundle", expect="clear_error")
def test_hostile_a_ply_instead_of_a_bundle(tmp_path, splat):
    from splatforge_core.splat import write_splat_ply

    ply = tmp_path / "in.ply"
    write_splat_ply(ply, splat["means"], splat["scales"], splat["quats"], splat["opacities"], splat["sh0"], splat["shN"])
    with pytest.raises(InputError) as ei:
        main(ply, tmp_path / "o.sfz", None, L.PRESET)
    assert str(ply) in str(ei.value)


def test_make_grid_rejects_bad_bits(splat):
    with pytest.raises(InputError, match="per band"):
        L.make_grid(splat, (4, 3))
    with pytest.raises(InputError, match="per band"):
        L.make_grid(splat, (4, 3, 1))
    sp0 = dict(splat, shN=np.zeros((len(splat["means"]), 0, 3), np.float32), sh_degree=0)
    with pytest.raises(InputError, match="SH degree 0"):
        L.make_grid(sp0)


# ----------------------------------------------------------------------------- end to end


ITERS = 4


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    root = tmp_path_factory.mktemp("lowbit_e2e")
    scene = root / "scene"
    make_inria_folder(scene, n=400, sh_degree=3, n_views=9, size=32, seed=5)
    out = root / "out.sfz"
    rep = main(scene, out, root / "report.json", L.PRESET, {"finetune_iters": ITERS, "finetune_max_side": 32})
    return scene, out, rep


@pytest.mark.slow
def test_end_to_end_report_and_exact_decode(encoded, tmp_path):
    scene, out, rep = encoded
    for k in ("status", "size_bytes_in", "size_bytes_out", "ply_save_pct", "delta_psnr_db", "psnr_baseline",
              "psnr_canonical", "finetune_iters", "train_wall_secs", "constants_detected", "constant_strip_bitexact"):
        assert k in rep, k
    assert rep["status"] == "ok" and not rep["lossless"] and rep["finetune_iters"] == ITERS
    assert rep["band_bits"] == list(L.DEFAULT_BAND_BITS) and rep["size_bytes_out"] == out.stat().st_size
    assert rep["ply_save_pct"] > 75
    assert rep["constants_detected"] == ["nx", "ny", "nz"] and rep["constant_values"]["nx"]["value"] == 0.0
    fw = rep["four_way"]
    assert set(fw) == {"input", "posthoc", "qat", "fp32_finetune"}
    assert rep["psnr_canonical"] == fw["qat"]["psnr"] and rep["psnr_baseline"] == fw["input"]["psnr"]
    assert fw["posthoc"]["psnr"] < fw["input"]["psnr"]  # the grid costs something on a splat that renders its views exactly
    assert info(out)["codec"] == L.PRESET
    decompress(out, tmp_path / "back.ply")
    dec = read_splat_ply(tmp_path / "back.ply")
    assert dec["shN"].shape == (400, 15, 3)
    # the decoded splat scores what the report says the QAT result scored (the same values, another order)
    from splatforge_core.finetune import evaluate
    from splatforge_core.inria import load_views

    ev = evaluate(dec, load_views(scene, max_side=32, eval_every_n=8).test, device="cpu")
    assert ev["psnr"] == pytest.approx(fw["qat"]["psnr"], abs=1e-3)


# ----------------------------------------------------------------------------- SPZ (C++) row of SplatBench


def test_spz_cpp_reader_maps_infinite_opacity_to_one(tmp_path, splat):
    """SPZ's spz_to_ply writes logit(1) = +inf for alpha 255; the bench renders it as opacity 1, as SPZ means it."""
    import plyfile

    from splatforge_core.codec.splatbench import read_spz_cpp_ply
    from splatforge_core.splat import property_names

    n = len(splat["means"])
    names = property_names(45)
    rec = np.zeros(n, dtype=[(c, "<f4") for c in names])
    for i, c in enumerate("xyz"):
        rec[c] = splat["means"][:, i]
    rec["opacity"] = np.where(np.arange(n) % 2 == 0, np.inf, -np.inf)
    rec["rot_0"] = 1.0
    plyfile.PlyData([plyfile.PlyElement.describe(rec, "vertex")]).write(str(tmp_path / "s.ply"))
    sp = read_spz_cpp_ply(tmp_path / "s.ply")
    assert sp["sh_degree"] == 3 and sp["shN"].shape == (n, 15, 3)
    op = torch.sigmoid(torch.from_numpy(sp["opacities"]))
    assert torch.all(op[0::2] == 1.0) and torch.all(op[1::2] < 1e-12) and np.isfinite(sp["opacities"]).all()


def test_spz_cpp_row_without_a_build_is_a_failed_row(tmp_path, splat):
    from splatforge_core.codec.splatbench import Scene, run_spz_cpp
    from splatforge_core.splat import write_splat_ply

    ply = tmp_path / "point_cloud.ply"
    write_splat_ply(ply, splat["means"], splat["scales"], splat["quats"], splat["opacities"], splat["sh0"], splat["shN"])
    row = run_spz_cpp(Scene("s", tmp_path, ply), [], (30.0, 0.9), tmp_path, tmp_path / "no-spz-build")
    assert row["preset"] == "spz (C++)" and row["status"].startswith("failed: ") and "ply_to_spz" in row["status"]
    assert row["size_out_mb"] is None


@pytest.mark.parametrize("n", [5, 3000])  # element-wise and table dequantiser paths
def test_per_band_quantiser_equals_the_one_bit_count_quantiser_per_column(n):
    """The one-pass per-column-bits quantiser gives, column by column, what _uq / _udq give with that column's bits."""
    rng = np.random.default_rng(3)
    bits = Q.rest_column_bits([4, 3, 2], 3)
    x = rng.normal(0, 0.05, (n, 45)) * rng.uniform(0.2, 2, 45)
    x[0] = 10.0  # clipped
    lo = -np.abs(rng.normal(0, 0.05, 45)).astype(np.float32).astype(np.float64)
    hi = np.abs(rng.normal(0, 0.05, 45)).astype(np.float32).astype(np.float64)
    lo[7] = hi[7] = 0.0  # a zero column
    codes = Q._uq_cols(x.copy(), lo, hi, bits)
    vals = Q._udq_cols(codes, lo, hi, bits)
    for j, b in enumerate(bits):
        c = Q._uq(x[:, j:j + 1].copy(), lo[j:j + 1], hi[j:j + 1], b)
        np.testing.assert_array_equal(codes[:, j:j + 1], c)
        np.testing.assert_array_equal(_bits(vals[:, j:j + 1]), _bits(Q._udq(c, lo[j:j + 1], hi[j:j + 1], b)))


# ----------------------------------------------------------------------------- finetune(quantise_all=...)


def test_finetune_quantise_all_identity_is_the_plain_finetune(tmp_path):
    """The STE form q + (p - p.detach()) adds nothing: with q = p the run is the fp32 finetune bit for bit."""
    from splatforge_core.finetune import finetune
    from splatforge_core.inria import load_views

    sp = make_inria_folder(tmp_path / "scene", n=120, sh_degree=1, n_views=9, size=24, seed=2)
    data = load_views(tmp_path / "scene", eval_every_n=8)
    a, log_a = finetune(sp, data, 3, device="cpu")
    b, log_b = finetune(sp, data, 3, quantise_all=lambda t: {k: v.clone() for k, v in t.items()}, device="cpu")
    assert log_b["quantisation_aware"] and not log_a["quantisation_aware"]
    for k in KEYS:
        np.testing.assert_array_equal(_bits(a[k]), _bits(b[k]))
    with pytest.raises(InputError, match="not both"):
        finetune(sp, data, 1, quantise=lambda x: x, quantise_all=lambda t: t, device="cpu")
