"""Atomic, input-bound, safely loaded training checkpoints: ``{dir}/ckpt_{step:07d}.pt``.

A checkpoint is a ``torch.save`` dict (parameters, optimiser/scheduler/strategy state,
step, RNG states, history) holding only tensors and plain data; it is written to a temporary
file and renamed into place, so a killed job leaves either the previous or the new
checkpoint, never a torn one.

Safety (issue #18):

* Loading uses ``torch.load(weights_only=True)``: tensors and plain containers only. A file
  that needs anything else (a pickle that would import or call code) is refused with an
  :class:`~splatforge_core.errors.InputError` naming it; nothing in it runs.
* Only files named like the saver names them (``ckpt_<digits>.pt``) are ever opened; any
  other file in the folder is ignored with a warning. Before use, a loaded checkpoint's
  schema (keys, types, tensor shapes and dtypes) is checked (:func:`check_schema`).
* Every checkpoint stores the fingerprint of what it was trained from
  (:func:`input_fingerprint`: sha256 of the aligned model files, the bytes of every image
  and mask used, views.json, and the options that change the result). A checkpoint whose
  fingerprint differs from the current inputs (or that has none: an older format) is never
  resumed: the folder's checkpoints are moved into ``{dir}/stale-<UTC time>/`` with a log
  line naming the parts that changed (:func:`move_aside`).

Hashing every image's bytes rather than size + mtime + name: measured on the demo's 216
views (14 MB of JPEGs, 216 masks 0.9 MB, model 3 MB) it took 0.07 s (warm page cache), small
next to loading and resizing the same images; size + mtime would miss a copy that keeps
the mtime (``cp -p``, ``rsync -a``) of same-sized photos.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

import torch

from ..errors import InputError
from ..io import atomic_path
from ..log import get_logger

_LOG = get_logger("train.checkpoint")
_PAT = re.compile(r"^ckpt_(\d{7,})\.pt$")
#: Names in the checkpoint folder the project itself makes besides checkpoints: folders of
#: checkpoints moved aside, and atomic_path temporaries of a killed save.
_OWN = re.compile(r"^(stale-\d{8}T\d{6}Z(-\d+)?|\.ckpt_\d+\.[^/]*\.tmp\.pt)$")

#: ``"format"`` and ``"version"`` of the checkpoints this module writes and reads.
CKPT_FORMAT = "splatforge-checkpoint"
CKPT_VERSION = 2

#: Train options that do not change the trained splat (left out of the fingerprint).
RESULT_NEUTRAL_OPTIONS = frozenset({"num_threads", "progress", "resume", "keep_checkpoints", "checkpoint_every",
                                    "n_eval_images"})

#: Parameter name -> trailing shape (after the Gaussian count N); None: any size there.
_PARAM_SHAPES = {"means": (3,), "scales": (3,), "quats": (4,), "opacities": (), "sh0": (1, 3), "shN": (None, 3)}
#: Top-level keys and their types.
_KEYS = {"format": str, "version": int, "step": int, "iterations": int, "params": dict, "optimizers": dict,
         "scheduler": dict, "strategy_state": dict, "tier": int, "rng": dict, "history": dict, "evals": list,
         "resumed_from": list, "train_seconds": float, "nonfinite_grads": int, "fingerprint": dict,
         "options": dict}

__all__ = ["save_checkpoint", "list_checkpoints", "load_latest_checkpoint", "input_fingerprint", "move_aside",
           "check_schema", "CKPT_FORMAT", "CKPT_VERSION", "RESULT_NEUTRAL_OPTIONS"]


# ---- fingerprint ------------------------------------------------------------------------
def _hash_files(files: Iterable[tuple[str, Path]]) -> str:
    """sha256 hex over (name, size, bytes) of each ``(name, path)`` in the given order; a
    missing file contributes its name and ``missing``."""
    h = hashlib.sha256()
    for name, path in files:
        h.update(name.encode("utf-8", "surrogateescape") + b"\0")
        try:
            with open(path, "rb") as f:
                h.update(str(os.fstat(f.fileno()).st_size).encode() + b"\0")
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except FileNotFoundError:
            h.update(b"missing\0")
    return h.hexdigest()


def input_fingerprint(aligned_dir: str | os.PathLike, images_dir: str | os.PathLike, image_names: Iterable[str],
                      mask_paths: Iterable[str | os.PathLike], views_path: Optional[str | os.PathLike],
                      options: Mapping[str, Any]) -> Dict[str, str]:
    """What a training run is trained from, as sha256 hex digests per part.

    Args:
        aligned_dir: COLMAP model folder; every file in it (sorted by name) is hashed.
        images_dir: folder of the images; ``image_names`` are relative to it (symlinks are
            followed: the bytes hashed are the photo's).
        image_names: the images used (training and held-out), in any order.
        mask_paths: label mask files used (any order).
        views_path: views.json (held-out frames, mask folder), or None.
        options: train options as a dict; keys of :data:`RESULT_NEUTRAL_OPTIONS` are left out.

    Returns:
        ``{"aligned", "images", "masks", "views", "options"}`` -> 64-character hex digest.
    """
    aligned_dir, images_dir = Path(aligned_dir), Path(images_dir)
    model = sorted(p.name for p in aligned_dir.iterdir() if p.is_file()) if aligned_dir.is_dir() else []
    opts = {k: v for k, v in options.items() if k not in RESULT_NEUTRAL_OPTIONS}
    return {
        "aligned": _hash_files((n, aligned_dir / n) for n in model),
        "images": _hash_files((n, images_dir / n) for n in sorted(set(image_names))),
        "masks": _hash_files((str(p), Path(p)) for p in sorted({str(p) for p in mask_paths})),
        "views": _hash_files([("views.json", Path(views_path))] if views_path else []),
        "options": hashlib.sha256(json.dumps(opts, sort_keys=True, default=str).encode()).hexdigest(),
    }


# ---- folder -------------------------------------------------------------------------------
def list_checkpoints(ckpt_dir: str | os.PathLike) -> List[Path]:
    """Checkpoint files in ``ckpt_dir`` sorted by step, oldest first (temporaries ignored)."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _PAT.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def _warn_foreign(d: Path) -> None:
    """Log files in the checkpoint folder this project did not write (never opened)."""
    if d.is_dir():
        for p in sorted(d.iterdir()):
            if not (_PAT.match(p.name) and p.is_file()) and not _OWN.match(p.name):
                _LOG.warning("%s: not a checkpoint this project wrote (names are ckpt_<step>.pt); ignored", p)


def move_aside(ckpt_dir: str | os.PathLike, reason: str) -> Optional[Path]:
    """Move every checkpoint of ``ckpt_dir`` into a new ``ckpt_dir/stale-<UTC time>/`` folder.

    Args:
        ckpt_dir: the checkpoint folder.
        reason: why (logged), e.g. ``"the images changed"``.

    Returns:
        The new folder, or None when there was no checkpoint to move.
    """
    d = Path(ckpt_dir)
    found = list_checkpoints(d)
    if not found:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = d / f"stale-{stamp}"
    i = 1
    while dest.exists():
        dest, i = d / f"stale-{stamp}-{i}", i + 1
    dest.mkdir()
    for p in found:
        os.replace(p, dest / p.name)
    _LOG.warning("not resuming: %s; moved %d checkpoint(s) to %s (delete it to free the space)", reason,
                 len(found), dest)
    return dest


def save_checkpoint(ckpt_dir: str | os.PathLike, step: int, payload: Dict[str, Any], keep: int = 2) -> Path:
    """Save ``payload`` as ``ckpt_{step:07d}.pt`` atomically; keep the newest ``keep`` files.

    ``payload`` gets ``format`` = :data:`CKPT_FORMAT` and ``version`` = :data:`CKPT_VERSION`;
    it must hold only tensors and plain data (``torch.load(weights_only=True)`` reads it back).

    Raises:
        DiskFullError: the disk filled up (names the checkpoint; the older ones are kept).
    """
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    dest = d / f"ckpt_{step:07d}.pt"
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:  # a file object: a full disk raises OSError(ENOSPC), not RuntimeError
            torch.save({"format": CKPT_FORMAT, "version": CKPT_VERSION, **payload}, f)
    for old in list_checkpoints(d)[:-max(1, keep)]:
        old.unlink(missing_ok=True)
    return dest


# ---- loading ------------------------------------------------------------------------------
def check_schema(data: Any, path: str | os.PathLike) -> None:
    """Check a loaded checkpoint's keys, types and parameter tensors before any use.

    Args:
        data: what ``torch.load`` returned.
        path: the file (for messages).

    Raises:
        InputError: not a dict, another format or version, a missing key or a value of the
            wrong type, parameters that are not float32 tensors of shapes ``means`` [N, 3],
            ``scales`` [N, 3], ``quats`` [N, 4], ``opacities`` [N], ``sh0`` [N, 1, 3],
            ``shN`` [N, K, 3] with one N, or a step outside [0, iterations].
    """
    def bad(what: str) -> InputError:
        return InputError(f"{path}: not a valid Splat Forge checkpoint ({what}); delete it to train from scratch")

    if not isinstance(data, dict):
        raise bad(f"a {type(data).__name__}, not a dict")
    if data.get("format") != CKPT_FORMAT or data.get("version") != CKPT_VERSION:
        raise bad(f"format {data.get('format')!r} version {data.get('version')!r}, expected {CKPT_FORMAT!r} "
                  f"version {CKPT_VERSION}")
    for k, tp in _KEYS.items():
        v = data.get(k)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) if tp is float else (
            isinstance(v, tp) and not (tp is int and isinstance(v, bool)))
        if not ok:
            raise bad(f"key {k!r} must be {tp.__name__}, got {type(v).__name__}")
    if not 0 <= data["step"] <= data["iterations"]:
        raise bad(f"step {data['step']} outside [0, {data['iterations']}]")
    params = data["params"]
    if set(params) != set(_PARAM_SHAPES) or set(data["optimizers"]) != set(_PARAM_SHAPES):
        raise bad(f"parameters {sorted(params)} / optimisers {sorted(data['optimizers'])}, "
                  f"expected {sorted(_PARAM_SHAPES)}")
    n = None
    for k, tail in _PARAM_SHAPES.items():
        t = params[k]
        if not torch.is_tensor(t) or t.dtype != torch.float32 or t.dim() != 1 + len(tail) or any(
                want is not None and got != want for got, want in zip(t.shape[1:], tail)):
            desc = f"{tuple(t.shape)} {t.dtype}" if torch.is_tensor(t) else type(t).__name__
            raise bad(f"parameter {k!r} is {desc}, expected float32 [N, {', '.join(str(s or 'K') for s in tail)}]")
        if n is not None and t.shape[0] != n:
            raise bad(f"parameter {k!r} has {t.shape[0]} Gaussians, 'means' has {n}")
        n = t.shape[0]
    rng = data["rng"]
    if not torch.is_tensor(rng.get("torch")) or not isinstance(rng.get("numpy"), dict) \
            or not isinstance(rng.get("python"), tuple) or not isinstance(rng.get("order"), list):
        raise bad("RNG states missing or of the wrong type")


def _load_one(p: Path) -> Any:
    """``torch.load(p, weights_only=True)`` on CPU; a pickle that needs more is an InputError."""
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        raise InputError(f"{p}: refused to load: the file holds more than tensors and plain data (it could run "
                         f"code; {first[-1][:200] if first else 'unpickling error'}). This project never writes "
                         f"such files: delete it (and check who put it there) to train from scratch") from None


def load_latest_checkpoint(ckpt_dir: str | os.PathLike,
                           fingerprint: Optional[Mapping[str, str]] = None) -> Optional[Dict[str, Any]]:
    """Load the newest readable checkpoint of ``ckpt_dir`` (on CPU) that belongs to ``fingerprint``.

    Args:
        ckpt_dir: the checkpoint folder; only ``ckpt_<step>.pt`` files are opened.
        fingerprint: :func:`input_fingerprint` of the current run; None skips the check.

    Returns:
        The checkpoint dict (schema checked; ``"_path"`` added), or None when there is none,
        or when the newest one belongs to other inputs (then every checkpoint is moved aside,
        :func:`move_aside`). A file that cannot be read at all (torn, truncated) is skipped
        with a warning for the next older one.

    Raises:
        InputError: a file that holds more than tensors and plain data (a crafted pickle:
            never run), or that fails :func:`check_schema`; the message names the file.
    """
    d = Path(ckpt_dir)
    _warn_foreign(d)
    for p in reversed(list_checkpoints(d)):
        try:
            data = _load_one(p)
        except InputError:
            raise
        except Exception as e:  # torn/corrupt file (should not happen: writes are atomic)
            _LOG.warning("cannot read checkpoint %s (%s); trying an older one", p, str(e).splitlines()[0][:200])
            continue
        if isinstance(data, dict) and data.get("version") != CKPT_VERSION and "fingerprint" not in data:
            move_aside(d, f"{p} was written by an older version of Splat Forge (no input fingerprint)")
            return None
        check_schema(data, p)
        if fingerprint is not None and data["fingerprint"] != dict(fingerprint):
            changed = sorted(k for k in set(fingerprint) | set(data["fingerprint"])
                             if data["fingerprint"].get(k) != fingerprint.get(k))
            move_aside(d, f"{p} was trained from other inputs ({', '.join(changed)} changed)")
            return None
        data["_path"] = str(p)
        return data
    return None
