"""Camera conventions shared by the stages: equirectangular rays, pinhole intrinsics, view rotations.

No stage logic: the project stage resamples panoramas with these, the demo renders its
panoramas with them, and tests check the conventions in one place.

Axis conventions (``docs/formats.md``, "Frames and axes"; the project stage's docstring explains
the view layout built on them):

* Camera axes are COLMAP's: x right, y down, z forward. Pixel centres sit at half-integer
  coordinates (COLMAP: the centre of the top-left pixel is (0.5, 0.5)), so a view of
  ``W x H`` pixels has its principal point at ``(W/2, H/2)``.
* Rig frame = the camera frame of the view at azimuth 0, elevation 0. Equirectangular pixel
  ``(u, v)`` (column, row; integer = pixel centre, as in OpenCV) has
  ``lon = (u + 0.5) / W * 360 - 180`` and ``lat = 90 - (v + 0.5) / H * 180`` degrees; its ray
  in the rig frame is ``(cos(lat) sin(lon), -sin(lat), cos(lat) cos(lon))``.
* A view at (azimuth ``a``, elevation ``e``) looks along the ray of ``(lon=a, lat=e)``:
  positive azimuth turns right (toward rig +x), positive elevation looks up (toward rig -y)
  (:func:`view_rotation`).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["equirect_directions", "direction_to_equirect", "view_rotation", "pinhole_K", "camera_rays"]


def equirect_directions(width: int, height: int, dtype=np.float32) -> np.ndarray:
    """Unit rays of every pixel centre of a ``width x height`` equirectangular image.

    Args:
        width, height: panorama size in pixels.
        dtype: of the result (computed in float64 and rounded once; default float32).

    Returns:
        ``[height, width, 3]`` ``dtype`` (float32) unit vectors in the rig frame (x right, y down,
        z forward = the centre of the image), per ``docs/formats.md``:
        ``lon = (u + 0.5) / W * 360 - 180``, ``lat = 90 - (v + 0.5) / H * 180`` degrees,
        ray ``(cos(lat) sin(lon), -sin(lat), cos(lat) cos(lon))``.
    """
    lon = np.deg2rad((np.arange(width, dtype=np.float64) + 0.5) / width * 360.0 - 180.0)
    lat = np.deg2rad(90.0 - (np.arange(height, dtype=np.float64) + 0.5) / height * 180.0)
    cl = np.cos(lat)[:, None]
    out = np.empty((height, width, 3), dtype=dtype)
    out[..., 0] = cl * np.sin(lon)[None, :]
    out[..., 1] = -np.sin(lat)[:, None]
    out[..., 2] = cl * np.cos(lon)[None, :]
    return out


def direction_to_equirect(dirs: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Equirectangular pixel coordinates of rig-frame directions (inverse of :func:`equirect_directions`).

    Args:
        dirs: ``[..., 3]`` directions in the rig frame (need not be unit length, must be non-zero).
        width, height: panorama size in pixels.

    Returns:
        ``(u, v)``, each ``[...]`` float64: column and row with integer values at pixel centres
        (OpenCV convention), ``u`` in ``[-0.5, W - 0.5]``, ``v`` in ``[-0.5, H - 0.5]``.
    """
    d = np.asarray(dirs, dtype=np.float64)
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    lon = np.arctan2(x, z)
    lat = np.arctan2(-y, np.hypot(x, z))
    u = (lon / (2 * np.pi) + 0.5) * width - 0.5
    v = (0.5 - lat / np.pi) * height - 0.5
    return u, v


def view_rotation(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """``cam_from_rig`` rotation of the view looking at (azimuth, elevation).

    Args:
        azimuth_deg: degrees, positive turns right (toward rig +x); 0 = rig +z.
        elevation_deg: degrees in [-90, 90], positive looks up (toward rig -y).

    Returns:
        ``[3, 3]`` float64 rotation ``R`` with ``x_cam = R @ x_rig``. Its rows are the camera
        axes in the rig frame: x = ``(cos a, 0, -sin a)``, z = ray of (lon=a, lat=e) =
        ``(cos e sin a, -sin e, cos e cos a)``, y = ``z x x`` (right-handed, y down).
    """
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    z = np.array([math.cos(e) * math.sin(a), -math.sin(e), math.cos(e) * math.cos(a)])
    x = np.array([math.cos(a), 0.0, -math.sin(a)])
    y = np.cross(z, x)
    return np.stack([x, y, z]).astype(np.float64)


def pinhole_K(size: int | tuple[int, int], fov_deg: float) -> np.ndarray:
    """Intrinsic matrix of a pinhole view with the given field of view across its width.

    Args:
        size: ``n`` (square) or ``(width, height)`` in pixels.
        fov_deg: horizontal field of view in degrees, in (0, 180).

    Returns:
        ``[3, 3]`` float64 ``K`` with ``fx = fy = (W / 2) / tan(fov / 2)``, ``cx = W / 2``,
        ``cy = H / 2`` (COLMAP pixel convention: pixel centres at half-integers).
    """
    w, h = (size, size) if isinstance(size, (int, np.integer)) else size
    if not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    f = (w / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])


def camera_rays(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Camera-frame rays through the pixel centres of a pinhole camera.

    Args:
        K: ``[3, 3]`` intrinsics (pixels). width, height: image size in pixels.

    Returns:
        ``[height, width, 3]`` float64 rays ``K^-1 (c + 0.5, r + 0.5, 1)`` (z = 1, not unit),
        x right, y down, z forward.
    """
    c = np.arange(width, dtype=np.float64) + 0.5
    r = np.arange(height, dtype=np.float64) + 0.5
    pix = np.stack(np.broadcast_arrays(c[None, :], r[:, None], np.ones((1, 1))), axis=-1)
    return pix @ np.linalg.inv(K).T
