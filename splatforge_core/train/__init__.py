"""Gaussian-splat training stage (``splatforge train``).

``main(aligned_dir, images_dir, views_path, out_dir, ply_path, options)`` in
:mod:`splatforge_core.train.trainer`; options in :mod:`.options`, initial Gaussians in
:mod:`.init`, densification strategies in :mod:`.strategy`; PLY I/O in :mod:`splatforge_core.splat`.
"""

from ..splat import read_splat_ply, write_splat_ply
from .options import TrainOptions
from .trainer import main

__all__ = ["main", "TrainOptions", "read_splat_ply", "write_splat_ply"]
