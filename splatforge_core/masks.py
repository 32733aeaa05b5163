"""Pixel masks of 360 panoramas: the sky and the camera operator (nadir).

Two things in a real 360 walk are not static scene and must not steer structure from motion:

* **The sky.** Clouds are textured, so SIFT finds thousands of features in them, and they
  drift with the wind between shots taken seconds apart. On the real GoPro MAX walk
  (``../shared/data/geovisio360``) 63 % of all verified matches lay on the sky; their drift is
  explained by two-view RANSAC as parallax of a sideways translation, and SfM put the walking
  direction 70-100 degrees off (``benchmarks/results/real.md``). Sky pixels are left out of
  feature extraction; training still learns the sky (the trainer's sky sphere).
* **The operator.** Head, shoulders, backpack and pole move with the camera and fill the nadir
  of every panorama. They are left out of feature extraction and out of the training loss
  and the held-out metrics (they are not the scene, and no splat can predict them).

Masks are label images, one byte per pixel: :data:`VALID` (0), :data:`SKY` (1),
:data:`OPERATOR` (2). They are computed on the equirectangular panorama at a working
resolution (:func:`panorama_labels`) and resampled into every pinhole view by the project
stage with the same sampling maps as the images.

Sky detection (:func:`sky_mask`) is a classical colour and connectivity rule (no learned
model is available offline here): sky candidates are blue pixels (OpenCV hue 90-135,
saturation > 40, value > 90) or bright unsaturated pixels (clouds: saturation < 60,
value > 140) above the horizon and off strong edges; the sky is the candidate components that
touch the zenith row, with enclosed holes (cloud rims, birds, wires; each under 5 % of the
image) filled and a 2-pixel margin.
White facades stay outside it as long as a darker outline (roof edge, window frame)
separates them from the sky; a white wall that merges with an overcast sky is masked, which
only costs SfM features. The rule assumes a levelled panorama (GoPro MAX, Insta360 and
Ricoh Theta level their equirectangular output; ``docs/formats.md``).
"""

from __future__ import annotations

import cv2
import numpy as np

MASK_WORK_WIDTH = 720  # width of the panorama label images (0.5 deg per pixel)
VALID = 0
SKY = 1
OPERATOR = 2
LABEL_NAMES = {VALID: "valid", SKY: "sky", OPERATOR: "operator"}


def nadir_cap(height: int, width: int, cap_deg: float) -> np.ndarray:
    """Pixels of a ``width x height`` equirectangular image within ``cap_deg`` of the nadir.

    Args:
        height, width: panorama size in pixels. cap_deg: angular radius of the cap around
            straight down, degrees in [0, 90]; 0 gives an empty mask.

    Returns:
        ``[height, width]`` bool, True where the pixel centre's latitude
        ``90 - (v + 0.5) / H * 180`` is below ``cap_deg - 90`` (``docs/formats.md``).
    """
    if not 0 <= cap_deg <= 90:
        raise ValueError(f"cap_deg must be in [0, 90], got {cap_deg}")
    lat = 90.0 - (np.arange(height) + 0.5) / height * 180.0
    rows = lat < cap_deg - 90.0
    return np.repeat(rows[:, None], width, axis=1)


def sky_mask(bgr: np.ndarray) -> np.ndarray:
    """Sky pixels of a levelled equirectangular panorama (rule in the module docstring).

    Args:
        bgr: ``[H, W, 3]`` uint8 BGR panorama (any size; work at about 720 x 360 px is
            plenty: the rule looks at regions, not detail).

    Returns:
        ``[H, W]`` bool, True on the sky.
    """
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ValueError(f"sky_mask expects an [H, W, 3] uint8 BGR image, got {bgr.shape} {bgr.dtype}")
    H, W = bgr.shape[:2]
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    h, s, v = (hsv[..., i].astype(np.float32) for i in range(3))
    g = cv2.GaussianBlur(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32), (0, 0), 1.0)
    grad = cv2.GaussianBlur(np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)), (0, 0), 2.0)
    blue = (h > 90) & (h < 135) & (s > 40) & (v > 90)
    cloud = (s < 60) & (v > 140)
    upper = (np.arange(H) < H / 2)[:, None]
    cand = ((blue | cloud) & (grad < 80) & upper).astype(np.uint8)
    cand = cv2.morphologyEx(cand, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    _, lab = cv2.connectedComponents(cand, connectivity=4)
    top = np.setdiff1d(np.unique(lab[0]), [0])
    sky = np.isin(lab, top).astype(np.uint8)
    sky = cv2.morphologyEx(sky, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    # fill holes enclosed by the sky (clouds with sharp rims, cloud fringes, birds, wires; < 5 % of the image)
    n, lab2 = cv2.connectedComponents((1 - sky).astype(np.uint8), connectivity=4)
    border = np.unique(np.concatenate([lab2[-1], lab2[:, 0], lab2[:, -1]]))
    sizes = np.bincount(lab2.ravel(), minlength=n)
    holes = np.setdiff1d(np.flatnonzero(sizes < 0.05 * sky.size), border)
    sky[np.isin(lab2, holes) & (sky == 0)] = 1
    return cv2.dilate(sky, np.ones((5, 5), np.uint8)).astype(bool)


def panorama_labels(bgr: np.ndarray, sky: bool, nadir_cap_deg: float, work_width: int = 720) -> np.ndarray:
    """Label image of one panorama at a working resolution.

    Args:
        bgr: ``[H, W, 3]`` uint8 BGR equirectangular panorama.
        sky: detect the sky (:func:`sky_mask`). nadir_cap_deg: operator cap radius, degrees
            (0 = none). work_width: width of the label image (height = width / 2).

    Returns:
        ``[work_width // 2, work_width]`` uint8 labels: :data:`OPERATOR` in the nadir cap,
        else :data:`SKY` on the sky, else :data:`VALID`.
    """
    h = max(work_width // 2, 1)
    small = cv2.resize(bgr, (work_width, h), interpolation=cv2.INTER_AREA)
    labels = np.zeros((h, work_width), np.uint8)
    if sky:
        labels[sky_mask(small)] = SKY
    if nadir_cap_deg > 0:
        labels[nadir_cap(h, work_width, nadir_cap_deg)] = OPERATOR
    return labels


def view_nadir_fraction(cam_from_rig: np.ndarray, K: np.ndarray, width: int, height: int, cap_deg: float,
                        step: int = 8) -> float:
    """Fraction of a pinhole view's pixels inside the nadir cap (sampled every ``step`` px).

    Args:
        cam_from_rig: ``[3, 3]`` rotation. K: ``[3, 3]`` intrinsics (pixels, COLMAP centres).
        width, height: view size, pixels. cap_deg: cap radius, degrees.
    """
    if cap_deg <= 0:
        return 0.0
    c = np.arange(0, width, step) + 0.5
    r = np.arange(0, height, step) + 0.5
    pix = np.stack(np.broadcast_arrays(c[None, :], r[:, None], np.ones((1, 1))), axis=-1).reshape(-1, 3)
    rays = pix @ np.linalg.inv(K).T @ cam_from_rig  # rig frame
    lat = np.degrees(np.arctan2(-rays[:, 1], np.hypot(rays[:, 0], rays[:, 2])))
    return float(np.mean(lat < cap_deg - 90.0))


def read_labels(path) -> np.ndarray:
    """Read one view's label PNG (written by the project stage).

    Returns:
        ``[H, W]`` uint8 labels (:data:`VALID`, :data:`SKY`, :data:`OPERATOR`).

    Raises:
        InputError: the file is missing or unreadable (names the file and the remedy).
    """
    from .errors import InputError

    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise InputError(f"{path}: label mask named in views.json is missing or unreadable; rerun the project stage")
    return lab


def describe(labels: np.ndarray) -> dict[str, float]:
    """Fraction of pixels per label name of a label image."""
    n = max(labels.size, 1)
    return {name: float(np.count_nonzero(labels == k)) / n for k, name in LABEL_NAMES.items()}


__all__ = ["VALID", "SKY", "OPERATOR", "LABEL_NAMES", "nadir_cap", "sky_mask", "panorama_labels",
           "view_nadir_fraction", "read_labels", "describe"]
