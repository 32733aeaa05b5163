"""The vectorised ``quantised`` encoder/decoder (#20) writes and reads exactly what the per-column
reference formulas give.

The reference path below is the encoder of codec version 1 as it was before the speed-up,
written out element-wise (one structured field at a time, no in-place arithmetic, no
lookup tables, fancy indexing instead of ``np.take``). It shares with the code under test
only helpers the speed-up did not touch (``_quat_encode``, ``_quat_decode``,
``_morton_order``, ``constant_columns``, ``write_container``), so a change of any
quantised value, of the order or of the container bytes fails here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from splatforge_core.codec import CodecOptions, decompress
from splatforge_core.codec import quantised as Q
from splatforge_core.codec.container import write_container
from splatforge_core.codec.layout import bits_hex, parse_header
from splatforge_core.codec.lossless import constant_columns
from splatforge_core.codec.synthetic import synthetic_splat, write_ply
from splatforge_core.splat import sh_degree_from_names


def _ref_cols(v: np.ndarray, names: list[str]) -> np.ndarray:
    return np.stack([v[n].astype(np.float64) for n in names], axis=1) if names else np.zeros((len(v), 0))


def _ref_uq(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    levels = (1 << bits) - 1
    span = np.where(hi > lo, hi - lo, 1.0)
    q = np.rint((x - lo) / span * levels)
    dt = np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32
    return np.clip(q, 0, levels).astype(dt)


def _ref_udq(q: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    levels = (1 << bits) - 1
    return (lo + q.astype(np.float64) / levels * (hi - lo)).astype(np.float32)


def _ref_planes(a: np.ndarray) -> bytes:
    row = a.dtype.itemsize * int(np.prod(a.shape[1:]))
    b = np.ascontiguousarray(a).view(np.uint8).reshape(len(a), row)
    return np.ascontiguousarray(b.T).reshape(-1).tobytes()


def _ref_container(verts: np.ndarray, header, opts: CodecOptions, path: Path) -> bytes:
    """The version-1 encoder, element-wise; returns the container bytes it writes to ``path``."""
    names = list(verts.dtype.names)
    deg = sh_degree_from_names(names)
    g = Q._column_groups(deg)
    bits = {"pos": opts.position_bits, "scale": 8, "dc": 8, "rest": opts.sh_bits, "opacity": 8, "rot": opts.rotation_bits}
    handled = set(sum(g.values(), [])) | {"opacity", "rot_0", "rot_1", "rot_2", "rot_3"}
    arrays, ranges = {}, {}
    for k, cols in g.items():
        x = _ref_cols(verts, cols)
        lo, hi = x.min(0).astype(np.float32).astype(np.float64), x.max(0).astype(np.float32).astype(np.float64)
        ranges[k] = [lo.tolist(), hi.tolist()]
        arrays[k] = _ref_uq(x, lo, hi, bits[k])
    p = 1.0 / (1.0 + np.exp(-verts["opacity"].astype(np.float64)))
    arrays["opacity"] = np.clip(np.rint(p * 255), 0, 255).astype(np.uint8)[:, None]
    idx, rot = Q._quat_encode(_ref_cols(verts, [f"rot_{i}" for i in range(4)]), bits["rot"])
    arrays["rot_index"], arrays["rot"] = idx[:, None], rot
    order = Q._morton_order(arrays["pos"], bits["pos"])
    consts = constant_columns(verts)
    extra = []
    for c in names:
        if c in handled:
            continue
        ft = verts.dtype.fields[c][0]
        if c in consts:
            extra.append({"name": c, "constant": bits_hex(np.frombuffer(consts[c], ft)[0])})
        else:
            extra.append({"name": c, "constant": None})
            arrays["extra:" + c] = np.ascontiguousarray(verts[c]).view(f"u{ft.itemsize}")[:, None]
    meta = {"codec": Q.PRESET, "codec_version": Q.CODEC_VERSION, "ply_header": header.raw.decode("ascii"),
            "n_vertices": len(verts), "sh_degree": deg, "bits": bits, "ranges": ranges, "extra_columns": extra,
            "order": "morton", "arrays": {}}
    blocks = []
    for k, a in arrays.items():
        a = a[order]
        if k == "pos":
            a = np.diff(a, axis=0, prepend=np.zeros((1, 3), a.dtype))
        meta["arrays"][k] = {"block": len(blocks), "dtype": a.dtype.str, "shape": list(a.shape)}
        blocks.append(_ref_planes(a))
    write_container(path, meta, blocks, level=opts.zstd_level or 16)
    return path.read_bytes()


def _ref_decode(verts_dtype: np.dtype, meta: dict, arrays: dict) -> np.ndarray:
    out = np.zeros(meta["n_vertices"], verts_dtype)
    for k, cols in Q._column_groups(meta["sh_degree"]).items():
        lo, hi = (np.asarray(r, np.float64) for r in meta["ranges"][k])
        x = _ref_udq(arrays[k], lo, hi, meta["bits"][k])
        for i, c in enumerate(cols):
            out[c] = x[:, i]
    return out


@pytest.mark.parametrize("case", ["sh3_le", "sh1_be_extra", "sh0_f8"])
def test_encoder_bytes_equal_reference(tmp_path: Path, case: str) -> None:
    """Same container bytes as the element-wise version-1 encoder, for float32 (fast paths),
    big-endian (fallback paths) and float64 columns, with a stored extra column."""
    n = 3000
    deg = {"sh3_le": 3, "sh1_be_extra": 1, "sh0_f8": 0}[case]
    v = synthetic_splat(n, sh_degree=deg, seed=11)
    if case != "sh3_le":
        ft = ">f4" if case == "sh1_be_extra" else "<f8"
        w = np.zeros(n, dtype=[(c, ft) for c in v.dtype.names] + [("label", ft[0] + "i4")])
        for c in v.dtype.names:
            w[c] = v[c]
        w["label"] = np.arange(n) * 3
        v = w
    src = tmp_path / "in.ply"
    write_ply(src, v)
    opts = CodecOptions(evaluate_psnr=False, sh_bits=5, rotation_bits=10)
    out = tmp_path / "q.sfz"
    Q.encode_quantised(src, out, opts)
    header = parse_header(src)
    assert out.read_bytes() == _ref_container(v, header, opts, tmp_path / "ref.sfz")


def test_decoder_equals_reference(tmp_path: Path) -> None:
    """The decoded PLY's quantised columns equal the element-wise dequantisation, bit for bit."""
    v = synthetic_splat(2500, sh_degree=2, seed=3)
    src, out, back = tmp_path / "in.ply", tmp_path / "q.sfz", tmp_path / "back.ply"
    write_ply(src, v)
    Q.encode_quantised(src, out, CodecOptions(evaluate_psnr=False))
    decompress(out, back)
    from splatforge_core.codec.container import read_container

    meta, blocks = read_container(out)
    arrays = {k: Q._unplanes(blocks[a["block"]], a["dtype"], a["shape"]) for k, a in meta["arrays"].items()}
    arrays["pos"] = np.cumsum(arrays["pos"], axis=0, dtype=arrays["pos"].dtype)
    ref = _ref_decode(v.dtype, meta, arrays)
    hdr = parse_header(back)
    got = np.frombuffer(back.read_bytes()[len(hdr.raw):], v.dtype)
    for c in [c for cols in Q._column_groups(2).values() for c in cols]:
        assert got[c].view(np.uint32).tolist() == ref[c].view(np.uint32).tolist(), c


@pytest.mark.parametrize("bits,dtype", [(4, np.uint8), (8, np.uint8), (10, np.uint16), (12, np.uint16)])
def test_udq_table_equals_elementwise(bits: int, dtype) -> None:
    """The table decoder equals the element-wise formula, also for values above 2^bits - 1
    (what a damaged file may hold) and a zero-width range."""
    rng = np.random.default_rng(bits)
    n = 4 * (1 << (8 * np.dtype(dtype).itemsize)) + 7  # enough rows to take the table path
    q = rng.integers(0, np.iinfo(dtype).max + 1, size=(n, 3)).astype(dtype)
    lo, hi = np.array([-3.25, 0.5, 1e-7]), np.array([7.5, 0.5, 2e-7])
    got, ref = Q._udq(q, lo, hi, bits), _ref_udq(q, lo, hi, bits)
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), ref.view(np.uint32))


def test_uq_in_place_equals_reference() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 3, (5000, 4)), np.full((3, 4), 2.0)])
    lo, hi = x.min(0).astype(np.float32).astype(np.float64), x.max(0).astype(np.float32).astype(np.float64)
    hi[3] = lo[3]  # a constant column: span 1
    for bits in (4, 8, 12, 16, 20):
        assert np.array_equal(Q._uq(x.copy(), lo, hi, bits), _ref_uq(x, lo, hi, bits))


def test_cols_fast_path_equals_fields() -> None:
    v = synthetic_splat(100, sh_degree=1, seed=2)
    names = ["f_rest_3", "x", "rot_2", "opacity"]
    assert Q._f4_index(v, names) is not None
    assert np.array_equal(Q._cols(v, names), _ref_cols(v, names))
    be = v.astype([(c, ">f4") for c in v.dtype.names])
    assert Q._f4_index(be, names) is None and np.array_equal(Q._cols(be, names), _ref_cols(v, names))
