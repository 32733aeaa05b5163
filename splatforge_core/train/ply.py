"""Splat PLY I/O of the training stage: kept as an import path (the trainer writes with
:func:`write_splat_ply`); the layout, reader and writer live in :mod:`splatforge_core.splat`."""

from __future__ import annotations

from ..splat import read_splat_ply, sh_degree_from_rest, write_splat_ply

__all__ = ["write_splat_ply", "read_splat_ply", "sh_degree_from_rest"]
