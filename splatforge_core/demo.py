"""Embedded demo capture: GPS-tagged 360 panoramas of a synthetic textured courtyard.

:func:`main` renders, deterministically from a seed, a small capture that the whole workflow
can run on without any download: ``N`` equirectangular panoramas (``images/pano_0001.jpg`` ...)
with GPS EXIF and GPano XMP, plus ``ground_truth.json`` with the true poses.

Scene (world frame = ENU metres at the demo origin: x east, y north, z up)
---------------------------------------------------------------------------
* A courtyard ``x in [-20, 20]``, ``y in [-15, 15]``: a textured ground plane ``z = 0`` and four
  textured walls of heights 8 m (south), 7 m (east), 10 m (north), 6.5 m (west); above the walls
  a smooth sky gradient (carries no features, as a real sky).
* Nine textured axis-aligned boxes / pillars (0.8 m to 6 m high) at 3 m to 25 m from the
  cameras for parallax (:data:`BOXES`).
* Textures are mosaics of crops of the real photographs that scikit-image ships inside its
  wheel (``skimage/data/*.png|jpg``: astronaut, coffee, chelsea, rocket, brick, grass, gravel,
  camera, coins, moon, hubble_deep_field, retina, ...; none needs a download), randomly
  scaled, flipped and tinted (fixed scene seed), so every surface is covered by real image
  statistics without visible repetition (repeated tiles would give SIFT ambiguous matches).
  Texel size: 1 cm on the ground and the boxes, 2 cm on the walls, against a panorama
  pixel of ``2 pi / W`` rad (3.1 mrad at W = 2048: 1.5 cm at 5 m, 6 cm at 20 m).
* Anti-aliasing by mip-mapping: each texture has a Gaussian pyramid (``cv2.pyrDown``); each
  pixel samples it trilinearly (``cv2.remap`` bilinear on two levels) at the level of its
  footprint ``t * (2 pi / W) / sqrt(|cos incidence|)`` (the geometric mean of the footprint's
  two axes on the surface, a common compromise between blur and aliasing at grazing angles).
  Flat per-face shading from a fixed sun direction makes the box faces differ in brightness.
  Geometric edges are not anti-aliased (one ray per pixel).

Rendering: vectorised numpy ray casting, one ray per pixel through the pixel centre, against
the courtyard (inside of a box plus ground plane) and the boxes (slab method, Kay & Kajiya
1986). About 1 s per 2048 x 1024 panorama.

Camera path and frames
----------------------
Panoramas lie on a circular arc (radius 16 m, centre (0, 8) ENU, lowest point (0, -8)) with
``spacing_m`` between neighbours, camera height 1.7 m, so the positions are not collinear and
a GPS-based Sim3 alignment is well posed. Each panorama is upright: rig ``-y`` = world up. Its
heading ``yaw`` (degrees clockwise from north of the rig ``+z`` axis, i.e. of the panorama
centre column ``u = W/2``) is the path direction plus a uniform random offset of up to
``yaw_jitter_deg`` (from the seed).

Rig frame (``docs/formats.md``): +z = panorama centre, +x = right (increasing u), +y = down
(increasing v); pixel ``(u, v)`` has ``lon = (u + 0.5) / W * 360 - 180``,
``lat = 90 - (v + 0.5) / H * 180`` and ray ``(cos lat sin lon, -sin lat, cos lat cos lon)``.
``rig_from_world`` (3x3, rows = rig axes in ENU) maps ENU direction vectors into the rig
frame: ``p_rig = rig_from_world @ (p_enu - position_enu)``; for heading ``yaw`` its rows are
``x = (cos yaw, -sin yaw, 0)``, ``y = (0, 0, -1)``, ``z = (sin yaw, cos yaw, 0)``.

GPS and EXIF
------------
The EXIF position is the true ENU position plus Gaussian noise (``gps_sigma_m`` per axis,
independent, from the seed), converted to WGS84 with
:func:`splatforge_core.geodesy.enu_to_geodetic` (pyproj EPSG:4978/EPSG:4979 and the standard
ECEF <-> ENU rotation, ESA Navipedia "Transformations between ECEF and ENU coordinates").
The ellipsoidal height is written as ``GPSAltitude``: ingest uses EXIF altitude as-is as the
ellipsoidal height, so ingest recovers the noisy positions exactly (to the EXIF rational
resolution: 1e-6 arc-second = 0.03 mm, altitude 1 mm). Also written: GPS time/date stamps
(UTC, 2 s apart), ``DateTimeOriginal`` with ``OffsetTimeOriginal = +00:00``, ``Make =
SplatForge``, ``Model = demo``, ``GPSHPositioningError = gps_sigma_m`` and a GPano XMP packet
(Google Photo Sphere metadata, https://developers.google.com/streetview/spherical-metadata;
``ProjectionType = equirectangular``, full-pano = cropped-area sizes). No heading is written
(``PoseHeadingDegrees``): the true yaw is only in the ground truth.

Output (``out_dir``, e.g. ``work/demo``, built in a temporary folder beside it and renamed into
place as a whole by :func:`splatforge_core.io.atomic_path`)::

    images/pano_0001.jpg ...   equirectangular JPEGs (quality ``jpeg_quality``, 4:2:0)
    ground_truth.json          schema below

``ground_truth.json``::

    {"schema_version": 1, "generator": "splatforge_core.demo",
     "frames": {"world": "ENU metres at origin (x east, y north, z up)", "rig": ...},
     "origin": {"lat": .., "lon": .., "alt": ..}, "seed": 0, "gps_sigma_m": 2.0,
     "width": 2048, "height": 1024, "camera_height_m": 1.7,
     "panoramas": [{"name": "pano_0001.jpg", "enu_true": [e, n, u], "enu_gps": [e, n, u],
                    "lat": .., "lon": .., "alt": .., "yaw_deg": ..,
                    "rig_from_world": [[...], [...], [...]],
                    "rig_from_world_translation": [tx, ty, tz], "timestamp": "..."}],
     "scene": {"courtyard": {...}, "boxes": [{"name": .., "min": [..], "max": [..]}]},
     "options": {...}}

``lat``/``lon``/``alt`` are the values written into EXIF (of ``enu_gps``).
Everything is deterministic: the same options give byte-identical files.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import piexif
from PIL import Image

from .cameras import direction_to_equirect, equirect_directions
from .errors import InputError
from .io import atomic_path, write_json
from .log import get_logger
from .options import build_options

log = get_logger("demo")

SCHEMA_VERSION = 1
SCENE_SEED = 20240601  # fixed: the scene (textures, layout) does not depend on the options' seed
CAMERA_HEIGHT_M = 1.7
START_TIME_UTC = _dt.datetime(2024, 6, 1, 10, 0, 0)
FRAME_INTERVAL_S = 2

# courtyard (inside of a box), ENU metres
COURT_MIN = (-20.0, -15.0)
COURT_MAX = (20.0, 15.0)
# wall heights in metres: south (y = -15), east (x = 20), north (y = 15), west (x = -20)
WALL_HEIGHTS = (8.0, 7.0, 10.0, 6.5)
WALL_NAMES = ("south", "east", "north", "west")
# boxes standing on the ground: name, (xmin, ymin), (xmax, ymax), height (metres, ENU)
BOXES: tuple[tuple[str, tuple[float, float], tuple[float, float], float], ...] = (
    ("block", (-4.0, 0.0), (2.0, 3.0), 3.0),
    ("pillar_e", (6.0, -2.0), (7.0, -1.0), 5.0),
    ("pillar_w", (-8.0, -3.0), (-7.0, -2.0), 4.0),
    ("crate_s", (-6.0, -13.0), (-2.0, -11.0), 2.5),
    ("bench_se", (5.0, -13.5), (8.0, -12.0), 1.2),
    ("tower_e", (15.0, -8.0), (16.0, -7.0), 6.0),
    ("kiosk_nw", (-10.0, 9.0), (-6.0, 12.0), 3.5),
    ("shed_ne", (10.0, 8.0), (14.0, 12.0), 2.0),
    ("planter_sw", (-16.0, -12.0), (-13.0, -10.0), 0.8),
)
PATH_CENTRE = (0.0, 8.0)
PATH_RADIUS_M = 16.0
MIN_CLEARANCE_M = 1.5  # cameras keep at least this distance from walls and boxes

GROUND_TEXEL_M = 0.01
WALL_TEXEL_M = 0.02
BOX_TEXEL_M = 0.01
MAX_MIP_LEVELS = 8
SUN_DIR = np.array([0.45, -0.55, 0.70]) / np.linalg.norm([0.45, -0.55, 0.70])
SKY_HORIZON = np.array([205.0, 220.0, 235.0])
SKY_ZENITH = np.array([70.0, 120.0, 200.0])


# --------------------------------------------------------------------------------------
# options


@dataclass(frozen=True)
class DemoOptions:
    """Options of the demo capture (config section ``demo``).

    Attributes:
        n_panoramas: number of panoramas, 8..48 (default 12; more than 12 for the clustered and
            scaling benchmarks, issue #12: 48 fit the court at ``spacing_m`` 1.0, 24 at 1.5; a
            path that comes too close to a wall or box is refused).
        width: panorama width in pixels, even, 256..8192 (default 2048); height = width / 2.
        seed: seed of the GPS noise and of the heading jitter (default 0). The scene itself is
            fixed.
        gps_sigma_m: standard deviation in metres of the Gaussian noise added independently to
            east, north and up of the EXIF positions (default 2.0; 0 = exact GPS).
        origin_lat, origin_lon, origin_alt: WGS84 origin of the ENU frame in degrees, degrees,
            metres (ellipsoidal height); default 55.7047, 13.1910, 70.0 (Lund, Sweden).
        spacing_m: distance between neighbouring panoramas along the path, metres, 1..4
            (default 1.5: about two strides, a 360 walk capture taking a frame every second or
            so). Measured on training (``benchmarks/results/train.md``): with 10 panoramas 3 m
            apart the held-out panoramas see the ground beneath them at a resolution no
            training panorama has: held-out PSNR 21.4 dB after 1000 CPU steps and 22.0 dB after
            3000 (looking down 16.4 dB); 12 panoramas 1.5 m apart gave 24.7 dB after 1000.
        jpeg_quality: JPEG quality 50..100 (default 92).
        yaw_jitter_deg: maximum random heading offset from the path direction, degrees, 0..180
            (default 20.0).
    """

    n_panoramas: int = 12
    width: int = 2048
    seed: int = 0
    gps_sigma_m: float = 2.0
    origin_lat: float = 55.7047
    origin_lon: float = 13.1910
    origin_alt: float = 70.0
    spacing_m: float = 1.5
    jpeg_quality: int = 92
    yaw_jitter_deg: float = 20.0

    def __post_init__(self) -> None:
        def _int(name: str, lo: int, hi: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise InputError(f"demo option {name!r} must be an integer in [{lo}, {hi}], got {v!r}")

        def _num(name: str, lo: float, hi: float) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
                raise InputError(f"demo option {name!r} must be a number in [{lo}, {hi}], got {v!r}")

        _int("n_panoramas", 8, 48)
        _int("width", 256, 8192)
        if self.width % 2:
            raise InputError(f"demo option 'width' must be even (height = width / 2), got {self.width}")
        _int("seed", 0, 2**63 - 1)
        _num("gps_sigma_m", 0.0, 100.0)
        _num("origin_lat", -89.0, 89.0)
        _num("origin_lon", -180.0, 180.0)
        _num("origin_alt", -500.0, 9000.0)
        _num("spacing_m", 1.0, 4.0)
        _int("jpeg_quality", 50, 100)
        _num("yaw_jitter_deg", 0.0, 180.0)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "DemoOptions":
        """Build options from a plain dict (config section); unknown keys raise :class:`InputError`."""
        return build_options(cls, d, "demo")


# --------------------------------------------------------------------------------------
# textures


def _photo_pool() -> list[np.ndarray]:
    """Real photographs shipped inside the scikit-image wheel (no download), as float32 RGB [H, W, 3]."""
    import skimage.data as sd

    pool = []
    for name in (
        "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina",
        "immunohistochemistry", "brick", "grass", "gravel", "camera", "coins", "moon",
        "clock", "page", "cell",
    ):
        im = np.asarray(getattr(sd, name)())
        if im.ndim == 2:
            im = np.repeat(im[:, :, None], 3, axis=2)
        pool.append(np.ascontiguousarray(im[:, :, :3]).astype(np.float32))
    left, right, _ = sd.stereo_motorcycle()
    pool += [np.asarray(left, np.float32), np.asarray(right, np.float32)[:, ::-1].copy()]
    return pool


def _mosaic(
    rng: np.random.Generator, pool: list[np.ndarray], h: int, w: int, cell=(160, 420), scale=(0.6, 1.3)
) -> np.ndarray:
    """Fill an ``h x w`` uint8 RGB canvas with rows of randomly scaled/flipped/tinted photo crops.

    ``cell``: range of the crop sides in texels; ``scale``: range of the photo resampling factor
    (at least the factor that makes the photo cover the crop).
    """
    out = np.empty((h, w, 3), np.uint8)
    y = 0
    while y < h:
        ch = min(int(rng.integers(cell[0], cell[1])), h - y)
        x = 0
        while x < w:
            cw = min(int(rng.integers(cell[0], cell[1])), w - x)
            src = pool[int(rng.integers(len(pool)))]
            sh, sw = src.shape[:2]
            s = max(ch / sh, cw / sw, float(rng.uniform(*scale)))
            nh, nw = max(ch, int(math.ceil(sh * s))), max(cw, int(math.ceil(sw * s)))
            interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
            big = cv2.resize(src, (nw, nh), interpolation=interp)
            oy, ox = int(rng.integers(0, nh - ch + 1)), int(rng.integers(0, nw - cw + 1))
            crop = big[oy : oy + ch, ox : ox + cw]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            tint = rng.uniform(0.55, 1.15, size=3).astype(np.float32)
            gain = float(rng.uniform(0.8, 1.15))
            out[y : y + ch, x : x + cw] = np.clip(crop * (tint * gain), 0, 255).astype(np.uint8)
            x += cw
        y += ch
    return out


def _pyramid(tex: np.ndarray) -> list[np.ndarray]:
    levels = [tex]
    while len(levels) < MAX_MIP_LEVELS and min(levels[-1].shape[:2]) >= 16:
        levels.append(cv2.pyrDown(levels[-1]))
    return levels


def _round_up(n: float, m: int = 2 ** (MAX_MIP_LEVELS - 1)) -> int:
    return int(math.ceil(n / m) * m)


@dataclass
class _Material:
    name: str
    levels: list[np.ndarray]  # mip pyramid, uint8 [h, w, 3] each
    texel_m: float


@dataclass
class _Scene:
    materials: list[_Material]  # 0 ground, 1..4 walls, 5.. boxes
    box_lo: np.ndarray  # [B, 3] float64
    box_hi: np.ndarray  # [B, 3]


N_FIXED = 5  # ground + 4 walls


@functools.lru_cache(maxsize=1)
def _scene() -> _Scene:
    """Build (once per process) the textured scene; deterministic (``SCENE_SEED``)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(SCENE_SEED)
    pool = _photo_pool()
    (x0, y0), (x1, y1) = COURT_MIN, COURT_MAX
    mats = []
    g = _mosaic(rng, pool, _round_up((y1 - y0) / GROUND_TEXEL_M), _round_up((x1 - x0) / GROUND_TEXEL_M), cell=(120, 360), scale=(0.3, 0.8))
    mats.append(_Material("ground", _pyramid(g), GROUND_TEXEL_M))
    for name, hgt in zip(WALL_NAMES, WALL_HEIGHTS):
        length = (x1 - x0) if name in ("south", "north") else (y1 - y0)
        t = _mosaic(rng, pool, _round_up(hgt / WALL_TEXEL_M), _round_up(length / WALL_TEXEL_M))
        mats.append(_Material(f"wall_{name}", _pyramid(t), WALL_TEXEL_M))
    lo, hi = [], []
    for name, (bx0, by0), (bx1, by1), bh in BOXES:
        w, d = bx1 - bx0, by1 - by0
        t = _mosaic(rng, pool, _round_up((bh + d) / BOX_TEXEL_M), _round_up(2 * (w + d) / BOX_TEXEL_M))
        mats.append(_Material(f"box_{name}", _pyramid(t), BOX_TEXEL_M))
        lo.append((bx0, by0, 0.0))
        hi.append((bx1, by1, bh))
    log.debug("demo scene built in %.2f s", time.perf_counter() - t0)
    return _Scene(mats, np.array(lo, np.float64), np.array(hi, np.float64))


# --------------------------------------------------------------------------------------
# geometry


@functools.lru_cache(maxsize=2)
def _rig_rays32(width: int) -> np.ndarray:
    """``[H * W, 3]`` float32 rig-frame rays of a ``width x width/2`` panorama (:func:`~splatforge_core.cameras.equirect_directions`)."""
    return equirect_directions(width, width // 2).reshape(-1, 3)


def rig_from_world_for_yaw(yaw_deg: float) -> np.ndarray:
    """``rig_from_world`` (3x3 float64) of an upright panorama whose centre looks at compass ``yaw_deg``.

    World = ENU; yaw is measured clockwise from north. Rows are the rig axes in ENU:
    x (right) = ``(cos yaw, -sin yaw, 0)``, y (down) = ``(0, 0, -1)``,
    z (forward) = ``(sin yaw, cos yaw, 0)``.
    """
    a = math.radians(yaw_deg)
    return np.array(
        [[math.cos(a), -math.sin(a), 0.0], [0.0, 0.0, -1.0], [math.sin(a), math.cos(a), 0.0]], dtype=np.float64
    )


def project_to_pixel(points_enu, position_enu, rig_from_world, width: int) -> np.ndarray:
    """Equirectangular pixel coordinates (u, v) of ENU points seen from a panorama.

    Args:
        points_enu: ``[N, 3]`` metres.
        position_enu: ``[3]`` panorama centre, metres.
        rig_from_world: ``[3, 3]`` rotation (see module docstring).
        width: panorama width W in pixels (height W/2).

    Returns:
        ``[N, 2]`` float64 (u, v) with integer values at pixel centres (inverse of the
        ``docs/formats.md`` mapping).
    """
    p = (np.atleast_2d(np.asarray(points_enu, np.float64)) - np.asarray(position_enu, np.float64)) @ np.asarray(
        rig_from_world, np.float64
    ).T
    return np.stack(direction_to_equirect(p, width, width // 2), axis=1)


def camera_path(n: int, spacing_m: float) -> tuple[np.ndarray, np.ndarray]:
    """True camera positions and path headings.

    Returns:
        ``([n, 3] ENU metres, [n] path direction in degrees clockwise from north)``; positions on
        an arc of radius ``PATH_RADIUS_M`` around ``PATH_CENTRE`` centred on its lowest point,
        ``spacing_m`` apart (arc length), at height ``CAMERA_HEIGHT_M``.
    """
    cx, cy = PATH_CENTRE
    dphi = spacing_m / PATH_RADIUS_M
    phi = (np.arange(n) - (n - 1) / 2.0) * dphi  # angle from the lowest point, counter-clockwise
    pos = np.stack([cx + PATH_RADIUS_M * np.sin(phi), cy - PATH_RADIUS_M * np.cos(phi), np.full(n, CAMERA_HEIGHT_M)], 1)
    tangent = np.stack([np.cos(phi), np.sin(phi)], 1)  # d pos / d phi, direction of travel
    heading = np.degrees(np.arctan2(tangent[:, 0], tangent[:, 1]))
    return pos, heading


def _check_clearance(pos: np.ndarray) -> None:
    (x0, y0), (x1, y1) = COURT_MIN, COURT_MAX
    for p in pos:
        wall = min(p[0] - x0, x1 - p[0], p[1] - y0, y1 - p[1])
        if wall < MIN_CLEARANCE_M:
            raise InputError(f"demo camera at {p[:2].round(2).tolist()} is {wall:.2f} m from a wall")
        for name, (bx0, by0), (bx1, by1), _ in BOXES:
            dx = max(bx0 - p[0], 0.0, p[0] - bx1)
            dy = max(by0 - p[1], 0.0, p[1] - by1)
            if math.hypot(dx, dy) < MIN_CLEARANCE_M:
                raise InputError(f"demo camera at {p[:2].round(2).tolist()} is too close to box {name!r}")


# --------------------------------------------------------------------------------------
# rendering


def _sample(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear sample ``img`` [h, w, 3] at float pixel coords (reflecting borders) -> [N, 3] float32."""
    n = x.size
    cols = 4096
    rows = max(1, -(-n // cols))
    pad = rows * cols - n
    mx = np.pad(x.astype(np.float32), (0, pad)).reshape(rows, cols)
    my = np.pad(y.astype(np.float32), (0, pad)).reshape(rows, cols)
    out = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return out.reshape(-1, 3)[:n].astype(np.float32)


def _shade_material(mat: _Material, u_m, v_m, footprint_m) -> np.ndarray:
    """Trilinear mip-mapped texture lookup; u_m/v_m texture coordinates in metres -> [N, 3] float32."""
    nlev = len(mat.levels)
    lod = np.clip(np.log2(np.maximum(footprint_m / mat.texel_m, 1e-6)), 0.0, nlev - 1.0)
    l0 = np.minimum(np.floor(lod).astype(np.int32), nlev - 1)
    frac = (lod - l0).astype(np.float32)
    su, sv = u_m / mat.texel_m, v_m / mat.texel_m  # level-0 texel units
    out = np.empty((u_m.size, 3), np.float32)
    for lev in np.unique(l0):
        sel = np.nonzero(l0 == lev)[0]
        a = _sample(mat.levels[lev], su[sel] / 2.0**lev - 0.5, sv[sel] / 2.0**lev - 0.5)
        if lev + 1 < nlev:
            l1 = lev + 1
            b = _sample(mat.levels[l1], su[sel] / 2.0**l1 - 0.5, sv[sel] / 2.0**l1 - 0.5)
            f = frac[sel, None]
            a = a * (1.0 - f) + b * f
        out[sel] = a
    return out


def render_panorama(position_enu, rig_from_world, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast the demo scene into an equirectangular panorama.

    Args:
        position_enu: ``[3]`` camera centre in ENU metres (inside the courtyard).
        rig_from_world: ``[3, 3]`` rotation ENU -> rig frame.
        width: panorama width W in pixels (height W/2).

    Returns:
        ``(rgb, depth, material)``: ``[H, W, 3]`` uint8 sRGB; ``[H, W]`` float32 ray length in
        metres (``inf`` for sky); ``[H, W]`` int16 material index (-1 sky, 0 ground, 1..4 walls
        south/east/north/west, 5 + i box ``BOXES[i]``).
    """
    sc = _scene()
    h = width // 2
    c = np.asarray(position_enu, np.float64)
    d = _rig_rays32(width) @ np.asarray(rig_from_world, np.float32)  # world rays, [N, 3]
    n = d.shape[0]
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        # courtyard: exit through a wall (x or y slab), or the ground
        (x0, y0), (x1, y1) = COURT_MIN, COURT_MAX
        tx = np.where(dx > 0, (x1 - c[0]) * inv[:, 0], (x0 - c[0]) * inv[:, 0])
        ty = np.where(dy > 0, (y1 - c[1]) * inv[:, 1], (y0 - c[1]) * inv[:, 1])
        use_x = tx < ty
        t_wall = np.where(use_x, tx, ty)
        wall = np.where(use_x, np.where(dx > 0, 1, 3), np.where(dy > 0, 2, 0)).astype(np.int16)
        z_wall = c[2] + t_wall * dz
        wall_h = np.asarray(WALL_HEIGHTS, np.float32)[wall]
        tg = np.where(dz < 0, -c[2] * inv[:, 2], np.inf).astype(np.float32)
        t = np.full(n, np.inf, np.float32)
        mat = np.full(n, -1, np.int16)
        hit_wall = (z_wall <= wall_h) & (t_wall < tg)
        t[hit_wall] = t_wall[hit_wall]
        mat[hit_wall] = wall[hit_wall] + 1
        hit_g = (tg < np.inf) & ~hit_wall
        t[hit_g] = tg[hit_g]
        mat[hit_g] = 0
        # boxes (slab method); the camera is outside every box
        inv_cols = [np.ascontiguousarray(inv[:, k]) for k in range(3)]
        for i in range(len(sc.box_lo)):
            lo = (sc.box_lo[i] - c).astype(np.float32)
            hi = (sc.box_hi[i] - c).astype(np.float32)
            tnear = tfar = None
            for k in range(3):  # column-wise: much faster than reductions over axis 1 of [N, 3]
                a = lo[k] * inv_cols[k]
                b = hi[k] * inv_cols[k]
                near, far = np.minimum(a, b), np.maximum(a, b)
                tnear = near if tnear is None else np.maximum(tnear, near)
                tfar = far if tfar is None else np.minimum(tfar, far)
            hit = (tnear <= tfar) & (tnear > 0) & (tnear < t)
            t[hit] = tnear[hit]
            mat[hit] = N_FIXED + i

    rgb = np.empty((n, 3), np.float32)
    alpha = 2.0 * math.pi / width  # angular pixel size (rad), both axes of an equirectangular image
    sky = mat < 0
    up = np.clip(dz[sky], 0.0, 1.0)[:, None] ** 0.6
    rgb[sky] = SKY_HORIZON * (1.0 - up) + SKY_ZENITH * up
    for m in range(len(sc.materials)):
        sel = np.nonzero(mat == m)[0]
        if sel.size == 0:
            continue
        tt = t[sel].astype(np.float64)
        p = c + tt[:, None] * d[sel].astype(np.float64)
        ds = d[sel]
        if m == 0:  # ground: u east, v south (image top = north)
            u, v, cosi = p[:, 0] - x0, y1 - p[:, 1], np.abs(ds[:, 2])
            shade = np.full(sel.size, 0.62 + 0.38 * SUN_DIR[2], np.float32)
        elif m < N_FIXED:  # walls, seen from inside; u to the right, v down from the top
            wi = m - 1
            top = WALL_HEIGHTS[wi]
            u = (x1 - p[:, 0], y1 - p[:, 1], p[:, 0] - x0, p[:, 1] - y0)[wi]
            v = top - p[:, 2]
            normal = ((0, 1, 0), (-1, 0, 0), (0, -1, 0), (1, 0, 0))[wi]
            cosi = np.abs(ds[:, 0] if normal[0] else ds[:, 1])
            shade = np.full(sel.size, 0.62 + 0.38 * max(0.0, float(np.dot(normal, SUN_DIR))), np.float32)
        else:  # box faces, seen from outside; sides unrolled along the perimeter, top above them
            bi = m - N_FIXED
            (bx0, by0, _), (bx1, by1, bz1) = sc.box_lo[bi], sc.box_hi[bi]
            w, dd = bx1 - bx0, by1 - by0
            dist = np.stack(
                [np.abs(p[:, 1] - by0), np.abs(p[:, 0] - bx1), np.abs(p[:, 1] - by1), np.abs(p[:, 0] - bx0), np.abs(p[:, 2] - bz1)],
                1,
            )
            face = np.argmin(dist, axis=1)
            u = np.choose(
                face,
                [p[:, 0] - bx0, w + p[:, 1] - by0, w + dd + bx1 - p[:, 0], 2 * w + dd + by1 - p[:, 1], p[:, 0] - bx0],
            )
            v = np.where(face == 4, bz1 + (by1 - p[:, 1]), bz1 - p[:, 2])
            normals = np.array([(0, -1, 0), (1, 0, 0), (0, 1, 0), (-1, 0, 0), (0, 0, 1)], np.float64)
            nrm = normals[face]
            cosi = np.abs(np.sum(nrm * ds, axis=1))
            shade = (0.62 + 0.38 * np.maximum(0.0, nrm @ SUN_DIR)).astype(np.float32)
        foot = tt * alpha / np.sqrt(np.maximum(cosi, 0.02))
        col = _shade_material(sc.materials[m], u, v, foot)
        rgb[sel] = col * shade[:, None]
    rgb8 = np.clip(rgb + 0.5, 0, 255).astype(np.uint8).reshape(h, width, 3)
    return rgb8, t.reshape(h, width), mat.reshape(h, width)


# --------------------------------------------------------------------------------------
# EXIF / XMP


def _dms(value: float) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Unsigned decimal degrees -> EXIF (deg, min, sec) rationals; seconds to 1e-6 arc-second."""
    total = int(round(abs(value) * 3600 * 1_000_000))  # micro-arc-seconds
    deg, rem = divmod(total, 3600 * 1_000_000)
    mins, usec = divmod(rem, 60 * 1_000_000)
    return (deg, 1), (mins, 1), (usec, 1_000_000)


def _exif_bytes(lat: float, lon: float, alt: float, when: _dt.datetime, width: int, height: int, sigma: float) -> bytes:
    G, E, Z = piexif.GPSIFD, piexif.ExifIFD, piexif.ImageIFD
    stamp = when.strftime("%Y:%m:%d %H:%M:%S")
    gps = {
        G.GPSVersionID: (2, 3, 0, 0),
        G.GPSLatitudeRef: "N" if lat >= 0 else "S",
        G.GPSLatitude: _dms(lat),
        G.GPSLongitudeRef: "E" if lon >= 0 else "W",
        G.GPSLongitude: _dms(lon),
        G.GPSAltitudeRef: 0 if alt >= 0 else 1,
        G.GPSAltitude: (int(round(abs(alt) * 1000)), 1000),
        G.GPSTimeStamp: ((when.hour, 1), (when.minute, 1), (when.second, 1)),
        G.GPSDateStamp: when.strftime("%Y:%m:%d"),
        G.GPSMapDatum: "WGS-84",
        G.GPSHPositioningError: (int(round(sigma * 1000)), 1000),
    }
    zeroth = {Z.Make: "SplatForge", Z.Model: "demo", Z.Software: "splatforge_core.demo", Z.DateTime: stamp}
    exif = {
        E.DateTimeOriginal: stamp,
        E.OffsetTimeOriginal: "+00:00",
        E.PixelXDimension: width,
        E.PixelYDimension: height,
    }
    return piexif.dump({"0th": zeroth, "Exif": exif, "GPS": gps, "1st": {}, "thumbnail": None})


def _gpano_xmp(width: int, height: int) -> bytes:
    """GPano XMP packet (https://developers.google.com/streetview/spherical-metadata) for a full 360x180 pano."""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about="" xmlns:GPano="http://ns.google.com/photos/1.0/panorama/"'
        ' GPano:ProjectionType="equirectangular" GPano:UsePanoramaViewer="True"'
        f' GPano:FullPanoWidthPixels="{width}" GPano:FullPanoHeightPixels="{height}"'
        f' GPano:CroppedAreaImageWidthPixels="{width}" GPano:CroppedAreaImageHeightPixels="{height}"'
        ' GPano:CroppedAreaLeftPixels="0" GPano:CroppedAreaTopPixels="0"/>\n'
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode("utf-8")


# --------------------------------------------------------------------------------------
# main


def main(out_dir: str | os.PathLike, options: dict | DemoOptions | None = None) -> dict:
    """Make the demo capture in ``out_dir`` (``images/pano_XXXX.jpg`` + ``ground_truth.json``).

    Args:
        out_dir: output folder (e.g. ``work/demo``); built in a temporary folder beside it and
            renamed into place as a whole, replacing an existing folder.
        options: :class:`DemoOptions` or a plain dict of its fields.

    Returns:
        The ground truth dict as written to ``ground_truth.json``, plus ``"out_dir"`` (str),
        ``"images"`` (list of final JPEG paths) and ``"seconds"`` (wall time).

    Raises:
        InputError: bad or unknown options, or a path that brings a camera closer than
            ``MIN_CLEARANCE_M`` to a wall or box. Nothing is written then.
    """
    from .geodesy import enu_to_geodetic

    opts = build_options(DemoOptions, options, "demo")
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    n, width, height = opts.n_panoramas, opts.width, opts.width // 2
    pos, heading = camera_path(n, opts.spacing_m)
    _check_clearance(pos)
    ss = np.random.SeedSequence(opts.seed)
    rng_noise, rng_yaw = (np.random.default_rng(s) for s in ss.spawn(2))
    noise = rng_noise.normal(0.0, 1.0, size=(n, 3)) * opts.gps_sigma_m
    yaw = (heading + rng_yaw.uniform(-1.0, 1.0, size=n) * opts.yaw_jitter_deg) % 360.0
    gps_enu = pos + noise
    geo = enu_to_geodetic(gps_enu, opts.origin_lat, opts.origin_lon, opts.origin_alt)

    _scene()
    records = []
    with atomic_path(out_dir, suffix="") as tmp:
        (tmp / "images").mkdir(parents=True)
        for i in range(n):
            t0 = time.perf_counter()
            name = f"pano_{i + 1:04d}.jpg"
            R = rig_from_world_for_yaw(float(yaw[i]))
            rgb, _, _ = render_panorama(pos[i], R, width)
            when = START_TIME_UTC + _dt.timedelta(seconds=FRAME_INTERVAL_S * i)
            lat, lon, alt = (float(v) for v in geo[i])
            Image.fromarray(rgb).save(
                tmp / "images" / name,
                format="JPEG",
                quality=opts.jpeg_quality,
                exif=_exif_bytes(lat, lon, alt, when, width, height, opts.gps_sigma_m),
                xmp=_gpano_xmp(width, height),
            )
            records.append(
                {
                    "name": name,
                    "enu_true": [float(v) for v in pos[i]],
                    "enu_gps": [float(v) for v in gps_enu[i]],
                    "lat": lat,
                    "lon": lon,
                    "alt": alt,
                    "yaw_deg": float(yaw[i]),
                    "rig_from_world": R.tolist(),
                    "rig_from_world_translation": [float(v) for v in -R @ pos[i]],
                    "timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            )
            log.info("demo %s rendered in %.2f s", name, time.perf_counter() - t0)
        gt = {
            "schema_version": SCHEMA_VERSION,
            "generator": "splatforge_core.demo",
            "frames": {
                "world": "ENU metres at origin: x east, y north, z up (WGS84 ellipsoidal height)",
                "rig": "panorama frame (docs/formats.md): +z centre column u=W/2, +x right (u), +y down (v)",
                "rig_from_world": "3x3 row-major rotation, p_rig = R @ (p_enu - enu_true); upright, "
                "rows x=(cos yaw,-sin yaw,0), y=(0,0,-1), z=(sin yaw,cos yaw,0)",
                "rig_from_world_translation": "t = -R @ enu_true, so p_rig = R @ p_enu + t (COLMAP Rigid3d)",
                "yaw_deg": "compass heading of rig +z, degrees clockwise from north",
                "enu_gps": "enu_true + N(0, gps_sigma_m^2) per axis; the position written to EXIF",
                "lat_lon_alt": "EXIF values of enu_gps; alt is the ellipsoidal height written as GPSAltitude",
            },
            "origin": {"lat": opts.origin_lat, "lon": opts.origin_lon, "alt": opts.origin_alt},
            "seed": opts.seed,
            "gps_sigma_m": opts.gps_sigma_m,
            "width": width,
            "height": height,
            "camera_height_m": CAMERA_HEIGHT_M,
            "panoramas": records,
            "scene": {
                "courtyard": {
                    "min": [COURT_MIN[0], COURT_MIN[1], 0.0],
                    "max": [COURT_MAX[0], COURT_MAX[1], max(WALL_HEIGHTS)],
                    "wall_heights_m": dict(zip(WALL_NAMES, WALL_HEIGHTS)),
                },
                "boxes": [
                    {"name": nm, "min": [a[0], a[1], 0.0], "max": [b[0], b[1], hb]} for nm, a, b, hb in BOXES
                ],
            },
            "options": dataclasses.asdict(opts),
        }
        write_json(tmp / "ground_truth.json", gt)
    seconds = time.perf_counter() - t_start
    log.info("demo capture: %d panoramas %dx%d in %s (%.1f s)", n, width, height, out_dir, seconds)
    return {
        **gt,
        "out_dir": str(out_dir),
        "images": [str(out_dir / "images" / r["name"]) for r in records],
        "seconds": seconds,
    }


def cli(argv: list[str] | None = None) -> int:
    """``splatforge demo OUT_DIR [--seed N] [--n N] [--width W] [--gps-sigma M]``."""
    d = DemoOptions()
    ap = argparse.ArgumentParser(
        prog="splatforge demo",
        description="Render the embedded demo capture: GPS-tagged 360 panoramas of a textured courtyard "
        "(images/pano_XXXX.jpg) and ground_truth.json.",
    )
    ap.add_argument("out_dir", help="output folder (e.g. work/demo), replaced as a whole")
    ap.add_argument("--seed", type=int, default=d.seed, help="seed of GPS noise and heading jitter (default %(default)s)")
    ap.add_argument("--n", type=int, default=d.n_panoramas, help="number of panoramas, 8..48 (default %(default)s)")
    ap.add_argument("--width", type=int, default=d.width, help="panorama width in pixels (default %(default)s)")
    ap.add_argument("--gps-sigma", type=float, default=d.gps_sigma_m, help="GPS noise per axis, metres (default %(default)s)")
    a = ap.parse_args(argv)
    res = main(a.out_dir, DemoOptions(n_panoramas=a.n, width=a.width, seed=a.seed, gps_sigma_m=a.gps_sigma))
    print(f"{len(res['images'])} panoramas and ground_truth.json written to {res['out_dir']} in {res['seconds']:.1f} s")
    return 0
