"""Scaffold-GS (city-super/Scaffold-GS): the canonical output layout, neural-Gaussian rendering and training.

* :mod:`.layout`: read/write the reference output folder (anchor PLY, TorchScript MLPs, cfg_args).
* :mod:`.model`: the MLP shapes and the per-view neural-Gaussian generation.
* :mod:`.render`: rasterise a view with :func:`splatforge_core.render.rasterization`.

TorchScript MLP files are code: load Scaffold-GS folders only from sources you trust.
"""
