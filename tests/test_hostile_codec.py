"""Hostile-input corpus (#18) for compressed files, PLY parsing and ``splatforge info``.

Every broken file is made in ``tmp_path`` from a real splat: ``inria3dgs_sh3_9080.ply`` from
the shared data, subsampled to 400 Gaussians with the project's own reader/writer (its
normals are zero, so every preset has constant columns to store in its metadata), then
encoded with each preset and tampered with. Each case expects a clear error that names the
file (and, for decode, that nothing was written) or a correct result.

Two kinds of metadata edits: "edited" (what a text editor or a flipped bit does: the
checksum no longer matches) and "resealed" (the same edit with the SHA-256 recomputed, as a
crafted file would be; the metadata validation must refuse it before allocating anything).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from splatforge_core.codec import decompress, info, main
from splatforge_core.codec.layout import parse_header
from splatforge_core.errors import InputError
from splatforge_core.splat import MAX_HEADER_BYTES, MAX_PROPERTIES, read_splat_ply, write_splat_ply

REPO = Path(__file__).resolve().parents[1]
N_SUB = 400
_PRE = struct.Struct("<8sII")
SFZ = ["lossless-zstd", "quantised"]


def compressed(cls: str = "compressed", expect: str = "clear_error"):
    return pytest.mark.hostile(cls=cls, expect=expect)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def real_small(shared_data: Path, tmp_path_factory) -> Path:
    """A 400-Gaussian SH3 splat PLY subsampled from a real Inria PLY (every 22nd Gaussian)."""
    d = read_splat_ply(shared_data / "ply" / "inria3dgs_sh3_9080.ply")
    idx = np.arange(0, len(d["means"]), len(d["means"]) // N_SUB)[:N_SUB]
    out = tmp_path_factory.mktemp("real") / "real_small.ply"
    write_splat_ply(out, d["means"][idx], d["scales"][idx], d["quats"][idx], d["opacities"][idx], d["sh0"][idx],
                    d["shN"][idx])
    return out


@pytest.fixture(scope="module")
def encoded(real_small: Path, tmp_path_factory) -> dict[str, Path]:
    """The real splat encoded with every preset: preset -> output file."""
    d = tmp_path_factory.mktemp("enc")
    out = {}
    for preset, ext in (("qat-3dgs", ".ply"), ("lossless-zstd", ".sfz"), ("quantised", ".sfz")):
        out[preset] = d / f"c_{preset}{ext}"
        main(real_small, out[preset], None, preset, {"evaluate_psnr": False} if preset == "quantised" else None)
    return out


def _refused(bad: Path, tmp_path: Path, *needles: str) -> str:
    """decompress and info both refuse ``bad`` with an InputError naming it; nothing is written."""
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    with pytest.raises(InputError) as ei:
        decompress(bad, out_dir / "back.ply")
    msg = str(ei.value)
    assert str(bad) in msg, msg
    for n in needles:
        assert n in msg, msg
    assert list(out_dir.iterdir()) == []  # nothing written, no temporary left behind
    with pytest.raises(InputError) as ei2:
        info(bad)
    assert str(bad) in str(ei2.value)
    return msg


# ----------------------------------------------------------------------------- .sfz helpers


def _split_sfz(data: bytes) -> tuple[int, dict, bytes]:
    """(version, JSON metadata, block bytes) of a v2 container (checksum dropped)."""
    _, ver, jlen = _PRE.unpack_from(data)
    meta = json.loads(data[_PRE.size : _PRE.size + jlen])
    return ver, meta, data[_PRE.size + jlen : -32]


def _join_sfz(meta: dict, blocks: bytes, reseal: bool, old: bytes, ver: int = 2) -> bytes:
    js = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    body = _PRE.pack(b"SFSPLAT\x00", ver, len(js)) + js + blocks
    return body + (hashlib.sha256(body).digest() if reseal else old[-32:])


def _edit_meta(fn: Callable[[dict], None]) -> Callable[[bytes, bool], bytes]:
    def edit(data: bytes, reseal: bool) -> bytes:
        ver, meta, blocks = _split_sfz(data)
        fn(meta)
        return _join_sfz(meta, blocks, reseal, data, ver)
    return edit


def _set_constant(meta: dict) -> None:  # nx is 0.0 in every Gaussian: stored as a constant
    cols = meta.get("columns") or meta["extra_columns"]
    next(c for c in cols if c["name"] == "nx")["constant"] = "3f800000"


def _swap_blocks(meta: dict) -> None:
    b = meta["blocks"]
    b[0], b[1] = b[1], b[0]


def _huge_count(meta: dict) -> None:  # and the stored header too, so only the sizes can tell
    meta["n_vertices"] = 10**12
    meta["ply_header"] = meta["ply_header"].replace(f"element vertex {N_SUB}", f"element vertex {10**12}")


def _huge_count_and_sizes(meta: dict) -> None:  # a crafted file that also claims matching block sizes
    _huge_count(meta)
    for c in meta["columns"]:
        if c["block"] is not None:
            meta["blocks"][c["block"]]["raw_size"] = 10**12 * 4


def _non_ascii(meta: dict) -> None:
    meta["ply_header"] = meta["ply_header"].replace("format binary_little_endian 1.0\n",
                                                    "format binary_little_endian 1.0\ncomment r\u00e9sum\u00e9\n")


def _drop_table(meta: dict) -> None:
    meta.pop("columns" if "columns" in meta else "arrays")


def _bad_block_index(meta: dict) -> None:
    if "columns" in meta:
        next(c for c in meta["columns"] if c["name"] == "x")["block"] = 99
    else:
        meta["arrays"]["pos"]["block"] = 99


def _range(meta: dict) -> None:
    meta["ranges"]["pos"][0][0] += 1.0


def _range_inf(meta: dict) -> None:
    meta["ranges"]["scale"][1][0] = 1e400  # json writes Infinity


def _range_swapped(meta: dict) -> None:
    lo, hi = meta["ranges"]["dc"]
    meta["ranges"]["dc"] = [hi, lo]


def _bits64(meta: dict) -> None:
    meta["bits"]["pos"] = 64


SFZ_META_CASES = [
    ("lossless-zstd", "edited_constant", _set_constant),
    ("quantised", "edited_constant", _set_constant),
    ("lossless-zstd", "swapped_block_table", _swap_blocks),
    ("quantised", "swapped_block_table", _swap_blocks),
    ("quantised", "edited_quant_range", _range),
    ("quantised", "infinite_quant_range", _range_inf),
    ("quantised", "unordered_quant_range", _range_swapped),
    ("quantised", "bits_64", _bits64),
    ("lossless-zstd", "bad_block_index", _bad_block_index),
    ("quantised", "bad_block_index", _bad_block_index),
    ("lossless-zstd", "huge_vertex_count", _huge_count),
    ("quantised", "huge_vertex_count", _huge_count),
    ("lossless-zstd", "huge_vertex_count_and_block_sizes", _huge_count_and_sizes),
    ("lossless-zstd", "non_ascii_header", _non_ascii),
    ("quantised", "non_ascii_header", _non_ascii),
    ("lossless-zstd", "missing_column_table", _drop_table),
    ("quantised", "missing_column_table", _drop_table),
]
_IDS = [f"{p}-{c}" for p, c, _ in SFZ_META_CASES]


# ----------------------------------------------------------------------------- compressed: .sfz


@compressed()
@pytest.mark.parametrize("preset,case,fn", SFZ_META_CASES, ids=_IDS)
def test_sfz_edited_metadata_fails_checksum(encoded, tmp_path: Path, preset: str, case: str, fn) -> None:
    bad = tmp_path / f"{case}.sfz"
    bad.write_bytes(_edit_meta(fn)(encoded[preset].read_bytes(), False))
    _refused(bad, tmp_path, "is corrupt or was edited: checksum mismatch; re-encode it from the source splat")


# a resealed constant or range edit is a well-formed file with other values: not in this list
_RESEALED = [c for c in SFZ_META_CASES if c[1] not in ("edited_constant", "edited_quant_range")]


@compressed()
@pytest.mark.parametrize("preset,case,fn", _RESEALED, ids=[f"{p}-{c}" for p, c, _ in _RESEALED])
def test_sfz_crafted_metadata_refused_before_allocation(encoded, tmp_path: Path, preset: str, case: str, fn) -> None:
    """The same edits with a recomputed checksum: the metadata checks refuse them, fast (the
    huge vertex count once tried to allocate 231 GiB)."""
    bad = tmp_path / f"{case}.sfz"
    bad.write_bytes(_edit_meta(fn)(encoded[preset].read_bytes(), True))
    t = time.perf_counter()
    msg = _refused(bad, tmp_path, "re-encode")
    assert "checksum mismatch" not in msg
    assert time.perf_counter() - t < 5.0


@compressed()
@pytest.mark.parametrize("preset", SFZ)
def test_sfz_flipped_block_byte(encoded, tmp_path: Path, preset: str) -> None:
    data = bytearray(encoded[preset].read_bytes())
    data[len(data) - 100] ^= 0x01
    bad = tmp_path / "flip.sfz"
    bad.write_bytes(bytes(data))
    _refused(bad, tmp_path, "checksum mismatch")


@compressed()
@pytest.mark.parametrize("preset", ["qat-3dgs"] + SFZ)
def test_truncated(encoded, tmp_path: Path, preset: str) -> None:
    src = encoded[preset]
    bad = tmp_path / f"cut{src.suffix}"
    bad.write_bytes(src.read_bytes()[:-7])
    _refused(bad, tmp_path, "corrupt or was edited")


@compressed()
@pytest.mark.parametrize("preset", ["qat-3dgs"] + SFZ)
def test_appended_garbage(encoded, tmp_path: Path, preset: str) -> None:
    src = encoded[preset]
    bad = tmp_path / f"long{src.suffix}"
    bad.write_bytes(src.read_bytes() + b"garbage\x00\x01")
    _refused(bad, tmp_path, "corrupt or was edited")


@compressed()
@pytest.mark.parametrize("preset", SFZ)
def test_sfz_old_version_refused(encoded, tmp_path: Path, preset: str) -> None:
    data = encoded[preset].read_bytes()
    _, meta, blocks = _split_sfz(data)
    js = json.dumps(meta).encode()
    bad = tmp_path / "v1.sfz"
    bad.write_bytes(_PRE.pack(b"SFSPLAT\x00", 1, len(js)) + js + blocks)  # the v1 layout: no checksum
    _refused(bad, tmp_path, "version 1", "re-encode it from the source splat")


# ----------------------------------------------------------------------------- compressed: qat-3dgs


def _flip_body(d: bytes) -> bytes:
    b = bytearray(d)
    b[-50] ^= 0x10
    return bytes(b)


QAT_CASES = {
    "flipped_body_byte": _flip_body,
    "edited_constant_field": lambda d: d.replace(b"comment constant_field nx 00000000", b"comment constant_field nx 3f800000"),
    "deleted_constant_field": lambda d: d.replace(b"comment constant_field ny 00000000\n", b""),
    "renamed_column": lambda d: d.replace(b"property float f_dc_0\n", b"property float f_dc_9\n"),
    "added_header_line": lambda d: d.replace(b"end_header\n", b"comment hello\nend_header\n"),
}


@compressed()
@pytest.mark.parametrize("case", list(QAT_CASES))
def test_qat3dgs_tampered(encoded, tmp_path: Path, case: str) -> None:
    data = encoded["qat-3dgs"].read_bytes()
    edited = QAT_CASES[case](data)
    assert edited != data and len(edited) >= len(data) - 40  # the edit applied
    bad = tmp_path / f"{case}.ply"
    bad.write_bytes(edited)
    _refused(bad, tmp_path, "is corrupt or was edited: checksum mismatch; re-encode it from the source splat")


@compressed()
def test_qat3dgs_checksum_line_deleted(encoded, tmp_path: Path) -> None:
    data = encoded["qat-3dgs"].read_bytes()
    i = data.index(b"comment splatforge_sha256 ")
    bad = tmp_path / "nosum.ply"
    bad.write_bytes(data[:i] + data[data.index(b"\n", i) + 1:])
    _refused(bad, tmp_path, "corrupt or was edited")


@compressed()
def test_qat3dgs_old_version_refused(encoded, tmp_path: Path) -> None:
    data = encoded["qat-3dgs"].read_bytes()
    i = data.index(b"comment splatforge_sha256 ")
    v1 = (data[:i] + data[data.index(b"\n", i) + 1:]).replace(b"splatforge_codec qat-3dgs 2", b"splatforge_codec qat-3dgs 1")
    bad = tmp_path / "v1.ply"
    bad.write_bytes(v1)
    _refused(bad, tmp_path, "version 1", "re-encode")


@compressed(expect="correct")
@pytest.mark.parametrize("preset", ["qat-3dgs"] + SFZ)
def test_untampered_decodes(encoded, real_small: Path, tmp_path: Path, preset: str) -> None:
    """Control: the untouched files decode (lossless: byte for byte) and ``info`` reads them."""
    back = tmp_path / "back.ply"
    decompress(encoded[preset], back)
    if preset == "quantised":
        a = read_splat_ply(real_small)
        b = read_splat_ply(back)
        assert b["means"].shape == a["means"].shape
    else:
        assert back.read_bytes() == real_small.read_bytes()
    assert info(encoded[preset])["n_vertices"] == N_SUB
    # the qat-3dgs output stays a PLY other readers open (plyfile ignores the comments)
    if preset == "qat-3dgs":
        import plyfile

        assert plyfile.PlyData.read(str(encoded[preset]))["vertex"].count == N_SUB


# ----------------------------------------------------------------------------- PLY parsing


def _with_extra_properties(src: Path, dst: Path, k: int) -> Path:
    """``src`` with ``k`` extra float properties (zeros) on 2 Gaussians."""
    hdr = parse_header(src)
    el = hdr.element("vertex")
    dt = el.dtype(hdr.byte_order)
    v = np.frombuffer(src.read_bytes(), dt, count=2, offset=hdr.size)
    names = list(dt.names) + [f"extra_{i}" for i in range(k)]
    w = np.zeros(2, dtype=[(n, "<f4") for n in names])
    for n in dt.names:
        w[n] = v[n]
    lines = ["ply", "format binary_little_endian 1.0", "element vertex 2"] + [f"property float {n}" for n in names]
    dst.write_bytes(("\n".join(lines + ["end_header"]) + "\n").encode() + w.tobytes())
    return dst


@pytest.mark.hostile(cls="ply", expect="clear_error")
def test_ten_thousand_properties_fast_clear_error(real_small: Path, tmp_path: Path) -> None:
    """A 2-vertex PLY with 10,000 properties (took over 2 minutes): a clear error in well under a second."""
    bad = _with_extra_properties(real_small, tmp_path / "wide.ply", 10_000)
    for fn in (parse_header, read_splat_ply, info, lambda p: main(p, tmp_path / "o.ply", None, "qat-3dgs")):
        t = time.perf_counter()
        with pytest.raises(InputError, match=f"more than {MAX_PROPERTIES} properties") as ei:
            fn(bad)
        assert str(bad) in str(ei.value)
        assert time.perf_counter() - t < 1.0
    assert not (tmp_path / "o.ply").exists()


@pytest.mark.hostile(cls="ply", expect="correct")
def test_wide_header_under_cap_read_fast_and_correct(real_small: Path, tmp_path: Path) -> None:
    """Under the cap, a wide PLY is read correctly and in linear time."""
    wide = _with_extra_properties(real_small, tmp_path / "wide.ply", 900)
    t = time.perf_counter()
    hdr = parse_header(wide)
    d = read_splat_ply(wide)
    assert time.perf_counter() - t < 1.0
    assert len(hdr.element("vertex").properties) == 62 + 900
    ref = read_splat_ply(real_small)
    np.testing.assert_array_equal(d["means"], ref["means"][:2])
    np.testing.assert_array_equal(d["shN"], ref["shN"][:2])


@pytest.mark.hostile(cls="ply", expect="clear_error")
def test_header_over_cap(real_small: Path, tmp_path: Path) -> None:
    data = real_small.read_bytes()
    pad = b"comment " + b"x" * 70 + b"\n"
    bad = tmp_path / "longhdr.ply"
    bad.write_bytes(data.replace(b"element vertex", pad * (MAX_HEADER_BYTES // len(pad) + 1) + b"element vertex", 1))
    for fn in (read_splat_ply, info):
        with pytest.raises(InputError, match="larger than") as ei:
            fn(bad)
        assert str(bad) in str(ei.value)


@pytest.mark.hostile(cls="ply", expect="clear_error")
@pytest.mark.parametrize("delta", [-1, +1], ids=["count_lower_than_body", "count_higher_than_body"])
def test_vertex_count_disagrees_with_body(real_small: Path, tmp_path: Path, delta: int) -> None:
    """Export and training read splats with read_splat_ply: a lying count is an error, never dropped vertices."""
    bad = tmp_path / "lies.ply"
    bad.write_bytes(real_small.read_bytes().replace(f"element vertex {N_SUB}\n".encode(),
                                                     f"element vertex {N_SUB + delta}\n".encode()))
    for fn in (read_splat_ply, info):
        with pytest.raises(InputError, match="trailing data" if delta < 0 else "truncated") as ei:
            fn(bad)
        assert str(bad) in str(ei.value)


@pytest.mark.hostile(cls="ply", expect="clear_error")
def test_ascii_count_lower_than_body(real_small: Path, tmp_path: Path) -> None:
    import plyfile

    v = plyfile.PlyData.read(str(real_small))["vertex"].data[:20]
    asc = tmp_path / "ascii.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(v, "vertex")], text=True).write(str(asc))
    assert read_splat_ply(asc)["means"].shape == (20, 3)  # the honest file reads
    asc.write_bytes(asc.read_bytes().replace(b"element vertex 20\n", b"element vertex 19\n"))
    with pytest.raises(InputError, match="fewer records") as ei:
        read_splat_ply(asc)
    assert str(asc) in str(ei.value)


# ----------------------------------------------------------------------------- splatforge info (CLI)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "splatforge_core.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def _broken_for_cli(kind: str, real_small: Path, encoded: dict, d: Path) -> Path:
    if kind == "truncated_ply_body":
        p = d / "trunc.ply"
        p.write_bytes(real_small.read_bytes()[:-100])
    elif kind == "tampered_qat3dgs":
        p = d / "t.ply"
        p.write_bytes(_flip_body(encoded["qat-3dgs"].read_bytes()))
    elif kind == "tampered_sfz":
        p = d / "t.sfz"
        p.write_bytes(_edit_meta(_bits64)(encoded["quantised"].read_bytes(), False))
    else:  # truncated_sfz
        p = d / "cut.sfz"
        p.write_bytes(encoded["lossless-zstd"].read_bytes()[:-40])
    return p


@pytest.mark.hostile(cls="cli", expect="clear_error")
@pytest.mark.parametrize("kind", ["truncated_ply_body", "tampered_qat3dgs", "tampered_sfz", "truncated_sfz"])
def test_info_cli_broken_file(real_small: Path, encoded, tmp_path: Path, kind: str) -> None:
    bad = _broken_for_cli(kind, real_small, encoded, tmp_path)
    r = _cli("info", str(bad))
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(bad) in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    r2 = _cli("decompress", str(bad), str(tmp_path / "back.ply"))
    assert r2.returncode != 0 and "Traceback" not in r2.stderr and not (tmp_path / "back.ply").exists()


@pytest.mark.hostile(cls="cli", expect="correct")
def test_info_cli_good_file(encoded) -> None:
    r = _cli("info", str(encoded["qat-3dgs"]))
    assert r.returncode == 0 and "codec: qat-3dgs" in r.stdout and "SH degree: 3" in r.stdout
