"""Camera placement for previews and render-based checks (no rendering here)."""

from __future__ import annotations

import math

import numpy as np


def orbit_viewmats(centre, dist: float, n_views: int, elevation_deg: float = 20.0,
                   azimuth0_deg: float = 0.0) -> np.ndarray:
    """Cameras on a ring around ``centre`` looking at it, +z (ENU up) as the up direction.

    Args:
        centre: [3] float, metres. dist: distance of every camera from ``centre`` (metres).
        n_views: cameras, evenly spaced in azimuth from ``azimuth0_deg`` (degrees from +x
            towards +y). elevation_deg: angle of the ring above the x-y plane (degrees).

    Returns:
        [n_views, 4, 4] float64 ``cam_from_world`` (OpenCV axes: x right, y down, z forward).
    """
    c = np.asarray(centre, dtype=np.float64)
    el = math.radians(elevation_deg)
    mats = np.zeros((n_views, 4, 4))
    for i in range(n_views):
        az = math.radians(azimuth0_deg + 360.0 * i / n_views)
        eye = c + dist * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        z = c - eye
        z /= np.linalg.norm(z)
        x = np.cross(z, [0.0, 0.0, 1.0])
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        R = np.stack([x, y, z])  # rows: camera axes in world
        mats[i, :3, :3] = R
        mats[i, :3, 3] = -R @ eye
        mats[i, 3, 3] = 1.0
    return mats
