"""Hostile inputs of the training stage (issue #18): checkpoints that belong to other inputs,
crafted checkpoint files, and options out of range.

Each case trains a few steps of the tiny synthetic scene (16 views of 64 x 48 px).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from splatforge_core.errors import InputError, SplatForgeError
from splatforge_core.train import main
from splatforge_core.train.checkpoint import list_checkpoints, load_latest_checkpoint
from splatforge_core.train.synthetic import make_synthetic_scene

FEW = {"iterations": 20, "checkpoint_every": 10, "eval_steps": [], "progress": False, "sky_points": 0,
       "keep_checkpoints": 5}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """16 views of 64x48 (2 held out), 500 SfM points."""
    return make_synthetic_scene(tmp_path_factory.mktemp("syn"), n_cameras=16, width=64, height=48,
                                n_gaussians=3000, n_points=500)


def _copy_scene(scene, dest: Path) -> dict:
    """A private copy of the synthetic scene (images may be changed in it)."""
    root = Path(scene["images"]).parent
    shutil.copytree(root, dest)
    return {k: dest / Path(v).relative_to(root) for k, v in scene.items()}


def _train(sc, out: Path, **over):
    return main(sc["aligned"], sc["images"], sc["views"], out, out / "splat_final.ply", {**FEW, **over})


# ---- checkpoints belong to their inputs ------------------------------------------------------


@pytest.mark.hostile(cls="checkpoint", expect="correct")
def test_same_inputs_resume(scene, tmp_path, caplog):
    """Control: a rerun on the same inputs resumes (no stale folder)."""
    sc = _copy_scene(scene, tmp_path / "sc")
    _train(sc, tmp_path / "out", iterations=10)
    caplog.set_level(logging.INFO, logger="splatforge")
    m = _train(sc, tmp_path / "out", iterations=10)
    assert "resumed from checkpoint" in caplog.text
    assert m["final_step"] == 10
    assert not list((tmp_path / "out" / "checkpoints").glob("stale-*"))


@pytest.mark.hostile(cls="checkpoint", expect="correct")
def test_other_images_same_names_not_resumed(scene, tmp_path, caplog):
    """Issue #18: a second capture (different photos, same file names) must not resume the
    first capture's finished checkpoint; it is moved aside with a log line saying why."""
    sc = _copy_scene(scene, tmp_path / "sc")
    out = tmp_path / "out"
    first = _train(sc, out)
    old_ckpts = [p.name for p in list_checkpoints(out / "checkpoints")]
    assert old_ckpts and first["final_step"] == 20
    # "another capture": every image replaced by different pixels under the same name
    from PIL import Image

    rng = np.random.default_rng(7)
    for p in sorted(Path(sc["images"]).iterdir()):
        with Image.open(p) as im:
            size, fmt = im.size, im.format
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)).save(p, format=fmt)
    caplog.set_level(logging.INFO, logger="splatforge")
    second = _train(sc, out)
    assert "resumed from checkpoint" not in caplog.text
    assert "not resuming" in caplog.text and "images changed" in caplog.text
    stale = list((out / "checkpoints").glob("stale-*"))
    assert len(stale) == 1 and sorted(p.name for p in stale[0].iterdir()) == old_ckpts
    # trained afresh on the new images: 20 steps run in this call, different splat
    assert second["train_seconds"] > 0 and second["resumed_from"] == []
    assert second["final"]["psnr"] != pytest.approx(first["final"]["psnr"], abs=1e-6)


@pytest.mark.hostile(cls="checkpoint", expect="correct")
@pytest.mark.parametrize("change", ["option", "model", "views"])
def test_other_options_model_or_views_not_resumed(scene, tmp_path, caplog, change):
    sc = _copy_scene(scene, tmp_path / "sc")
    out = tmp_path / "out"
    _train(sc, out)
    over = {}
    if change == "option":
        over = {"ssim_lambda": 0.3}
    elif change == "model":
        p = next(Path(sc["aligned"]).glob("points3D*"))
        p.write_bytes(p.read_bytes() + b"\0")
    else:
        v = json.loads(Path(sc["views"]).read_text())
        v["frames"] = v["frames"][::-1]
        Path(sc["views"]).write_text(json.dumps(v))
    caplog.set_level(logging.INFO, logger="splatforge")
    try:
        _train(sc, out, **over)
    except SplatForgeError:  # a damaged model may be unreadable: that is a clear error too
        assert change == "model"
        return
    want = {"option": "options changed", "model": "aligned", "views": "views changed"}[change]
    assert "resumed from checkpoint" not in caplog.text and want in caplog.text
    assert len(list((out / "checkpoints").glob("stale-*"))) == 1


@pytest.mark.hostile(cls="checkpoint", expect="correct")
def test_num_threads_does_not_invalidate(scene, tmp_path, caplog):
    sc = _copy_scene(scene, tmp_path / "sc")
    _train(sc, tmp_path / "out", iterations=10, num_threads=1)
    caplog.set_level(logging.INFO, logger="splatforge")
    _train(sc, tmp_path / "out", iterations=10, num_threads=2, progress=False, keep_checkpoints=3)
    assert "resumed from checkpoint" in caplog.text


@pytest.mark.hostile(cls="checkpoint", expect="correct")
def test_old_format_checkpoint_moved_aside(scene, tmp_path, caplog):
    """A checkpoint without a fingerprint (older Splat Forge) is not resumed."""
    sc = _copy_scene(scene, tmp_path / "sc")
    out = tmp_path / "out"
    _train(sc, out, iterations=10)
    p = list_checkpoints(out / "checkpoints")[-1]
    d = torch.load(p, weights_only=True)
    for k in ("format", "version", "fingerprint"):
        d.pop(k)
    torch.save(d, p)
    caplog.set_level(logging.INFO, logger="splatforge")
    _train(sc, out, iterations=10)
    assert "older version" in caplog.text and "resumed from checkpoint" not in caplog.text


# ---- crafted checkpoint files ----------------------------------------------------------------


class _Payload:
    """Unpickling this calls ``os.system`` (the classic pickle exploit)."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


@pytest.mark.hostile(cls="checkpoint", expect="clear_error")
@pytest.mark.parametrize("how", ["torch_save", "raw_pickle"])
def test_malicious_checkpoint_never_runs(scene, tmp_path, how):
    sc = _copy_scene(scene, tmp_path / "sc")
    out = tmp_path / "out"
    ck = out / "checkpoints"
    ck.mkdir(parents=True)
    marker = tmp_path / "PWNED"
    evil = ck / "ckpt_0000010.pt"
    payload = {"step": 10, "params": _Payload(f"touch {marker}")}
    if how == "torch_save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload))
    with pytest.raises(InputError) as e:
        _train(sc, out)
    assert not marker.exists()
    assert str(evil) in str(e.value) and "refused" in str(e.value)


@pytest.mark.hostile(cls="checkpoint", expect="clear_error")
@pytest.mark.parametrize("damage", ["shape", "dtype", "missing_key", "not_dict", "step"])
def test_bad_schema_refused(scene, tmp_path, damage):
    sc = _copy_scene(scene, tmp_path / "sc")
    out = tmp_path / "out"
    _train(sc, out, iterations=10)
    p = list_checkpoints(out / "checkpoints")[-1]
    d = torch.load(p, weights_only=True)
    if damage == "shape":
        d["params"]["quats"] = d["params"]["quats"][:, :3]
    elif damage == "dtype":
        d["params"]["means"] = d["params"]["means"].double()
    elif damage == "missing_key":
        del d["optimizers"]
    elif damage == "not_dict":
        d = [1, 2, 3]
    else:
        d["step"] = 10 ** 9
    torch.save(d, p)
    with pytest.raises(InputError) as e:
        load_latest_checkpoint(out / "checkpoints")
    assert str(p) in str(e.value) and "not a valid Splat Forge checkpoint" in str(e.value)


@pytest.mark.hostile(cls="checkpoint", expect="correct")
def test_foreign_file_in_checkpoint_folder_never_opened(scene, tmp_path, caplog):
    """Only ``ckpt_<step>.pt`` names are opened: an ``evil.pt`` beside them is ignored (logged)."""
    sc = _copy_scene(scene, tmp_path / "sc")
    out = tmp_path / "out"
    ck = out / "checkpoints"
    ck.mkdir(parents=True)
    marker = tmp_path / "PWNED"
    (ck / "evil.pt").write_bytes(pickle.dumps(_Payload(f"touch {marker}")))
    (ck / "ckpt_99.pt").write_bytes(pickle.dumps(_Payload(f"touch {marker}")))  # not the saver's 7 digits
    caplog.set_level(logging.INFO, logger="splatforge")
    m = _train(sc, out, iterations=10)
    assert m["final_step"] == 10 and not marker.exists()
    assert "evil.pt: not a checkpoint this project wrote" in caplog.text


@pytest.mark.hostile(cls="checkpoint", expect="correct")
def test_fingerprint_time_on_demo_views():
    """Measure the fingerprint of the demo's views (if a demo run is on this machine)."""
    import time

    from splatforge_core.train.checkpoint import input_fingerprint
    from splatforge_core.train.data import _masks_from_views

    root = Path(__file__).resolve().parents[2] / "main" / "work" / "scene"
    if not (root / "views.json").is_file():
        pytest.skip("no demo run in /work/main/work/scene")
    v = json.loads((root / "views.json").read_text())
    names = [n for fr in v["frames"] for n in fr["images"].values()]
    t0 = time.perf_counter()
    fp = input_fingerprint(root / "aligned", root / "images", names, _masks_from_views(root / "views.json").values(),
                           root / "views.json", {"iterations": 1})
    dt = time.perf_counter() - t0
    logging.getLogger("splatforge").warning("fingerprint of %d demo views: %.3f s", len(names), dt)
    assert len(names) >= 200 and all(len(h) == 64 for h in fp.values()) and dt < 5.0


# ---- options out of range or of the wrong type ------------------------------------------------

BAD_OPTIONS = [
    ("export", {"threads": -3}, "'threads' must be >= 1"),
    ("compress", {"psnr_size": 0}, "'psnr_size' must be >= 16"),
    ("compress", {"psnr_views": 0}, "'psnr_views' must be >= 1"),
    ("train", {"iterations": -5}, "'iterations' must be >= 1"),
    ("train", {"checkpoint_every": 0}, "'checkpoint_every' must be >= 1"),
    ("train", {"init_opacity": 1.5}, "'init_opacity' must be > 0 and < 1"),
    ("train", {"ssim_lambda": -0.1}, "'ssim_lambda' must be >= 0 and <= 1"),
    ("train", {"ssim_lambda": float("nan")}, "'ssim_lambda' must be finite"),
    ("train", {"ssim_lambda": "abc"}, "'ssim_lambda' must be a number, got 'abc'"),
    ("train", {"means_lr": 0.0}, "'means_lr' must be > 0"),
    ("train", {"seed": -1}, "'seed' must be >= 0"),
    ("train", {"num_threads": -3}, "'num_threads' must be >= 1"),
    ("project", {"workers": 0}, "'workers' must be >= 1"),
    ("project", {"max_view_masked_fraction": 1.5}, "'max_view_masked_fraction' must be > 0 and <= 1"),
    ("sfm.extract", {"num_threads": -3}, "'num_threads' must be >= -1"),
    ("sfm.match", {"max_ratio": 1.5}, "'max_ratio' must be > 0 and <= 1"),
    ("sfm.map", {"min_num_matches": 0}, "'min_num_matches' must be >= 1"),
    ("sfm.pairs", {"max_distance_m": -1.0}, "'max_distance_m' must be > 0"),
    ("align", {"collinear_ratio": 2.0}, "'collinear_ratio' must be >= 0 and <= 1"),
    ("export", {"trim_quantile": 1.0}, "'trim_quantile' must be >= 0 and < 1"),
]


@pytest.mark.hostile(cls="option", expect="clear_error")
@pytest.mark.parametrize("section,values,words", BAD_OPTIONS,
                         ids=[f"{s}.{next(iter(v))}={next(iter(v.values()))}" for s, v, _ in BAD_OPTIONS])
def test_bad_option_is_config_error_at_start(section, values, words):
    """validate_config (run when Snakemake starts) names the section and the option."""
    from splatforge_core.config import ConfigError, validate_config

    cfg: dict = {"scenes": {"scene": {"input": "x"}}}
    top, _, sub = section.partition(".")
    cfg[top] = {sub: values} if sub else dict(values)
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert str(e.value).startswith(f"config section {section}: ") and words in str(e.value)


@pytest.mark.hostile(cls="option", expect="clear_error")
@pytest.mark.parametrize("cls_path,values,words", [
    ("splatforge_core.codec:CodecOptions", {"psnr_size": 0}, "'psnr_size' must be >= 16"),
    ("splatforge_core.export:ExportOptions", {"threads": -3}, "'threads' must be >= 1"),
    ("splatforge_core.train.options:TrainOptions", {"ssim_lambda": "abc"}, "'ssim_lambda' must be a number"),
    ("splatforge_core.train.options:TrainOptions", {"iterations": -5}, "'iterations' must be >= 1"),
], ids=["codec-psnr_size", "export-threads", "train-type", "train-iterations"])
def test_bad_option_when_stage_called_directly(cls_path, values, words):
    """The same checks hold when a stage is called from Python or its CLI (from_dict)."""
    import importlib

    mod, name = cls_path.split(":")
    cls = getattr(importlib.import_module(mod), name)
    with pytest.raises(InputError, match=words):
        cls.from_dict(values)


@pytest.mark.hostile(cls="option", expect="clear_error")
def test_type_error_stops_snakemake_at_start(tmp_path):
    """``train: {ssim_lambda: "abc"}`` stops the workflow before any rule runs, naming the option."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(tmp_path),
                        "--cores", "1", "-n", "--config", "train={ssim_lambda: abc}"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode != 0
    assert "config section train: option 'ssim_lambda' must be a number, got 'abc'" in r.stdout + r.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "results").exists()
