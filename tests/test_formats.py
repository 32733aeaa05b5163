"""Ecosystem splat formats (#16): antimatter15 .splat (own reader/writer, checked against
@playcanvas/splat-transform's .splat reader), SPZ and SOG (splat-transform), `splatforge convert`,
and the hostile-input cases of each reader (#18). Real inputs: ../shared/data/splat/*.splat and
../shared/data/ply/*.ply; broken copies are made in tmp_path.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from splatforge_core.errors import InputError, SplatForgeError
from splatforge_core.formats import check_sog, check_spz, convert, read_any, write_any
from splatforge_core.formats.antisplat import RECORD, antisplat_records, read_antisplat, write_antisplat
from splatforge_core.formats.node import JSToolMissing, splat_transform, vendored_file
from splatforge_core.splat import SH_C0, read_splat_ply, sigmoid

REPO = Path(__file__).resolve().parents[1]


def _need_splat_transform():
    try:
        vendored_file("@playcanvas/splat-transform/bin/cli.mjs")
        from splatforge_core.formats.node import node_executable
        node_executable()
    except JSToolMissing as e:
        pytest.skip(f"splat-transform not installed: {e}")


@pytest.fixture(scope="module")
def plant(shared_data: Path) -> Path:
    return shared_data / "splat" / "plant.splat"


@pytest.fixture(scope="module")
def sh3_ply(shared_data: Path) -> Path:
    return shared_data / "ply" / "inria3dgs_sh3_9080.ply"


def _by_position(d: dict) -> dict:
    """The splat dict re-ordered by position (lexicographic), so files of another order compare."""
    o = np.lexsort(np.asarray(d["means"], np.float64).T)
    return {k: (v[o] if isinstance(v, np.ndarray) and len(v) == len(o) else v) for k, v in d.items()}


def _rgb(d):
    return 0.5 + SH_C0 * np.asarray(d["sh0"], np.float64)


def _qdist(a, b):
    """Largest angle-free distance between unit quaternions up to sign, [N]."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.minimum(np.abs(a - b).max(1), np.abs(a + b).max(1))


# ----------------------------------------------------------------------------- .splat


def test_splat_real_round_trip(plant: Path, tmp_path: Path):
    """read -> write -> read of a real .splat keeps every Gaussian: positions and colour bytes exact,
    scales to float32 rounding, rotations to one byte (128ths, renormalised)."""
    a = read_antisplat(plant)
    out = tmp_path / "rt.splat"
    assert write_antisplat(out, a) == plant.stat().st_size == out.stat().st_size
    b = read_antisplat(out)
    raw_a, raw_b = np.fromfile(plant, RECORD), np.fromfile(out, RECORD)
    oa, ob = np.lexsort(raw_a["position"].T), np.lexsort(raw_b["position"].T)
    assert np.array_equal(raw_a["position"][oa], raw_b["position"][ob])
    assert np.array_equal(raw_a["rgba"][oa], raw_b["rgba"][ob])
    assert np.abs(raw_a["rot"][oa].astype(int) - raw_b["rot"][ob]).max() <= 1
    np.testing.assert_allclose(raw_b["scale"][ob], raw_a["scale"][oa], rtol=2e-6)
    assert b["sh_degree"] == 0 and len(b["means"]) == 113648


def test_splat_writer_sorts_by_importance(sh3_ply: Path, tmp_path: Path):
    """Our writer orders Gaussians by volume x opacity, descending, as antimatter15's convert.py."""
    d = read_splat_ply(sh3_ply)
    rec = antisplat_records(d)
    imp = np.prod(rec["scale"].astype(np.float64), axis=1) * (rec["rgba"][:, 3] / 255.0)
    # the alpha byte is quantised: allow the order to break only within one alpha step
    bound = np.prod(rec["scale"].astype(np.float64), axis=1) * (np.minimum(rec["rgba"][:, 3] + 0.5, 255) / 255.0)
    assert (bound[1:] <= np.maximum.accumulate(bound)[:-1] * (1 + 1e-6)).all()
    assert imp[0] >= np.median(imp)


def test_splat_reader_matches_splat_transform(plant: Path, tmp_path: Path):
    """Our .splat reader gives what splat-transform's reader gives (it writes the Inria PLY)."""
    _need_splat_transform()
    ply = tmp_path / "st.ply"
    splat_transform(plant, ply)
    ours, theirs = read_antisplat(plant), read_splat_ply(ply)
    assert len(ours["means"]) == len(theirs["means"])
    ours, theirs = _by_position(ours), _by_position(theirs)
    np.testing.assert_array_equal(ours["means"], theirs["means"])
    np.testing.assert_allclose(np.exp(ours["scales"]), np.exp(theirs["scales"]), rtol=1e-5)
    np.testing.assert_allclose(_rgb(ours), _rgb(theirs), atol=1e-5)
    ok = np.isfinite(theirs["opacities"]) & (np.abs(ours["opacities"]) < 5)
    np.testing.assert_allclose(sigmoid(ours["opacities"][ok]), sigmoid(theirs["opacities"][ok]), atol=1e-4)
    # splat-transform decodes a rotation byte as b / 255 * 2 - 1, antimatter15's main.js (and we) as
    # (b - 128) / 128, the inverse of its writer's q * 128 + 128: they differ by under one step
    assert _qdist(ours["quats"], theirs["quats"]).max() < 1.0 / 128


def test_splat_writer_read_by_splat_transform(sh3_ply: Path, tmp_path: Path):
    """A .splat written by our writer from a real SH3 PLY reads back in splat-transform as the
    same Gaussians within the format's quantisation (colour and alpha 1/255, rotation 1/128)."""
    _need_splat_transform()
    src = read_splat_ply(sh3_ply)
    out, ply = tmp_path / "ours.splat", tmp_path / "back.ply"
    write_antisplat(out, src)
    splat_transform(out, ply)
    back = _by_position(read_splat_ply(ply))
    src = _by_position(src)
    np.testing.assert_array_equal(back["means"], src["means"])
    np.testing.assert_allclose(back["scales"], src["scales"], atol=1e-5)
    want = np.clip(_rgb(src), 0, 1)
    assert np.abs(np.clip(_rgb(back), 0, 1) - want).max() <= 0.5 / 255 + 1e-6
    assert np.abs(sigmoid(back["opacities"]) - sigmoid(src["opacities"])).max() <= 0.5 / 255 + 1e-3
    # half a step of rounding here plus splat-transform's half-step decode offset (see above)
    assert _qdist(back["quats"], src["quats"]).max() <= 1.5 / 128


# ----------------------------------------------------------------------------- SPZ / SOG


@pytest.mark.parametrize("suffix,pos_tol", [(".spz", 2.0 ** -12), (".sog", 2e-3)])
def test_library_formats_round_trip(sh3_ply: Path, tmp_path: Path, suffix: str, pos_tol: float):
    """PLY -> SPZ/SOG -> PLY through splat-transform keeps the count and SH degree, with positions
    within the format's quantisation (SPZ: 12 fractional bits; SOG: 16-bit log-space positions,
    relative to the scene extent) and colours within a few 1/255 steps."""
    _need_splat_transform()
    src = read_splat_ply(sh3_ply)
    # the real file has outliers at ~1000 units: keep the bulk so the bounds are meaningful
    keep = np.abs(src["means"]).max(1) < 20
    src = {k: (v[keep] if isinstance(v, np.ndarray) else v) for k, v in src.items()}
    out = tmp_path / f"s{suffix}"
    write_any(out, src)
    assert out.stat().st_size < 0.35 * (len(src["means"]) * 62 * 4)
    back = read_any(out)
    assert len(back["means"]) == len(src["means"]) and back["sh_degree"] == 3
    # the formats may reorder Gaussians (SOG sorts them in Morton order): match by nearest position
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(back["means"]).query(src["means"])
    a, b = src, {k: (v[idx] if isinstance(v, np.ndarray) else v) for k, v in back.items()}
    extent = float(np.ptp(src["means"], axis=0).max())
    assert dist.max() <= pos_tol * (extent if suffix == ".sog" else 1.0) * np.sqrt(3), dist.max()
    assert np.median(np.abs(np.clip(_rgb(a), 0, 1) - np.clip(_rgb(b), 0, 1))) < 4 / 255


def test_convert_cli_picks_format_by_suffix(plant: Path, tmp_path: Path):
    """`splatforge convert` .splat -> .spz -> .ply: same count at every step (one process each)."""
    _need_splat_transform()
    spz, ply = tmp_path / "p.spz", tmp_path / "p.ply"
    for a, b in ((plant, spz), (spz, ply)):
        r = subprocess.run([sys.executable, "-m", "splatforge_core.cli", "convert", str(a), str(b)],
                           capture_output=True, text=True, cwd=REPO)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["gaussians"] == 113648
    assert check_spz(spz)["num_points"] == 113648
    assert len(read_splat_ply(ply)["means"]) == 113648


def test_convert_summary(plant: Path, tmp_path: Path):
    s = convert(plant, tmp_path / "x.ply")
    assert s["gaussians"] == 113648 and s["sh_degree"] == 0 and s["bytes_in"] == plant.stat().st_size


# ----------------------------------------------------------------------------- hostile input


def hostile(expect="clear_error"):
    return pytest.mark.hostile(cls="formats", expect=expect)


def _raises_naming(path: Path, fn=read_any):
    with pytest.raises(SplatForgeError) as e:
        fn(path)
    assert str(path) in str(e.value)
    return str(e.value)


@hostile()
def test_hostile_splat_truncated(plant: Path, tmp_path: Path):
    p = tmp_path / "cut.splat"
    p.write_bytes(plant.read_bytes()[:32 * 100 + 17])
    assert "32-byte" in _raises_naming(p)


@hostile()
def test_hostile_splat_empty(tmp_path: Path):
    p = tmp_path / "empty.splat"
    p.write_bytes(b"")
    assert "empty" in _raises_naming(p)


@hostile()
def test_hostile_splat_nan_position(plant: Path, tmp_path: Path):
    rec = np.fromfile(plant, RECORD, count=64)
    rec["position"][10, 1] = np.nan
    p = tmp_path / "nan.splat"
    rec.tofile(p)
    assert "NaN" in _raises_naming(p)


@hostile()
def test_hostile_splat_negative_scale(plant: Path, tmp_path: Path):
    rec = np.fromfile(plant, RECORD, count=64)
    rec["scale"][3, 0] = -1.0
    p = tmp_path / "neg.splat"
    rec.tofile(p)
    assert "negative scale" in _raises_naming(p)


@hostile()
def test_hostile_splat_is_a_ply(sh3_ply: Path, tmp_path: Path):
    """A PLY renamed to .splat: its size is no multiple of 32 or its floats fail the checks."""
    p = tmp_path / "renamed.splat"
    p.write_bytes(sh3_ply.read_bytes())
    _raises_naming(p)


@hostile(expect="correct")
def test_hostile_splat_extreme_bytes_read_finite(plant: Path, tmp_path: Path):
    """Alpha 0 and 255, zero scale and a zero quaternion are legal bytes: read as finite values."""
    rec = np.fromfile(plant, RECORD, count=8)
    rec["rgba"][0, 3], rec["rgba"][1, 3] = 0, 255
    rec["scale"][2] = 0.0
    rec["rot"][3] = 128
    p = tmp_path / "extreme.splat"
    rec.tofile(p)
    d = read_antisplat(p)
    for k in ("means", "scales", "quats", "opacities", "sh0"):
        assert np.isfinite(d[k]).all(), k
    assert d["opacities"][0] < -5 and d["opacities"][1] > 5
    np.testing.assert_allclose(d["quats"][3], [1, 0, 0, 0])


@pytest.fixture(scope="module")
def real_spz(plant: Path, tmp_path_factory) -> Path:
    _need_splat_transform()
    out = tmp_path_factory.mktemp("spz") / "plant.spz"
    splat_transform(plant, out)
    return out


@pytest.fixture(scope="module")
def real_sog(plant: Path, tmp_path_factory) -> Path:
    _need_splat_transform()
    out = tmp_path_factory.mktemp("sog") / "plant.sog"
    splat_transform(plant, out)
    return out


def _spz_v2_gzip(n_claimed: int) -> bytes:
    head = struct.pack("<IIIBBBB", 0x5053474E, 2, n_claimed, 0, 12, 0, 0)
    return gzip.compress(head + b"\0" * 64)


@hostile()
def test_hostile_spz_not_spz(tmp_path: Path):
    p = tmp_path / "junk.spz"
    p.write_bytes(b"hello, this is not a splat" * 4)
    assert "not an SPZ" in _raises_naming(p)


@hostile()
def test_hostile_spz_gzip_count_beyond_size(tmp_path: Path):
    """A gzip SPZ (v2) that claims 100 million Gaussians in a 100-byte file: refused before decoding."""
    p = tmp_path / "bomb.spz"
    p.write_bytes(_spz_v2_gzip(100_000_000))
    assert "claims 100000000" in _raises_naming(p)


@hostile()
def test_hostile_spz_truncated(real_spz: Path, tmp_path: Path):
    p = tmp_path / "cut.spz"
    p.write_bytes(real_spz.read_bytes()[: real_spz.stat().st_size // 2])
    assert "truncated" in _raises_naming(p)


@hostile()
def test_hostile_spz_count_edited(real_spz: Path, tmp_path: Path):
    """numPoints edited to 2^27: the stream table's sizes no longer match."""
    b = bytearray(real_spz.read_bytes())
    b[8:12] = struct.pack("<I", 1 << 27)
    p = tmp_path / "count.spz"
    p.write_bytes(bytes(b))
    _raises_naming(p)


@hostile()
def test_hostile_sog_not_zip(tmp_path: Path):
    p = tmp_path / "junk.sog"
    p.write_bytes(b"PK\x03\x04 but not really a zip")
    assert "not a SOG" in _raises_naming(p)


def _edit_sog(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as z:
        files = {n: z.read(n) for n in z.namelist()}
    meta = json.loads(files["meta.json"])
    edit(meta, files)
    files["meta.json"] = json.dumps(meta).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    dst.write_bytes(buf.getvalue())
    return dst


@hostile()
def test_hostile_sog_count_beyond_images(real_sog: Path, tmp_path: Path):
    p = _edit_sog(real_sog, tmp_path / "count.sog", lambda m, f: m.update(count=10 ** 8))
    assert "cannot hold" in _raises_naming(p)


@hostile()
def test_hostile_sog_missing_image(real_sog: Path, tmp_path: Path):
    p = _edit_sog(real_sog, tmp_path / "missing.sog", lambda m, f: f.pop("quats.webp"))
    assert "quats.webp" in _raises_naming(p)


@hostile()
def test_hostile_unknown_suffix(tmp_path: Path):
    p = tmp_path / "model.xyz"
    p.write_bytes(b"x")
    assert "unknown splat format" in _raises_naming(p)


@hostile()
def test_hostile_convert_cli_one_line(tmp_path: Path):
    """The CLI on a truncated .splat: exit 1, one line naming the file, no traceback."""
    p = tmp_path / "cut.splat"
    p.write_bytes(b"\0" * 33)
    r = subprocess.run([sys.executable, "-m", "splatforge_core.cli", "convert", str(p), str(tmp_path / "o.ply")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1 and "Traceback" not in r.stderr and str(p) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_check_functions_accept_real_files(real_spz: Path, real_sog: Path):
    assert check_spz(real_spz)["num_points"] == 113648
    assert check_sog(real_sog)["count"] == 113648
    with pytest.raises(InputError):
        check_spz(real_sog)
