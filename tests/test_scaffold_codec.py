"""``qat-scaffold``: the lossless single-PLY tier on Scaffold-GS anchor PLYs (issue #15)."""

from __future__ import annotations

import numpy as np
import pytest
from plyfile import PlyData

from splatforge_core.codec import decompress, info, main
from splatforge_core.errors import InputError
from splatforge_core.scaffold.layout import Anchors, read_anchor_ply, write_anchor_ply


def _anchors(n: int, f: int = 32, k: int = 10, seed: int = 0) -> Anchors:
    """Anchors as the reference trainer leaves them: trained positions/offsets/features/scales,
    untouched normals (0), opacity (logit 0.1) and rotation (identity)."""
    r = np.random.default_rng(seed)
    return Anchors(r.normal(size=(n, 3)).astype(np.float32), r.normal(size=(n, k, 3)).astype(np.float32),
                   r.normal(size=(n, f)).astype(np.float32),
                   np.full((n, 1), np.log(0.1 / 0.9), np.float32), r.normal(-3, 0.5, size=(n, 6)).astype(np.float32),
                   np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)))


def test_qat_scaffold_bitexact_and_saves_ten_percent(tmp_path):
    src = tmp_path / "point_cloud.ply"
    write_anchor_ply(src, _anchors(5000))
    rep = main(src, tmp_path / "c.ply", tmp_path / "r.json", "qat-scaffold")
    assert rep["lossless"] and rep["bitexact_roundtrip"]
    assert sorted(rep["constants_detected"]) == sorted(["nx", "ny", "nz", "opacity", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert rep["ply_save_pct"] >= 10.0, rep["ply_save_pct"]  # 8 of 79 float32 columns, minus the header comments
    out = decompress(tmp_path / "c.ply", tmp_path / "d.ply")
    assert out["codec"] == "qat-scaffold"
    assert (tmp_path / "d.ply").read_bytes() == src.read_bytes()
    # the compressed file is still a PLY every reader opens, and `info` names its codec
    assert len(PlyData.read(str(tmp_path / "c.ply"))["vertex"]) == 5000
    assert info(tmp_path / "c.ply")["codec"] == "qat-scaffold"
    np.testing.assert_array_equal(read_anchor_ply(tmp_path / "d.ply").anchor_feat, read_anchor_ply(src).anchor_feat)


def test_qat_scaffold_keeps_a_trained_column_that_happens_to_vary(tmp_path):
    a = _anchors(100)
    a.opacity[5] = 0.0  # a Scaffold-GS PLY from another trainer may train opacity: it is then stored
    src = tmp_path / "a.ply"
    write_anchor_ply(src, a)
    rep = main(src, tmp_path / "c.ply", None, "qat-scaffold")
    assert "opacity" not in rep["constants_detected"] and "nx" in rep["constants_detected"]
    decompress(tmp_path / "c.ply", tmp_path / "d.ply")
    assert (tmp_path / "d.ply").read_bytes() == src.read_bytes()


@pytest.mark.hostile(cls="scaffold", expect="clear_error")
def test_qat_scaffold_refuses_a_3dgs_ply(tmp_path, shared_data):
    with pytest.raises(InputError, match=r"inria3dgs_sh3_9080\.ply: not a Scaffold-GS anchor PLY"):
        main(shared_data / "ply" / "inria3dgs_sh3_9080.ply", tmp_path / "c.ply", None, "qat-scaffold")
    assert not list(tmp_path.iterdir())


@pytest.mark.hostile(cls="scaffold", expect="clear_error")
def test_qat_scaffold_refuses_a_misordered_anchor_ply(tmp_path):
    src = tmp_path / "a.ply"
    write_anchor_ply(src, _anchors(10, f=4, k=2))
    raw = src.read_bytes().replace(b"property float nx\n", b"property float qq\n")
    src.write_bytes(raw)
    with pytest.raises(InputError, match=r"a\.ply: property 3 is 'qq'"):
        main(src, tmp_path / "c.ply", None, "qat-scaffold")


@pytest.mark.hostile(cls="scaffold", expect="clear_error")
def test_qat_scaffold_output_edited(tmp_path):
    src = tmp_path / "a.ply"
    write_anchor_ply(src, _anchors(50, f=4, k=2))
    main(src, tmp_path / "c.ply", None, "qat-scaffold")
    b = bytearray((tmp_path / "c.ply").read_bytes())
    b[-7] ^= 1
    (tmp_path / "c.ply").write_bytes(bytes(b))
    with pytest.raises(InputError, match=r"c\.ply.*corrupt or was edited"):
        decompress(tmp_path / "c.ply", tmp_path / "d.ply")


def test_qat_3dgs_refuses_scaffold_naming_the_scaffold_preset(tmp_path):
    src = tmp_path / "a.ply"
    write_anchor_ply(src, _anchors(5, f=4, k=2))
    with pytest.raises(InputError, match=r"a\.ply.*'qat-scaffold' preset"):
        main(src, tmp_path / "c.ply", None, "qat-3dgs")
