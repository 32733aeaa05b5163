"""snowmiku (a real object capture, 97 phone photos of a plush figure): prepare an Inria-layout
folder of undistorted training-size images and train a splat on it on CPU.

Source: ``/work/shared/data/snowmiku`` (see its SOURCES.md row). ``cameras.json`` holds the
reference Inria trainer's 97 cameras for UNDISTORTED 3958x2968 images (PINHOLE, f 3276.92 px,
principal point at the centre), but ``images/`` holds the DISTORTED originals downscaled 4x
(1008x756 of 4032x3024; ``distorted/sparse/0/cameras.bin``: SIMPLE_RADIAL f 3276.9, c (2016,
1512), k 0.0321). Recipe:

1. ``prep``: each image is undistorted with OpenCV (``cv2.initUndistortRectifyMap`` +
   ``cv2.remap``, bilinear) from the distorted camera scaled by 1/4 to the undistorted pinhole
   camera scaled by 1/4 (f 819.23 px, principal point at the centre of a 990x742 image; the
   exact quarter is 989.5x742), then resized with ``cv2.INTER_AREA`` to ``--max-side`` (320:
   320x240, f scaled with the image) and written with :func:`splatforge_core.inria.write_dataset`
   (``images/<name>.png`` + ``cameras.json`` with the reference poses). The SfM points
   (``input.ply``, 25,784 points with colours) are copied as ``points3D.ply`` (xyz, rgb).
2. ``train``: :func:`splatforge_core.inria.load_views` (held-out: every 8th camera, the
   trainer's split) + the points -> :func:`splatforge_core.train.trainer.train_scene_data`
   on CPU; writes ``point_cloud.ply`` into the folder, the run's ``metrics.json``,
   ``renders.png`` and ``curve.png`` into ``<out>/train/``, and touches ``<out>/DONE``.
3. ``speed``: seconds per step over a few hundred steps (to size the run).

Usage::

    python benchmarks/bench_snowmiku.py prep --out /work/scratch/h16-snow/snowmiku
    OMP_WAIT_POLICY=PASSIVE nice -n 5 python benchmarks/bench_snowmiku.py train \
        --out /work/scratch/h16-snow/snowmiku --iterations 1200 --train-side 192 --max-gaussians 60000 --threads 1
    python benchmarks/bench_snowmiku.py report --out /work/scratch/h16-snow/snowmiku   # train.md section
    python benchmarks/bench_snowmiku.py speed --out DIR --steps 200 --train-side 192 --threads 1

``--write-md`` (train) or ``report`` append the numbers to ``benchmarks/results/train.md``.
One thread on the shared machine: with 2 torch threads at a load average of ~15 on 2 cores a step
took 7-30 s (OpenMP threads waiting on each other while descheduled), with 1 thread ~1.2-2.3 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULT = REPO / "benchmarks" / "results" / "train.md"
SRC = Path(os.environ.get("SPLATFORGE_SHARED_DATA", "/work/shared/data")) / "snowmiku"
DOWNSCALE = 4  # images/ are the 4032x3024 originals downscaled 4x
_LOG = logging.getLogger("bench_snowmiku")


def read_distorted_camera(src: Path):
    """The SIMPLE_RADIAL camera of ``distorted/sparse/0/cameras.bin`` as (width, height, f, cx, cy, k).

    pycolmap reads a whole model folder only; cameras.bin is copied into a temporary folder
    with empty images.bin / points3D.bin (a uint64 count of 0 each, COLMAP's binary format).
    """
    import pycolmap

    with tempfile.TemporaryDirectory() as d:
        shutil.copyfile(src / "distorted" / "sparse" / "0" / "cameras.bin", Path(d) / "cameras.bin")
        for n in ("images.bin", "points3D.bin"):
            (Path(d) / n).write_bytes(np.uint64(0).tobytes())
        rec = pycolmap.Reconstruction(d)
    (cam,) = rec.cameras.values()
    if cam.model.name != "SIMPLE_RADIAL":
        raise SystemExit(f"{src}: distorted camera is {cam.model.name}, expected SIMPLE_RADIAL")
    f, cx, cy, k = (float(x) for x in cam.params)
    return int(cam.width), int(cam.height), f, cx, cy, k


def undistort_maps(dist, undist_cam, downscale: int = DOWNSCALE):
    """cv2.remap maps from the distorted image (``dist`` camera / ``downscale``) to the undistorted
    pinhole image (``undist_cam`` / ``downscale``, principal point at the centre).

    Returns:
        (map1, map2, (width, height)) for ``cv2.remap``.
    """
    import cv2

    w0, h0, f, cx, cy, k = dist
    s = 1.0 / downscale
    # COLMAP's principal point is in continuous pixel coordinates (pixel i spans [i, i + 1]);
    # OpenCV's maps index pixel centres: subtract 0.5 after scaling
    K_dist = np.array([[f * s, 0, cx * s - 0.5], [0, f * s, cy * s - 0.5], [0, 0, 1]])
    w, h = round(undist_cam.width * s), round(undist_cam.height * s)
    K_new = np.array([[undist_cam.fx * w / undist_cam.width, 0, w / 2 - 0.5],
                      [0, undist_cam.fy * h / undist_cam.height, h / 2 - 0.5], [0, 0, 1]])
    # OpenCV's (k1, k2, p1, p2): SIMPLE_RADIAL is k1 only
    m1, m2 = cv2.initUndistortRectifyMap(K_dist, np.array([k, 0, 0, 0], np.float64), None, K_new, (w, h), cv2.CV_32FC1)
    return m1, m2, (w, h)


def prep(out: Path, max_side: int) -> dict:
    """Write ``out/images/*.png`` + ``out/cameras.json`` + ``out/points3D.ply``; returns a summary."""
    import cv2

    from splatforge_core import inria
    from splatforge_core.train.data import View

    cams = inria.read_cameras_json(SRC / "cameras.json")
    dist = read_distorted_camera(SRC)
    views = []
    t0 = time.perf_counter()
    maps = undistort_maps(dist, cams[0])
    for c in cams:
        if (c.width, c.height, c.fx, c.fy) != (cams[0].width, cams[0].height, cams[0].fx, cams[0].fy):
            raise SystemExit(f"{SRC}/cameras.json: camera {c.img_name} has other intrinsics (one camera expected)")
        p = inria.find_image(SRC / "images", c.img_name)
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None or img.shape[:2] != (dist[1] // DOWNSCALE, dist[0] // DOWNSCALE):
            raise SystemExit(f"{p}: unreadable or not {dist[0] // DOWNSCALE}x{dist[1] // DOWNSCALE}")
        m1, m2, (w, h) = maps
        und = cv2.remap(img, m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        s = max_side / max(w, h)
        tw, th = round(w * s), round(h * s)
        small = cv2.resize(und, (tw, th), interpolation=cv2.INTER_AREA)
        Ks = c.K(tw, th)
        views.append(View(c.img_name, c.img_name, cv2.cvtColor(small, cv2.COLOR_BGR2RGB), Ks.astype(np.float32),
                          c.cam_from_world.astype(np.float32)))
    out.mkdir(parents=True, exist_ok=True)
    written = inria.write_dataset(views, out)
    # keep the reference ids
    written = [inria.InriaCamera(c.id, w.img_name, w.width, w.height, c.position, c.rotation, w.fx, w.fy, None)
               for c, w in zip(cams, written)]
    inria.write_cameras_json(out / "cameras.json", written)
    pts, cols = read_points(SRC / "input.ply")
    write_points(out / "points3D.ply", pts, cols)
    return {"images": len(views), "size": [views[0].width, views[0].height], "fx": float(views[0].K[0, 0]),
            "points": len(pts), "distorted_camera": dist, "seconds": time.perf_counter() - t0}


def read_points(path: Path):
    """[P, 3] float32 xyz and [P, 3] float32 colours in [0, 1] of a COLMAP ``input.ply``."""
    from plyfile import PlyData

    v = PlyData.read(str(path))["vertex"]
    pts = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32)
    cols = np.stack([v["red"], v["green"], v["blue"]], 1).astype(np.float32) / 255.0
    return pts, cols


def write_points(path: Path, pts, cols) -> None:
    from plyfile import PlyData, PlyElement

    from splatforge_core.io import atomic_path

    a = np.empty(len(pts), [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, k in enumerate("xyz"):
        a[k] = pts[:, i]
    for i, k in enumerate(("red", "green", "blue")):
        a[k] = np.clip(np.round(cols[:, i] * 255), 0, 255)
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(a, "vertex")]).write(str(tmp))


def load_scene(out: Path, max_side: int | None = None):
    """The folder's :class:`SceneData` (held-out every 8th camera, images resized to ``max_side``)
    with the SfM points."""
    from splatforge_core import inria

    scene = inria.load_views(out, max_side=max_side, eval_every_n=8)
    scene.points, scene.colors = read_points(out / "points3D.ply")
    return scene


def train_opts(iterations: int, threads: int, max_gaussians: int, model: str = "3dgs") -> dict:
    """Train options of the snowmiku run (see the module docstring and train.md)."""
    return {"device": "cpu", "iterations": iterations, "num_threads": threads, "sky_points": 0,
            "max_gaussians": max_gaussians, "model": model,
            "eval_steps": [], "checkpoint_every": 250, "progress": True, "log_every": 50}


def train(out: Path, iterations: int, threads: int, train_side: int, max_gaussians: int, model: str = "3dgs") -> dict:
    from splatforge_core.train.trainer import train_scene_data

    scene = load_scene(out, train_side)
    t0 = time.perf_counter()
    # Scaffold-GS (--model scaffold): point_cloud.ply is then the baked Inria PLY and the reference
    # layout (anchor PLY, MLPs, cfg_args, cameras.json) is <out>/train/scaffold/
    m = train_scene_data(scene, out / "train", out / "point_cloud.ply",
                         train_opts(iterations, threads, max_gaussians, model))
    m["bench_wall_seconds"] = time.perf_counter() - t0
    (out / "DONE").touch()
    return m


def speed(out: Path, steps: int, threads: int, train_side: int, max_gaussians: int) -> dict:
    from splatforge_core.train.trainer import train_scene_data

    scene = load_scene(out, train_side)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        m = train_scene_data(scene, Path(d), Path(d) / "s.ply", dict(train_opts(steps, threads, max_gaussians),
                                                                     resume=False))
    return {"steps": steps, "sec_per_iter": m["sec_per_iter"], "wall": time.perf_counter() - t0,
            "num_gaussians": m["num_gaussians"], "psnr": m["final"].get("psnr")}


def _load_note() -> str:
    return f"{platform.node()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start"


def _write_md(m: dict, a, load: str) -> None:
    """Append the run's section to ``benchmarks/results/train.md``."""
    f, ft = m["final"], m["final_train_views"]
    o = m["options"]
    row = (f"| {m['iterations']} | {m['num_gaussians']} | {m['sh_degree']} | {f['psnr']:.2f} | {f['ssim']:.4f} | "
           f"{format(f['lpips'], '.4f') if 'lpips' in f else 'n/a'} | {ft['psnr']:.2f} | {m['train_seconds'] / 60:.1f} | "
           f"{m['sec_per_iter']:.3f} |")
    w, h = m["resolution"]["first_train_view"]
    sec = (f"## snowmiku (real object capture, 97 photos) on CPU, {o['num_threads']} thread(s)\n\n"
           f"Reproduce: `python benchmarks/bench_snowmiku.py prep --out DIR && OMP_WAIT_POLICY=PASSIVE nice -n 5 python "
           f"benchmarks/bench_snowmiku.py train --out DIR --iterations {m['iterations']} --train-side {max(w, h)} "
           f"--max-gaussians {o['max_gaussians']} --threads {o['num_threads']} --write-md`. "
           f"{m['n_train_views']} training / {m['n_test_views']} held-out views (every 8th camera) of {w}x{h}, "
           f"undistorted from the 1008x756 distorted photos (module docstring of bench_snowmiku.py); init from the "
           f"25,784 SfM points, no sky sphere. Machine: {load}.\n\n"
           "| steps | Gaussians | SH degree | held-out PSNR dB | SSIM | LPIPS | train-view PSNR dB | "
           "train min | s/step |\n|---|---|---|---|---|---|---|---|---|\n" + row + "\n")
    old = RESULT.read_text()
    RESULT.write_text(old.rstrip("\n") + "\n\n" + sec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["prep", "speed", "train", "report"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-side", type=int, default=320)
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-side", type=int, default=None, help="train/evaluate at this longer side (default: as written)")
    ap.add_argument("--max-gaussians", type=int, default=100_000)
    ap.add_argument("--model", choices=["3dgs", "scaffold"], default="3dgs", help="train.model of the run")
    ap.add_argument("--write-md", action="store_true")
    a = ap.parse_args(argv)
    from splatforge_core.log import setup_logging

    setup_logging()
    load = _load_note()
    if a.what == "prep":
        print(json.dumps(prep(a.out, a.max_side), indent=1))
    elif a.what == "speed":
        print(json.dumps(speed(a.out, a.steps, a.threads, a.train_side, a.max_gaussians), indent=1))
    elif a.what == "report":  # the section of a finished run, from its metrics.json
        _write_md(json.loads((a.out / "train" / "metrics.json").read_text()), a, "recorded after the run: "
                  + load)
    else:
        m = train(a.out, a.iterations, a.threads, a.train_side, a.max_gaussians, a.model)
        keep = {k: m.get(k) for k in ("model", "iterations", "num_gaussians", "num_anchors", "sh_degree", "n_train_views",
                                      "n_test_views", "final", "final_train_views", "reloaded_final", "baked_final",
                                      "sizes_bytes", "train_seconds", "sec_per_iter", "bench_wall_seconds")}
        print(json.dumps(keep, indent=1))
        if a.write_md and a.model == "3dgs":
            _write_md(m, a, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
