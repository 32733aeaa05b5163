"""The configuration contract: config sections -> the stages' options dataclasses.

Each stage's options dataclass (``IngestOptions``, ``TrainOptions``, ...) is the single source
of truth for the keys, types, defaults and value ranges of its config section. This module has
no stage logic: :data:`SECTIONS` maps each section path of ``config.yaml`` to its class, and
:func:`validate_config` builds every class from the global sections and from every scene's
overrides merged on top (:func:`scene_section`, the same merge the rules use), so a typo or a
wrong type anywhere stops the workflow when Snakemake starts, before any stage has run.

``schemas/config.schema.yaml`` keeps the top-level structure (which sections exist, scenes,
``use_gpu``); the sections' contents are checked here only.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

from .errors import InputError
from .log import get_logger
from .options import range_problem, type_problem

log = get_logger("config")


class ConfigError(InputError):
    """A bad workflow configuration: the message names the section path and the key."""


@dataclasses.dataclass(frozen=True)
class Section:
    """One config section and the options class that defines it.

    Attributes:
        path: dotted path in the config, e.g. ``"sfm.match"``; a scene overrides it at
            ``scenes.<scene>.<path>``.
        target: ``"module:Class"`` of the options dataclass (imported when first needed, so
            that importing this module stays cheap for the rule files).
        per_scene: whether ``scenes.<scene>`` may override the section.
        rule_keys: keys that the section holds for the rule rather than for the options class
            (e.g. ``compress.preset``), each with a check ``f(value, label)`` raising
            :class:`ConfigError`.
        workflow_values: option -> values the rule script resolves before the stage sees the
            options; such a value is not given to the class. (None today: ``export.crop_box:
            auto`` was one until the export stage resolved it itself.)
        source_only: :func:`validate_config` builds the class from its module's source
            without running the module's heavy imports (:func:`load_class_from_source`; torch,
            pycolmap, numba, cv2: ~3.5 s together at every ``snakemake`` start) unless the
            module is imported already; it imports the module when that fails or when the
            class's checks need a name only the module defines. Default True.
    """

    path: str
    target: str
    per_scene: bool = True
    rule_keys: Mapping[str, Callable[[Any, str], None]] = dataclasses.field(default_factory=dict)
    workflow_values: Mapping[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)
    source_only: bool = True

    def options_class(self, light: bool = False) -> type:
        """The options dataclass of this section.

        Args:
            light: for a ``source_only`` section whose module is not imported yet, return the
                class built from the module's source (:func:`load_class_from_source`); falls
                back to importing the module when that fails.
        """
        module, name = self.target.split(":")
        if light and self.source_only and module not in sys.modules:
            cls = load_class_from_source(module, name)
            if cls is not None:
                return cls
        return getattr(importlib.import_module(module), name)


#: Modules a class built by :func:`load_class_from_source` may import besides the standard
#: library: the package's light helpers.
_LIGHT_IMPORTS = ("splatforge_core.errors", "splatforge_core.options", "splatforge_core.log", "splatforge_core.io")
_LIGHT_CACHE: dict[tuple[str, str], type | None] = {}


def _light_import(node: ast.Import | ast.ImportFrom, package: str) -> bool:
    """Whether a top-level import statement is cheap (standard library or a light helper)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif node.level:
        base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
        names = [base] if node.module else [f"{base}.{a.name}" for a in node.names]
    else:
        names = [node.module or ""]
    return all(n == "__future__" or n.split(".")[0] in sys.stdlib_module_names or n in _LIGHT_IMPORTS
               for n in names)


def _find_spec_without_import(module: str) -> importlib.machinery.ModuleSpec | None:
    """Spec of ``module`` found along its packages' paths without importing its parent
    packages (``importlib.util.find_spec`` would import ``splatforge_core.train``, whose
    ``__init__`` imports the trainer and torch)."""
    parts = module.split(".")
    spec = importlib.util.find_spec(parts[0])
    for i in range(1, len(parts)):
        if spec is None or not spec.submodule_search_locations:
            return None
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[:i + 1]), list(spec.submodule_search_locations))
    return spec


def load_class_from_source(module: str, name: str) -> type | None:
    """Build the class ``name`` of ``module`` from its source, without importing the module.

    Only the module's cheap top-level statements run (imports of the standard library and of
    :data:`_LIGHT_IMPORTS`, assignments of literal constants), then the class definition, in a
    private module ``_splatforge_source_only.<module>``. This lets :func:`validate_config`
    check the ``train`` section without importing torch (~2.5 s at every ``snakemake`` start):
    the class is the same source as the real one, so its fields, annotations, defaults and
    checks are the same.

    Args:
        module: dotted module name, e.g. ``"splatforge_core.train.options"``.
        name: class name in that module.

    Returns:
        The class, or None when the source is not available or the class needs something the
        cheap statements do not define (the caller then imports the module).
    """
    key = (module, name)
    if key in _LIGHT_CACHE:
        return _LIGHT_CACHE[key]
    cls = None
    try:
        spec = _find_spec_without_import(module)
        source = spec.loader.get_source(module) if spec and spec.loader else None  # type: ignore[union-attr]
        if source is not None:
            package = module.rpartition(".")[0] if not spec.submodule_search_locations else module
            body = []
            for node in ast.parse(source).body:
                if isinstance(node, (ast.Import, ast.ImportFrom)) and _light_import(node, package):
                    body.append(node)
                elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
                    try:
                        ast.literal_eval(node.value)
                    except (ValueError, TypeError, SyntaxError, RecursionError):  # not a literal constant
                        continue
                    body.append(node)
                elif isinstance(node, ast.ClassDef) and node.name == name:
                    body.append(node)
            if any(isinstance(n, ast.ClassDef) for n in body):
                mod = types.ModuleType(f"_splatforge_source_only.{module}")
                mod.__package__ = package
                mod.__file__ = spec.origin
                sys.modules[mod.__name__] = mod  # dataclasses and get_type_hints look the module up
                exec(compile(ast.Module(body=body, type_ignores=[]), spec.origin or module, "exec"), mod.__dict__)
                cls = getattr(mod, name)
                dataclasses.fields(cls)  # a dataclass, or TypeError
    except Exception as e:  # any failure: the caller imports the real module instead
        log.debug("cannot build %s.%s from source (%s); importing the module", module, name, e)
        cls = None
    _LIGHT_CACHE[key] = cls
    return cls


def _check_preset(value: Any, label: str) -> None:
    """``compress.preset`` must name a preset the codec implements (``codec.PRESETS``)."""
    from .codec import check_preset

    if not isinstance(value, str):
        raise ConfigError(f"config section {label}: option 'preset' must be a string, got {value!r}")
    try:
        check_preset(value)
    except InputError as e:
        raise ConfigError(f"config section {label}: option 'preset': {e}") from e


#: Every config section with its options class, in the order :func:`validate_config` checks
#: them (``train`` last: its module imports torch, should the class need it). The rules read
#: the same paths (``stage_options`` in rules/common.smk). The report stage (``ReportOptions``)
#: has no config section: rules/report.smk gives it paths.
SECTIONS: tuple[Section, ...] = (
    Section("demo", "splatforge_core.demo:DemoOptions", per_scene=False),
    Section("ingest", "splatforge_core.ingest:IngestOptions"),
    Section("project", "splatforge_core.project:ProjectOptions"),
    Section("sfm.extract", "splatforge_core.sfm.extract:ExtractOptions"),
    Section("sfm.pairs", "splatforge_core.sfm.pairs:PairsOptions"),
    Section("sfm.match", "splatforge_core.sfm.match:MatchOptions"),
    Section("sfm.map", "splatforge_core.sfm.mapping:MapOptions"),
    Section("align", "splatforge_core.sfm.align:AlignOptions"),
    Section("cluster", "splatforge_core.cluster:ClusterOptions"),
    Section("export", "splatforge_core.export:ExportOptions"),
    Section("compress", "splatforge_core.codec:CodecOptions", rule_keys={"preset": _check_preset}),
    Section("train", "splatforge_core.train.options:TrainOptions"),
)

#: Section path -> :class:`Section`.
SECTION_BY_PATH: dict[str, Section] = {s.path: s for s in SECTIONS}

#: Top-level keys of a scene besides its sections (see schemas/config.schema.yaml).
SCENE_KEYS = ("input",)


def options_class(path: str) -> type:
    """The options dataclass of the config section ``path`` (e.g. ``"sfm.map"`` -> ``MapOptions``).

    Raises:
        KeyError: ``path`` is not a section of :data:`SECTIONS`.
    """
    return SECTION_BY_PATH[path].options_class()


def merge(base: Mapping[str, Any] | None, override: Mapping[str, Any] | None) -> dict[str, Any]:
    """Deep merge: a copy of ``base`` with ``override`` on top (nested mappings are merged,
    any other value of ``override`` replaces the one of ``base``). Neither input is modified.
    ``None`` counts as an empty mapping."""
    out = copy.deepcopy(dict(base or {}))
    for k, v in (override or {}).items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _get_path(d: Mapping[str, Any] | None, path: str) -> Any:
    """``d[a][b]`` for ``path = "a.b"``; None where a level is missing or not a mapping."""
    for part in path.split("."):
        if not isinstance(d, Mapping):
            return None
        d = d.get(part)
    return d


def scene_section(config: Mapping[str, Any], scene: str, path: str) -> dict[str, Any]:
    """Options of one section for one scene: the global section with the scene's override on top.

    Args:
        config: the workflow configuration (``config`` in the Snakefile).
        scene: scene name (a scene missing from ``config["scenes"]`` has no overrides).
        path: section path, a top-level section (``"train"``, ``"sfm"``) or a dotted
            sub-section (``"sfm.match"``).

    Returns:
        A new dict (deep copy): changing it does not change ``config``.
    """
    top, _, rest = path.partition(".")
    scene_cfg = (config.get("scenes") or {}).get(scene) or {}
    merged = merge(config.get(top), scene_cfg.get(top))
    return dict(_get_path(merged, rest) or {}) if rest else merged


def _unknown_message(label: str, unknown: list[str], known: list[str]) -> str:
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(str(k), known, n=1)
        if close:
            hints.append(f"{k!r}: did you mean {close[0]!r}?")
    hint = f" ({'; '.join(hints)})" if hints else ""
    return f"config section {label}: unknown option(s) {unknown}{hint}; known options: {known}"


def build_section(section: Section, values: Any, label: str) -> Any:
    """Build the options object of ``section`` from its (merged) config ``values``.

    Runs every check of the class: unknown keys, types from the annotations
    (:func:`splatforge_core.options.type_problem`), then the class's own value checks
    (``from_dict`` where the class has one, else its ``__post_init__``).

    Args:
        section: the :class:`Section`.
        values: the section's mapping (None = all defaults).
        label: the section's path in the config for messages, e.g. ``"scenes.lund.train"``.

    Returns:
        The options dataclass instance.

    Raises:
        ConfigError: ``values`` is not a mapping, holds an unknown key, a value of the wrong
            type or a value the class rejects; the message names ``label`` and the key (for an
            unknown key also the known ones).
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"config section {label} must be a mapping of options, got {values!r}")
    cls = section.options_class(light=True)
    try:
        return _build(section, cls, values, label)
    except NameError:
        real = section.options_class()
        if real is cls:
            raise
        # the class built from source needed a name its module's heavy imports define
        log.debug("config section %s: %s built from source lacks a name; using the module", label, cls.__name__)
        return _build(section, real, values, label)


def _build(section: Section, cls: type, values: Mapping[str, Any], label: str) -> Any:
    fields = [f.name for f in dataclasses.fields(cls)]
    known = sorted([*fields, *section.rule_keys])
    unknown = sorted((k for k in values if k not in known), key=str)
    if unknown:
        raise ConfigError(_unknown_message(label, unknown, known))
    for key, check in section.rule_keys.items():
        if key in values:
            check(values[key], label)
    opts = {k: v for k, v in values.items()
            if k not in section.rule_keys and not (k in section.workflow_values and v in section.workflow_values[k])}
    for key, value in opts.items():
        problem = type_problem(cls, {key: value})
        if problem:
            also = section.workflow_values.get(key)
            alt = f" (the workflow also accepts {' or '.join(map(repr, also))})" if also else ""
            raise ConfigError(f"config section {label}: {problem}{alt}")
    problem = range_problem(cls, opts)
    if problem:
        raise ConfigError(f"config section {label}: {problem}")
    try:
        from_dict = getattr(cls, "from_dict", None)
        return from_dict(opts) if from_dict is not None else cls(**opts)
    except (InputError, TypeError, ValueError) as e:
        raise ConfigError(f"config section {label}: {e}") from e


#: Names that become path components (scene names, ``default_scene``): letters, digits, ``_``
#: and ``-`` only, so a name can never be ``.``/``..``, hold a ``/`` or start a hidden file.
#: rules/common.smk constrains the ``{scene}`` wildcard to the same set.
SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")


def check_name(value: Any, label: str) -> str:
    """Check a configured name that becomes a path component (``work/{scene}/...``).

    Args:
        value: the name, e.g. a scene name.
        label: where it is set, for the message (e.g. ``"default_scene"``, ``"scenes key"``).

    Returns:
        ``value``, a string matching :data:`SAFE_NAME` (at most 100 characters).

    Raises:
        ConfigError: anything else; the message names ``label``, the value and the rule.
    """
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value) or len(value) > 100:
        raise ConfigError(f"config: {label} {value!r} is not a safe name: use 1-100 letters, digits, '_' or '-' "
                          f"(no '.', '..', '/' or spaces; it becomes the folder work/<name>/ and the files "
                          f"results/<name>.*)")
    return value


def check_names(config: Mapping[str, Any]) -> None:
    """Check every configured name used to build a path: ``default_scene`` and each key of
    ``scenes`` (:func:`check_name`).

    Raises:
        ConfigError: the first unsafe name.
    """
    if "default_scene" in config:
        check_name(config["default_scene"], "default_scene")
    scenes = config.get("scenes")
    if isinstance(scenes, Mapping):
        for name in scenes:
            check_name(name, "scene name (a key of scenes)")


#: Folder names that say nothing about the capture: a scene made from ``.../ricoh/images`` is
#: named after ``ricoh``.
GENERIC_FOLDERS = {"images", "image", "photos", "pictures", "jpg", "jpeg", "dcim", "input", "panoramas"}


def scene_name_for(folder: str | os.PathLike) -> str:
    """A safe scene name for a photo folder: its name, or its parent's when the folder's own
    name is generic (``captures/ricoh/images`` -> ``ricoh``); characters outside
    :data:`SAFE_NAME` become ``_`` (``"My walk (2)"`` -> ``My_walk_2``).

    Args:
        folder: the photo folder (need not exist).

    Returns:
        A name matching :data:`SAFE_NAME`, at most 100 characters (``capture`` when nothing is left).
    """
    parts = [p for p in os.path.normpath(os.path.abspath(os.fspath(folder))).split(os.sep) if p]
    while len(parts) > 1 and parts[-1].lower() in GENERIC_FOLDERS:
        parts.pop()
    raw = parts[-1] if parts else ""
    name = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_-]", "_", raw)).strip("_")[:100]
    return name or "capture"


def adopt_input(config: dict[str, Any]) -> str | None:
    """Make ``--config input=PATH`` a scene of its own.

    The photo folder becomes the scene named by :func:`scene_name_for` with only the global
    stage sections (it never inherits another scene's overrides, such as the demo's
    ``project.size: 512``), and the default scene, so ``snakemake --cores all --config
    input=PATH`` makes ``results/<name>.ply``. A configured scene whose ``input`` is the same
    folder is used as it is (with its overrides). Outputs of two folders never share
    ``work/<name>/``: a configured scene of that name with another input is an error.

    Args:
        config: the workflow configuration (Snakemake's ``config``), changed in place:
            ``scenes.<name>`` added when new, ``default_scene`` set, ``input`` removed.

    Returns:
        The scene name, or None when ``input`` is not set.

    Raises:
        ConfigError: ``input`` is not a string, or its scene name is taken by another folder.
    """
    folder = config.get("input")
    if folder in (None, ""):
        config.pop("input", None)
        return None
    if not isinstance(folder, str):
        raise ConfigError(f"config: input must be a path to a photo folder, got {folder!r}")
    scenes = config.setdefault("scenes", {})
    same = [n for n, sc in scenes.items()
            if isinstance(sc, Mapping) and isinstance(sc.get("input"), str)
            and os.path.normpath(os.path.abspath(sc["input"])) == os.path.normpath(os.path.abspath(folder))]
    name = same[0] if same else scene_name_for(folder)
    if not same and name in scenes:
        raise ConfigError(f"config: input={folder}: its scene name {name!r} is already the scene of "
                          f"{scenes[name].get('input')!r} in config.yaml; rename the folder, or add the capture "
                          f"under scenes: in a config file with a name of its own")
    if not same:
        scenes[name] = {"input": folder}
    config["default_scene"] = name
    del config["input"]
    return name


def _check_device(config: Mapping[str, Any], train: Any, label: str) -> None:
    """``use_gpu`` and ``train.device`` must agree (``device: auto`` agrees with both)."""
    use_gpu = config.get("use_gpu", False)
    device = getattr(train, "device", "auto")
    if use_gpu is True and device == "cpu":
        raise ConfigError(f"config: use_gpu: true contradicts {label}.device: cpu (use_gpu gives the train rule "
                          "the gpu resource, device: cpu would train on the CPU); set device to auto or cuda, "
                          "or use_gpu: false")
    if use_gpu is False and device == "cuda":
        raise ConfigError(f"config: use_gpu: false contradicts {label}.device: cuda (the train rule would not get "
                          "the gpu resource); set use_gpu: true or device to auto or cpu")


def _check_structure(config: Mapping[str, Any]) -> None:
    """Scene entries and section groups (``sfm``) hold only known keys."""
    groups: dict[str, set[str]] = {}
    for s in SECTIONS:
        top, _, rest = s.path.partition(".")
        if rest:
            groups.setdefault(top, set()).add(rest)
    scene_keys = sorted({*SCENE_KEYS, *(s.path.partition(".")[0] for s in SECTIONS if s.per_scene)})
    scenes = config.get("scenes")
    if not isinstance(scenes, Mapping) or not scenes:
        raise ConfigError(f"config: 'scenes' must be a non-empty mapping of scene name -> settings, got {scenes!r}")
    places: list[tuple[str, Mapping[str, Any]]] = [("", config)]
    for name, scene_cfg in scenes.items():
        if not isinstance(scene_cfg, Mapping):
            raise ConfigError(f"config: scenes.{name} must be a mapping (input: ..., overrides), got {scene_cfg!r}")
        unknown = sorted((k for k in scene_cfg if k not in scene_keys), key=str)
        if unknown:
            raise ConfigError(f"config: scenes.{name}: unknown key(s) {unknown}; known keys: {scene_keys}")
        places.append((f"scenes.{name}.", scene_cfg))
    for prefix, where in places:
        for group, subs in groups.items():
            value = where.get(group)
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"config section {prefix}{group} must be a mapping, got {value!r}")
            unknown = sorted((k for k in value if k not in subs), key=str)
            if unknown:
                raise ConfigError(f"config section {prefix}{group}: unknown sub-section(s) {unknown}; "
                                  f"known: {sorted(subs)}")


def validate_config(config: Mapping[str, Any]) -> None:
    """Check every stage section of a workflow configuration against its options class.

    For each section of :data:`SECTIONS`, builds the options class from the global section and,
    for every scene that overrides the section, from the global section with the override
    merged on top (:func:`scene_section`), so every check the stage would make when it runs is
    made now. Also checks that ``use_gpu`` and ``train.device`` agree. ``config`` is not
    modified. The top-level structure (types of ``use_gpu``, ``input``, ...) is the JSON
    schema's (``schemas/config.schema.yaml``), which the Snakefile applies first.

    Args:
        config: the workflow configuration (``config`` in the Snakefile, or a loaded YAML).

    Raises:
        ConfigError: (an :class:`~splatforge_core.errors.InputError`) the first problem found:
            a scene or section group with an unknown key, a section that is not a mapping, an
            unknown option (the message names the section path, e.g. ``scenes.lund.train``, the
            key and the known keys), a value of the wrong type or out of range, a
            ``compress.preset`` the codec does not have, ``use_gpu`` contradicting
            ``train.device``, or a scene name or ``default_scene`` that is not a safe path
            component (:func:`check_name`).
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
    check_names(config)
    _check_structure(config)
    scenes = config["scenes"]
    for section in SECTIONS:
        built = [(section.path, build_section(section, _get_path(config, section.path), section.path))]
        if section.per_scene:
            for name, scene_cfg in scenes.items():
                override = _get_path(scene_cfg, section.path)
                if override is None:
                    continue
                label = f"scenes.{name}.{section.path}"
                if not isinstance(override, Mapping):
                    raise ConfigError(f"config section {label} must be a mapping of options, got {override!r}")
                built.append((label, build_section(section, scene_section(config, name, section.path), label)))
        if section.path == "train":
            for label, opts in built:
                _check_device(config, opts, label)
    log.debug("config: %d sections valid for %d scene(s)", len(SECTIONS), len(scenes))
