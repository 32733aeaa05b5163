"""Project stage: equirectangular panoramas -> pinhole perspective views (one rig per panorama).

What it does
------------
* Reads ``manifest.json`` (schema: ``docs/formats.md``). Every equirectangular image is
  resampled into a fixed set of pinhole views (a *rig*); every perspective photo is linked as
  it is (symbolic link ``images/{name}`` -> the original path, absolute).
* Writes the images to ``images_dir`` as ``{view}/{frame}.jpg`` (``view`` like
  ``az060_el-45``, ``frame`` = the panorama's file stem) and ``views.json`` with the cameras
  (intrinsics in pixels), the rig (``cam_from_rig``) and the frames.
* ``images_dir`` is built in a temporary folder beside it and renamed into place as a whole
  (:func:`splatforge_core.io.atomic_path`), so a crash never leaves a half set of views;
  ``views.json`` is written afterwards with :func:`~splatforge_core.io.write_json`.

Axis conventions (``docs/formats.md``, "Frames and axes")
---------------------------------------------------------
* Camera axes are COLMAP's: x right, y down, z forward. Pixel centres sit at half-integer
  coordinates (COLMAP: the centre of the top-left pixel is (0.5, 0.5)), so a view of
  ``W x H`` pixels has its principal point at ``(W/2, H/2)``.
* Rig frame = the camera frame of the view at azimuth 0, elevation 0. Equirectangular pixel
  ``(u, v)`` (column, row; integer = pixel centre, as in OpenCV) has
  ``lon = (u + 0.5) / W * 360 - 180`` and ``lat = 90 - (v + 0.5) / H * 180`` degrees; its ray
  in the rig frame is ``(cos(lat) sin(lon), -sin(lat), cos(lat) cos(lon))``.
* A view at (azimuth ``a``, elevation ``e``) looks along the ray of ``(lon=a, lat=e)``:
  positive azimuth turns right (toward rig +x), positive elevation looks up (toward rig -y).
  Its x axis is ``(cos a, 0, -sin a)`` (horizontal, also at ``e = +-90``), its y axis is
  ``z x x``. ``cam_from_rig`` has these three axes as rows (:func:`view_rotation`), zero
  translation (all views share the panorama's optical centre).

Default view layout and why
---------------------------
6 azimuths (0, 60, ..., 300) x 3 elevations (-45, 0, +45), 90 deg field of view, 1600 x 1600 px.
With a 90 deg square view pitched to +-45 deg, the image edge toward the horizon lies in the
horizontal plane (it contains the horizontal camera x axis and the direction at elevation 0) and
the opposite edge passes through the pole, so each pitched ring of six views covers its whole
hemisphere. The elevation-0 ring covers latitudes up to ``atan(cos 30deg) = 40.9 deg`` at its
worst azimuth (half-way between two views) and so gives the band around the horizon, where most
of the scene is, a second look: every direction of the sphere is seen by at least two views
(``tests/test_project.py::test_default_layout_covers_sphere``), which matching between the
views of a rig and across rigs needs.
1600 px over 90 deg means f = 800 px: 14 px/deg at the view centre rising to 28 px/deg at the
edges, against 16 px/deg in a 5760 x 2880 GoPro MAX panorama, i.e. about its native resolution
(a panorama of width W matches ``size ~ W / 3.6``).

Views that mostly see the operator or the tripod (the bottom ring) can be dropped with
``min_elevation_deg`` (e.g. ``-30`` drops the -45 ring) or by name with ``drop_views``.

Resampling
----------
One sampling map per view is computed per (panorama size, view layout) and cached
(:func:`sampling_maps`); every panorama is then resampled with ``cv2.remap`` (bilinear). The
seam at lon = +-180 deg is handled by ``cv2.BORDER_WRAP`` on the columns (OpenCV wraps both
axes: rows are clamped in the map so the vertical wrap, which would be wrong, never triggers).
The few output pixels whose bilinear footprint crosses a pole (less than half a row from it)
are recomputed in numpy with the row beyond the pole taken from the same row at ``lon + 180``
(the continuation of a meridian over the pole), see :func:`sample_equirect`.
The maps are stored in OpenCV's fixed-point form (``CV_16SC2`` + ``CV_16UC1``: 1/32-pixel
bilinear weights, 6 bytes per output pixel), which is what ``remap`` uses internally for
bilinear interpolation anyway.

Panoramas are processed in parallel by a pool of ``workers`` threads, OpenCV set to one thread
each: ``cv2.imread``, ``cv2.remap`` and ``cv2.imwrite`` release the GIL (OpenCV's Python bindings
drop it around every wrapped call) and the numpy work per panorama is a few pole pixels, so the
threads run on separate cores, and the ~280 MB of maps of the default layout are shared without
copies. A process pool was tried and rejected: ``fork`` deadlocked in this test suite (a forked
child of a process whose OpenCV thread pool is running), and ``spawn``/``forkserver`` re-run the
main module in every worker, which for a Snakemake ``script:`` is the stage itself.

Perspective photos
------------------
One camera per photo, model ``SIMPLE_RADIAL`` ``[f, cx, cy, k]`` with ``k = 0`` by default
(COLMAP's default model for unknown cameras: SfM refines ``f`` and ``k``; option
``perspective_model = "PINHOLE"`` gives ``[f, f, cx, cy]``), principal point at the image
centre. The focal length in pixels comes from, in order:

1. EXIF ``FocalLengthIn35mmFilm``: ``f_px = f35 / 43.27 mm * image diagonal in px``
   (35 mm equivalence by the diagonal of the 36 x 24 mm frame, as camera makers quote it
   (CIPA DCG-002); a width-based equivalence would give 4 % more for a 4:3 image);
2. EXIF ``FocalLength`` in mm with ``sensor_width_mm`` (option; the sensor side along the
   longer image side): ``f_px = f_mm / sensor_width_mm * max(W, H)``;
3. otherwise ``default_fov_deg`` (default 60 deg across the longer image side, i.e.
   ``f = 0.87 * max(W, H)``: close to OpenSfM's default prior 0.85, between COLMAP's prior
   ``1.2 * max(W, H)`` (45 deg) and a 26 mm-equivalent phone main camera (67 deg)).
   (The Lund photos in ``../shared/data`` do carry ``FocalLengthIn35mmFilm = 35`` and
   ``FocalLength = 4.3 mm`` in EXIF, only make/model are missing: they use rule 1,
   ``f = 1035 px`` for 1024 x 768, a 53 deg horizontal field of view.)

``views.json`` marks the camera with ``"prior_focal_length": true`` only for cases 1 and 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from .cameras import camera_rays, direction_to_equirect, pinhole_K, view_rotation
from .errors import InputError
from .io import atomic_path, read_json, remove_stale_temporaries, write_json
from .log import get_logger
from .masks import MASK_WORK_WIDTH, panorama_labels, view_nadir_fraction
from .options import build_options

log = get_logger("project")

SCHEMA_VERSION = 1
DIAGONAL_35MM = math.hypot(36.0, 24.0)  # 43.27 mm, diagonal of the 35 mm film frame
PERSPECTIVE_MODELS = ("SIMPLE_RADIAL", "PINHOLE")


# --------------------------------------------------------------------------------------
# options


@dataclass(frozen=True)
class ProjectOptions:
    """Options of the project stage (config section ``project``).

    Attributes:
        azimuths_deg: explicit view azimuths in degrees (positive = to the right); ``None``
            (default) means ``num_azimuths`` evenly spaced azimuths starting at 0.
        num_azimuths: number of evenly spaced azimuths when ``azimuths_deg`` is None (default 6:
            0, 60, ..., 300).
        elevations_deg: view elevations in degrees, in [-90, 90] (positive = up); default
            (-45, 0, 45) (see the module docstring for why this covers the sphere).
        fov_deg: field of view of the square views in degrees, in (0, 180) (default 90).
        size: width = height of the views in pixels (default 1600).
        jpeg_quality: JPEG quality of the views, 1..100 (default 95).
        workers: processes across panoramas; ``None`` (default) = ``os.cpu_count()``.
        min_elevation_deg: drop views whose elevation is below this (degrees; default None =
            keep all). E.g. -30 drops the -45 ring that mostly sees the operator/tripod.
        drop_views: view names to drop, e.g. ``["az180_el-45"]`` (default none). Unknown names
            raise :class:`InputError`.
        default_fov_deg: field of view across the longer side assumed for perspective photos
            without a usable EXIF focal length (default 60).
        sensor_width_mm: sensor size along the longer image side, used with EXIF
            ``FocalLength`` (mm) when ``FocalLengthIn35mmFilm`` is absent (default None: unknown).
        perspective_model: COLMAP camera model for perspective photos: ``"SIMPLE_RADIAL"``
            (default, params ``[f, cx, cy, k=0]``) or ``"PINHOLE"`` (``[f, f, cx, cy]``).
        sky_mask: panoramas only: detect the sky (:func:`splatforge_core.masks.sky_mask`)
            and leave it out of SfM feature extraction (drifting clouds pulled SfM's
            translations 70-100 degrees off on a real GoPro walk). Default True.
        nadir_mask_deg: panoramas only: angular radius around straight down, degrees in
            [0, 90], where the camera operator is (left out of SfM features, the training
            loss and held-out metrics). Default 45: on the real GoPro MAX walk the
            operator's head reaches latitude -47.6 deg (radius 42.4 deg). 0 = no operator
            mask (tripod shots, synthetic captures).
        max_view_masked_fraction: a view with more than this fraction of its pixels in the
            nadir cap is not made at all (it would see only the operator). Default 0.95.
    """

    azimuths_deg: tuple[float, ...] | None = None
    num_azimuths: int = field(default=6, metadata={"min": 1})
    elevations_deg: tuple[float, ...] = (-45.0, 0.0, 45.0)
    fov_deg: float = field(default=90.0, metadata={"gt": 0, "lt": 180})
    size: int = field(default=1600, metadata={"min": 16})
    jpeg_quality: int = field(default=95, metadata={"min": 1, "max": 100})
    workers: int | None = field(default=None, metadata={"min": 1})
    min_elevation_deg: float | None = field(default=None, metadata={"min": -90, "max": 90})
    drop_views: tuple[str, ...] = ()
    default_fov_deg: float = field(default=60.0, metadata={"gt": 0, "lt": 180})
    sensor_width_mm: float | None = field(default=None, metadata={"gt": 0})
    perspective_model: str = "SIMPLE_RADIAL"
    sky_mask: bool = True
    nadir_mask_deg: float = field(default=45.0, metadata={"min": 0, "max": 90})
    max_view_masked_fraction: float = field(default=0.95, metadata={"gt": 0, "max": 1})

    def __post_init__(self) -> None:
        def num(x) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        def intlike(x) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        if self.azimuths_deg is not None:
            az = tuple(self.azimuths_deg) if isinstance(self.azimuths_deg, (list, tuple)) else None
            if not az or not all(num(a) for a in az):
                raise InputError(f"project option 'azimuths_deg' must be a non-empty list of numbers, got {self.azimuths_deg!r}")
            object.__setattr__(self, "azimuths_deg", tuple(float(a) for a in az))
        if not intlike(self.num_azimuths) or self.num_azimuths < 1:
            raise InputError(f"project option 'num_azimuths' must be an integer >= 1, got {self.num_azimuths!r}")
        el = tuple(self.elevations_deg) if isinstance(self.elevations_deg, (list, tuple)) else None
        if not el or not all(num(e) and -90 <= e <= 90 for e in el):
            raise InputError("project option 'elevations_deg' must be a non-empty list of numbers in [-90, 90], "
                             f"got {self.elevations_deg!r}")
        object.__setattr__(self, "elevations_deg", tuple(float(e) for e in el))
        if not num(self.fov_deg) or not 0 < self.fov_deg < 180:
            raise InputError(f"project option 'fov_deg' must be a number in (0, 180), got {self.fov_deg!r}")
        if not intlike(self.size) or self.size < 16:
            raise InputError(f"project option 'size' must be an integer >= 16 (pixels), got {self.size!r}")
        if not intlike(self.jpeg_quality) or not 1 <= self.jpeg_quality <= 100:
            raise InputError(f"project option 'jpeg_quality' must be an integer in 1..100, got {self.jpeg_quality!r}")
        if self.workers is not None and (not intlike(self.workers) or self.workers < 1):
            raise InputError(f"project option 'workers' must be an integer >= 1 or null, got {self.workers!r}")
        if self.min_elevation_deg is not None and not num(self.min_elevation_deg):
            raise InputError(f"project option 'min_elevation_deg' must be a number or null, got {self.min_elevation_deg!r}")
        dv = self.drop_views
        if isinstance(dv, str) or not isinstance(dv, (list, tuple)) or not all(isinstance(v, str) for v in dv):
            raise InputError(f"project option 'drop_views' must be a list of view names, got {dv!r}")
        object.__setattr__(self, "drop_views", tuple(dv))
        if not num(self.default_fov_deg) or not 0 < self.default_fov_deg < 180:
            raise InputError(f"project option 'default_fov_deg' must be a number in (0, 180), got {self.default_fov_deg!r}")
        if self.sensor_width_mm is not None and (not num(self.sensor_width_mm) or self.sensor_width_mm <= 0):
            raise InputError(f"project option 'sensor_width_mm' must be a positive number or null, got {self.sensor_width_mm!r}")
        if not isinstance(self.sky_mask, bool):
            raise InputError(f"project option 'sky_mask' must be true or false, got {self.sky_mask!r}")
        if not num(self.nadir_mask_deg) or not 0 <= self.nadir_mask_deg <= 90:
            raise InputError(f"project option 'nadir_mask_deg' must be a number in [0, 90] (degrees), got {self.nadir_mask_deg!r}")
        if not num(self.max_view_masked_fraction) or not 0 < self.max_view_masked_fraction <= 1:
            raise InputError("project option 'max_view_masked_fraction' must be a number in (0, 1], "
                             f"got {self.max_view_masked_fraction!r}")
        if self.perspective_model not in PERSPECTIVE_MODELS:
            raise InputError(f"project option 'perspective_model' must be one of {list(PERSPECTIVE_MODELS)}, "
                             f"got {self.perspective_model!r}")
        # fail early on layouts that are empty or name-ambiguous
        view_layout(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "ProjectOptions":
        """Build options from a plain dict (config section); unknown keys raise :class:`InputError`."""
        return build_options(cls, d, "project")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the options (tuples as lists)."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}



@dataclass(frozen=True)
class View:
    """One pinhole view of the rig: name, pose in the rig and intrinsics."""

    name: str
    azimuth_deg: float
    elevation_deg: float
    size: int
    fov_deg: float

    @property
    def cam_from_rig(self) -> np.ndarray:
        """``[3, 3]`` float64 rotation (:func:`view_rotation`)."""
        return view_rotation(self.azimuth_deg, self.elevation_deg)

    @property
    def K(self) -> np.ndarray:
        """``[3, 3]`` float64 intrinsics (:func:`pinhole_K`)."""
        return pinhole_K(self.size, self.fov_deg)


def _fmt_angle(x: float, width: int, signed: bool) -> str:
    s = f"{abs(x):0{width}d}" if float(x).is_integer() else f"{abs(x):0{width + 2}.1f}".replace(".", "p")
    if signed:
        s = ("-" if x < 0 else "+") + s
    return s


def view_name(azimuth_deg: float, elevation_deg: float) -> str:
    """Folder name of a view, e.g. ``az000_el+00``, ``az300_el-45`` (``az022p5_el+10`` for fractions).

    The azimuth is reduced to [0, 360).
    """
    a = float(azimuth_deg) % 360.0
    a = 0.0 if a >= 360.0 else a
    e = float(elevation_deg)
    a_s = _fmt_angle(int(a) if a.is_integer() else a, 3, False)
    e_s = _fmt_angle(int(e) if e.is_integer() else e, 2, True)
    return f"az{a_s}_el{e_s}"


def view_layout(options: dict | ProjectOptions | None = None) -> list[View]:
    """The views of the rig for the given options, elevation-major (ring by ring, bottom first).

    Raises:
        InputError: no view left after ``min_elevation_deg`` / ``drop_views``, an unknown
            name in ``drop_views``, or two views with the same name (duplicate angles).
    """
    opts = build_options(ProjectOptions, options, "project")
    if opts.azimuths_deg is not None:
        azs = [a % 360.0 for a in opts.azimuths_deg]
    else:
        azs = [i * 360.0 / opts.num_azimuths for i in range(opts.num_azimuths)]
    views: list[View] = []
    for e in sorted(opts.elevations_deg):
        if opts.min_elevation_deg is not None and e < opts.min_elevation_deg:
            continue
        for a in azs:
            views.append(View(view_name(a, e), float(a), float(e), opts.size, float(opts.fov_deg)))
    names = [v.name for v in views]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise InputError(f"project options give duplicate views {dups} (repeated azimuth/elevation)")
    all_names = {view_name(a, e) for a in azs for e in opts.elevations_deg}
    unknown = sorted(set(opts.drop_views) - all_names)
    if unknown:
        raise InputError(f"project option 'drop_views' names unknown views {unknown}; views are {sorted(all_names)}")
    views = [v for v in views if v.name not in set(opts.drop_views)]
    if opts.nadir_mask_deg > 0:
        inside = [v for v in views if view_nadir_fraction(v.cam_from_rig, v.K, v.size, v.size, opts.nadir_mask_deg,
                                                          step=max(v.size // 64, 1)) > opts.max_view_masked_fraction]
        if inside:
            log.info("views %s see only the nadir cap of %.0f deg (the operator): not made",
                     [v.name for v in inside], opts.nadir_mask_deg)
        views = [v for v in views if v not in inside]
    if not views:
        raise InputError("project options leave no view (min_elevation_deg / drop_views drop them all)")
    return views


# --------------------------------------------------------------------------------------
# sampling maps and resampling


@dataclass
class ViewMap:
    """Precomputed ``cv2.remap`` maps of one view for one panorama size.

    ``map1`` ``[S, S, 2]`` int16 and ``map2`` ``[S, S]`` uint16 are OpenCV's fixed-point maps
    (``cv2.convertMaps`` to ``CV_16SC2``) of the equirectangular coordinates with the rows
    clamped to ``[0, H - 1]``; ``pole_idx`` (flat output indices, int64) with ``pole_u`` /
    ``pole_v`` (float64, unclamped) are the pixels whose bilinear footprint crosses a pole.
    """

    map1: np.ndarray
    map2: np.ndarray
    pole_idx: np.ndarray
    pole_u: np.ndarray
    pole_v: np.ndarray


_MAP_CACHE: dict[tuple, list[ViewMap]] = {}
_MAP_CACHE_MAX = 2  # layouts kept in memory (the default layout's maps are ~280 MB)


def view_equirect_coords(view: View, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Equirectangular ``(u, v)`` sampled by every pixel of ``view`` (``[S, S]`` float64 each).

    Ray of output pixel = ``cam_from_rig^T @ K^-1 (c + 0.5, r + 0.5, 1)``, then
    :func:`direction_to_equirect`.
    """
    rays = camera_rays(view.K, view.size, view.size) @ view.cam_from_rig  # = (R^T d^T)^T
    return direction_to_equirect(rays, width, height)


def _build_view_map(u: np.ndarray, v: np.ndarray, height: int) -> ViewMap:
    pole = (v < 0.0) | (v > height - 1.0)
    pole_idx = np.flatnonzero(pole)
    map1, map2 = cv2.convertMaps(
        u.astype(np.float32), np.clip(v, 0.0, height - 1.0).astype(np.float32), cv2.CV_16SC2
    )
    return ViewMap(map1, map2, pole_idx, u.ravel()[pole_idx], v.ravel()[pole_idx])


def _layout_maps(views: Sequence[View], width: int, height: int) -> list[ViewMap]:
    # A view at azimuth a sees the view at azimuth 0 (same elevation, size, fov) rotated about
    # the rig y axis, i.e. the same longitudes + a: its u is the azimuth-0 u shifted by
    # a / 360 * W (mod W). So the trigonometry runs once per ring, not once per view.
    base: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    out = []
    for view in views:
        key = (view.elevation_deg, view.size, view.fov_deg)
        if key not in base:
            base[key] = view_equirect_coords(dataclasses.replace(view, azimuth_deg=0.0), width, height)
        u0, v = base[key]
        u = np.mod(u0 + (view.azimuth_deg / 360.0 * width + 0.5), width) - 0.5
        out.append(_build_view_map(u, v, height))
    return out


def sampling_maps(views: Sequence[View], width: int, height: int) -> list[ViewMap]:
    """Sampling maps of ``views`` for a ``width x height`` panorama (cached per size and layout)."""
    key = (int(width), int(height), tuple(views))
    maps = _MAP_CACHE.get(key)
    if maps is None:
        if width >= 32767 or height >= 32767:
            raise InputError(f"panorama of {width} x {height} px is too large for cv2.remap (< 32767 px per side)")
        t0 = time.perf_counter()
        maps = _layout_maps(views, width, height)
        while len(_MAP_CACHE) >= _MAP_CACHE_MAX:
            _MAP_CACHE.pop(next(iter(_MAP_CACHE)))
        _MAP_CACHE[key] = maps
        log.debug("built %d sampling maps for %dx%d in %.2f s", len(views), width, height, time.perf_counter() - t0)
    return maps


def sample_equirect(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear sample of an equirectangular image on the sphere, in numpy (reference / pole pixels).

    Columns wrap (lon +-180 deg). A row beyond a pole (``v < 0`` or ``v > H - 1``) continues
    the meridian over the pole: row ``-1 - k`` at column ``u`` is row ``k`` at column
    ``u + W/2`` (lon + 180 deg); likewise at the bottom. Within a row the sample is linear in
    ``u`` (so an odd ``W`` is handled exactly too).

    Args:
        image: ``[H, W]`` or ``[H, W, C]`` array. u, v: ``[N]`` float coordinates
            (integers = pixel centres), ``v`` in ``[-1, H]``.

    Returns:
        ``[N]`` or ``[N, C]`` float64 samples.
    """
    img = np.asarray(image)
    H, W = img.shape[:2]
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    r0 = np.floor(v).astype(np.int64)
    fv = v - r0
    if img.ndim == 3:
        fv = fv[:, None]

    def row_sample(r: np.ndarray, uu: np.ndarray) -> np.ndarray:
        over_top = r < 0
        over_bot = r > H - 1
        rr = np.where(over_top, -1 - r, np.where(over_bot, 2 * H - 1 - r, r))
        uu = np.where(over_top | over_bot, uu + W / 2.0, uu)
        c0 = np.floor(uu).astype(np.int64)
        fu = uu - c0
        if img.ndim == 3:
            fu = fu[:, None]
        a = img[rr, c0 % W].astype(np.float64)
        b = img[rr, (c0 + 1) % W].astype(np.float64)
        return a * (1 - fu) + b * fu

    return row_sample(r0, u) * (1 - fv) + row_sample(r0 + 1, u) * fv


def project_equirect(image: np.ndarray, maps: Sequence[ViewMap]) -> Iterable[np.ndarray]:
    """Resample one equirectangular image into the views of ``maps`` (a generator, one view at a time).

    Args:
        image: ``[H, W, C]`` or ``[H, W]`` uint8 or float32 panorama (the size ``maps`` were
            built for).
        maps: from :func:`sampling_maps`.

    Yields:
        ``[S, S(, C)]`` arrays of ``image``'s dtype, bilinear samples (``cv2.remap``; 1/32-px
        weights), columns wrapped across the lon +-180 deg seam, pole pixels per
        :func:`sample_equirect`.
    """
    for m in maps:
        out = cv2.remap(image, m.map1, m.map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        if m.pole_idx.size:
            vals = sample_equirect(image, m.pole_u, m.pole_v)
            if np.issubdtype(out.dtype, np.integer):
                info = np.iinfo(out.dtype)
                vals = np.clip(np.rint(vals), info.min, info.max)
            flat = out.reshape(out.shape[0] * out.shape[1], *out.shape[2:])
            flat[m.pole_idx] = vals.astype(out.dtype)
        yield out


# --------------------------------------------------------------------------------------
# per-panorama work (runs in the pool workers)

_WORKER: dict[str, Any] = {}
_MASK_FRACTIONS: dict[str, dict[str, float]] = {}


def _worker_init(views: list[View], jpeg_quality: int, opts: ProjectOptions | None = None,
                 mask_dir: str | None = None) -> None:
    _WORKER["views"] = views
    _WORKER["jpeg_quality"] = jpeg_quality
    _WORKER["opts"] = opts
    _WORKER["mask_dir"] = mask_dir


def _write_view_masks(img: np.ndarray, stem: str) -> dict[str, float]:
    """Label image of one panorama (:mod:`splatforge_core.masks`) resampled into every view
    (nearest label) and written as ``{mask_dir}/{view}/{stem}.png``; returns label fractions."""
    opts: ProjectOptions = _WORKER["opts"]
    views: list[View] = _WORKER["views"]
    labels = panorama_labels(img, opts.sky_mask, opts.nadir_mask_deg, MASK_WORK_WIDTH)
    maps = sampling_maps(views, labels.shape[1], labels.shape[0])
    counts = np.zeros(3)
    for view, m in zip(views, maps):
        out = cv2.remap(labels, m.map1, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_WRAP)
        dst = os.path.join(_WORKER["mask_dir"], view.name, f"{stem}.png")
        if not cv2.imwrite(dst, out, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise OSError(f"{dst}: cv2.imwrite failed")
        counts += np.bincount(out.ravel(), minlength=3)[:3]
    return {"sky": counts[1] / counts.sum(), "operator": counts[2] / counts.sum()}


def _process_panorama(task: tuple[str, str, str]) -> dict[str, float]:
    """Decode one panorama, write its views under ``out_dir``; return wall and CPU timings (s)."""
    src, stem, out_dir = task
    views: list[View] = _WORKER["views"]
    clocks = (time.perf_counter, time.thread_time)  # wall, CPU time of this thread
    t0 = [c() for c in clocks]
    # IGNORE_ORIENTATION: an equirectangular image is used as stored (as ingest measured it)
    img = cv2.imread(src, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise InputError(f"{src}: cannot decode the panorama JPEG")
    t1 = [c() for c in clocks]
    maps = sampling_maps(views, img.shape[1], img.shape[0])
    t2 = [c() for c in clocks]
    remap, enc = [0.0, 0.0], [0.0, 0.0]
    params = [cv2.IMWRITE_JPEG_QUALITY, int(_WORKER["jpeg_quality"])]
    it = iter(project_equirect(img, maps))
    for view in views:
        ta = [c() for c in clocks]
        out = next(it)
        tb = [c() for c in clocks]
        dst = os.path.join(out_dir, view.name, f"{stem}.jpg")
        if not cv2.imwrite(dst, out, params):
            raise OSError(f"{dst}: cv2.imwrite failed")
        tc = [c() for c in clocks]
        for i in range(2):
            remap[i] += tb[i] - ta[i]
            enc[i] += tc[i] - tb[i]
    tm = time.perf_counter()
    if _WORKER.get("mask_dir"):
        fr = _write_view_masks(img, stem)
        _MASK_FRACTIONS[stem] = fr
    mask_s = time.perf_counter() - tm
    return {
        "mask_s": mask_s,
        "decode_s": t1[0] - t0[0], "maps_s": t2[0] - t1[0], "remap_s": remap[0], "encode_write_s": enc[0],
        "decode_cpu_s": t1[1] - t0[1], "remap_cpu_s": remap[1], "encode_write_cpu_s": enc[1],
    }


def _run_panoramas(tasks: list[tuple[str, str, str]], views: list[View], opts: ProjectOptions,
                   sizes: set[tuple[int, int]], mask_dir: str | None = None) -> dict[str, float]:
    from tqdm import tqdm

    workers = min(opts.workers or os.cpu_count() or 1, max(len(tasks), 1))
    totals = dict.fromkeys(("decode_s", "maps_s", "remap_s", "encode_write_s", "mask_s",
                            "decode_cpu_s", "remap_cpu_s", "encode_write_cpu_s"), 0.0)
    t0 = time.perf_counter()
    for w, h in sorted(sizes):  # fill the sampling-map cache once, timed apart from the panoramas
        sampling_maps(views, w, h)
    if mask_dir:
        sampling_maps(views, MASK_WORK_WIDTH, MASK_WORK_WIDTH // 2)
    totals["maps_s"] = time.perf_counter() - t0
    bar = tqdm(total=len(tasks), desc="project", unit="pano", disable=None)
    old_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # parallel across panoramas, not inside OpenCV calls
    _worker_init(views, opts.jpeg_quality, opts, mask_dir)
    try:
        if workers <= 1:
            results = map(_process_panorama, tasks)
        else:
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="project")
            futures = [pool.submit(_process_panorama, t) for t in tasks]
            results = (f.result() for f in as_completed(futures))
        try:
            for r in results:
                for k, v in r.items():
                    totals[k] += v
                bar.update()
        finally:
            if workers > 1:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        cv2.setNumThreads(old_threads)
        bar.close()
    totals["workers"] = workers
    return totals


# --------------------------------------------------------------------------------------
# perspective photos


def perspective_camera(rec: dict[str, Any], opts: ProjectOptions) -> dict[str, Any]:
    """``views.json`` camera of one perspective photo (manifest record ``rec``).

    Returns:
        dict with ``view`` (= name), ``model``, ``width``, ``height``, ``params`` (pixels),
        ``focal_source`` (``"exif_35mm"``, ``"exif_mm_sensor"`` or ``"default_fov"``),
        ``prior_focal_length`` (bool), ``cam_from_rig`` (identity). Focal length rules: module
        docstring ("Perspective photos").

    Raises:
        InputError: the record lacks a positive integer ``width``/``height``.
    """
    w, h = rec.get("width"), rec.get("height")
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
        raise InputError(f"manifest image {rec.get('name')!r}: width/height missing or invalid ({w!r}, {h!r})")
    f35, fmm = rec.get("focal_length_35mm"), rec.get("focal_length_mm")
    if isinstance(f35, (int, float)) and f35 > 0:
        f, source = f35 / DIAGONAL_35MM * math.hypot(w, h), "exif_35mm"
    elif isinstance(fmm, (int, float)) and fmm > 0 and opts.sensor_width_mm:
        f, source = fmm / opts.sensor_width_mm * max(w, h), "exif_mm_sensor"
    else:
        f, source = (max(w, h) / 2.0) / math.tan(math.radians(opts.default_fov_deg) / 2.0), "default_fov"
    cx, cy = w / 2.0, h / 2.0
    params = [f, cx, cy, 0.0] if opts.perspective_model == "SIMPLE_RADIAL" else [f, f, cx, cy]
    return {
        "view": rec["name"],
        "model": opts.perspective_model,
        "width": w,
        "height": h,
        "params": params,
        "azimuth_deg": None,
        "elevation_deg": None,
        "focal_source": source,
        "prior_focal_length": source != "default_fov",
        "cam_from_rig": {"rotation": np.eye(3).tolist(), "translation": [0.0, 0.0, 0.0]},
    }


# --------------------------------------------------------------------------------------
# stage entry points


def _image_kind(manifest: dict, rec: dict) -> str:
    kind = rec.get("kind") or manifest.get("camera_kind")
    if kind not in ("equirectangular", "perspective"):
        raise InputError(f"manifest image {rec.get('name')!r}: unknown kind {kind!r}")
    return kind


def main(
    manifest_path: str | os.PathLike,
    images_dir: str | os.PathLike,
    views_path: str | os.PathLike,
    options: dict | ProjectOptions | None = None,
    masks_dir: str | os.PathLike | None = None,
) -> dict:
    """Project the panoramas of ``manifest.json`` into pinhole views; write ``images_dir`` and ``views.json``.

    Args:
        manifest_path: ``manifest.json`` from the ingest stage (schema ``docs/formats.md``).
        images_dir: output folder, replaced as a whole (atomic rename): ``{view}/{frame}.jpg``
            for panoramas, symbolic links ``{name}`` -> original for perspective photos.
        views_path: output ``views.json`` (written atomically after ``images_dir``).
        options: :class:`ProjectOptions` or a plain dict of its fields.
        masks_dir: output folder for the views' label masks (:mod:`splatforge_core.masks`:
            0 valid, 1 sky, 2 operator; ``{view}/{frame}.png``, uint8, the view's size),
            replaced as a whole; made only for panoramas and only when ``sky_mask`` or
            ``nadir_mask_deg`` asks for one (else it is left empty). None: no masks.
            ``views.json`` then has ``mask_dir`` and each panorama frame ``masks``
            (view -> file relative to ``mask_dir``) and ``mask_fractions`` (sky, operator).

    Returns:
        The ``views.json`` content as written, plus (not written) ``"timing"``: seconds summed
        over panoramas, wall clock (``decode_s``, ``remap_s``, ``encode_write_s``) and CPU time
        of the worker thread (``decode_cpu_s``, ``remap_cpu_s``, ``encode_write_cpu_s``),
        ``maps_s`` (map building), ``wall_s`` (whole call) and ``workers``.

    Raises:
        InputError: unreadable manifest, bad options, an image record without name/path, a
            missing input file, a panorama that does not decode, a perspective photo without
            width/height. Then ``images_dir`` is left as it was and ``views.json`` is not
            written.
    """
    t_start = time.perf_counter()
    opts = build_options(ProjectOptions, options, "project")
    # temporaries a killed run left beside the outputs (.images.<random>.tmp/ ...; issue #18)
    remove_stale_temporaries([images_dir, views_path, *([masks_dir] if masks_dir is not None else [])])
    manifest_path = Path(manifest_path)
    try:
        manifest = read_json(manifest_path)
    except (OSError, ValueError) as e:
        raise InputError(f"{manifest_path}: cannot read the manifest ({e})") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("images"), list):
        raise InputError(f"{manifest_path}: not a manifest (no 'images' list)")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{manifest_path}: schema_version {manifest.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    records = manifest["images"]
    if not records:
        raise InputError(f"{manifest_path}: the manifest lists no images")

    views = view_layout(opts)
    pano_recs, persp_recs, sizes = [], [], set()
    for rec in records:
        if not isinstance(rec, dict) or not rec.get("name") or not rec.get("path"):
            raise InputError(f"{manifest_path}: image record without name/path: {rec!r}")
        if _image_kind(manifest, rec) == "equirectangular":
            w, h = rec.get("width"), rec.get("height")
            if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
                if w != 2 * h:  # the mapping works for any size (lon over W, lat over H)
                    log.warning("%s: equirectangular panorama of %d x %d px is not exactly 2:1", rec["path"], w, h)
                sizes.add((w, h))
            pano_recs.append(rec)
        else:
            persp_recs.append(rec)

    cameras: list[dict] = []
    for v in views if pano_recs else []:
        K = v.K
        cameras.append({
            "view": v.name, "model": "PINHOLE", "width": v.size, "height": v.size,
            "params": [K[0, 0], K[1, 1], K[0, 2], K[1, 2]],
            "azimuth_deg": v.azimuth_deg, "elevation_deg": v.elevation_deg, "fov_deg": v.fov_deg,
            "cam_from_rig": {"rotation": v.cam_from_rig.tolist(), "translation": [0.0, 0.0, 0.0]},
        })
    frames: list[dict] = []
    images_dir = Path(images_dir)
    timing: dict[str, float] = {}
    want_masks = masks_dir is not None and bool(pano_recs) and (opts.sky_mask or opts.nadir_mask_deg > 0)
    mask_ctx = atomic_path(Path(masks_dir), suffix="") if masks_dir is not None else contextlib.nullcontext(None)
    _MASK_FRACTIONS.clear()
    with mask_ctx as mask_tmp, atomic_path(images_dir, suffix="") as tmp:
        if mask_tmp is not None:
            mask_tmp.mkdir()
            if want_masks:
                for v in views:
                    (mask_tmp / v.name).mkdir()
        tmp.mkdir()
        tasks = []
        if pano_recs:
            for v in views:
                (tmp / v.name).mkdir()
        for rec in pano_recs:
            stem = Path(rec["name"]).stem
            tasks.append((str(rec["path"]), stem, str(tmp)))
            frames.append({
                "frame": stem, "source": rec["name"], "source_path": str(rec["path"]), "kind": "equirectangular",
                "enu": rec.get("enu"), "heading_deg": rec.get("heading_deg"),
                "images": {v.name: f"{v.name}/{stem}.jpg" for v in views},
                **({"masks": {v.name: f"{v.name}/{stem}.png" for v in views}} if want_masks else {}),
            })
        for rec in persp_recs:
            src = Path(rec["path"])
            if not src.is_file():
                raise InputError(f"{src}: perspective photo listed in {manifest_path} does not exist")
            os.symlink(src.resolve(), tmp / rec["name"])
            cameras.append(perspective_camera(rec, opts))
            frames.append({
                "frame": Path(rec["name"]).stem, "source": rec["name"], "kind": "perspective",
                "enu": rec.get("enu"), "heading_deg": rec.get("heading_deg"), "images": {rec["name"]: rec["name"]},
            })
        if tasks:
            for t in tasks:
                if not os.path.isfile(t[0]):
                    raise InputError(f"{t[0]}: panorama listed in {manifest_path} does not exist")
            timing = _run_panoramas(tasks, views, opts, sizes, str(mask_tmp) if want_masks else None)
    for fr in frames:
        if fr["frame"] in _MASK_FRACTIONS:
            fr["mask_fractions"] = _MASK_FRACTIONS[fr["frame"]]
    out = {
        "schema_version": SCHEMA_VERSION,
        "camera_kind": manifest.get("camera_kind"),
        "image_dir": str(images_dir),
        **({"mask_dir": str(masks_dir)} if want_masks else {}),
        "cameras": cameras,
        "frames": frames,
        "options": opts.to_dict(),
    }
    write_json(views_path, out)
    timing["wall_s"] = time.perf_counter() - t_start
    n_img = sum(len(f["images"]) for f in frames)
    log.info(
        "%d panoramas -> %d views each, %d perspective photos linked; %d images in %s (%.1f s)",
        len(pano_recs), len(views) if pano_recs else 0, len(persp_recs), n_img, images_dir, timing["wall_s"],
    )
    return {**out, "timing": timing}


def cli(argv: list[str] | None = None) -> int:
    """``splatforge project MANIFEST IMAGES_DIR VIEWS_JSON [--size N] [--fov DEG] [--workers N]``."""
    d = ProjectOptions()
    ap = argparse.ArgumentParser(
        prog="splatforge project",
        description="Project equirectangular panoramas into pinhole views (perspective photos are linked).",
    )
    ap.add_argument("manifest", help="manifest.json from 'splatforge ingest'")
    ap.add_argument("images_dir", help="output folder for the views (replaced as a whole)")
    ap.add_argument("views_json", help="output views.json")
    ap.add_argument("--size", type=int, default=d.size, help="view width = height in px (default %(default)s)")
    ap.add_argument("--fov", type=float, default=d.fov_deg, help="view field of view in degrees (default %(default)s)")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    ap.add_argument("--min-elevation", type=float, default=None, help="drop views below this elevation (degrees)")
    ap.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality, help="JPEG quality (default %(default)s)")
    a = ap.parse_args(argv)
    main(a.manifest, a.images_dir, a.views_json, ProjectOptions(
        size=a.size, fov_deg=a.fov, workers=a.workers, min_elevation_deg=a.min_elevation,
        jpeg_quality=a.jpeg_quality,
    ))
    return 0
