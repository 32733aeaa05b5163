"""Architecture rule: no stage module imports another stage.

Stages share code only through the non-stage modules (``geodesy``, ``cameras``, ``rotations``,
``splat``, ``io``, ``options``, ``errors``, ``log``, ``masks``, ``render``, ``metrics``, ``finetune``,
``inria``, ``sfm/__init__``...),
so each stage can be changed, tested and replaced on its own. Checked statically with ``ast``
(every import, also those inside functions), without importing the modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = "splatforge_core"
ROOT = Path(__file__).resolve().parents[1] / PKG

#: Single-module stages; ``sfm`` sub-modules are one stage each (one rule each).
MODULE_STAGES = ("ingest", "project", "demo", "report")
SFM_STAGES = ("extract", "pairs", "match", "mapping", "align")
#: Packages that are one stage as a whole (their modules may import each other).
PACKAGE_STAGES = ("train", "export", "codec")


def stage_of(module: str) -> str | None:
    """The stage a dotted module name belongs to, or None for shared (non-stage) modules."""
    parts = module.split(".")
    if parts[0] != PKG or len(parts) < 2:
        return None
    if parts[1] in MODULE_STAGES:
        return parts[1]
    if parts[1] in PACKAGE_STAGES:
        return parts[1]
    if parts[1] == "sfm" and len(parts) > 2 and parts[2] in SFM_STAGES:
        return f"sfm.{parts[2]}"
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``; ``from X import y`` yields
    ``X`` and ``X.y`` (``y`` may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return out


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Imports of ``module`` (a stage module) that reach into another stage."""
    own = stage_of(module)
    if own is None:
        return []
    bad: dict[tuple[int, str], str] = {}
    for line, target in imported_modules(source, module, is_package):
        other = stage_of(target)
        if other is not None and other != own:
            bad.setdefault((line, other), f"{module}:{line} imports {target} (stage {other})")
    return list(bad.values())


def stage_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts and stage_of(module_name(p)))


def test_stage_modules_found():
    stages = {stage_of(module_name(p)) for p in stage_files()}
    assert stages == set(MODULE_STAGES) | set(PACKAGE_STAGES) | {f"sfm.{s}" for s in SFM_STAGES}


@pytest.mark.parametrize("path", stage_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_stage_imports_another_stage(path: Path):
    bad = violations(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")
    assert not bad, "stage modules must share code through non-stage modules:\n" + "\n".join(bad)


def test_checker_sees_relative_absolute_and_nested_imports():
    src = "from ..ingest import x\nimport splatforge_core.project\ndef f():\n    from .extract import y\n"
    assert len(violations(src, "splatforge_core.sfm.match")) == 3
    assert violations("from . import bake\nfrom ..geodesy import g\n", "splatforge_core.export", True) == []
    assert violations("from . import DEVICES, load_views\n", "splatforge_core.sfm.extract") == []
    assert violations("from .mesh import Splat\n", "splatforge_core.export.bake") == []
    assert violations("from ..train.ply import r\n", "splatforge_core.export.mesh") == [
        "splatforge_core.export.mesh:1 imports splatforge_core.train.ply (stage train)"]
