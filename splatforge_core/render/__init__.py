"""Gaussian-splat rasterisation: one entry point for CUDA (gsplat) and CPU (our port).

``rasterization(...)`` takes gsplat's ``rasterization`` arguments and returns its
``(render_colors [C,H,W,X], render_alphas [C,H,W,1], info)``; it calls
``gsplat.rasterization`` when ``means`` is on a CUDA device and
:func:`splatforge_core.render.cpu.cpu_rasterization` otherwise.
"""

from __future__ import annotations

from typing import Dict, Tuple

from torch import Tensor

from .cpu import cpu_rasterization, isect_tiles_cpu, rasterize_to_pixels_cpu

__all__ = ["rasterization", "cpu_rasterization", "isect_tiles_cpu",
           "rasterize_to_pixels_cpu"]


def rasterization(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor,
                  colors: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int,
                  packed: bool = False, **kwargs) -> Tuple[Tensor, Tensor, Dict]:
    """Rasterise 3D Gaussians with gsplat on CUDA tensors, on CPU otherwise.

    Arguments and return value are those of ``gsplat.rasterization`` (gsplat 1.5.3);
    see :func:`splatforge_core.render.cpu.cpu_rasterization` for shapes/units. ``packed``
    defaults to False here (gsplat's default is True) so both paths return the same
    [C, N, ...] info layout; the CPU path supports only packed=False.

    Raises:
        NotImplementedError: CPU path with an option it does not implement.
    """
    if means.is_cuda:
        import gsplat  # imported lazily: only the CUDA path needs the compiled kernels

        return gsplat.rasterization(means, quats, scales, opacities, colors, viewmats, Ks,
                                    width, height, packed=packed, **kwargs)
    return cpu_rasterization(means, quats, scales, opacities, colors, viewmats, Ks,
                             width, height, packed=packed, **kwargs)
