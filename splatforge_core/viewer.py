"""Interactive viewer page of a scene: ``results/{scene}_viewer/index.html`` (issue #16).

The page opens the scene's splat in GaussianSplats3D (``@mkkellogg/gaussian-splats-3d``, MIT, a
three.js splat viewer), vendored from npm at install time (``scripts/install.sh`` -> ``vendor/js``)
and copied next to the page with three.js, so the folder works offline: ``python -m http.server``
in ``results/`` and open ``http://localhost:8000/{scene}_viewer/`` (ES modules and ``fetch`` do not
load from ``file://`` in Chromium, so a one-line local server it is).

Folder layout::

    index.html            page + inline module script (scene config embedded as JSON)
    scene.json            the same config: start view, trajectory, ENU origin
    scene.splat           the splat as antimatter15 .splat (SH 0, 32 bytes a Gaussian)
    lib/three.module.min.js, lib/gaussian-splats-3d.module.js, lib/LICENSE-*.txt

Axes: the splat and the cameras are in the scene's ENU frame (x east, y north, z up, metres); the
viewer is told ``cameraUp = [0, 0, 1]``. The start view is at the first capture position (the centre
of the first frame's cameras in the aligned SfM model), looking along that frame's most level
camera. The capture trajectory (one point per frame) is drawn as a line; a readout shows the camera's
ENU position and its WGS84 latitude/longitude/height (from the ENU origin of ``manifest.json``).

The page's URL accepts ``?clean=1`` (no trajectory, no readout: what the browser test screenshots)
and ``?pos=x,y,z&look=x,y,z&fov=deg`` (another start view).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .formats.antisplat import write_antisplat
from .formats.node import vendored_file
from .io import atomic_path, read_json, write_json
from .log import get_logger

__all__ = ["VENDORED", "CaptureTrack", "capture_track", "look_at_viewmat", "intrinsics_from_fov",
           "render_view", "build_viewer", "main", "cli"]

_LOG = get_logger("viewer")

#: npm files copied into ``lib/`` (relative to node_modules) and their licences.
VENDORED = {
    "three.module.min.js": "three/build/three.module.min.js",
    "gaussian-splats-3d.module.js": "@mkkellogg/gaussian-splats-3d/build/gaussian-splats-3d.module.js",
    "LICENSE-three.txt": "three/LICENSE",
    "LICENSE-gaussian-splats-3d.txt": "@mkkellogg/gaussian-splats-3d/LICENSE",
}


class CaptureTrack(dict):
    """``{"frames": [name...], "centres": [[e, n, u]...], "start": {"position", "look_at", "fov_y_deg"}}``."""


def capture_track(aligned_dir: str | os.PathLike, views_path: str | os.PathLike | None = None) -> CaptureTrack:
    """The capture trajectory and the start view from an aligned COLMAP model (ENU metres).

    Args:
        aligned_dir: the aligned model folder (``work/{scene}/aligned``).
        views_path: ``views.json`` (maps images to frames, i.e. panoramas); None: one frame per image.

    Returns:
        :class:`CaptureTrack`: frames sorted by name; each centre is the mean camera centre of the
        frame's registered images [3] (metres); the start view looks from the first frame's centre
        along its most level camera (smallest |up| component of the viewing direction), at a point
        2 m ahead, with that camera's vertical field of view (degrees).

    Raises:
        InputError: unreadable model or no registered image.
    """
    import pycolmap

    aligned_dir = Path(aligned_dir)
    try:
        rec = pycolmap.Reconstruction(str(aligned_dir))
    except Exception as e:
        raise InputError(f"{aligned_dir}: cannot read the aligned COLMAP model ({e})") from None
    frame_of: dict[str, str] = {}
    if views_path and Path(views_path).is_file():
        for fr in read_json(views_path).get("frames", []):
            for img in (fr.get("images") or {}).values():
                frame_of[img] = fr["frame"]
    per_frame: dict[str, list[tuple[str, np.ndarray, np.ndarray, float]]] = {}
    for image_id in sorted(rec.reg_image_ids()):
        im = rec.images[image_id]
        if not im.has_pose:
            continue
        cfw = np.asarray(im.cam_from_world().matrix(), np.float64)
        R, t = cfw[:, :3], cfw[:, 3]
        cam = rec.cameras[im.camera_id]
        fy = float(cam.calibration_matrix()[1, 1])
        fov = math.degrees(2 * math.atan(cam.height / 2 / fy))
        per_frame.setdefault(frame_of.get(im.name, im.name), []).append((im.name, -R.T @ t, R[2], fov))
    if not per_frame:
        raise InputError(f"{aligned_dir}: the aligned model has no registered images")
    frames = sorted(per_frame)
    centres = [np.mean([c for _, c, _, _ in per_frame[f]], axis=0) for f in frames]
    first = sorted(per_frame[frames[0]], key=lambda r: (round(abs(r[2][2]), 6), r[0]))[0]
    fwd = first[2] / np.linalg.norm(first[2])
    pos = centres[0]
    return CaptureTrack(frames=frames, centres=[c.tolist() for c in centres],
                        start={"position": pos.tolist(), "look_at": (pos + 2.0 * fwd).tolist(), "fov_y_deg": first[3]})


def look_at_viewmat(position, look_at, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """cam_from_world [4, 4] float64 (OpenCV axes: x right, y down, z forward) of a camera at
    ``position`` looking at ``look_at`` with ``up`` up (three.js ``Object3D.lookAt`` with
    ``camera.up = up``, converted from its -z-forward, y-up axes).

    Raises:
        ValueError: position == look_at, or the view direction parallel to ``up``.
    """
    p, t, u = (np.asarray(v, np.float64) for v in (position, look_at, up))
    z = t - p
    if np.linalg.norm(z) < 1e-12:
        raise ValueError("look_at equals position")
    z /= np.linalg.norm(z)
    x = np.cross(z, u)
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("view direction is parallel to up")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = R, -R @ p
    return m


def intrinsics_from_fov(fov_y_deg: float, width: int, height: int) -> np.ndarray:
    """Pinhole K [3, 3] of a three.js PerspectiveCamera: vertical field of view ``fov_y_deg``,
    square pixels, principal point at the image centre (pixels)."""
    f = height / 2.0 / math.tan(math.radians(fov_y_deg) / 2.0)
    return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]], np.float64)


def render_view(splat: dict, viewmat, K, width: int, height: int, background=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Render one view of a splat dict (``read_splat_ply`` layout) with our CPU rasteriser.

    Args:
        splat: ``means`` [N, 3], ``scales`` [N, 3] (log), ``quats`` [N, 4], ``opacities`` [N]
            (logit), ``sh0`` [N, 3], ``shN`` [N, K-1, 3], ``sh_degree``.
        viewmat: cam_from_world [4, 4] (OpenCV axes). K: [3, 3] pixels. width, height: pixels.
        background: RGB in [0, 1] behind the splat.

    Returns:
        uint8 [H, W, 3] image (colours clipped to [0, 1]).
    """
    import torch

    from .render import rasterization

    t = {k: torch.as_tensor(np.array(v, np.float32)) for k, v in splat.items() if k != "sh_degree"}
    deg = int(splat.get("sh_degree", 0))
    colors = torch.cat([t["sh0"].reshape(-1, 1, 3), t["shN"].reshape(len(t["means"]), -1, 3)], dim=1)
    with torch.no_grad():
        img, _, _ = rasterization(t["means"], t["quats"], torch.exp(t["scales"]), torch.sigmoid(t["opacities"]),
                                  colors, torch.as_tensor(np.asarray(viewmat, np.float32))[None],
                                  torch.as_tensor(np.asarray(K, np.float32))[None], int(width), int(height),
                                  sh_degree=deg, backgrounds=torch.tensor([background], dtype=torch.float32))
    return (img[0].clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<title>__TITLE__</title>
<style>
  html, body { margin: 0; height: 100%; overflow: hidden; background: #000; }
  #viewer { position: absolute; inset: 0; }
  #readout { position: absolute; left: 8px; top: 8px; z-index: 10; padding: 6px 8px; border-radius: 4px;
             font: 12px/1.4 monospace; color: #eee; background: rgba(0, 0, 0, 0.55); white-space: pre; }
  body.clean #readout { display: none; }
</style>
<script type="importmap">
{"imports": {"three": "./lib/three.module.min.js",
             "@mkkellogg/gaussian-splats-3d": "./lib/gaussian-splats-3d.module.js"}}
</script>
<script type="application/json" id="scene-config">__CONFIG__</script>
</head>
<body>
<div id="viewer"></div>
<div id="readout">loading...</div>
<script type="module">
import * as THREE from 'three';
import * as GaussianSplats3D from '@mkkellogg/gaussian-splats-3d';

const cfg = JSON.parse(document.getElementById('scene-config').textContent);
const q = new URLSearchParams(location.search);
const vec = (s, d) => (s ? s.split(',').map(Number) : d);
const clean = q.get('clean') === '1';
if (clean) document.body.classList.add('clean');
const start = {position: vec(q.get('pos'), cfg.start.position), look_at: vec(q.get('look'), cfg.start.look_at),
               fov: Number(q.get('fov') || cfg.start.fov_y_deg)};

// WGS84 ENU (at cfg.origin) -> geodetic, for the readout (same maths as splatforge_core.geodesy)
const A = 6378137.0, F = 1 / 298.257223563, E2 = F * (2 - F);
function enuToGeodetic(e, n, u) {
  const o = cfg.origin; if (!o) return null;
  const la = o.lat * Math.PI / 180, lo = o.lon * Math.PI / 180;
  const N0 = A / Math.sqrt(1 - E2 * Math.sin(la) ** 2);
  const x0 = (N0 + o.alt) * Math.cos(la) * Math.cos(lo), y0 = (N0 + o.alt) * Math.cos(la) * Math.sin(lo);
  const z0 = (N0 * (1 - E2) + o.alt) * Math.sin(la);
  const x = x0 - Math.sin(lo) * e - Math.sin(la) * Math.cos(lo) * n + Math.cos(la) * Math.cos(lo) * u;
  const y = y0 + Math.cos(lo) * e - Math.sin(la) * Math.sin(lo) * n + Math.cos(la) * Math.sin(lo) * u;
  const z = z0 + Math.cos(la) * n + Math.sin(la) * u;
  const p = Math.hypot(x, y); let lat = Math.atan2(z, p * (1 - E2)), h = 0;
  for (let i = 0; i < 10; i++) {
    const N = A / Math.sqrt(1 - E2 * Math.sin(lat) ** 2);
    h = p / Math.cos(lat) - N; lat = Math.atan2(z, p * (1 - E2 * N / (N + h)));
  }
  return [lat * 180 / Math.PI, Math.atan2(y, x) * 180 / Math.PI, h];
}

const overlay = new THREE.Scene();
if (!clean && cfg.trajectory.length) {
  const pts = cfg.trajectory.map((p) => new THREE.Vector3(p[0], p[1], p[2]));
  overlay.add(new THREE.Line(new THREE.BufferGeometry().setFromPoints(pts),
                             new THREE.LineBasicMaterial({color: 0xffc000})));
  const dots = new THREE.Points(new THREE.BufferGeometry().setFromPoints(pts),
                                new THREE.PointsMaterial({color: 0xff4000, size: 6, sizeAttenuation: false}));
  overlay.add(dots);
}

const viewer = new GaussianSplats3D.Viewer({
  rootElement: document.getElementById('viewer'),
  threeScene: overlay,
  cameraUp: [0, 0, 1],
  initialCameraPosition: start.position,
  initialCameraLookAt: start.look_at,
  sharedMemoryForWorkers: false,   // a plain local server sends no COOP/COEP headers
  gpuAcceleratedSort: false,
  sphericalHarmonicsDegree: 0,
  sceneRevealMode: GaussianSplats3D.SceneRevealMode.Instant,
  logLevel: GaussianSplats3D.LogLevel.None,
});
viewer.camera.fov = start.fov;
viewer.camera.updateProjectionMatrix();

const readout = document.getElementById('readout');
function updateReadout() {
  const c = viewer.camera.position;
  const g = enuToGeodetic(c.x, c.y, c.z);
  readout.textContent = `ENU  E ${c.x.toFixed(2)}  N ${c.y.toFixed(2)}  U ${c.z.toFixed(2)} m` +
    (g ? `\\nGPS  ${g[0].toFixed(7)}, ${g[1].toFixed(7)}  h ${g[2].toFixed(2)} m` : '\\nGPS  (no origin)') +
    `\\n${cfg.scene}: ${cfg.trajectory.length} capture positions`;
  window.splatforge.readout = {enu: [c.x, c.y, c.z], geodetic: g};
  requestAnimationFrame(updateReadout);
}
window.splatforge = {ready: false, error: null, enuToGeodetic, trajectoryPoints: clean ? 0 : cfg.trajectory.length};
viewer.addSplatScene(cfg.splat, {showLoadingUI: false, progressiveLoad: false, splatAlphaRemovalThreshold: 1})
  .then(() => { viewer.start(); window.splatforge.ready = true; updateReadout(); })
  .catch((e) => { window.splatforge.error = String(e); console.error('splat load failed:', e); });
</script>
</body>
</html>
"""


def build_viewer(out_dir: str | os.PathLike, splat: dict, track: dict, scene: str,
                 origin: dict | None = None) -> dict:
    """Write the viewer folder (see module doc) atomically.

    Args:
        out_dir: the folder to make (``results/{scene}_viewer``); replaced whole.
        splat: the splat dict (``read_splat_ply`` layout), written as ``scene.splat`` (SH 0).
        track: :func:`capture_track`'s dict (``centres`` [F, 3] ENU metres, ``start``).
        scene: the scene name (title and readout).
        origin: ``{"lat", "lon", "alt"}`` of the ENU origin (degrees, metres) or None (no GPS readout).

    Returns:
        the page config written to ``scene.json``.

    Raises:
        JSToolMissing: the npm packages are not installed (run scripts/install.sh).
    """
    files = {name: vendored_file(rel) for name, rel in VENDORED.items()}
    cfg: dict[str, Any] = {
        "scene": scene, "splat": "scene.splat", "gaussians": int(len(splat["means"])),
        "start": track["start"], "trajectory": track["centres"], "frames": track.get("frames", []),
        "origin": ({k: float(origin[k]) for k in ("lat", "lon", "alt")} if origin else None),
        "axes": "ENU metres: x east, y north, z up",
    }
    page = (_PAGE.replace("__TITLE__", f"{scene}: Splat Forge viewer")
            .replace("__CONFIG__", json.dumps(cfg).replace("</", "<\\/")))
    with atomic_path(out_dir, suffix="") as tmp:
        (tmp / "lib").mkdir(parents=True)
        for name, src in files.items():
            shutil.copyfile(src, tmp / "lib" / name)
        write_antisplat(tmp / "scene.splat", splat)
        write_json(tmp / "scene.json", cfg)
        (tmp / "index.html").write_text(page, encoding="utf-8")
    _LOG.info("viewer: %s (%d Gaussians, %d capture positions); serve with "
              "`python -m http.server` in %s", out_dir, cfg["gaussians"], len(cfg["trajectory"]), Path(out_dir).parent)
    return cfg


def main(splat_ply: str | os.PathLike, aligned_dir: str | os.PathLike, out_dir: str | os.PathLike,
         views_path: str | os.PathLike | None = None, manifest_path: str | os.PathLike | None = None,
         scene: str | None = None) -> dict:
    """Build ``results/{scene}_viewer`` from the trained splat and the aligned model (see module doc).

    Raises:
        InputError: unreadable splat or model. JSToolMissing: npm packages not installed.
    """
    from .formats import read_any

    splat = read_any(splat_ply)
    track = capture_track(aligned_dir, views_path)
    origin = None
    if manifest_path and Path(manifest_path).is_file():
        origin = read_json(manifest_path).get("origin")
    scene = scene or Path(out_dir).name.removesuffix("_viewer")
    return build_viewer(out_dir, splat, track, scene, origin)


def cli(argv: list[str]) -> int:
    """``splatforge viewer SPLAT ALIGNED_DIR OUT_DIR [--views views.json] [--manifest manifest.json]``."""
    ap = argparse.ArgumentParser(prog="splatforge viewer", description=(
        "Write an offline web viewer page of a splat (GaussianSplats3D) with the capture trajectory; "
        "serve the results folder with `python -m http.server` and open OUT_DIR/index.html."))
    ap.add_argument("splat", help="splat file (.ply, .splat, .spz, .sog)")
    ap.add_argument("aligned", help="aligned COLMAP model folder (work/{scene}/aligned)")
    ap.add_argument("out", help="output folder, e.g. results/scene_viewer")
    ap.add_argument("--views", help="views.json (frames of panoramas)")
    ap.add_argument("--manifest", help="manifest.json (ENU origin for the GPS readout)")
    a = ap.parse_args(argv)
    main(a.splat, a.aligned, a.out, a.views, a.manifest)
    return 0
