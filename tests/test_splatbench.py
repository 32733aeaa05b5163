"""SplatBench (``splatforge bench``, #20) on a tiny synthetic Inria-layout scene."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from splatforge_core import cli as sf_cli
from splatforge_core.codec import splatbench as sb
from splatforge_core.codec.quantised import orbit_cameras
from splatforge_core.codec.synthetic import synthetic_splat, write_ply
from splatforge_core.errors import InputError
from splatforge_core.inria import write_dataset
from splatforge_core.splat import read_splat_ply
from splatforge_core.train.data import View
from splatforge_core.viewer import render_view

SIZE = 32


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    """16 orbit cameras around a 400-Gaussian SH1 splat; the photos are its renders plus noise
    (so held-out PSNR is finite), 2 of the 16 frames are held out (every 8th)."""
    root = tmp_path_factory.mktemp("scene")
    v = synthetic_splat(400, sh_degree=1, seed=4)
    v["opacity"] = 3.0  # visible splats, so the renders are not black
    for i in range(3):
        v[f"scale_{i}"] = np.log(1.5)
    write_ply(root / "point_cloud.ply", v)
    splat = read_splat_ply(root / "point_cloud.ply")
    vms, Ks = orbit_cameras(splat["means"], n_views=16, size=SIZE)
    rng = np.random.default_rng(0)
    views = []
    for i, (vm, K) in enumerate(zip(vms, Ks)):
        img = render_view(splat, vm, K, SIZE, SIZE).astype(np.int16) + rng.integers(-6, 7, (SIZE, SIZE, 3))
        views.append(View(f"v{i:02d}.png", f"v{i:02d}", np.clip(img, 0, 255).astype(np.uint8), K, vm))
    write_dataset(views, root)
    return root


def test_bench_rows_columns_and_lossless_delta_zero(scene_dir: Path) -> None:
    rows = sb.bench([sb.open_scene(f"tiny={scene_dir}")], ["lossless-zstd", "quantised"], spz=False, max_side=SIZE)
    assert [r["preset"] for r in rows] == ["lossless-zstd", "quantised"]
    for r in rows:
        assert list(r) == sb.COLUMNS and r["scene"] == "tiny" and r["gaussians"] == 400 and r["status"] == "ok"
        assert math.isfinite(r["psnr_in_db"]) and r["psnr_in_db"] > 15  # the photos are the input's renders + noise
    lossless, quant = rows
    assert lossless["delta_psnr_db"] == 0.0 and lossless["delta_ssim"] == 0.0
    assert lossless["psnr_out_db"] == lossless["psnr_in_db"]
    assert lossless["report"] == {"delta_psnr_db": 0.0}  # the preset's own report agrees
    assert quant["size_out_mb"] < lossless["size_out_mb"] and quant["save_pct"] > 50
    assert quant["delta_psnr_db"] != 0.0 and abs(quant["delta_psnr_db"]) < 5  # lossy, but close
    assert quant["encode_s"] > 0 and quant["encode_cpu_s"] > 0 and quant["finetune_s"] is None
    md = sb.to_markdown(rows)
    header = md.splitlines()[0]
    for col in ("scene", "preset", "Gaussians", "size in MB", "size out MB", "save %", "delta PSNR dB", "delta SSIM",
                "encode s", "encode CPU s", "finetune s"):
        assert f"| {col} |" in header
    assert len(md.splitlines()) == 2 + len(rows)


def test_cli_writes_table(scene_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sb.md"
    rc = sf_cli.main(["bench", "--scenes", str(scene_dir), "--presets", "qat-3dgs", "--no-spz", "--max-side", str(SIZE),
                      "--out", str(out)])
    assert rc == 0
    lines = out.read_text().splitlines()
    row = [ln for ln in lines if ln.startswith(f"| {scene_dir.name} | qat-3dgs |")]
    assert len(row) == 1 and "| +0.000 | +0.0000 |" in row[0]
    rows = json.loads(out.with_suffix(".json").read_text())
    assert [r["preset"] for r in rows] == ["qat-3dgs"] and list(rows[0]) == sb.COLUMNS


@pytest.mark.hostile(cls="splatbench", expect="clear_error")
def test_scene_without_ply_names_the_file(scene_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cameras.json").write_text((scene_dir / "cameras.json").read_text())
    with pytest.raises(InputError, match=r"point_cloud\.ply: missing"):
        sb.open_scene(bad)


def test_cli_unknown_preset_one_line_error(scene_dir: Path, tmp_path: Path, capsys) -> None:
    rc = sf_cli.main(["bench", "--scenes", str(scene_dir), "--presets", "no-such-preset", "--out", str(tmp_path / "x.md")])
    assert rc == 1 and not (tmp_path / "x.md").exists()
    err = capsys.readouterr().err
    assert "no-such-preset" in err and "Traceback" not in err


def test_option_parsing() -> None:
    assert sb._parse_options(["quantised.sh_bits=5", "quantised.evaluate_psnr=false"]) == {
        "quantised": {"sh_bits": 5, "evaluate_psnr": False}}
    with pytest.raises(InputError, match="PRESET.KEY=VALUE"):
        sb._parse_options(["sh_bits=5"])
