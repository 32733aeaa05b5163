"""The configuration contract (:mod:`splatforge_core.config`): every section of the workflow
config is checked against its stage's options dataclass when Snakemake starts."""

from __future__ import annotations

import copy
import dataclasses
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from splatforge_core.codec import PRESETS
from splatforge_core.config import (
    SECTION_BY_PATH,
    SECTIONS,
    ConfigError,
    merge,
    options_class,
    scene_section,
    validate_config,
)
from splatforge_core.errors import InputError

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "workflow" / "tiny.yaml"

#: section path -> (a misspelt key, the option it misspells, (an option, a value of the wrong type)).
CASES = {
    "demo": ("n_panorama", "n_panoramas", ("width", "wide")),
    "ingest": ("min_image", "min_images", ("require_gps", "yes")),
    "project": ("fov", "fov_deg", ("size", 256.0)),
    "sfm.extract": ("max_image_sise", "max_image_size", ("max_num_features", "many")),
    "sfm.pairs": ("num_neighbours", "num_neighbors", ("num_neighbors", 2.5)),
    "sfm.match": ("max_ration", "max_ratio", ("max_ratio", "0.8")),
    "sfm.map": ("maper", "mapper", ("refine_focal_length", "yes")),
    "align": ("max_error", "max_error_m", ("max_error_m", [1.0])),
    "cluster": ("max_panorama", "max_panoramas", ("margin_m", "ten")),
    "export": ("texture_sise", "texture_size", ("target_faces", "1e5")),
    "compress": ("zstd_levl", "zstd_level", ("zstd_level", 3.5)),
    "train": ("iteratons", "iterations", ("ssim_lambda", "abc")),
}


def base() -> dict:
    return {"scenes": {"s": {"input": "photos"}, "t": {"input": "other"}}, "use_gpu": False}


def with_value(config: dict, path: str, values: dict) -> dict:
    """``config`` with ``values`` set at the dotted ``path`` (levels created as needed)."""
    out = copy.deepcopy(config)
    d = out
    parts = path.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = values
    return out


def test_cases_cover_every_section():
    assert set(CASES) == set(SECTION_BY_PATH)


def test_every_section_maps_to_a_dataclass_with_its_fields():
    for s in SECTIONS:
        cls = options_class(s.path)
        assert dataclasses.is_dataclass(cls), s.path
        typo, meant, (key, _) = CASES[s.path]
        fields = {f.name for f in dataclasses.fields(cls)}
        assert {meant, key} <= fields and typo not in fields, s.path


def test_rules_read_only_sections_of_the_table():
    """The rules' stage_options(scene, "<path>") use the same paths as the table."""
    used = set()
    for smk in (REPO / "rules").glob("*.smk"):
        used |= set(re.findall(r'stage_options\(wildcards\.scene, "([a-z.]+)"\)', smk.read_text()))
    assert used == {s.path for s in SECTIONS if s.per_scene}


@pytest.mark.parametrize("path", sorted(CASES))
def test_typo_key_is_rejected_naming_section_and_known_keys(path):
    typo, meant, _ = CASES[path]
    with pytest.raises(ConfigError) as ei:
        validate_config(with_value(base(), path, {typo: 1}))
    msg = str(ei.value)
    assert msg.startswith(f"config section {path}: unknown option(s) [{typo!r}] ({typo!r}: did you mean {meant!r}?)"), msg
    assert re.search(r"; known options: \[.*" + re.escape(repr(meant)), msg), msg


@pytest.mark.parametrize("path", sorted(CASES))
def test_wrong_type_is_rejected_naming_the_option(path):
    _, _, (key, value) = CASES[path]
    with pytest.raises(ConfigError, match=rf"^config section {re.escape(path)}: option {key!r} must be .*, got"):
        validate_config(with_value(base(), path, {key: value}))


@pytest.mark.parametrize("path", sorted(s.path for s in SECTIONS if s.per_scene))
def test_scene_override_typo_names_the_scene_path(path):
    typo, _, _ = CASES[path]
    cfg = with_value(base(), f"scenes.t.{path}", {typo: 1})
    with pytest.raises(ConfigError, match=rf"^config section scenes\.t\.{re.escape(path)}: unknown option\(s\) \[{typo!r}\]"):
        validate_config(cfg)


def test_scene_override_is_checked_merged_on_top_of_the_global_section():
    # the scene's value replaces the global one and goes through TrainOptions' own range check
    cfg = with_value(base(), "train", {"cpu_iterations": 10, "sh_degree": 2})
    validate_config(with_value(cfg, "scenes.s.train", {"sh_degree": 1}))
    with pytest.raises(ConfigError, match=r"^config section scenes\.s\.train: option 'sh_degree' must be >= 0 and <= 3, got 4"):
        validate_config(with_value(cfg, "scenes.s.train", {"sh_degree": 4}))
    # a bad global value is reported at the global path, before any scene
    bad = with_value(with_value(cfg, "scenes.s.train", {"sh_degree": 1}), "train", {"sky_radius": 0.5})
    with pytest.raises(ConfigError, match=r"^config section train: option 'sky_radius' must be > 1, got 0.5"):
        validate_config(bad)


def test_errors_are_input_errors_and_config_is_not_modified():
    assert issubclass(ConfigError, InputError)
    cfg = with_value(base(), "sfm", {"map": {"mapper": "global"}, "pairs": {"num_neighbors": 4}})
    cfg = with_value(cfg, "scenes.s.sfm", {"pairs": {"no_gps": "exhaustive"}})
    before = copy.deepcopy(cfg)
    validate_config(cfg)
    assert cfg == before


def test_class_value_checks_still_apply():
    with pytest.raises(ConfigError, match=r"^config section sfm\.map: mapper must be one of .*got 'fast'"):
        validate_config(with_value(base(), "sfm.map", {"mapper": "fast"}))
    with pytest.raises(ConfigError, match=r"^config section compress: option 'zstd_level' must be >= 1 and <= 22, got 30"):
        validate_config(with_value(base(), "compress", {"zstd_level": 30}))
    with pytest.raises(ConfigError, match=r"^config section export: .*normals"):
        validate_config(with_value(base(), "export", {"normals": "magic"}))
    with pytest.raises(ConfigError, match=r"^config section ingest: option 'min_images' must be >= 1, got 0"):
        validate_config(with_value(base(), "ingest", {"min_images": 0}))


def test_yaml_exponent_without_dot_gets_a_hint():
    with pytest.raises(ConfigError, match=r"option 'means_lr' must be a number, got '1e-3' \(str\) \(YAML reads"):
        validate_config(with_value(base(), "train", {"means_lr": "1e-3"}))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_codec_preset_is_accepted(preset):
    validate_config(with_value(base(), "compress", {"preset": preset, "zstd_level": 5}))


def test_unknown_or_planned_preset_is_rejected():
    with pytest.raises(ConfigError, match=r"^config section compress: option 'preset': unknown preset 'qat-int9'\. "
                                          r"Available presets: qat-3dgs, lossless-zstd, quantised, qat-3dgs-bundle, "
                                          r"qat-3dgs-lowbit, qat-scaffold, qat-bundle$"):
        validate_config(with_value(base(), "compress", {"preset": "qat-int9"}))
    with pytest.raises(ConfigError, match=r"^config section scenes\.s\.compress: option 'preset': preset 'qat-int8' "
                                          r"is not implemented yet"):
        validate_config(with_value(base(), "scenes.s.compress", {"preset": "qat-int8"}))
    with pytest.raises(ConfigError, match=r"option 'preset' must be a string, got 3"):
        validate_config(with_value(base(), "compress", {"preset": 3}))


def test_export_crop_box_auto_is_the_workflows_value():
    validate_config(with_value(base(), "export", {"crop_box": "auto"}))
    validate_config(with_value(base(), "export", {"crop_box": [[0, 0, 0], [1, 1, 1]]}))
    with pytest.raises(ConfigError, match=r"option crop_box must be .*'auto' or null, got 'everything'"):
        validate_config(with_value(base(), "export", {"crop_box": "everything"}))


@pytest.mark.parametrize("use_gpu, device, ok", [
    (True, "cpu", False), (False, "cuda", False),
    (True, "auto", True), (True, "cuda", True), (False, "auto", True), (False, "cpu", True),
])
def test_use_gpu_and_train_device_must_agree(use_gpu, device, ok):
    cfg = with_value(base(), "use_gpu", use_gpu)
    for where in ("train", "scenes.t.train"):
        c = with_value(cfg, where, {"device": device})
        if ok:
            validate_config(c)
        else:
            with pytest.raises(ConfigError, match=rf"^config: use_gpu: {str(use_gpu).lower()} contradicts "
                                                  rf"{re.escape(where)}\.device: {device}"):
                validate_config(c)


def test_structure_scene_keys_and_sfm_sub_sections():
    with pytest.raises(ConfigError, match=r"^config: scenes\.s: unknown key\(s\) \['trian'\]; known keys: \[.*'train'"):
        validate_config(with_value(base(), "scenes.s.trian", {}))
    with pytest.raises(ConfigError, match=r"^config section sfm: unknown sub-section\(s\) \['mapp'\]"):
        validate_config(with_value(base(), "sfm", {"mapp": {}}))
    with pytest.raises(ConfigError, match=r"^config section scenes\.s\.sfm: unknown sub-section\(s\) \['extrakt'\]"):
        validate_config(with_value(base(), "scenes.s.sfm", {"extrakt": {}}))
    with pytest.raises(ConfigError, match=r"^config section train must be a mapping of options, got 5"):
        validate_config(with_value(base(), "train", 5))
    with pytest.raises(ConfigError, match=r"^config: 'scenes' must be a non-empty mapping"):
        validate_config({"scenes": {}})


def test_scene_section_merges_like_the_rules_did():
    cfg = {"scenes": {"s": {"input": "x", "sfm": {"match": {"max_ratio": 0.7}}, "train": {"iterations": 5}}},
           "sfm": {"match": {"max_ratio": 0.8, "device": "cpu"}, "pairs": {"num_neighbors": 3}},
           "train": {"iterations": 10, "seed": 1}}
    assert scene_section(cfg, "s", "train") == {"iterations": 5, "seed": 1}
    assert scene_section(cfg, "s", "sfm") == {"match": {"max_ratio": 0.7, "device": "cpu"}, "pairs": {"num_neighbors": 3}}
    assert scene_section(cfg, "s", "sfm.match") == {"max_ratio": 0.7, "device": "cpu"}
    assert scene_section(cfg, "s", "sfm.extract") == {}
    assert scene_section(cfg, "other", "train") == {"iterations": 10, "seed": 1}
    assert scene_section(cfg, "s", "export") == {}
    got = scene_section(cfg, "s", "sfm.match")
    got["max_ratio"] = 0.1  # a copy: the config is unchanged
    assert cfg["scenes"]["s"]["sfm"]["match"]["max_ratio"] == 0.7
    assert merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": 3}, "d": [2]}) == {"a": {"b": 3, "c": 2}, "d": [2]}


def test_repository_configs_validate():
    repo_cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    tiny = yaml.safe_load(TINY.read_text())
    validate_config(repo_cfg)
    validate_config(tiny)
    validate_config(merge(repo_cfg, tiny))  # what `snakemake --configfile tests/workflow/tiny.yaml` sees


def test_snakemake_dry_run_rejects_a_typo_before_anything_runs(tmp_path):
    """The time is printed, not asserted (speed belongs to benchmarks; under a loaded CI host
    the same check took 4 s and 30+ s)."""
    bad = tmp_path / "typo.yaml"
    bad.write_text("train:\n  iteratons: 500\n")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n",
           "--cores", "1", "results/scene.ply", f"--configfile={bad}"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    dt = time.perf_counter() - t0
    print(f"snakemake -n rejected the typo in {dt:.2f} s")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "config section train: unknown option(s) ['iteratons']" in out, out[-3000:]
    assert "did you mean 'iterations'?" in out, out[-3000:]
    assert not (tmp_path / "work").exists()  # nothing ran


@pytest.mark.parametrize("path", sorted(CASES))
def test_class_built_from_source_is_the_stage_class(path):
    """validate_config builds the classes from their modules' source (no torch/pycolmap import
    at every snakemake start): same fields, annotations, defaults and checks as the real class."""
    from splatforge_core.config import load_class_from_source
    from splatforge_core.options import field_types

    section = SECTION_BY_PATH[path]
    module, name = section.target.split(":")
    light, real = load_class_from_source(module, name), options_class(path)
    assert light is not None and light is not real and light.__name__ == real.__name__
    assert [f.name for f in dataclasses.fields(light)] == [f.name for f in dataclasses.fields(real)]
    assert field_types(light) == field_types(real) != {}
    try:
        default = dataclasses.asdict(light())
    except NameError:  # its checks call a function of the module: validate_config imports it then
        return
    assert default == dataclasses.asdict(real())


def test_validate_config_falls_back_to_the_module_when_the_class_needs_it():
    # ProjectOptions' checks call view_layout(), a function of splatforge_core.project
    with pytest.raises(ConfigError, match=r"^config section project: .*no view"):
        validate_config(with_value(base(), "project", {"min_elevation_deg": 60}))


def test_adopt_input_names_the_scene_after_the_folder(tmp_path):
    from splatforge_core.config import adopt_input, scene_name_for

    assert scene_name_for("/data/captures/ricoh/images") == "ricoh"
    assert scene_name_for("/data/My walk (2)") == "My_walk_2"
    assert scene_name_for("/") == "capture"
    cfg = {"default_scene": "scene", "input": str(tmp_path / "ricoh" / "DCIM"),
           "scenes": {"scene": {"input": "work/demo/capture/images", "project": {"size": 512}}}}
    assert adopt_input(cfg) == "ricoh"
    assert cfg["scenes"]["ricoh"] == {"input": str(tmp_path / "ricoh" / "DCIM")}  # no demo override
    assert cfg["default_scene"] == "ricoh" and "input" not in cfg
    validate_config(cfg)
    # the folder of a configured scene is that scene, with its overrides
    cfg = {"input": "../shared/data/lund/images", "scenes": {"lund": {"input": "../shared/data/lund/images/"}}}
    assert adopt_input(cfg) == "lund" and cfg["scenes"] == {"lund": {"input": "../shared/data/lund/images/"}}
    # another folder with a taken name is refused rather than sharing work/lund/
    cfg = {"input": str(tmp_path / "lund"), "scenes": {"lund": {"input": "../shared/data/lund/images"}}}
    with pytest.raises(ConfigError, match="already the scene of"):
        adopt_input(cfg)
    assert adopt_input({"scenes": {"scene": {"input": "x"}}}) is None
