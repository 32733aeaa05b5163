"""Gaussian-splat training stage (``splatforge train``).

``main(aligned_dir, images_dir, views_path, out_dir, ply_path, options)`` in
:mod:`splatforge_core.train.trainer`; PLY I/O in :mod:`splatforge_core.splat`.
"""

from ..splat import read_splat_ply, write_splat_ply
from .trainer import TrainOptions, main

__all__ = ["main", "TrainOptions", "read_splat_ply", "write_splat_ply"]
