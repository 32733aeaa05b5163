"""Atomic outputs: a failure inside the block leaves neither a partial file nor a temp file."""

from __future__ import annotations

import pytest

from splatforge_core.io import atomic_path, read_json, write_json


def test_atomic_file_success(tmp_path):
    dest = tmp_path / "out" / "a.json"
    write_json(dest, {"x": 1})
    assert read_json(dest) == {"x": 1}
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.json"]


def test_atomic_file_failure_keeps_old_and_leaves_no_temp(tmp_path):
    dest = tmp_path / "a.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError, match="^crash$"):
        with atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_dir_replaces_whole(tmp_path):
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "stale").write_text("x")
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("y")
    assert sorted(p.name for p in dest.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_atomic_nothing_written_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "never.bin"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_read_json_names_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        read_json(bad)


def test_suffix_is_kept_for_format_sniffing_libraries(tmp_path):
    with atomic_path(tmp_path / "mesh.glb") as tmp:
        assert tmp.suffix == ".glb"
        tmp.write_bytes(b"x")
    assert (tmp_path / "mesh.glb").read_bytes() == b"x"
