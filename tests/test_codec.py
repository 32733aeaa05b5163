"""Tests of the splat PLY codec (splatforge_core.codec)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import plyfile
import pytest

from splatforge_core import cli as sf_cli
from splatforge_core.codec import CodecOptions, decompress, info, main
from splatforge_core.codec import lossless as lossless_mod
from splatforge_core.codec.layout import bits_hex, hex_to_bytes
from splatforge_core.codec.lossless import RoundTripError
from splatforge_core.codec.synthetic import inria_names, synthetic_splat, write_ply
from splatforge_core.errors import InputError

LOSSLESS = ["qat-3dgs", "lossless-zstd"]


def _ext(preset: str) -> str:
    return ".ply" if preset in ("qat-3dgs", "qat-3dgs-bundle", "qat-scaffold", "qat-bundle") else ".sfz"


def _roundtrip(tmp_path: Path, src: Path, preset: str, options: dict | None = None) -> dict:
    out = tmp_path / f"out{_ext(preset)}"
    rep = main(src, out, tmp_path / "report.json", preset, options)
    back = tmp_path / "back.ply"
    decompress(out, back)
    assert back.read_bytes() == src.read_bytes()
    assert json.loads((tmp_path / "report.json").read_text())["size_bytes_out"] == out.stat().st_size
    return rep


def _only(tmp_path: Path) -> list[str]:
    """Files in tmp_path (to prove no partial/temporary output is left behind)."""
    return sorted(p.name for p in tmp_path.iterdir())


@pytest.fixture
def small_ply(tmp_path: Path) -> Path:
    p = tmp_path / "in.ply"
    write_ply(p, synthetic_splat(500, sh_degree=1, seed=1))
    return p


# ----------------------------------------------------------------- real data


@pytest.mark.parametrize("preset", LOSSLESS)
def test_real_plys_roundtrip_bytes(shared_data: Path, tmp_path: Path, preset: str) -> None:
    for src in sorted((shared_data / "ply").glob("*.ply")):
        d = tmp_path / src.stem
        d.mkdir()
        rep = _roundtrip(d, src, preset)
        assert rep["bitexact_roundtrip"] and rep["lossless"] and rep["delta_psnr_db"] == 0.0
        assert rep["n_vertices"] == plyfile.PlyData.read(src)["vertex"].count


def test_qat3dgs_inria_drops_normals_and_is_valid_ply(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "ply" / "inria3dgs_sh3_9080.ply"
    out = tmp_path / "c.ply"
    rep = main(src, out, None, "qat-3dgs")
    assert rep["constants_detected"] == ["nx", "ny", "nz"]
    assert rep["constant_values"]["nx"] == {"hex": "00000000", "value": 0.0}
    assert 4.80 < rep["ply_save_pct"] < 4.86  # 3 of 62 columns, minus a few header bytes
    a = plyfile.PlyData.read(src)["vertex"].data
    b = plyfile.PlyData.read(out)["vertex"].data  # other readers open it
    assert "nx" not in b.dtype.names and len(b.dtype.names) == 59
    for n in b.dtype.names:
        assert np.array_equal(a[n].view(np.uint32), b[n].view(np.uint32))
    text = out.read_bytes()[:3000].decode("ascii", "replace")
    assert "comment constant_field nx 00000000" in text


def test_entropy_tier_target_on_sh3(shared_data: Path, tmp_path: Path) -> None:
    rep = main(shared_data / "ply" / "inria3dgs_sh3_9080.ply", tmp_path / "c.sfz", None, "lossless-zstd")
    assert rep["ply_save_pct"] >= 15.0


# ----------------------------------------------------------------- bit-exactness


def test_hex_byte_order() -> None:
    assert bits_hex(np.float32(1.0)) == "3f800000"
    assert bits_hex(np.array(1.0, ">f4")) == "3f800000"
    assert bits_hex(np.float32(-0.0)) == "80000000"
    assert hex_to_bytes("3f800000", np.dtype("<f4")) == np.float32(1.0).tobytes()
    assert hex_to_bytes("3f800000", np.dtype(">f4")) == np.array(1.0, ">f4").tobytes()


@pytest.mark.parametrize("preset", LOSSLESS)
def test_tiny_difference_is_not_constant(tmp_path: Path, preset: str) -> None:
    v = synthetic_splat(300, sh_degree=0)
    v["nx"] = 0.5
    v["ny"][17] = np.nextafter(np.float32(0), np.float32(1))  # 1.4e-45: not constant
    v["nz"] = -0.0
    v["nz"][3] = 0.0  # -0.0 vs 0.0 differ in bits
    src = tmp_path / "in.ply"
    write_ply(src, v)
    rep = _roundtrip(tmp_path, src, preset)
    assert rep["constants_detected"] == ["nx"]
    assert rep["constant_values"]["nx"]["hex"] == "3f000000"


@pytest.mark.parametrize("preset", LOSSLESS)
def test_nan_inf_negzero_roundtrip(tmp_path: Path, preset: str) -> None:
    v = synthetic_splat(200, sh_degree=1)
    v["f_rest_0"][:5] = [np.nan, np.inf, -np.inf, -0.0, 0.0]
    v["f_rest_1"].view(np.uint32)[:] = 0x7FC00001  # constant NaN with a payload
    v["f_rest_2"].view(np.uint32)[:] = 0xFFC12345  # another NaN payload, varying below
    v["f_rest_2"].view(np.uint32)[7] = 0x7FC00000
    v["nx"] = -0.0
    src = tmp_path / "in.ply"
    write_ply(src, v)
    rep = _roundtrip(tmp_path, src, preset)
    assert "f_rest_1" in rep["constants_detected"] and "f_rest_2" not in rep["constants_detected"]
    assert rep["constant_values"]["f_rest_1"] == {"hex": "7fc00001", "value": "nan"}
    assert rep["constant_values"]["nx"] == {"hex": "80000000", "value": "-0.0"}


# ----------------------------------------------------------------- bad input


def test_scaffold_rejected_naming_preset(tmp_path: Path) -> None:
    v = synthetic_splat(10, sh_degree=0)
    names = list(v.dtype.names) + ["f_anchor_feat_0", "f_offset_0"]
    w = np.zeros(10, dtype=[(n, "<f4") for n in names])
    src = tmp_path / "scaffold.ply"
    write_ply(src, w)
    with pytest.raises(InputError, match="scaffold"):
        main(src, tmp_path / "o.ply", None, "qat-3dgs")
    assert _only(tmp_path) == ["scaffold.ply"]


def _write_raw(path: Path, header_lines: list[str], body: bytes) -> Path:
    path.write_bytes(("\n".join(header_lines) + "\n").encode() + body)
    return path


def _hdr(n: int, names: list[str], fmt: str = "binary_little_endian", t: str = "float") -> list[str]:
    return ["ply", f"format {fmt} 1.0", f"element vertex {n}"] + [f"property {t} {x}" for x in names] + ["end_header"]


@pytest.mark.parametrize("preset", LOSSLESS)
def test_truncated_and_lying_headers(tmp_path: Path, small_ply: Path, preset: str) -> None:
    data = small_ply.read_bytes()
    trunc = tmp_path / "trunc.ply"
    trunc.write_bytes(data[:-100])
    with pytest.raises(InputError, match="truncated"):
        main(trunc, tmp_path / f"o{_ext(preset)}", None, preset)
    hi = tmp_path / "lies_more.ply"
    hi.write_bytes(data.replace(b"element vertex 500", b"element vertex 501"))
    with pytest.raises(InputError, match="truncated"):
        main(hi, tmp_path / f"o{_ext(preset)}", None, preset)
    lo = tmp_path / "lies_less.ply"
    lo.write_bytes(data.replace(b"element vertex 500", b"element vertex 499"))
    with pytest.raises(InputError, match="trailing data"):
        main(lo, tmp_path / f"o{_ext(preset)}", None, preset)
    assert _only(tmp_path) == ["in.ply", "lies_less.ply", "lies_more.ply", "trunc.ply"]


def test_ascii_rejected_big_endian_handled(tmp_path: Path) -> None:
    v = synthetic_splat(50, sh_degree=0)
    el = plyfile.PlyElement.describe(v, "vertex")
    asc = tmp_path / "ascii.ply"
    plyfile.PlyData([el], text=True).write(str(asc))
    with pytest.raises(InputError, match="ASCII"):
        main(asc, tmp_path / "o.ply", None, "qat-3dgs")
    be = tmp_path / "be.ply"
    plyfile.PlyData([el], byte_order=">").write(str(be))
    for preset in LOSSLESS:
        d = tmp_path / preset
        d.mkdir()
        rep = _roundtrip(d, be, preset)
        assert rep["constants_detected"] == ["nx", "ny", "nz"]
    # the big-endian output stays big-endian and plyfile reads the same values
    b = plyfile.PlyData.read(str(tmp_path / "qat-3dgs" / "out.ply"))["vertex"].data
    assert np.array_equal(b["x"], v["x"])


@pytest.mark.parametrize("preset", LOSSLESS)
def test_zero_vertices(tmp_path: Path, preset: str) -> None:
    src = tmp_path / "empty.ply"
    write_ply(src, synthetic_splat(0, sh_degree=0))
    rep = _roundtrip(tmp_path, src, preset)
    assert rep["n_vertices"] == 0 and rep["constants_detected"] == []


def test_zero_vertices_quantised(tmp_path: Path) -> None:
    src = tmp_path / "empty.ply"
    write_ply(src, synthetic_splat(0, sh_degree=2))
    rep = main(src, tmp_path / "q.sfz", None, "quantised")
    assert rep["n_vertices"] == 0 and "render_psnr_db" not in rep
    decompress(tmp_path / "q.sfz", tmp_path / "back.ply")
    assert plyfile.PlyData.read(str(tmp_path / "back.ply"))["vertex"].count == 0


def test_quantised_big_endian_and_extra_columns(tmp_path: Path) -> None:
    v = synthetic_splat(300, sh_degree=1, seed=5)
    names = list(v.dtype.names)
    w = np.zeros(300, dtype=[(n, ">f4") for n in names] + [("label", ">i4")])
    for n in names:
        w[n] = v[n]
    w["label"] = np.arange(300) * 7
    src = tmp_path / "be.ply"
    write_ply(src, w)
    main(src, tmp_path / "q.sfz", None, "quantised", {"evaluate_psnr": False})
    decompress(tmp_path / "q.sfz", tmp_path / "back.ply")
    b = plyfile.PlyData.read(str(tmp_path / "back.ply"))["vertex"].data
    assert b.dtype == w.dtype
    assert sorted(b["label"].tolist()) == sorted(w["label"].tolist())  # lossless extra column
    step = (w["y"].max() - w["y"].min()) / (2**16 - 1)
    order = np.argsort(b["label"])
    assert np.abs(b["y"][order] - w["y"]).max() <= step


def test_duplicate_property_names(tmp_path: Path) -> None:
    names = inria_names(0) + ["x"]
    src = _write_raw(tmp_path / "dup.ply", _hdr(2, names), bytes(4 * len(names) * 2))
    with pytest.raises(InputError, match="duplicate property name 'x'"):
        main(src, tmp_path / "o.ply", None, "qat-3dgs")


@pytest.mark.parametrize("preset", LOSSLESS)
def test_non_float_properties(tmp_path: Path, preset: str) -> None:
    # extra non-float columns are kept (constant ones move to the header with their type)
    names = inria_names(0)
    dt = [(n, "<f4") for n in names] + [("red", "u1"), ("label", "<i4"), ("flag", "<u2"), ("w", "<f8")]
    v = np.zeros(40, dtype=dt)
    base = synthetic_splat(40, sh_degree=0)
    for n in names:
        v[n] = base[n]
    v["red"] = 200
    v["label"] = np.arange(40)
    v["flag"] = 7
    v["w"] = 2.5
    src = tmp_path / "in.ply"
    write_ply(src, v)
    rep = _roundtrip(tmp_path, src, preset)
    assert set(rep["constants_detected"]) == {"nx", "ny", "nz", "red", "flag", "w"}
    assert rep["constant_values"]["w"]["hex"] == "4004000000000000"
    if preset == "qat-3dgs":
        out = plyfile.PlyData.read(str(tmp_path / "out.ply"))["vertex"].data
        assert out.dtype.names[-1] == "label" and np.array_equal(out["label"], np.arange(40))
    # a required column that is not float32 is rejected
    bad = tmp_path / "bad.ply"
    dt2 = [(n, "<f4" if n != "opacity" else "u1") for n in names]
    write_ply(bad, np.zeros(3, dtype=dt2))
    with pytest.raises(InputError, match="float32"):
        main(bad, tmp_path / "o2.ply", None, preset)


def test_not_a_ply(tmp_path: Path) -> None:
    src = tmp_path / "x.ply"
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    for preset in LOSSLESS:
        with pytest.raises(InputError, match="not a PLY"):
            main(src, tmp_path / f"o{_ext(preset)}", None, preset)
    nohdr = tmp_path / "y.ply"
    nohdr.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n")
    with pytest.raises(InputError, match="end_header"):
        main(nohdr, tmp_path / "o.ply", None, "qat-3dgs")
    with pytest.raises(InputError):
        decompress(src, tmp_path / "back.ply")
    assert _only(tmp_path) == ["x.ply", "y.ply"]


def test_missing_columns_rejected(tmp_path: Path) -> None:
    src = tmp_path / "pts.ply"
    write_ply(src, np.zeros(5, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")]))
    with pytest.raises(InputError, match="missing columns: f_dc_0"):
        main(src, tmp_path / "o.ply", None, "qat-3dgs")


def test_other_elements_comments_crlf_preserved(tmp_path: Path) -> None:
    v = synthetic_splat(30, sh_degree=0)
    lines = ["ply", "format binary_little_endian 1.0", "comment made by test", "obj_info x",
             "element camera 2", "property float fx", "property float fy",
             "element vertex 30"] + [f"property float {n}" for n in v.dtype.names] + \
            ["comment trailing", "element face 1", "property list uchar int vertex_indices", "end_header"]
    body = np.array([1, 2, 3, 4], "<f4").tobytes() + v.tobytes() + bytes([3]) + np.array([0, 1, 2], "<i4").tobytes()
    src = tmp_path / "in.ply"
    src.write_bytes(("\r\n".join(lines) + "\r\n").encode() + body)
    for preset in LOSSLESS:
        d = tmp_path / preset
        d.mkdir()
        _roundtrip(d, src, preset)
    p = plyfile.PlyData.read(str(tmp_path / "qat-3dgs" / "out.ply"))
    assert p["face"]["vertex_indices"][0].tolist() == [0, 1, 2]
    assert p["camera"]["fy"].tolist() == [2.0, 4.0]


def test_already_compressed_rejected(tmp_path: Path, small_ply: Path) -> None:
    main(small_ply, tmp_path / "c.ply", None, "qat-3dgs")
    with pytest.raises(InputError, match="already"):
        main(tmp_path / "c.ply", tmp_path / "c2.ply", None, "qat-3dgs")


# ----------------------------------------------------------------- self-check


@pytest.mark.parametrize("preset", LOSSLESS)
def test_selfcheck_failure_deletes_output(tmp_path: Path, small_ply: Path, monkeypatch, preset: str) -> None:
    from splatforge_core.codec import entropy

    if preset == "qat-3dgs":
        real = lossless_mod.decode_ply_parts

        def corrupt(path, **kw):
            parts = real(path, **kw)
            full = parts[2].copy()
            full.view(np.uint8)[-1] ^= 1  # one bit of the last value
            return parts[:2] + [full] + parts[3:]

        monkeypatch.setattr(lossless_mod, "decode_ply_parts", corrupt)
    else:
        real_o = entropy._open_planes

        def corrupt_planes(path):
            meta, hdr, planes, blocks = real_o(path)
            planes[5, -1] ^= 1
            return meta, hdr, planes, blocks

        monkeypatch.setattr(entropy, "_open_planes", corrupt_planes)
    with pytest.raises(RoundTripError, match="self-check failed"):
        main(small_ply, tmp_path / f"o{_ext(preset)}", tmp_path / "r.json", preset)
    assert _only(tmp_path) == ["in.ply"]


# ----------------------------------------------------------------- interfaces


def test_options_and_presets(tmp_path: Path, small_ply: Path) -> None:
    with pytest.raises(InputError, match="unknown compress option"):
        CodecOptions.from_dict({"zstd_levl": 3})
    with pytest.raises(InputError, match="not implemented yet.*Available presets: qat-3dgs"):
        main(small_ply, tmp_path / "o.ply", None, "qat-int8")
    with pytest.raises(InputError, match="unknown preset 'nope'"):
        main(small_ply, tmp_path / "o.ply", None, "nope")
    assert CodecOptions.from_dict({"zstd_level": 9}).zstd_level == 9


def test_preset_registry_entries() -> None:
    """Each preset is one registry entry: its options are CodecOptions fields, its suffix one of the two formats."""
    import dataclasses

    from splatforge_core.codec import PRESETS, Preset

    fields = {f.name for f in dataclasses.fields(CodecOptions)}
    assert list(PRESETS) == ["qat-3dgs", "lossless-zstd", "quantised", "qat-3dgs-bundle", "qat-3dgs-lowbit", "qat-scaffold",
                            "qat-bundle"]
    for name, p in PRESETS.items():
        assert isinstance(p, Preset) and p.name == name and callable(p.encode) and callable(p.decode)
        assert set(p.options) <= fields and p.suffix in (".ply", ".sfz") and p.suffix == _ext(name)
        with pytest.raises(dataclasses.FrozenInstanceError):
            p.lossless = not p.lossless  # type: ignore[misc]
    assert [n for n, p in PRESETS.items() if p.lossless] == LOSSLESS + ["qat-scaffold"]  # qat-scaffold: tests/test_scaffold_codec.py


def test_new_preset_is_one_registry_entry(tmp_path: Path, small_ply: Path, monkeypatch) -> None:
    """A preset added to PRESETS is accepted by check_preset, encoded by main and restored by decompress."""
    from splatforge_core.codec import PRESETS, Preset, check_preset
    from splatforge_core.codec import container as container_mod
    from splatforge_core.codec.lossless import EncodeResult

    def encode(in_ply, out_path, opts, *, header=None, data=None):
        meta = {"codec": "copy", "ply_header": header.raw.decode("ascii")}
        size = container_mod.write_container(out_path, meta, [Path(in_ply).read_bytes()], level=opts.zstd_level or 1)
        return EncodeResult(header.element("vertex").count, {}, {}, Path(in_ply).stat().st_size, size), {}

    def decode(path):
        return container_mod.read_container(path)[1]

    with pytest.raises(InputError, match="unknown preset 'copy'"):
        check_preset("copy")
    monkeypatch.setitem(PRESETS, "copy", Preset("copy", True, ".sfz", "a copy in a container", encode, decode,
                                                ("zstd_level",)))
    check_preset("copy")
    rep = main(small_ply, tmp_path / "o.sfz", None, "copy", {"zstd_level": 2})
    assert rep["preset"] == "copy" and rep["lossless"] and rep["delta_psnr_db"] == 0.0
    assert decompress(tmp_path / "o.sfz", tmp_path / "b.ply")["codec"] == "copy"
    assert (tmp_path / "b.ply").read_bytes() == small_ply.read_bytes()


def test_cli(tmp_path: Path, small_ply: Path, capsys) -> None:
    out, rep, back = tmp_path / "c.sfz", tmp_path / "r.json", tmp_path / "b.ply"
    assert sf_cli.main(["compress", "--preset", "lossless-zstd", str(small_ply), str(out), "--report", str(rep),
                        "-o", "zstd_level=5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    keys = {"status", "preset", "lossless", "size_bytes_in", "size_bytes_out", "ply_save_pct", "delta_psnr_db",
            "n_vertices", "constants_detected", "constant_values", "bitexact_roundtrip", "wall_seconds"}
    assert keys <= set(printed) and printed == json.loads(rep.read_text())
    assert sf_cli.main(["decompress", str(out), str(back)]) == 0
    assert back.read_bytes() == small_ply.read_bytes()
    capsys.readouterr()
    assert sf_cli.main(["info", str(out)]) == 0
    txt = capsys.readouterr().out
    assert "lossless-zstd" in txt and "SH degree: 1" in txt
    assert sf_cli.main(["compress", "--preset", "bogus", str(small_ply), str(tmp_path / "x.ply")]) == 1
    assert not (tmp_path / "x.ply").exists()
    d = info(small_ply)
    assert d["n_vertices"] == 500 and d["codec"] is None and d["body"] == "ok"


# ----------------------------------------------------------------- quantised tier


def test_quantised_sh3_ratio_and_render_psnr(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "ply" / "inria3dgs_sh3_9080.ply"
    out, back = tmp_path / "q.sfz", tmp_path / "q.ply"
    rep = main(src, out, None, "quantised", {"psnr_views": 4, "psnr_size": 128})
    assert rep["lossless"] is False and rep["bitexact_roundtrip"] is False
    assert rep["compression_ratio"] >= 10.0
    assert rep["render_psnr_db"] >= 40.0 and rep["delta_psnr_db"] is None
    decompress(out, back)
    a = plyfile.PlyData.read(src)["vertex"].data
    b = plyfile.PlyData.read(back)["vertex"].data
    assert a.dtype == b.dtype and len(a) == len(b)
    # Morton order: compare as sets via sorting on x; quantisation error bounded by the step
    step = (a["x"].max() - a["x"].min()) / (2**16 - 1)
    assert np.abs(np.sort(a["x"]) - np.sort(b["x"])).max() <= step
    assert np.all(b["nx"] == 0)
    qn = np.stack([b[f"rot_{i}"] for i in range(4)], 1)
    assert np.allclose(np.linalg.norm(qn, axis=1), 1, atol=1e-5)


def test_quantised_quaternion_and_opacity_accuracy() -> None:
    from splatforge_core.codec.quantised import _quat_decode, _quat_encode

    q = synthetic_splat(2000, sh_degree=0, seed=3)
    qa = np.stack([q[f"rot_{i}"] for i in range(4)], 1).astype(np.float64)
    qb = _quat_decode(*_quat_encode(qa, 8), 8).astype(np.float64)
    dots = np.abs((qa * qb).sum(1))  # q and -q are the same rotation
    assert dots.min() > 0.9999


def test_quantised_rejects_nan(tmp_path: Path) -> None:
    v = synthetic_splat(50, sh_degree=0)
    v["x"][3] = np.nan
    src = tmp_path / "in.ply"
    write_ply(src, v)
    with pytest.raises(InputError, match="NaN/Inf"):
        main(src, tmp_path / "q.sfz", None, "quantised", {"evaluate_psnr": False})
    assert _only(tmp_path) == ["in.ply"]


def test_render_psnr_with_injected_renderer() -> None:
    from splatforge_core.codec.quantised import render_psnr

    def fake(means, quats, scales, opac, sh, vm, Ks, w, h, sh_degree=None):
        c = vm.shape[0]
        val = (sh[:, 0, :].mean() * 0.1 + 0.5).clamp(0, 1)
        return val.expand(c, h, w, 3).clone(), None, {}

    v = synthetic_splat(100, sh_degree=1)
    assert render_psnr(v, v.copy(), 2, 8, render_fn=fake)["psnr_db"] == float("inf")
    w = v.copy()
    w["f_dc_0"] += 1.0
    assert np.isfinite(render_psnr(v, w, 2, 8, render_fn=fake)["psnr_db"])


@pytest.mark.parametrize("preset", LOSSLESS + ["quantised"])
def test_damaged_compressed_file_rejected(tmp_path: Path, small_ply: Path, preset: str) -> None:
    out = tmp_path / f"c{_ext(preset)}"
    main(small_ply, out, None, preset, {"evaluate_psnr": False} if preset == "quantised" else None)
    cut = tmp_path / f"cut{_ext(preset)}"
    cut.write_bytes(out.read_bytes()[:-50])
    with pytest.raises(InputError):
        decompress(cut, tmp_path / "back.ply")
    assert not (tmp_path / "back.ply").exists()
    with pytest.raises(InputError, match="not a file written by"):
        decompress(small_ply, tmp_path / "back.ply")  # a plain PLY is not a codec output
