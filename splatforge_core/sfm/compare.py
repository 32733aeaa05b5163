"""Compare two sets of camera poses of the same images after a similarity alignment.

Used to check our SfM against an independent reconstruction of the same captures
(``pycolmap.panorama.reconstruct`` on the same panoramas, or the Inria 3DGS trainer's
``cameras.json``). Two reconstructions of the same images differ by a similarity transform
(Sim3d: scale, rotation, translation) of their world frames. Its rotation is estimated from
the camera rotations (the chordal L2 mean of ``R_ref^T R_ours`` over the cameras, projected
onto SO(3) by SVD; Hartley et al. 2013, "Rotation averaging", single-rotation case), then its
scale and translation from the centres by least squares given that rotation. The rotation
is not taken from the centres (Umeyama 1991): on a walk the centres lie nearly on one line
and leave the rotation about that line undetermined (on the 5-panorama GoPro walk a
centre-based fit turned every camera by 169 degrees although the relative rotations of the
two reconstructions agreed within 0.4 degrees). Then:

* the rotation difference per camera, degrees: the angle of
  ``R_ref_cam_from_world @ (R_our_cam_from_world @ R_sim^T)^T`` (our camera expressed in the
  reference world frame against the reference camera);
* the centre difference per camera, in the reference frame's units and as a fraction of the
  reference scene size (the largest distance of a reference centre from their mean).

Poses are ``cam_from_world`` rotations (3x3, COLMAP axes: x right, y down, z forward) and
camera centres in world coordinates.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycolmap

from ..errors import InputError


@dataclass(frozen=True)
class Pose:
    """One camera pose: ``R`` [3, 3] float64 ``cam_from_world`` rotation, ``centre`` [3] float64."""

    R: np.ndarray
    centre: np.ndarray


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of a rotation matrix ``R`` [3, 3], degrees in [0, 180] (from its trace, clipped)."""
    c = (float(np.trace(R)) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, c))))


def mean_rotation(rotations, outlier_deg: float = 10.0) -> np.ndarray:
    """Chordal L2 mean of rotation matrices, with one re-estimate without outliers.

    Args:
        rotations: sequence of ``[3, 3]`` rotation matrices.
        outlier_deg: after the first mean, rotations farther than this (and farther than 3x
            the median distance) are left out of the second mean.

    Returns:
        ``[3, 3]`` float64 rotation: the SVD projection of the (inlier) sum onto SO(3).
    """
    Rs = np.asarray(rotations, np.float64).reshape(-1, 3, 3)

    def project(M: np.ndarray) -> np.ndarray:
        U, _, Vt = np.linalg.svd(M)
        return U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt

    R = project(Rs.sum(0))
    d = np.array([rotation_angle_deg(R.T @ Ri) for Ri in Rs])
    keep = (d <= max(outlier_deg, 3 * float(np.median(d)))) | (d <= np.median(d))
    return project(Rs[keep].sum(0))


def poses_from_reconstruction(rec: pycolmap.Reconstruction, key=None) -> dict[str, Pose]:
    """Registered images of a COLMAP model as ``name -> Pose``.

    Args:
        rec: the model. key: optional function image name -> key (e.g. to strip a folder or
            an extension); images whose key is None are left out.
    """
    out: dict[str, Pose] = {}
    for im in rec.images.values():
        if not im.has_pose:
            continue
        k = im.name if key is None else key(im.name)
        if k is None:
            continue
        R = np.asarray(im.cam_from_world().rotation.matrix(), np.float64)
        out[k] = Pose(R, np.asarray(im.projection_center(), np.float64).reshape(3))
    return out


def poses_from_inria_cameras(path: str | os.PathLike) -> dict[str, Pose]:
    """Poses of an Inria 3DGS ``cameras.json`` as ``img_name -> Pose``.

    Format (graphdeco-inria/gaussian-splatting, ``utils/camera_utils.py::camera_to_JSON``):
    a list of ``{id, img_name, width, height, position, rotation, fx, fy}`` where
    ``position`` is the camera centre in world coordinates and ``rotation`` the 3x3
    ``world_from_cam`` rotation (COLMAP camera axes); so ``R_cam_from_world = rotation^T``.

    Raises:
        InputError: unreadable file or a record without those fields.
    """
    path = Path(path)
    try:
        cams = json.loads(path.read_text())
        out = {}
        for c in cams:
            R_wc = np.asarray(c["rotation"], np.float64).reshape(3, 3)
            out[str(c["img_name"])] = Pose(R_wc.T, np.asarray(c["position"], np.float64).reshape(3))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not an Inria cameras.json ({e})") from e
    return out


def compare_poses(ours: dict[str, Pose], ref: dict[str, Pose]) -> dict:
    """Align ``ours`` to ``ref`` by a similarity on the common cameras' centres; compare.

    Args:
        ours, ref: ``name -> Pose`` (only names present in both are used).

    Returns:
        dict with ``num_common``, ``sim3`` (``scale``, ``rotation`` 3x3, ``translation``:
        ``x_ref = scale * R @ x_ours + t``), ``scene_size`` (reference units: largest distance
        of a reference centre from their mean), ``rotation_deg`` (median, mean, max),
        ``centre`` (median, max, in reference units) and ``centre_rel`` (the same divided
        by ``scene_size``), and ``per_image`` (name, rotation_deg, centre_err).

    Raises:
        InputError: fewer than 3 common cameras, or the similarity cannot be estimated
            (centres on one point).
    """
    names = sorted(set(ours) & set(ref))
    if len(names) < 3:
        raise InputError(f"pose comparison needs >= 3 common cameras, got {len(names)}")
    src = np.stack([ours[n].centre for n in names])
    tgt = np.stack([ref[n].centre for n in names])
    R_sim = mean_rotation([ref[n].R.T @ ours[n].R for n in names])
    a = (src - src.mean(0)) @ R_sim.T
    b = tgt - tgt.mean(0)
    denom = float(np.sum(a * a))
    if denom <= 1e-18:
        raise InputError("pose comparison: all camera centres of ours on one point; no scale")
    scale = float(np.sum(a * b)) / denom
    trans = tgt.mean(0) - scale * (R_sim @ src.mean(0))
    aligned = scale * src @ R_sim.T + trans
    size = float(np.linalg.norm(tgt - tgt.mean(0), axis=1).max())
    per = []
    for k, n in enumerate(names):
        R_our_in_ref = ours[n].R @ R_sim.T
        per.append({"name": n, "rotation_deg": rotation_angle_deg(ref[n].R @ R_our_in_ref.T),
                    "centre_err": float(np.linalg.norm(aligned[k] - tgt[k]))})
    rot = np.array([p["rotation_deg"] for p in per])
    cen = np.array([p["centre_err"] for p in per])
    return {
        "num_common": len(names),
        "sim3": {"scale": scale, "rotation": R_sim.tolist(), "translation": trans.tolist()},
        "scene_size": size,
        "rotation_deg": {"median": float(np.median(rot)), "mean": float(rot.mean()), "max": float(rot.max())},
        "centre": {"median": float(np.median(cen)), "max": float(cen.max())},
        "centre_rel": {"median": float(np.median(cen)) / max(size, 1e-12), "max": float(cen.max()) / max(size, 1e-12)},
        "per_image": per,
    }
