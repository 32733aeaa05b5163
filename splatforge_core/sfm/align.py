"""SfM geo-align stage: similarity transform (Sim3d) from the SfM model to ENU metres, Z up.

One position per capture (frame): the centre of a panorama rig (all its views share it) or of
a perspective photo, against the frame's ENU GPS position from ``views.json``.

Two estimators (option ``up_prior``):

* **Up-constrained** (default for panoramas, whose rig ``-y`` axis is the world up direction:
  ``docs/formats.md``, upright 360 cameras): the SfM up direction is the normalised mean of
  every registered frame's up vector ``R_cam_from_world^T R_cam_from_rig (0, -1, 0)``; a
  rotation ``R0`` takes it onto ENU +Z. What is left is a 2D similarity in the horizontal
  plane (yaw, scale, east/north shift) plus a vertical shift: 5 unknowns instead of 7, so GPS
  noise averages out better and positions on one line are not degenerate (the roll about the
  line is fixed by the up direction). Robust: RANSAC over all (or 2000 random) 2-point
  samples (a 2D similarity from two points, complex-number form ``g = c p + t``), inliers by
  3D residual below ``max_error_m``, then least squares on the inliers, re-scored until the
  inlier set is stable (LO-RANSAC, Chum et al. 2003).
* **Full Sim3** (``up_prior = "off"``, default for perspective photos): 7 unknowns by
  ``pycolmap.estimate_sim3d_robust`` (LO-RANSAC on Umeyama 1991), then a least-squares refit
  on the inliers with ``pycolmap.estimate_sim3d``.

Refusals (:class:`~splatforge_core.errors.InputError`): fewer than ``min_positions`` distinct
registered GPS positions (positions closer than ``min_distinct_m`` count once: e.g. Lund
27-29 share one fix), or positions on one line without the up prior (a rotation about that
line moves no centre, so it cannot be estimated from the centres).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pycolmap

from ..errors import InputError
from ..io import atomic_path, read_json, write_json
from ..log import get_logger
from ..options import build_options
from . import is_rig_frame, load_views

log = get_logger("sfm.align")

UP_PRIORS = ("auto", "on", "off")


@dataclass(frozen=True)
class AlignOptions:
    """Options of the geo-align stage (config section ``sfm.align``).

    Attributes:
        up_prior: ``"auto"`` (default: on when the frames are panoramas), ``"on"`` (also
            for perspective photos, assuming they were held upright on average), ``"off"``.
        max_error_m: RANSAC inlier threshold on the 3D residual, metres. Default 10.0
            (consumer GPS: 2-5 m per axis, up to 3 sigma).
        min_positions: fewest distinct registered positions. Default 3.
        min_distinct_m: positions closer than this are one position, metres. Default 0.5.
        collinear_ratio: the positions are on one line when their second principal spread
            is below this fraction of the first. Default 0.02.
        random_seed: seed of the RANSAC sampling. Default 0.
        heading_tolerance_deg: the aligned frames' yaw (the rig's forward ``+z`` axis, or
            the photo's optical axis, in degrees clockwise from north) is checked against the
            EXIF ``GPSImgDirection`` where the photos carry one; a frame whose yaw differs by
            more than this many degrees is reported and logged as a warning. Default 45:
            cameras write either a compass heading (5-20 degrees of error) or, like the
            GoPro MAX, the direction of travel, and a hand-held or helmet 360 camera faces up
            to 30-40 degrees away from it (on the real GoPro walk: 25 degrees on average, up
            to 35; with the cloud-steered SfM of before, about 100). None = no check.
    """

    up_prior: str = "auto"
    max_error_m: float = field(default=10.0, metadata={"gt": 0})
    min_positions: int = field(default=3, metadata={"min": 3})
    min_distinct_m: float = field(default=0.5, metadata={"min": 0})
    collinear_ratio: float = field(default=0.02, metadata={"min": 0, "max": 1})
    random_seed: int = field(default=0, metadata={"min": 0})
    heading_tolerance_deg: float | None = field(default=45.0, metadata={"gt": 0, "max": 180})

    def __post_init__(self) -> None:
        if self.heading_tolerance_deg is not None and not 0 < self.heading_tolerance_deg <= 180:
            raise ValueError(f"heading_tolerance_deg must be in (0, 180] or null, got {self.heading_tolerance_deg!r}")
        if self.up_prior not in UP_PRIORS:
            raise ValueError(f"up_prior must be one of {UP_PRIORS}, got {self.up_prior!r}")
        if self.max_error_m <= 0 or self.min_positions < 3:
            raise ValueError("max_error_m must be > 0 and min_positions >= 3")


# ------------------------------------------------------------------------------------------
# estimators


def rotation_onto_z(v: np.ndarray) -> np.ndarray:
    """3x3 rotation taking the unit vector ``v`` (3,) onto +Z (Rodrigues' formula)."""
    v = np.asarray(v, dtype=np.float64) / np.linalg.norm(v)
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(v, z)
    s, c = np.linalg.norm(axis), float(v @ z)
    if s < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    k = axis / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * kx + (1 - c) * kx @ kx


def _fit_up(p: np.ndarray, g: np.ndarray) -> tuple[complex, complex, float]:
    """Least squares ``g_xy = c p_xy + t`` (complex), ``g_z = |c| p_z + tz``; p, g: (N, 3)."""
    zp, zg = p[:, 0] + 1j * p[:, 1], g[:, 0] + 1j * g[:, 1]
    mp, mg = zp.mean(), zg.mean()
    a = zp - mp
    c = complex(np.vdot(a, zg - mg) / max(np.vdot(a, a).real, 1e-300))
    t = mg - c * mp
    tz = float(np.mean(g[:, 2] - abs(c) * p[:, 2]))
    return c, t, tz


def _apply_up(p: np.ndarray, c: complex, t: complex, tz: float) -> np.ndarray:
    z = c * (p[:, 0] + 1j * p[:, 1]) + t
    return np.stack([z.real, z.imag, abs(c) * p[:, 2] + tz], axis=1)


def estimate_up_constrained(src: np.ndarray, tgt: np.ndarray, up: np.ndarray, max_error: float,
                            seed: int = 0) -> tuple[pycolmap.Sim3d, np.ndarray]:
    """Robust Sim3d ``tgt_from_src`` whose rotation takes the SfM direction ``up`` onto +Z.

    Args:
        src: (N, 3) float64 SfM centres. tgt: (N, 3) float64 ENU positions, metres.
        up: (3,) SfM up direction. max_error: inlier threshold on the 3D residual, metres.

    Returns:
        (Sim3d, inlier mask (N,) bool).
    """
    r0 = rotation_onto_z(up)
    p = src @ r0.T
    n = len(p)
    all_pairs = list(itertools.combinations(range(n), 2))
    rng = np.random.default_rng(seed)
    if len(all_pairs) > 2000:
        all_pairs = [all_pairs[k] for k in rng.choice(len(all_pairs), 2000, replace=False)]
    zp, zg = p[:, 0] + 1j * p[:, 1], tgt[:, 0] + 1j * tgt[:, 1]
    best = (-1, np.inf, None)
    for i, j in all_pairs:
        d = zp[j] - zp[i]
        if abs(d) < 1e-12:
            continue
        c = (zg[j] - zg[i]) / d
        t = zg[i] - c * zp[i]
        tz = float(np.mean(tgt[[i, j], 2] - abs(c) * p[[i, j], 2]))
        res = np.linalg.norm(_apply_up(p, c, t, tz) - tgt, axis=1)
        inl = res < max_error
        score = (int(inl.sum()), float(np.minimum(res, max_error).sum()))
        if score[0] > best[0] or (score[0] == best[0] and score[1] < best[1]):
            best = (score[0], score[1], inl)
    if best[2] is None or best[0] < 2:
        raise InputError("geo-alignment: no consistent similarity between the SfM centres and the GPS positions")
    inl = best[2]
    for _ in range(10):  # local optimisation: refit on inliers until the set is stable
        c, t, tz = _fit_up(p[inl], tgt[inl])
        new = np.linalg.norm(_apply_up(p, c, t, tz) - tgt, axis=1) < max_error
        if new.sum() < 2 or np.array_equal(new, inl):
            break
        inl = new
    c, t, tz = _fit_up(p[inl], tgt[inl])
    yaw = np.angle(c)
    rz = np.array([[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
    sim = pycolmap.Sim3d(abs(c), pycolmap.Rotation3d(rz @ r0), np.array([[t.real], [t.imag], [tz]]))
    return sim, inl


def estimate_full(src: np.ndarray, tgt: np.ndarray, max_error: float, seed: int = 0) -> tuple[pycolmap.Sim3d, np.ndarray]:
    """Robust 7-DOF Sim3d ``tgt_from_src``: pycolmap LO-RANSAC, then least squares on inliers."""
    ro = pycolmap.RANSACOptions()
    ro.max_error = max_error
    ro.random_seed = seed
    ro.min_inlier_ratio = 0.0
    out = pycolmap.estimate_sim3d_robust(src, tgt, ro)
    if out is None:
        raise InputError("geo-alignment: no consistent similarity between the SfM centres and the GPS positions")
    sim = out["tgt_from_src"]
    inl = np.linalg.norm(_transform(sim, src) - tgt, axis=1) < max_error
    if inl.sum() >= 3:
        refit = pycolmap.estimate_sim3d(src[inl], tgt[inl])
        if refit is not None:
            sim = refit
    return sim, inl


def extent_m(x: np.ndarray) -> float:
    """Largest distance between two of the points ``x`` (N, 3) float64, in their unit (0 for N < 2)."""
    if len(x) < 2:
        return 0.0
    d = x[:, None, :] - x[None, :, :]
    return float(np.sqrt((d * d).sum(-1)).max())


#: Consumer GPS is rarely better than this (1 sigma, metres); the floor of the noise estimate.
GPS_SIGMA_FLOOR_M = 0.5


def diagnose(gps_enu: np.ndarray, residual_m: np.ndarray | None, inliers: np.ndarray | None,
             max_error_m: float) -> dict:
    """Explain how far the GPS positions can be trusted to scale and orient the SfM model.

    With N positions of horizontal RMS spread ``s`` about their mean and GPS noise ``sigma``
    per position, a least-squares similarity has a relative scale error and a heading error
    (radians) of about ``sigma / (s * sqrt(N))`` (the standard error of a fitted slope; e.g.
    Hartley and Zisserman, Multiple View Geometry, 2nd ed., sec. 5.1.3, for the same
    reasoning on point fits). ``sigma`` is estimated from the residuals (median 3D residual /
    1.54, the median of a 3D Gaussian's norm), floored at :data:`GPS_SIGMA_FLOOR_M`; before
    alignment it is ``max_error_m / 3``. Problems are worded with the numbers and what to do.

    Args:
        gps_enu: (N, 3) float64 ENU positions of the registered frames with GPS, metres.
        residual_m: (N,) float64 3D residuals after alignment, metres; None before alignment.
        inliers: (N,) bool inlier mask of the alignment; None before alignment.
        max_error_m: the inlier threshold (``AlignOptions.max_error_m``), metres.

    Returns:
        ``gps_extent_m`` (largest distance between two GPS positions), ``gps_rms_spread_m``
        (horizontal), ``gps_sigma_m`` (the noise estimate), ``scale_error`` (relative, 1 sigma),
        ``heading_error_deg`` (1 sigma), ``inlier_fraction`` (when ``inliers`` is given) and
        ``problems`` (list of str; empty when the alignment is sound).
    """
    gps_enu = np.asarray(gps_enu, dtype=np.float64).reshape(-1, 3)
    n = len(gps_enu)
    ext = extent_m(gps_enu)
    spread = float(np.sqrt(np.mean(np.sum((gps_enu[:, :2] - gps_enu[:, :2].mean(0)) ** 2, axis=1)))) if n else 0.0
    if residual_m is not None and len(residual_m):
        sigma = max(float(np.median(residual_m)) / 1.54, GPS_SIGMA_FLOOR_M)
    else:
        sigma = max(max_error_m / 3.0, GPS_SIGMA_FLOOR_M)
    rel = sigma / (spread * np.sqrt(n)) if spread > 0 else float("inf")
    rel = float(rel)
    out: dict = {"gps_extent_m": ext, "gps_rms_spread_m": spread, "gps_sigma_m": sigma, "scale_error": rel,
                 "heading_error_deg": float(np.degrees(np.arctan(rel))), "problems": []}
    if rel > 0.1:
        out["problems"].append(
            f"the {n} GPS positions spread only {spread:.1f} m (RMS, horizontal; extent {ext:.1f} m) for a GPS noise "
            f"of about {sigma:.1f} m: the model's scale is uncertain by about {100 * min(rel, 9.99):.0f}% and its "
            f"heading by about {np.degrees(np.arctan(rel)):.0f} deg; capture over a wider area or with more "
            f"positions (the error falls with spread x sqrt(positions)), or use a better GPS")
    if residual_m is not None and len(residual_m) and ext > 0:
        med = float(np.median(residual_m))
        if med > 0.25 * ext:
            out["problems"].append(
                f"the median residual ({med:.2f} m) is {100 * med / ext:.0f}% of the GPS extent ({ext:.1f} m): the SfM "
                "shape does not match the GPS track (a wrong SfM model, or GPS noise as large as the capture)")
    if inliers is not None and len(inliers):
        frac = float(np.mean(inliers))
        out["inlier_fraction"] = frac
        if frac < 0.5:
            out["problems"].append(
                f"only {int(np.sum(inliers))} of {len(inliers)} registered positions agree with the alignment within "
                f"{max_error_m:g} m: GPS outliers, or an SfM model made of parts that do not fit together")
    return out


def _transform(sim: pycolmap.Sim3d, x: np.ndarray) -> np.ndarray:
    m = np.asarray(sim.matrix())
    return x @ m[:, :3].T + m[:, 3]


def distinct_positions(x: np.ndarray, tol: float) -> np.ndarray:
    """Indices of a greedy subset of the rows of ``x`` (N, 3) pairwise farther apart than ``tol``."""
    keep: list[int] = []
    for i in range(len(x)):
        if all(np.linalg.norm(x[i] - x[j]) > tol for j in keep):
            keep.append(i)
    return np.array(keep, dtype=int)


# ------------------------------------------------------------------------------------------
# stage


def frame_centres(rec: pycolmap.Reconstruction, views: dict) -> list[dict]:
    """Per registered views.json frame: SfM centre (3,), up (3,) and forward (3,) vectors, image names.

    The centre is the mean of the registered images' projection centres (identical for the
    views of one rig); the up vector is ``R_cam_from_world^T R_cam_from_rig (0, -1, 0)`` and
    the forward vector (the rig's ``+z``: the panorama's centre column, or the photo's optical
    axis) ``R_cam_from_world^T R_cam_from_rig (0, 0, 1)``, both averaged over the frame's
    images and normalised.
    """
    by_name = {im.name: im for im in rec.images.values() if im.has_pose}
    out = []
    for fr in views["frames"]:
        ims = [(v, by_name[n]) for v, n in fr["images"].items() if n in by_name]
        if not ims:
            continue
        centres, ups, fwds = [], [], []
        for v, im in ims:
            pose = im.cam_from_world()
            r = np.asarray(pose.rotation.matrix())
            centres.append(np.asarray(im.projection_center()).reshape(3))
            r_cam_from_rig = np.asarray(views["camera_by_view"][v]["cam_from_rig"]["rotation"], dtype=np.float64)
            ups.append(r.T @ (r_cam_from_rig @ np.array([0.0, -1.0, 0.0])))
            fwds.append(r.T @ (r_cam_from_rig @ np.array([0.0, 0.0, 1.0])))
        up, fwd = np.mean(ups, axis=0), np.mean(fwds, axis=0)
        out.append({"frame": fr["frame"], "source": fr.get("source"), "enu": fr.get("enu"),
                    "heading_deg": fr.get("heading_deg"),
                    "images": [im.name for _, im in ims], "centre": np.mean(centres, axis=0),
                    "up": up / np.linalg.norm(up), "forward": fwd / np.linalg.norm(fwd), "rig": is_rig_frame(fr)})
    return out


def wrap_deg(a):
    """Angles in degrees wrapped to [-180, 180) (scalar or array)."""
    return (np.asarray(a, dtype=np.float64) + 180.0) % 360.0 - 180.0


def yaw_deg(forward_enu: np.ndarray) -> np.ndarray:
    """Yaw of ENU direction vectors ``[..., 3]``: degrees clockwise from north in [0, 360)
    (the compass convention of EXIF ``GPSImgDirection``): ``atan2(east, north)``."""
    f = np.asarray(forward_enu, dtype=np.float64)
    return np.degrees(np.arctan2(f[..., 0], f[..., 1])) % 360.0


def heading_check(frames: list[dict], forward_enu: np.ndarray, tolerance_deg: float | None) -> dict | None:
    """Compare the aligned frames' yaw with their EXIF heading (``GPSImgDirection``).

    Args:
        frames: :func:`frame_centres` records (``heading_deg`` may be None).
        forward_enu: ``[N, 3]`` the frames' forward vectors in ENU (after alignment).
        tolerance_deg: a frame whose yaw differs from its heading by more than this is
            flagged (``None``: report only).

    Returns:
        None when no frame has a heading; else ``num_frames``, ``median_abs_diff_deg``,
        ``max_abs_diff_deg``, ``offset_deg`` (circular mean of the differences: a constant
        offset means the camera's heading refers to another direction than the panorama
        centre), ``median_abs_diff_after_offset_deg``, ``tolerance_deg``, ``disagreeing``
        (frame names) and ``frames`` (``frame``, ``yaw_deg``, ``exif_heading_deg``,
        ``diff_deg`` = yaw - heading wrapped to [-180, 180)).
    """
    rows = [(f["frame"], float(y), float(f["heading_deg"]))
            for f, y in zip(frames, yaw_deg(forward_enu)) if f.get("heading_deg") is not None]
    if not rows:
        return None
    diff = wrap_deg([y - h for _, y, h in rows])
    offset = float(np.degrees(np.angle(np.mean(np.exp(1j * np.radians(diff))))))
    bad = [r[0] for r, d in zip(rows, diff) if tolerance_deg is not None and abs(d) > tolerance_deg]
    return {
        "num_frames": len(rows),
        "median_abs_diff_deg": float(np.median(np.abs(diff))),
        "max_abs_diff_deg": float(np.max(np.abs(diff))),
        "offset_deg": offset,
        "median_abs_diff_after_offset_deg": float(np.median(np.abs(wrap_deg(diff - offset)))),
        "tolerance_deg": tolerance_deg,
        "disagreeing": bad,
        "frames": [{"frame": n, "yaw_deg": y, "exif_heading_deg": h, "diff_deg": float(d)}
                   for (n, y, h), d in zip(rows, diff)],
    }


def main(
    sparse_model_dir: str | os.PathLike,
    views_path: str | os.PathLike,
    aligned_dir: str | os.PathLike,
    report_path: str | os.PathLike,
    options: dict | AlignOptions | None = None,
    ground_truth: dict[str, list[float]] | None = None,
    ground_truth_path: str | os.PathLike | None = None,
    manifest_path: str | os.PathLike | None = None,
) -> dict:
    """Align the SfM model to the frames' ENU GPS positions; write ``aligned/`` and a report.

    Args:
        sparse_model_dir: COLMAP model folder (``sparse/0``).
        views_path: ``views.json`` (frames with ``enu`` in metres).
        aligned_dir: output COLMAP binary model in ENU metres, Z up (replaced whole).
        report_path: output ``alignment.json``: ``sim3`` (``scale``, 3x3 ``rotation``,
            ``translation`` in metres; ``enu = scale * R @ x_sfm + t``), ``method``,
            ``num_frames``, ``num_registered_frames``, ``num_inliers``, ``residuals`` (per
            frame: ``frame``, ``images``, ``enu_gps``, ``enu_sfm``, ``residual_m``,
            ``horizontal_m``, ``vertical_m``, ``inlier``), ``median_residual_m``,
            ``max_residual_m``, ``unregistered_frames``, ``degenerate_line``,
            ``heading_check`` (:func:`heading_check`; None without EXIF headings),
            ``diagnosis`` (:func:`diagnose`: GPS extent, residual over extent, problems) and, with
            ``ground_truth``, ``ground_truth_error`` (``median_m``, ``max_m``, per frame).
        options: :class:`AlignOptions` or a dict of its fields.
        ground_truth: optional frame name (or frame source file name) -> true ENU position
            (3,) in the same ENU frame as ``views.json``, metres (the demo's ground truth).
        ground_truth_path: the demo's ``ground_truth.json`` (:func:`demo_ground_truth`, with
            ``manifest_path`` for the ENU origin), used when ``ground_truth`` is None and the
            file exists; None, ``""`` or a missing file: no ground truth (the workflow passes
            the demo capture's file for the demo scene and ``""`` for every other scene).
        manifest_path: ``manifest.json`` of the scene; needed with ``ground_truth_path``.

    Returns:
        The report dict.

    Raises:
        InputError: unreadable model, frames without GPS, fewer than ``min_positions``
            distinct registered positions, positions on one line without the up prior, or no
            consistent transform, or ``ground_truth_path`` without ``manifest_path``.
    """
    t0 = time.perf_counter()
    opts = build_options(AlignOptions, options, "sfm align")
    if ground_truth is None and ground_truth_path and os.path.exists(ground_truth_path):
        if manifest_path is None:
            raise InputError(f"{ground_truth_path}: the demo ground truth needs the scene's manifest.json (its ENU origin)")
        ground_truth = demo_ground_truth(ground_truth_path, manifest_path)
    sparse_model_dir, aligned_dir = Path(sparse_model_dir), Path(aligned_dir)
    views = load_views(views_path)
    try:
        rec = pycolmap.Reconstruction(str(sparse_model_dir))
    except Exception as e:
        raise InputError(f"{sparse_model_dir}: cannot read the COLMAP model ({e})") from e
    frames = frame_centres(rec, views)
    with_gps = [f for f in frames if f["enu"] is not None]
    if len(with_gps) < len(frames):
        log.warning("align: %d registered frame(s) without GPS are left out", len(frames) - len(with_gps))
    src = np.array([f["centre"] for f in with_gps], dtype=np.float64).reshape(-1, 3)
    tgt = np.array([f["enu"] for f in with_gps], dtype=np.float64).reshape(-1, 3)
    distinct = distinct_positions(tgt, opts.min_distinct_m)
    if len(distinct) < opts.min_positions:
        raise InputError(f"{sparse_model_dir}: only {len(distinct)} distinct GPS position(s) among the "
                         f"{len(with_gps)} registered frames with GPS ({len(views['frames'])} in {views_path}); "
                         f"geo-alignment needs at least {opts.min_positions} (positions within "
                         f"{opts.min_distinct_m} m count once)")
    use_up = opts.up_prior == "on" or (opts.up_prior == "auto" and all(f["rig"] for f in with_gps))
    sv = np.linalg.svd(tgt[distinct] - tgt[distinct].mean(0), compute_uv=False)
    degenerate = bool(sv[1] < opts.collinear_ratio * sv[0])
    if degenerate and not use_up:
        raise InputError(
            f"{sparse_model_dir}: the {len(distinct)} registered GPS positions lie on one line (spread across "
            f"it {sv[1]:.2f} vs {sv[0]:.2f} along it); a rotation about that line moves no camera centre, so the "
            "roll cannot be estimated from positions. Use panoramas (their known up direction fixes the roll: "
            "up_prior 'auto'/'on'), set up_prior 'on' if the photos were held upright, or capture off the line.")
    try:
        if use_up:
            up = np.mean([f["up"] for f in with_gps], axis=0)
            sim, inl = estimate_up_constrained(src, tgt, up, opts.max_error_m, opts.random_seed)
            method = "up_constrained_ransac"
            if degenerate:
                log.info("align: positions on one line; roll about it fixed by the frames' known up direction")
        else:
            sim, inl = estimate_full(src, tgt, opts.max_error_m, opts.random_seed)
            method = "sim3_lo_ransac"
    except InputError as e:
        why = diagnose(tgt, None, None, opts.max_error_m)
        raise InputError(f"{sparse_model_dir}: {e} ({len(with_gps)} registered frames with GPS, GPS extent "
                         f"{why['gps_extent_m']:.1f} m, SfM extent {extent_m(src):.3g} model units)"
                         + "".join(f"; {p}" for p in why["problems"])) from e
    aligned_c = _transform(sim, src)
    res = aligned_c - tgt
    norms = np.linalg.norm(res, axis=1)
    m = np.asarray(sim.matrix())
    report: dict = {
        "schema_version": 1,
        "method": method,
        "up_prior": use_up,
        "degenerate_line": degenerate,
        "sim3": {"scale": float(sim.scale), "rotation": (m[:, :3] / sim.scale).tolist(), "translation": m[:, 3].tolist()},
        "num_frames": len(views["frames"]),
        "num_registered_frames": len(frames),
        "num_inliers": int(inl.sum()),
        "median_residual_m": float(np.median(norms)),
        "max_residual_m": float(norms.max()),
        "median_inlier_residual_m": float(np.median(norms[inl])),
        "residuals": [
            {"frame": f["frame"], "images": f["images"], "enu_gps": tgt[k].tolist(), "enu_sfm": aligned_c[k].tolist(),
             "residual_m": float(norms[k]), "horizontal_m": float(np.linalg.norm(res[k, :2])),
             "vertical_m": float(res[k, 2]), "inlier": bool(inl[k])}
            for k, f in enumerate(with_gps)
        ],
        "unregistered_frames": sorted({fr["frame"] for fr in views["frames"]} - {f["frame"] for f in frames}),
        "options": asdict(opts),
    }
    report["diagnosis"] = diagnose(tgt, norms, inl, opts.max_error_m)
    for problem in report["diagnosis"]["problems"]:
        log.warning("align: %s", problem)
    if ground_truth is not None:
        errs = []
        for k, f in enumerate(with_gps):
            gt = ground_truth.get(f["frame"], ground_truth.get(f["source"]))
            if gt is not None:
                errs.append({"frame": f["frame"], "error_m": float(np.linalg.norm(aligned_c[k] - np.asarray(gt, dtype=np.float64))),
                             "gps_error_m": float(np.linalg.norm(tgt[k] - np.asarray(gt, dtype=np.float64)))})
        if errs:
            e = np.array([x["error_m"] for x in errs])
            report["ground_truth_error"] = {"median_m": float(np.median(e)), "max_m": float(e.max()),
                                            "gps_median_m": float(np.median([x["gps_error_m"] for x in errs])),
                                            "frames": errs}
    R_sim = m[:, :3] / sim.scale
    heading = heading_check(with_gps, np.array([R_sim @ f["forward"] for f in with_gps]).reshape(-1, 3),
                            opts.heading_tolerance_deg)
    report["heading_check"] = heading
    if heading and heading["disagreeing"]:
        log.warning("align: the aligned yaw of %d of %d frame(s) differs from their EXIF GPSImgDirection by more "
                    "than %.0f deg (median %.1f, max %.1f deg; e.g. %s): the SfM rotations or the camera's "
                    "heading are wrong; see heading_check in the alignment report",
                    len(heading["disagreeing"]), heading["num_frames"], opts.heading_tolerance_deg,
                    heading["median_abs_diff_deg"], heading["max_abs_diff_deg"], heading["disagreeing"][:5])
    aligned = pycolmap.Reconstruction(rec)
    aligned.transform(sim)
    with atomic_path(aligned_dir) as tmp:
        tmp.mkdir(parents=True)
        aligned.write_binary(str(tmp))
    report["wall_s"] = round(time.perf_counter() - t0, 3)
    write_json(report_path, report)
    log.info("align (%s): %d/%d frames registered, %d inliers, residual median %.2f m, max %.2f m",
             method, len(frames), len(views["frames"]), report["num_inliers"], report["median_residual_m"], report["max_residual_m"])
    return report


def demo_ground_truth(ground_truth_path: str | os.PathLike, manifest_path: str | os.PathLike) -> dict[str, list[float]]:
    """True panorama positions of the demo (``ground_truth.json``) in the manifest's ENU frame.

    The demo's ENU origin is its own; ingest puts the origin at the first GPS fix (noisy), so
    the true positions go ENU(demo) -> WGS84 -> ENU(manifest origin) with the ingest helpers.

    Returns:
        source file name (e.g. ``pano_0001.jpg``) -> [e, n, u] metres.
    """
    from ..geodesy import enu_to_geodetic, geodetic_to_enu

    gt, man = read_json(ground_truth_path), read_json(manifest_path)
    o, mo = gt["origin"], man["origin"]
    enu = np.array([p["enu_true"] for p in gt["panoramas"]], dtype=np.float64)
    geo = np.asarray(enu_to_geodetic(enu, o["lat"], o["lon"], o["alt"]))
    local = np.asarray(geodetic_to_enu(geo[:, 0], geo[:, 1], geo[:, 2], mo["lat"], mo["lon"], mo["alt"]))
    return {p["name"]: local[k].tolist() for k, p in enumerate(gt["panoramas"])}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sparse_model", help="e.g. work/scene/sparse/0")
    p.add_argument("views")
    p.add_argument("aligned_dir")
    p.add_argument("report_json")
    p.add_argument("--up-prior", choices=UP_PRIORS, default=AlignOptions.up_prior)
    p.add_argument("--max-error-m", type=float, default=AlignOptions.max_error_m)
    p.add_argument("--ground-truth", help="demo ground_truth.json (needs --manifest)")
    p.add_argument("--manifest", help="manifest.json (origin of the ENU frame), with --ground-truth")


def run_args(a: argparse.Namespace) -> dict:
    gt = None
    if a.ground_truth:
        if not a.manifest:
            raise InputError("--ground-truth needs --manifest (the ENU origin)")
        gt = demo_ground_truth(a.ground_truth, a.manifest)
    return main(a.sparse_model, a.views, a.aligned_dir, a.report_json,
                {"up_prior": a.up_prior, "max_error_m": a.max_error_m}, ground_truth=gt)
