"""Rotations shared by the stages: unit quaternions (wxyz, scalar first, as in the Inria/gsplat
splat layout and COLMAP) <-> rotation matrices. No stage logic.

A quaternion ``(w, x, y, z)`` maps to the matrix that rotates local (Gaussian) axes into world
axes (``x_world = R @ x_local``); ``q`` and ``-q`` are the same rotation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["quat_to_rotmat", "rotmat_to_quat"]


def quat_to_rotmat(q: np.ndarray) -> np.ndarray:
    """[N, 4] unit quaternions (wxyz) -> [N, 3, 3] rotation matrices (local -> world)."""
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    r = np.empty((q.shape[0], 3, 3), dtype=np.float64)
    r[:, 0, 0] = 1 - 2 * (y * y + z * z)
    r[:, 0, 1] = 2 * (x * y - w * z)
    r[:, 0, 2] = 2 * (x * z + w * y)
    r[:, 1, 0] = 2 * (x * y + w * z)
    r[:, 1, 1] = 1 - 2 * (x * x + z * z)
    r[:, 1, 2] = 2 * (y * z - w * x)
    r[:, 2, 0] = 2 * (x * z - w * y)
    r[:, 2, 1] = 2 * (y * z + w * x)
    r[:, 2, 2] = 1 - 2 * (x * x + y * y)
    return r


def rotmat_to_quat(r: np.ndarray) -> np.ndarray:
    """[N, 3, 3] rotation matrices -> [N, 4] unit quaternions, wxyz (Shepperd's method)."""
    n = r.shape[0]
    q = np.empty((n, 4))
    tr = r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2]
    cands = np.stack([tr, r[:, 0, 0], r[:, 1, 1], r[:, 2, 2]], axis=1)
    k = np.argmax(cands, axis=1)
    for case in range(4):
        m = k == case
        if not m.any():
            continue
        R = r[m]
        if case == 0:
            s = np.sqrt(1.0 + tr[m]) * 2
            q[m] = np.stack([0.25 * s, (R[:, 2, 1] - R[:, 1, 2]) / s, (R[:, 0, 2] - R[:, 2, 0]) / s,
                             (R[:, 1, 0] - R[:, 0, 1]) / s], axis=1)
        elif case == 1:
            s = np.sqrt(1.0 + R[:, 0, 0] - R[:, 1, 1] - R[:, 2, 2]) * 2
            q[m] = np.stack([(R[:, 2, 1] - R[:, 1, 2]) / s, 0.25 * s, (R[:, 0, 1] + R[:, 1, 0]) / s,
                             (R[:, 0, 2] + R[:, 2, 0]) / s], axis=1)
        elif case == 2:
            s = np.sqrt(1.0 + R[:, 1, 1] - R[:, 0, 0] - R[:, 2, 2]) * 2
            q[m] = np.stack([(R[:, 0, 2] - R[:, 2, 0]) / s, (R[:, 0, 1] + R[:, 1, 0]) / s, 0.25 * s,
                             (R[:, 1, 2] + R[:, 2, 1]) / s], axis=1)
        else:
            s = np.sqrt(1.0 + R[:, 2, 2] - R[:, 0, 0] - R[:, 1, 1]) * 2
            q[m] = np.stack([(R[:, 1, 0] - R[:, 0, 1]) / s, (R[:, 0, 2] + R[:, 2, 0]) / s,
                             (R[:, 1, 2] + R[:, 2, 1]) / s, 0.25 * s], axis=1)
    return q / np.linalg.norm(q, axis=1, keepdims=True)
