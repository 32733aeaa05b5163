"""The codec takes the ecosystem's splat files as input (#16): .splat (and SPZ/SOG through formats)."""

from pathlib import Path

import numpy as np
import pytest

from splatforge_core import codec
from splatforge_core.errors import InputError
from splatforge_core.formats import read_any, write_any
from splatforge_core.splat import read_splat_ply


def _splat(n=300, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4)).astype(np.float32)
    return {"means": rng.normal(size=(n, 3)).astype(np.float32), "scales": rng.uniform(-4, -1, (n, 3)).astype(np.float32),
            "quats": q / np.linalg.norm(q, axis=1, keepdims=True), "opacities": rng.normal(size=n).astype(np.float32),
            "sh0": rng.normal(size=(n, 3)).astype(np.float32), "shN": np.zeros((n, 0, 3), np.float32), "sh_degree": 0}


@pytest.mark.parametrize("preset", ["qat-3dgs", "lossless-zstd"])
def test_dot_splat_input_is_encoded_as_the_ply_it_converts_to(tmp_path: Path, preset):
    src = tmp_path / "in.splat"
    write_any(src, _splat())
    out = tmp_path / ("out.ply" if preset == "qat-3dgs" else "out.sfz")
    rep = codec.main(src, out, tmp_path / "rep.json", preset)
    assert rep["input"] == str(src) and rep["imported_from"] == "splat" and rep["imported_bytes"] == src.stat().st_size
    back = tmp_path / "back.ply"
    codec.decompress(out, back)
    got, want = read_splat_ply(back), read_any(src)  # lossless: exactly what the .splat holds
    for k in ("means", "scales", "opacities", "sh0"):
        np.testing.assert_array_equal(got[k], want[k])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the import folder is gone
    assert (tmp_path / "rep.json").is_file()


@pytest.mark.hostile(cls="compressed", expect="clear_error")
def test_truncated_dot_splat_input_is_a_clear_error(tmp_path: Path):
    src = tmp_path / "bad.splat"
    write_any(src, _splat())
    src.write_bytes(src.read_bytes()[:-7])
    with pytest.raises(InputError, match="bad.splat"):
        codec.main(src, tmp_path / "out.ply", None, "qat-3dgs")
    assert not (tmp_path / "out.ply").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_reads_a_dot_splat(tmp_path: Path):
    from splatforge_core.export.mesh import _read_splat_ply

    src = tmp_path / "in.splat"
    s = _splat()
    write_any(src, s)
    got = _read_splat_ply(src)
    want = read_any(src)
    np.testing.assert_array_equal(got.means, want["means"].astype(np.float64))
    assert len(got.means) == 300 and got.sh.shape == (300, 1, 3)
