"""Atomic training checkpoints: ``{dir}/ckpt_{step:07d}.pt``.

A checkpoint is a ``torch.save`` dict (parameters, optimiser/scheduler/strategy state,
step, RNG states, history); it is written to a temporary file and renamed into place, so a
killed job leaves either the previous or the new checkpoint, never a torn one. Loading
falls back to the previous checkpoint if the newest cannot be read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..io import atomic_path
from ..log import get_logger

_LOG = get_logger("train.checkpoint")
_PAT = re.compile(r"^ckpt_(\d+)\.pt$")

__all__ = ["save_checkpoint", "list_checkpoints", "load_latest_checkpoint"]


def list_checkpoints(ckpt_dir: str | os.PathLike) -> List[Path]:
    """Checkpoint files in ``ckpt_dir`` sorted by step, oldest first (temporaries ignored)."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _PAT.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(ckpt_dir: str | os.PathLike, step: int, payload: Dict[str, Any], keep: int = 2) -> Path:
    """Save ``payload`` as ``ckpt_{step:07d}.pt`` atomically; keep the newest ``keep`` files."""
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    dest = d / f"ckpt_{step:07d}.pt"
    with atomic_path(dest) as tmp:
        torch.save(payload, tmp)
    for old in list_checkpoints(d)[:-max(1, keep)]:
        old.unlink(missing_ok=True)
    return dest


def load_latest_checkpoint(ckpt_dir: str | os.PathLike) -> Optional[Dict[str, Any]]:
    """Load the newest readable checkpoint (on CPU), or None if there is none."""
    for p in reversed(list_checkpoints(ckpt_dir)):
        try:
            data = torch.load(p, map_location="cpu", weights_only=False)
            data["_path"] = str(p)
            return data
        except Exception as e:  # torn/corrupt file (should not happen: writes are atomic)
            _LOG.warning("cannot read checkpoint %s (%s); trying an older one", p, e)
    return None
