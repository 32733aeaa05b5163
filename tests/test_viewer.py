"""The viewer page (#16) in a real headless Chromium (Debian package `chromium`, driven by
playwright with the system browser: nothing is downloaded).

The browser test builds the page for a real splat (../shared/data/splat/plant.splat, 113,648
Gaussians), serves it with a local http.server, checks that it loads without console errors and
that a screenshot from the start camera matches our own CPU render of the same view.

PSNR threshold, 25 dB: GaussianSplats3D and our rasteriser are two implementations of the same
EWA splatting (both add 0.3 px^2 to the 2D covariance; they differ in the cut-off radius, the sort
(global vs per tile) and 8-bit blending), so the same view of the same file agrees to about 35 dB
(35.5 dB on the demo scene, 39.6 dB on this file); the same camera with the wrong
up axis (y up, or z down) or the wrong file gives 9-13 dB (10.9 / 12.3 dB on the demo, 12.9 dB here). 25 dB leaves 10 dB on either side, and
the test also renders the wrong-axes view to show that it falls below the threshold.
"""

from __future__ import annotations

import functools
import http.server
import math
import os
import shutil
import socketserver
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from splatforge_core.formats.antisplat import read_antisplat
from splatforge_core.formats.node import JSToolMissing, vendored_file
from splatforge_core.geodesy import enu_to_geodetic
from splatforge_core.viewer import VENDORED, build_viewer, intrinsics_from_fov, look_at_viewmat, render_view

W, H = 320, 240
PSNR_MIN_DB = 25.0
ORIGIN = {"lat": 55.70463073638889, "lon": 13.190920439166668, "alt": 73.172}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def _install_chromium() -> str | None:
    """The system chromium, installed with apt-get when missing and we are root; None otherwise."""
    exe = shutil.which("chromium")
    if exe or os.geteuid() != 0 or not shutil.which("apt-get"):
        return exe
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=1200)
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def browser():
    """A headless system Chromium (software WebGL through SwiftShader) under playwright."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip, test extra) not installed")
    exe = _install_chromium()
    if exe is None:
        pytest.skip("chromium not installed and cannot apt-get install it (not root or no apt-get)")
    try:
        for rel in VENDORED.values():
            vendored_file(rel)
    except JSToolMissing as e:
        pytest.skip(f"viewer npm packages not installed: {e}")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                                                         "--ignore-gpu-blocklist"])
        yield b
        b.close()


@pytest.fixture()
def served(tmp_path: Path):
    """(results folder, base URL) of a local http.server, as the README's one-liner serves it."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    srv = socketserver.TCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield tmp_path, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _plant_track(splat: dict) -> dict:
    """A start view 1.6 units from the plant's centre (the capture's -y is up: we look along -x at
    a slight downward angle, with ENU z as the page's up), and a made-up 4-point trajectory."""
    c = np.median(splat["means"], axis=0).astype(np.float64)
    pos = c + np.array([1.6, 0.3, 0.4])
    centres = [(c + 1.6 * np.array([math.cos(a), math.sin(a), 0.2])).tolist() for a in np.linspace(0, 1.5, 4)]
    return {"frames": [f"f{i}" for i in range(4)], "centres": centres,
            "start": {"position": pos.tolist(), "look_at": c.tolist(), "fov_y_deg": 50.0}}


def _open(browser, url: str, messages: list):
    page = browser.new_page(viewport={"width": W, "height": H}, device_scale_factor=1)
    page.on("console", lambda m: messages.append((m.type, m.text)))
    page.on("pageerror", lambda e: messages.append(("pageerror", str(e))))
    page.goto(url)
    page.wait_for_function("window.splatforge && (window.splatforge.ready || window.splatforge.error)", timeout=120_000)
    return page


@pytest.mark.slow
def test_viewer_page_renders_the_splat(browser, served, shared_data: Path):
    root, base = served
    splat = read_antisplat(shared_data / "splat" / "plant.splat")
    track = _plant_track(splat)
    cfg = build_viewer(root / "plant_viewer", splat, track, "plant", ORIGIN)
    assert cfg["gaussians"] == len(splat["means"]) and (root / "plant_viewer" / "lib" / "three.module.min.js").is_file()

    messages: list = []
    page = _open(browser, f"{base}/plant_viewer/index.html?clean=1", messages)
    assert page.evaluate("window.splatforge.error") is None
    page.wait_for_timeout(3000)  # the sort worker's first pass and a few frames
    shot = root / "shot.png"
    page.screenshot(path=str(shot))
    page.close()
    errors = [m for m in messages if m[0] in ("error", "pageerror")]
    assert not errors, errors

    from PIL import Image

    got = np.asarray(Image.open(shot).convert("RGB"))
    # what the page showed: the .splat it ships (SH 0, 8-bit colours), read by our reader
    shipped = read_antisplat(root / "plant_viewer" / "scene.splat")
    K = intrinsics_from_fov(track["start"]["fov_y_deg"], W, H)
    st = track["start"]
    ours = render_view(shipped, look_at_viewmat(st["position"], st["look_at"]), K, W, H)
    wrong = render_view(shipped, look_at_viewmat(st["position"], st["look_at"], up=(0, 1, 0)), K, W, H)
    p_ok, p_wrong = psnr(got, ours), psnr(got, wrong)
    print(f"viewer screenshot vs CPU render: {p_ok:.1f} dB; with y up instead of z: {p_wrong:.1f} dB")
    assert got[..., :3].std() > 10, "blank screenshot"
    assert p_ok >= PSNR_MIN_DB
    assert p_wrong < PSNR_MIN_DB  # the comparison would catch wrong axes


@pytest.mark.slow
def test_viewer_readout_and_trajectory(browser, served, shared_data: Path):
    """The readout shows the camera's ENU position and its WGS84 position (checked against
    pyproj through splatforge_core.geodesy to 1e-7 degrees); the trajectory is drawn."""
    root, base = served
    splat = read_antisplat(shared_data / "splat" / "plant.splat")
    splat = {k: (v[::20] if isinstance(v, np.ndarray) else v) for k, v in splat.items()}  # fast
    track = _plant_track(splat)
    build_viewer(root / "v", splat, track, "plant", ORIGIN)
    messages: list = []
    page = _open(browser, f"{base}/v/index.html", messages)
    page.wait_for_function("window.splatforge.readout !== undefined", timeout=30_000)
    ro = page.evaluate("window.splatforge.readout")
    text = page.inner_text("#readout")
    far = page.evaluate("window.splatforge.enuToGeodetic(1200.0, -800.0, 35.0)")
    n_traj = page.evaluate("window.splatforge.trajectoryPoints")
    page.close()
    assert not [m for m in messages if m[0] in ("error", "pageerror")], messages
    np.testing.assert_allclose(ro["enu"], track["start"]["position"], atol=1e-6)
    want = enu_to_geodetic(ro["enu"], ORIGIN["lat"], ORIGIN["lon"], ORIGIN["alt"])[0]
    np.testing.assert_allclose(ro["geodetic"][:2], want[:2], atol=1e-7)
    assert abs(ro["geodetic"][2] - want[2]) < 1e-3
    want_far = enu_to_geodetic([1200.0, -800.0, 35.0], ORIGIN["lat"], ORIGIN["lon"], ORIGIN["alt"])[0]
    np.testing.assert_allclose(far[:2], want_far[:2], atol=1e-7)
    assert f"{want[0]:.7f}" in text and "ENU" in text
    assert n_traj == 4


def test_look_at_matches_three_conventions():
    """look_at_viewmat: the target lands on the optical axis, up maps to image-up (-y in OpenCV)."""
    vm = look_at_viewmat([1.0, 2.0, 3.0], [4.0, 6.0, 3.0])
    p = vm @ np.array([4.0, 6.0, 3.0, 1.0])
    np.testing.assert_allclose(p[:2], 0, atol=1e-12)
    assert p[2] == pytest.approx(5.0)
    up_cam = vm[:3, :3] @ np.array([0, 0, 1.0])
    assert up_cam[1] < -0.99
    K = intrinsics_from_fov(90.0, 320, 240)
    assert K[1, 1] == pytest.approx(120.0) and K[0, 2] == 160.0
