"""Geodesy: WGS84 geodetic coordinates <-> local East-North-Up (ENU) metres.

Shared by the stages (ingest converts the EXIF GPS fixes, the demo writes GPS tags for its
synthetic path, SfM alignment re-expresses positions in another scene's origin); no stage logic.
ENU is topocentric at an origin (lat0, lon0, h0): x east, y north, z up along the ellipsoid
normal, in metres. Heights are WGS84 ellipsoidal heights.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["geodetic_to_enu", "enu_to_geodetic"]


@functools.lru_cache(maxsize=None)
def _transformers():
    from pyproj import Transformer

    # EPSG:4979 = WGS84 geographic 3D (lat, lon, ellipsoidal height); EPSG:4978 = WGS84
    # geocentric (ECEF). always_xy: (lon, lat, h) argument order.
    fwd = Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)
    inv = Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True)
    return fwd, inv


def _enu_rotation(lat0_deg: float, lon0_deg: float) -> np.ndarray:
    """Rotation ``R`` (3x3 float64) with ``enu = R @ (ecef - ecef0)`` at geodetic (lat0, lon0).

    Standard ECEF -> local tangent plane formula, e.g. ESA Navipedia "Transformations between
    ECEF and ENU coordinates" or Wikipedia "Local tangent plane coordinates":
    rows are the east, north and up unit vectors expressed in ECEF.
    """
    phi, lam = math.radians(lat0_deg), math.radians(lon0_deg)
    sp, cp, sl, cl = math.sin(phi), math.cos(phi), math.sin(lam), math.cos(lam)
    return np.array(
        [
            [-sl, cl, 0.0],
            [-sp * cl, -sp * sl, cp],
            [cp * cl, cp * sl, sp],
        ],
        dtype=np.float64,
    )


def _check_latlon(lat: np.ndarray, lon: np.ndarray, alt: np.ndarray) -> None:
    if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(lon)) and np.all(np.isfinite(alt))):
        raise ValueError("geodetic coordinates must be finite")
    if np.any(np.abs(lat) > 90) or np.any(np.abs(lon) > 180):
        raise ValueError("latitude must be in [-90, 90] and longitude in [-180, 180] degrees")


def geodetic_to_enu(lat, lon, alt, origin_lat: float, origin_lon: float, origin_alt: float) -> np.ndarray:
    """WGS84 geodetic coordinates -> local ENU metres, topocentric at the origin.

    Args:
        lat, lon: latitude / longitude in degrees (scalars or array-likes broadcastable to [N]).
        alt: ellipsoidal height in metres (scalar or [N]); see :mod:`splatforge_core.ingest`'s
            docstring ("Altitude") for how EXIF altitude above mean sea level is used there.
        origin_lat, origin_lon, origin_alt: the ENU origin (degrees, degrees, metres).

    Returns:
        ``[N, 3]`` float64 array of (east, north, up) in metres.

    Raises:
        ValueError: non-finite input, |lat| > 90 or |lon| > 180.

    Method: geodetic -> ECEF with pyproj (EPSG:4979 -> EPSG:4978), then the standard ECEF ->
    ENU rotation at the origin (:func:`_enu_rotation`).
    """
    lat, lon, alt = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (lat, lon, alt))
    lat, lon, alt = np.broadcast_arrays(lat, lon, alt)
    lat, lon, alt = lat.ravel(), lon.ravel(), alt.ravel()
    o = np.array([origin_lat, origin_lon, origin_alt], dtype=np.float64)
    _check_latlon(lat, lon, alt)
    _check_latlon(o[:1], o[1:2], o[2:])
    fwd, _ = _transformers()
    x, y, z = fwd.transform(lon, lat, alt)
    x0, y0, z0 = fwd.transform(o[1], o[0], o[2])
    d = np.stack([np.asarray(x) - x0, np.asarray(y) - y0, np.asarray(z) - z0], axis=1)
    return d @ _enu_rotation(o[0], o[1]).T


def enu_to_geodetic(enu, origin_lat: float, origin_lon: float, origin_alt: float) -> np.ndarray:
    """Local ENU metres -> WGS84 geodetic; inverse of :func:`geodetic_to_enu`.

    Args:
        enu: ``[N, 3]`` (or ``[3]``) east, north, up in metres.
        origin_lat, origin_lon, origin_alt: the ENU origin (degrees, degrees, metres).

    Returns:
        ``[N, 3]`` float64 array of (lat deg, lon deg, ellipsoidal height m).

    Raises:
        ValueError: ``enu`` not of shape [N, 3] or non-finite; origin out of range.
    """
    e = np.atleast_2d(np.asarray(enu, dtype=np.float64))
    if e.ndim != 2 or e.shape[1] != 3 or not np.all(np.isfinite(e)):
        raise ValueError(f"enu must be a finite [N, 3] array, got shape {e.shape}")
    o = np.array([origin_lat, origin_lon, origin_alt], dtype=np.float64)
    _check_latlon(o[:1], o[1:2], o[2:])
    fwd, inv = _transformers()
    x0, y0, z0 = fwd.transform(o[1], o[0], o[2])
    ecef = e @ _enu_rotation(o[0], o[1]) + np.array([x0, y0, z0])
    lon, lat, h = inv.transform(ecef[:, 0], ecef[:, 1], ecef[:, 2])
    return np.stack([np.asarray(lat), np.asarray(lon), np.asarray(h)], axis=1)
