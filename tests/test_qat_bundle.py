"""Preset qat-3dgs-bundle (#20): int8 f_rest after a QAT finetune, four-way report, bit-exact decode, hostile metadata.

The scene is a synthetic Inria folder (train.synthetic_inria: 400 Gaussians of SH degree 3, 9
views of 32 px rendered from the splat itself, one held out); the finetunes are a few steps
long, enough to exercise the pipeline (the quality gates are measured in benchmarks/bench_qat.py).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import plyfile
import pytest

from splatforge_core.codec import decompress, info, main
from splatforge_core.codec import qat_bundle as qb
from splatforge_core.errors import InputError
from splatforge_core.inria import load_views
from splatforge_core.splat import read_splat_ply, write_splat_ply
from splatforge_core.finetune import evaluate
from splatforge_core.train.synthetic_inria import make_inria_folder

ITERS = 4


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    root = tmp_path_factory.mktemp("qat")
    scene = root / "scene"
    make_inria_folder(scene, n=400, sh_degree=3, n_views=9, size=32, seed=5)
    out = root / "out.ply"
    rep = main(scene, out, root / "report.json", qb.PRESET,
               {"finetune_iters": ITERS, "finetune_max_side": 32})
    return scene, out, rep


def test_report_has_the_design_fields_and_four_way(encoded):
    scene, out, rep = encoded
    for k in ("status", "size_bytes_in", "size_bytes_out", "ply_save_pct", "delta_psnr_db", "psnr_baseline",
              "psnr_canonical", "finetune_iters", "train_wall_secs", "constants_detected", "constant_strip_bitexact"):
        assert k in rep, k
    assert rep["status"] == "ok" and not rep["lossless"] and rep["finetune_iters"] == ITERS and rep["sh_bits"] == 8
    assert rep["constants_detected"] == ["nx", "ny", "nz"] and rep["constant_strip_bitexact"] is True
    assert rep["size_bytes_in"] == (scene / "point_cloud.ply").stat().st_size and rep["size_bytes_out"] == out.stat().st_size
    # 62 floats -> 14 floats + 45 int8 per Gaussian (248 -> 101 bytes), minus the header's 45 scale comments
    assert rep["ply_save_pct"] > 54
    fw = rep["four_way"]
    assert set(fw) == {"input", "posthoc_int8", "qat", "fp32_finetune"}
    assert all(set(v) == {"psnr", "ssim"} and np.isfinite(v["psnr"]) for v in fw.values())
    assert rep["psnr_baseline"] == fw["input"]["psnr"] and rep["psnr_canonical"] == fw["qat"]["psnr"]
    assert rep["delta_psnr_db"] == pytest.approx(fw["qat"]["psnr"] - fw["input"]["psnr"], abs=2e-4)
    # int8 of a splat that renders its own views exactly costs a little, measurably
    assert fw["input"]["psnr"] > 45 and fw["posthoc_int8"]["psnr"] < fw["input"]["psnr"]


def test_output_is_a_valid_ply_with_char_sh(encoded):
    _, out, _ = encoded
    v = plyfile.PlyData.read(str(out))["vertex"]
    assert v.data.dtype["f_rest_0"] == np.int8 and v.data.dtype["x"] == np.float32 and "nx" not in v.data.dtype.names
    assert len(v.data) == 400
    assert info(out)["codec"] == qb.PRESET and info(out)["sh_degree"] == 3


def test_decode_is_bit_exact_and_is_what_was_evaluated(encoded, tmp_path):
    scene, out, rep = encoded
    rep_d = decompress(out, tmp_path / "dec.ply")
    assert rep_d["codec"] == qb.PRESET
    dec = read_splat_ply(tmp_path / "dec.ply")
    src = read_splat_ply(scene / "point_cloud.ply")
    assert dec["shN"].shape == src["shN"].shape
    # the stored codes / scales dequantise to the decoded values bit for bit
    inner, recs = qb._stored(out)
    bits, scales = qb.read_quant_meta(inner)
    rest = qb.rest_matrix(dec["shN"])
    for j in range(45):
        want = recs[f"f_rest_{j}"].astype(np.float32) * scales[f"f_rest_{j}"]
        np.testing.assert_array_equal(rest[:, j].view(np.uint32), want.view(np.uint32))
    # re-quantising the decoded values gives the same codes (idempotent grid)
    q2, s2 = qb.quantise_columns(rest, bits)
    np.testing.assert_array_equal(s2, np.array([scales[f"f_rest_{j}"] for j in range(45)], np.float32))
    # the QAT score of the report is the score of exactly the decoded splat
    data = load_views(scene, max_side=32, eval_every_n=8)
    assert evaluate(dec, data.test)["psnr"] == pytest.approx(rep["four_way"]["qat"]["psnr"], abs=1e-4)


def test_write_stored_round_trip_exact(tmp_path):
    rng = np.random.default_rng(0)
    n = 50
    s = {"means": rng.normal(size=(n, 3)).astype(np.float32), "scales": rng.normal(size=(n, 3)).astype(np.float32),
         "quats": rng.normal(size=(n, 4)).astype(np.float32), "opacities": rng.normal(size=n).astype(np.float32),
         "sh0": rng.normal(size=(n, 3)).astype(np.float32), "sh_degree": 1,
         "shN": (rng.normal(size=(n, 3, 3)) * [[[0.3, 0.01, 0.0]]]).astype(np.float32)}  # a zero column
    s["shN"][:, 2, :] = 0.0
    final, q, sc = qb.quantised_splat(s, 8)
    qb.write_stored(final, q, sc, 8, tmp_path / "o.ply")
    decompress(tmp_path / "o.ply", tmp_path / "d.ply")
    d = read_splat_ply(tmp_path / "d.ply")
    for k in ("means", "scales", "quats", "opacities", "sh0", "shN"):
        np.testing.assert_array_equal(d[k].view(np.uint32), np.asarray(final[k], np.float32).view(np.uint32))
    assert np.abs(q).max() == 127 and (sc[[2, 5, 8]] == 0).all()


def _edit(src: Path, dst: Path, fn, reseal: bool = True) -> Path:
    data = src.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    head = fn(data[:end].decode("ascii")).encode("ascii")
    new = head + data[end:]
    dst.write_bytes(qb.sign(new, dst) if reseal else new)
    return dst


def _sub(pattern, repl, count=1):
    return lambda h: re.sub(pattern, repl, h, count=count, flags=re.M)


HOSTILE = {
    "scale_not_hex": (_sub(r"(splatforge_sh_scale f_rest_3 )\S+", r"\g<1>xyz"), "not 8 hex digits"),
    "scale_negative": (_sub(r"(splatforge_sh_scale f_rest_3 )\S+", r"\g<1>bf800000"), "finite and >= 0"),
    "scale_nan": (_sub(r"(splatforge_sh_scale f_rest_3 )\S+", r"\g<1>7fc00000"), "finite and >= 0"),
    "scale_missing": (_sub(r"^comment splatforge_sh_scale f_rest_7 \S+\n", ""), "no scale comment for f_rest_7"),
    "scale_repeated": (_sub(r"^(comment splatforge_sh_scale f_rest_7 \S+\n)", r"\1\1"), "two scale comments"),
    "scale_for_other_column": (_sub(r"splatforge_sh_scale f_rest_7 ", "splatforge_sh_scale opacity "),
                               "not an f_rest column"),
    "bits_out_of_range": (_sub(r"splatforge_sh_bits 8", "splatforge_sh_bits 9"), "splatforge_sh_bits"),
    "bits_missing": (_sub(r"^comment splatforge_sh_bits 8\n", ""), "splatforge_sh_bits"),
    "codes_beyond_bits": (_sub(r"splatforge_sh_bits 8", "splatforge_sh_bits 4"), "beyond"),
    "rest_not_char": (_sub(r"property char f_rest_9$", "property uchar f_rest_9"), "as char"),
    "rest_count_no_sh": (_sub(r"^comment splatforge_sh_scale f_rest_44 \S+\nproperty char f_rest_44\n", ""),
                         "SH degree|body|size"),
    "vertex_count_wrong": (lambda h: re.sub(r"element vertex (\d+)", lambda m: f"element vertex {int(m[1]) + 1}", h),
                           "truncated|size|bytes"),
}


@pytest.mark.hostile(cls="qat-3dgs-bundle", expect="clear_error")
@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_resealed_metadata(encoded, tmp_path, case):
    """Crafted metadata with a valid checksum: refused by decompress and info, naming the file; nothing written."""
    fn, match = HOSTILE[case]
    bad = _edit(encoded[1], tmp_path / "bad.ply", fn)
    for call in (lambda: decompress(bad, tmp_path / "d.ply"), lambda: info(bad)):
        with pytest.raises(InputError, match=match) as e:
            call()
        assert str(bad) in str(e.value)
    assert not (tmp_path / "d.ply").exists()


@pytest.mark.hostile(cls="qat-3dgs-bundle", expect="clear_error")
def test_hostile_edited_without_reseal(encoded, tmp_path):
    bad = _edit(encoded[1], tmp_path / "bad.ply", _sub(r"(splatforge_sh_scale f_rest_3 )\S+", r"\g<1>3f800000"),
                reseal=False)
    with pytest.raises(InputError, match="corrupt or was edited") as e:
        decompress(bad, tmp_path / "d.ply")
    assert str(bad) in str(e.value) and not (tmp_path / "d.ply").exists()


@pytest.mark.hostile(cls="qat-3dgs-bundle", expect="clear_error")
def test_hostile_a_ply_instead_of_a_bundle(encoded, tmp_path):
    shutil.copyfile(encoded[0] / "point_cloud.ply", tmp_path / "lonely.ply")
    with pytest.raises(InputError, match="needs a bundle") as e:
        main(tmp_path / "lonely.ply", tmp_path / "o.ply", None, qb.PRESET, {"finetune_iters": 0})
    assert "lonely.ply" in str(e.value) and not (tmp_path / "o.ply").exists()


@pytest.mark.hostile(cls="qat-3dgs-bundle", expect="clear_error")
def test_hostile_sh_degree_0(encoded, tmp_path):
    scene = tmp_path / "s"
    shutil.copytree(encoded[0], scene)
    s = read_splat_ply(scene / "point_cloud.ply")
    write_splat_ply(scene / "point_cloud.ply", s["means"], s["scales"], s["quats"], s["opacities"], s["sh0"], None)
    with pytest.raises(InputError, match="SH degree 0.*qat-3dgs"):
        main(scene, tmp_path / "o.ply", None, qb.PRESET, {"finetune_iters": 0})
    assert not (tmp_path / "o.ply").exists()


@pytest.mark.hostile(cls="qat-3dgs-bundle", expect="clear_error")
@pytest.mark.parametrize("opt", [{"finetune_iters": -1}, {"finetune_max_side": 2}, {"sh_bits": 9}],
                         ids=["negative_iters", "tiny_side", "sh_bits_9"])
def test_hostile_options(encoded, tmp_path, opt):
    with pytest.raises(InputError, match="compress option"):
        main(encoded[0], tmp_path / "o.ply", None, qb.PRESET, opt)
