"""Structure from motion with pycolmap: images -> camera poses + sparse points in ENU metres.

Stages (one module each, hloc style, each a plain ``main(...)``):

* :mod:`.extract` -- SIFT features of every image of ``views.json`` into ``colmap/features.db``;
  the views of one panorama form one rig (``pycolmap.apply_rig_config``, fixed ``cam_from_rig``).
* :mod:`.pairs` -- ``pairs.txt`` from the GPS positions (K nearest capture positions in ENU),
  sequential or exhaustive without GPS.
* :mod:`.match` -- copies ``features.db``, matches the imported pairs there (rig-aware RANSAC
  verification) and renames the result to ``colmap/database.db``.
* :mod:`.mapping` -- incremental / global (GLOMAP) / hierarchical mapping; largest model to
  ``sparse/0`` plus ``sparse/summary.json``.
* :mod:`.align` -- robust similarity (Sim3d) from the SfM frame centres to their ENU GPS
  positions; ``aligned/`` model in ENU metres (Z up) and ``alignment.json`` with residuals.

This file holds the helpers the stages share (no stage imports another): reading ``views.json``
(schema in ``docs/formats.md``), the pycolmap device option, removing temporaries of killed runs, reading ``pairs.txt``.
Options dataclasses are built from a plain config dict by
:func:`splatforge_core.options.build_options`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import read_json
from ..log import get_logger

log = get_logger("sfm")

SCHEMA_VERSION = 1

#: Values of the extract and match stages' ``device`` option.
DEVICES = ("auto", "cpu", "cuda")


def colmap_device(name: str):
    """The ``pycolmap.Device`` of a ``device`` option value (one of :data:`DEVICES`)."""
    import pycolmap

    return {"auto": pycolmap.Device.auto, "cpu": pycolmap.Device.cpu, "cuda": pycolmap.Device.cuda}[name]


def remove_stale_temporaries(dest: Path) -> None:
    """Delete temporary databases a killed run left beside ``dest`` (``.{stem}.*.tmp.db*``)."""
    for p in dest.parent.glob(f".{dest.stem}.*.tmp{dest.suffix}*"):
        log.warning("removing %s left by a killed run", p)
        p.unlink(missing_ok=True)


def load_views(views_path: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``views.json`` (schema: ``docs/formats.md``).

    Returns the parsed dict with two added keys: ``"camera_by_view"`` (view name -> camera
    dict) and ``"image_to_frame"`` (image name relative to ``images/`` -> frame name).

    Raises:
        InputError: unreadable file, wrong schema version, no frames, a frame naming an
            unknown view, or an image name used twice.
    """
    views_path = Path(views_path)
    try:
        views = read_json(views_path)
    except (OSError, ValueError) as e:
        raise InputError(f"{views_path}: cannot read views.json ({e})") from e
    if not isinstance(views, dict) or views.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{views_path}: not a views.json with schema_version {SCHEMA_VERSION}")
    cams = views.get("cameras") or []
    frames = views.get("frames") or []
    if not frames:
        raise InputError(f"{views_path}: no frames (no images to reconstruct)")
    camera_by_view = {c["view"]: c for c in cams}
    image_to_frame: dict[str, str] = {}
    for fr in frames:
        for view, name in fr["images"].items():
            if view not in camera_by_view:
                raise InputError(f"{views_path}: frame {fr['frame']!r} names unknown view {view!r}")
            if name in image_to_frame:
                raise InputError(f"{views_path}: image {name!r} appears in two frames")
            image_to_frame[name] = fr["frame"]
    views["camera_by_view"] = camera_by_view
    views["image_to_frame"] = image_to_frame
    return views


def is_rig_frame(frame: dict) -> bool:
    """True when a views.json frame is a panorama (several views or names ``view/frame.jpg``)."""
    return len(frame["images"]) > 1 or any("/" in n for n in frame["images"].values())


def read_pairs(pairs_path: str | os.PathLike) -> list[tuple[str, str]]:
    """Read ``pairs.txt``; raise InputError naming the line that is not ``name1 name2``."""
    out = []
    with open(pairs_path, encoding="utf-8") as f:
        for k, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise InputError(f"{pairs_path}:{k}: expected 'name1 name2', got {line.strip()!r}")
            out.append((parts[0], parts[1]))
    return out
