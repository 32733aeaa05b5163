"""Export stage: trained splat PLY -> textured mesh (GLB, OBJ + MTL + PNG, FBX) in ENU metres.

Steps (each timed in the report): read + validate the splat, drop near-transparent
Gaussians, per-Gaussian normals, screened Poisson over the Gaussian centres, trim unsupported
surface, quadric decimation to ``target_faces``, xatlas UV unwrap, texture bake (see
:mod:`splatforge_core.export.bake` for the method), vertex colours, write + read back files.

Normals default to each Gaussian's shortest axis (see :func:`mesh.gaussian_normals`): 3DGS
optimisation flattens Gaussians onto the surface, so their thin axis is the surface normal the
optimiser found from the photos, sharper at thin structures and edges than a PCA fit over a
neighbourhood of centres (which blurs across nearby surfaces). Its sign comes from the
propagated PCA normals; Gaussians that are not flat use the PCA normal.

Every output is staged in a temporary folder, read back and checked, and only then renamed
into place; a failure leaves no output file behind.

Out of reach: KEX (a simulator's scenery format) needs a Windows-only converter; it is not
produced here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


from ..errors import InputError
from ..io import disk_full_error, is_disk_full, remove_stale_temporaries, reporting_disk_full, write_json
from ..log import get_logger
from ..options import build_options
from . import bake as _bake
from . import files as _files
from . import mesh as _mesh
from . import uv as _uv

__all__ = ["ExportOptions", "main", "cli"]

_LOG = get_logger("export")
FORMATS = ("glb", "obj", "fbx")


@dataclass
class ExportOptions:
    """Options of the export stage (config section ``export``).

    Attributes:
        target_faces: decimate the Poisson mesh to at most this many triangles.
        texture_size: texture atlas edge in texels (square PNG).
        poisson_depth: octree depth of screened Poisson (cell ~ scene extent / 2^depth); 9
            gives roughly 1-3 M faces for a closed object, enough for the 300k-face target
            (depth 10 quadruples Poisson and decimation time for detail decimation removes).
        poisson_samples_per_node: minimum samples per octree node (higher = smoother).
        poisson_point_weight: screening weight (interpolation of the points vs smoothness).
        normals: "shortest_axis" (each Gaussian's thin axis, sign from PCA normals) or
            "estimated" (PCA + MST normals of the centres only).
        normal_k: neighbours for PCA normal estimation.
        flat_ratio: a Gaussian counts as flat when smallest / middle scale <= this.
        min_opacity: Gaussians with sigmoid(opacity) below this are ignored (near-transparent).
        crop_box: ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` in the splat's frame (ENU metres):
            only Gaussians inside take part (None: all). ``"auto"``: the padded robust extent of
            the COLMAP model :func:`main` gets as ``crop_model`` (:func:`crop_box_from_model`),
            the workflow's default (it passes ``work/{scene}/aligned``), so the trainer's far
            background (the sky sphere) and floaters do not become the mesh: without it the
            demo mesh was the sky dome.
        trim_quantile: drop Poisson vertices below this quantile of Poisson density. 0 by
            default: on a uniformly sampled synthetic sphere a 2 % quantile punched holes in
            a well-supported surface; the distance test below removes unsupported surface.
        trim_distance: drop surface farther than this from any Gaussian centre (metres);
            None = the larger of ``trim_distance_factor`` x median 4-nearest-neighbour spacing
            of centres and 2 Poisson octree cells (:func:`mesh.poisson_voxel_size`): on lund
            (a 270 m street, 0.58 m cells at depth 9) the spacing rule alone (0.29 m) trimmed
            98 % of a well-supported surface, 807 faces left.
        trim_distance_factor: see ``trim_distance``.
        min_component_frac: remove connected pieces smaller than this fraction of faces.
        bake_k: nearest Gaussians composited per texel.
        uv_padding: texels between charts in the atlas.
        uv_max_iterations: xatlas chart-growing iterations.
        uv_max_chart_faces: cap on a chart's size in mean triangles (keeps xatlas fast; see
            :func:`uv.unwrap`).
        uv_block_faces: xatlas charts the mesh in spatial blocks of at most this many faces
            (chart computation is superlinear in mesh size; see :func:`uv.unwrap`).
        formats: which of "glb", "obj", "fbx" to write.
        fbx_binary: False (default) writes ASCII FBX 7.5 ("fbxa"); True writes binary
            ("fbx"), which assimp 5.2.5 cannot read back, so verification then fails.
        min_gaussians: fewer usable Gaussians than this is an error.
        flatness_tol: centres whose smallest principal extent is below this fraction of the
            largest are rejected as planar.
        threads: OpenMP threads for screened Poisson. 1 by default: on this 2-core machine
            shared with other jobs, 2 threads made a depth-8 reconstruction 15-40x slower
            than 1 thread (22-29 s vs 1.7 s, measured 2026-11-23; OpenMP barrier spinning
            when cores are oversubscribed). Raise it on a dedicated machine.
    """

    target_faces: int = field(default=300_000, metadata={"min": 4})
    texture_size: int = field(default=4096, metadata={"min": 16, "max": 16384})
    poisson_depth: int = field(default=9, metadata={"min": 4, "max": 14})
    poisson_samples_per_node: float = field(default=1.5, metadata={"gt": 0})
    poisson_point_weight: float = field(default=4.0, metadata={"min": 0})
    normals: str = "shortest_axis"
    normal_k: int = field(default=10, metadata={"min": 3})
    flat_ratio: float = field(default=0.5, metadata={"gt": 0, "max": 1})
    min_opacity: float = field(default=0.1, metadata={"min": 0, "lt": 1})
    crop_box: list | str | None = None
    trim_quantile: float = field(default=0.0, metadata={"min": 0, "lt": 1})
    trim_distance: float | None = field(default=None, metadata={"gt": 0})
    trim_distance_factor: float = field(default=4.0, metadata={"gt": 0})
    min_component_frac: float = field(default=0.01, metadata={"min": 0, "max": 1})
    bake_k: int = field(default=8, metadata={"min": 1})
    uv_padding: int = field(default=2, metadata={"min": 0})
    uv_max_iterations: int = field(default=1, metadata={"min": 0})
    uv_max_chart_faces: int = field(default=400, metadata={"min": 1})
    uv_block_faces: int = field(default=5000, metadata={"min": 1})
    formats: list = field(default_factory=lambda: list(FORMATS))
    fbx_binary: bool = False
    min_gaussians: int = field(default=100, metadata={"min": 1})
    flatness_tol: float = field(default=1e-3, metadata={"min": 0})
    threads: int = field(default=1, metadata={"min": 1})

    @classmethod
    def from_dict(cls, d: dict | "ExportOptions" | None) -> "ExportOptions":
        """Build from a plain dict (config section) or a copy of an instance, then :meth:`validate`.

        Raises :class:`InputError` (a ``ValueError``) on unknown keys, ``ValueError`` on bad values.
        """
        opts = build_options(cls, dataclasses.replace(d) if isinstance(d, cls) else d, "export")
        opts.validate()
        return opts

    def validate(self) -> None:
        if self.normals not in ("shortest_axis", "estimated"):
            raise ValueError(f"export option normals must be 'shortest_axis' or 'estimated', got {self.normals!r}")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ValueError(f"export option formats must be a non-empty subset of {FORMATS}, got {self.formats!r}")
        if "fbx" in self.formats and "obj" not in self.formats:
            # FBX is converted from the OBJ by assimp; the OBJ is then kept too.
            self.formats = list(self.formats) + ["obj"]
        if self.texture_size < 16 or self.target_faces < 4 or not (4 <= self.poisson_depth <= 14):
            raise ValueError("export options: texture_size >= 16, target_faces >= 4, 4 <= poisson_depth <= 14")
        if not (0 <= self.trim_quantile < 1) or not (0 <= self.min_opacity < 1):
            raise ValueError("export options: trim_quantile and min_opacity must be in [0, 1)")
        if isinstance(self.crop_box, str):
            if self.crop_box != "auto":
                raise ValueError(f"export option crop_box must be [[xmin,ymin,zmin],[xmax,ymax,zmax]], 'auto' "
                                 f"or null, got {self.crop_box!r}")
        elif self.crop_box is not None:
            box = np.asarray(self.crop_box, dtype=np.float64)
            if box.shape != (2, 3) or not np.all(np.isfinite(box)) or np.any(box[0] >= box[1]):
                raise ValueError(f"export option crop_box must be [[xmin,ymin,zmin],[xmax,ymax,zmax]] "
                                 f"with min < max, got {self.crop_box!r}")


def crop_box_from_model(model_dir: str | os.PathLike, percentile: float = 1.0,
                        pad_fraction: float = 0.1) -> list[list[float]]:
    """Robust extent of a COLMAP model's 3D points and camera centres, padded, for ``crop_box``.

    Args:
        model_dir: COLMAP model folder (e.g. ``work/{scene}/aligned``, ENU metres).
        percentile: per-axis lower/upper percentile of the points (drops stray points).
        pad_fraction: the box grows by this fraction of its size on every side.

    Returns:
        ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` in the model's frame (metres).

    Raises:
        InputError: the model has no 3D points.
    """
    import pycolmap

    rec = pycolmap.Reconstruction(str(model_dir))
    pts = np.array([p.xyz for p in rec.points3D.values()], dtype=np.float64).reshape(-1, 3)
    if len(pts) == 0:
        raise InputError(f"{model_dir}: the model has no 3D points to bound the mesh with")
    centres = np.array([im.projection_center() for im in rec.images.values() if im.has_pose],
                       dtype=np.float64).reshape(-1, 3)
    lo = np.percentile(pts, percentile, axis=0)
    hi = np.percentile(pts, 100.0 - percentile, axis=0)
    if len(centres):
        lo, hi = np.minimum(lo, centres.min(0)), np.maximum(hi, centres.max(0))
    pad = pad_fraction * np.maximum(hi - lo, 1e-3)
    return [(lo - pad).tolist(), (hi + pad).tolist()]


def main(splat_ply: str | os.PathLike, out_prefix: str | os.PathLike | None = None, *,
         glb: str | os.PathLike | None = None, obj: str | os.PathLike | None = None,
         fbx: str | os.PathLike | None = None, report_path: str | os.PathLike | None = None,
         options: dict | ExportOptions | None = None, crop_model: str | os.PathLike | None = None) -> dict:
    """Turn a splat PLY into textured mesh files.

    Args:
        splat_ply: Inria-3DGS PLY (ENU metres, Z up).
        out_prefix: ``results/{scene}_mesh`` -> ``.glb``, ``.obj`` (+ ``.mtl``, ``.png``), ``.fbx``.
        glb, obj, fbx: explicit output paths (override ``out_prefix``). The OBJ's material and
            texture go beside it as ``<stem>.mtl`` / ``<stem>.png``; the FBX references that
            PNG by file name, so keep it in the same folder.
        report_path: optional JSON report (step timings, counts, read-back checks).
        options: :class:`ExportOptions` or a dict of its fields.
        crop_model: COLMAP model folder (ENU metres, e.g. ``work/{scene}/aligned``) whose padded
            robust extent is the crop box when ``crop_box`` is ``"auto"``; the report's
            ``options.crop_box`` holds the resolved box.

    Returns:
        The report dict: {"schema_version", "input", "outputs", "counts", "timings_s",
        "normals", "verify", "options"}.

    Raises:
        InputError: unreadable / empty / degenerate splat, missing columns, NaN or Inf
            (message names the file); nothing is written.
        ValueError: bad options, no output path, or ``crop_box="auto"`` without ``crop_model``.
        files.ExportVerifyError: a file did not read back as written; nothing is left behind.
    """
    opts = ExportOptions.from_dict(options)
    if opts.crop_box == "auto":
        if crop_model is None:
            raise ValueError("export option crop_box='auto' needs crop_model (the aligned COLMAP model to bound)")
        # Mesh only what SfM reconstructed: the padded robust extent of the aligned model.
        opts.crop_box = crop_box_from_model(crop_model)
    t_all = time.perf_counter()
    timer = _mesh.Timer()
    outs: dict[str, Path] = {}
    for fmt, explicit in (("glb", glb), ("obj", obj), ("fbx", fbx)):
        if fmt not in opts.formats:
            continue
        if explicit is not None:
            outs[fmt] = Path(explicit)
        elif fmt == "obj" and out_prefix is None and fbx is not None:
            outs[fmt] = Path(fbx).with_suffix(".obj")  # the FBX needs the OBJ's PNG beside it
        elif out_prefix is not None:
            outs[fmt] = Path(f"{out_prefix}.{fmt}")
        else:
            raise ValueError(f"export: no output path for {fmt} (give out_prefix or {fmt}=)")
    # a killed run's staging folder and atomic temporaries beside these outputs (issue #18)
    _own = [*outs.values(), *([Path(report_path)] if report_path else [])]
    if "obj" in outs:
        _own += [outs["obj"].with_suffix(".mtl"), outs["obj"].with_suffix(".png")]
    remove_stale_temporaries(_own)

    with timer("read"):
        splat = _mesh._read_splat_ply(splat_ply)
        n_in = len(splat)
        keep = splat.opacities >= opts.min_opacity
        if opts.crop_box is not None:
            box = np.asarray(opts.crop_box, dtype=np.float64)
            keep &= np.all((splat.means >= box[0]) & (splat.means <= box[1]), axis=1)
        splat = splat.subset(keep)
        _mesh.check_geometry(splat, opts.min_gaussians, opts.flatness_tol)
    with timer("normals"):
        normals, nstats = _mesh.gaussian_normals(splat, opts.normals, opts.flat_ratio, opts.normal_k)
    with timer("poisson"):
        v, f, dens = _mesh.poisson(splat.means, normals, opts.poisson_depth, opts.threads,
                                   opts.poisson_samples_per_node, opts.poisson_point_weight)
    n_poisson = len(f)
    with timer("trim"):
        spacing = _mesh.median_spacing(splat.means)
        voxel = _mesh.poisson_voxel_size(splat.means, opts.poisson_depth)
        tdist = (opts.trim_distance if opts.trim_distance is not None
                 else max(opts.trim_distance_factor * spacing, 2.0 * voxel))
        v, f, tstats = _mesh.trim(v, f, dens, splat.means, opts.trim_quantile, tdist, opts.min_component_frac)
    if len(f) == 0:
        raise InputError(f"{splat.path}: no surface left after trimming the Poisson mesh "
                         f"(trim distance {tdist:.3g} m); the Gaussians do not describe a surface")
    with timer("decimate"):
        v, f = _mesh.decimate(v, f, opts.target_faces)
    with timer("uv"):
        vmap, f_uv, uv = _uv.unwrap(v, f, opts.texture_size, opts.uv_padding, opts.uv_max_iterations,
                                     opts.uv_max_chart_faces, opts.uv_block_faces)
        vn = _bake.vertex_normals(v, f)
        v_uv = v[vmap]
        vn_uv = vn[vmap]
    with timer("bake"):
        sampler = _bake.SplatColourSampler(splat, k=opts.bake_k)
        image, coverage = _bake.bake_texture(sampler, v_uv, vn_uv, f_uv, uv, opts.texture_size)
        vcol, _ = sampler.sample(v, vn)
        vcol_uv = vcol[vmap]
        # Merge vertices identical in position, UV, normal and colour at the precision the OBJ
        # stores them (decimation can leave coincident vertices). assimp joins such vertices
        # when converting the OBJ to FBX; merging here keeps one vertex count across
        # glb/obj/fbx so the read-back check can compare exact counts.
        key = np.ascontiguousarray(np.concatenate(
            [np.round(v_uv, 6), np.round(uv, 6), np.round(vn_uv, 5), np.round(vcol_uv.astype(np.float64), 4)], axis=1))
        _, first, inv = np.unique(key.view(np.dtype((np.void, key.dtype.itemsize * key.shape[1]))).ravel(),
                                  return_index=True, return_inverse=True)
        if len(first) < len(key):
            v_uv, uv, vn_uv, vcol_uv = v_uv[first], uv[first], vn_uv[first], vcol_uv[first]
            f_uv = inv.reshape(-1)[f_uv]

    final_outputs: dict[str, str] = {}
    verify: dict[str, Any] = {}
    nv, nf = len(v_uv), len(f_uv)
    dests = list(outs.values())
    dests[0].parent.mkdir(parents=True, exist_ok=True)
    # named like atomic_path's temporaries of the first output (``.{stem}.<random>.tmp``), so the
    # cleanup above removes it after a kill, and no other scene's export touches it
    with reporting_disk_full(dests[0]):
        stage = Path(tempfile.mkdtemp(prefix=f".{dests[0].stem}.", suffix=".tmp", dir=dests[0].parent))
    try:
        staged: dict[str, Path] = {}
        with timer("write_verify"):
            if "obj" in outs:
                p = stage / outs["obj"].name
                objs = _files.write_obj(p, v_uv, f_uv, uv, vn_uv, vcol_uv, image)
                verify["obj"] = _files.verify_obj(objs, nv, nf)
                staged.update({"obj": objs["obj"], "mtl": objs["mtl"], "texture": objs["texture"]})
            if "glb" in outs:
                p = stage / outs["glb"].name
                _files.write_glb(p, v_uv, f_uv, uv, vn_uv, image)
                verify["glb"] = _files.verify_glb(p, nv, nf)
                staged["glb"] = p
            if "fbx" in outs:
                p = stage / outs["fbx"].name
                fmt = _files.write_fbx(p, staged["obj"], binary=opts.fbx_binary)
                verify["fbx"] = _files.verify_fbx(p, nv, nf)
                verify["fbx"]["assimp_format"] = fmt
                staged["fbx"] = p
        dest_of = dict(outs)
        if "obj" in outs:
            dest_of["mtl"] = outs["obj"].with_suffix(".mtl")
            dest_of["texture"] = outs["obj"].with_suffix(".png")
        # texture and material before the files that reference them
        for key in ("texture", "mtl", "obj", "glb", "fbx"):
            if key in staged:
                dest_of[key].parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(staged[key]), str(dest_of[key]))
                final_outputs[key] = str(dest_of[key])
    except Exception as e:
        if is_disk_full(e):
            raise disk_full_error(dests[0], e) from e
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)

    timer.steps["total"] = round(time.perf_counter() - t_all, 3)
    report = {
        "schema_version": 1,
        "input": str(splat.path),
        "outputs": final_outputs,
        "counts": {
            "gaussians_in": n_in, "gaussians_used": len(splat), "poisson_faces": n_poisson,
            "faces_after_trim": int(n_poisson - tstats["faces_removed_trim"] - tstats["faces_removed_components"]),
            **tstats, "vertices": nv, "faces": nf, "texture_size": opts.texture_size,
            "texture_coverage": round(coverage, 4),
        },
        "trim_distance_m": tdist,
        "poisson_voxel_m": voxel,
        "normals": {"mode": opts.normals, **nstats},
        "timings_s": timer.steps,
        "verify": verify,
        "frame": "ENU metres, Z up (GLB: mesh under a node rotating ENU to glTF Y-up)",
        "options": dataclasses.asdict(opts),
    }
    if report_path is not None:
        write_json(report_path, report)
    _LOG.info("export done in %.1f s: %d faces, %s", timer.steps["total"], nf, ", ".join(final_outputs.values()))
    return report


def cli(argv: list[str] | None = None) -> int:
    """``splatforge export SPLAT.ply --out-prefix results/scene_mesh [--report r.json] [options]``."""
    ap = argparse.ArgumentParser(prog="splatforge export", description=__doc__.split("\n\n")[0])
    ap.add_argument("splat_ply")
    ap.add_argument("--out-prefix", help="writes PREFIX.glb, PREFIX.obj (+.mtl, .png), PREFIX.fbx")
    ap.add_argument("--glb")
    ap.add_argument("--obj")
    ap.add_argument("--fbx")
    ap.add_argument("--report")
    ap.add_argument("--target-faces", type=int)
    ap.add_argument("--texture-size", type=int)
    ap.add_argument("--poisson-depth", type=int)
    ap.add_argument("--normals", choices=["shortest_axis", "estimated"])
    ap.add_argument("--min-opacity", type=float)
    ap.add_argument("--trim-quantile", type=float)
    ap.add_argument("--trim-distance", type=float)
    ap.add_argument("--crop-box", help="'auto' (needs --crop-model) or JSON [[xmin,ymin,zmin],[xmax,ymax,zmax]] (ENU m)")
    ap.add_argument("--crop-model", help="COLMAP model (work/{scene}/aligned) bounding the mesh for --crop-box auto")
    ap.add_argument("--formats", help="comma list of glb,obj,fbx")
    ap.add_argument("--binary-fbx", action="store_true", help="binary FBX (does not read back in assimp 5.2.5)")
    ap.add_argument("--preview", help="also render mesh vs splat comparison PNG to this path")
    a = ap.parse_args(argv)
    opts: dict[str, Any] = {}
    for k in ("target_faces", "texture_size", "poisson_depth", "normals", "min_opacity",
              "trim_quantile", "trim_distance"):
        if getattr(a, k) is not None:
            opts[k] = getattr(a, k)
    if a.crop_box is not None:
        opts["crop_box"] = a.crop_box if a.crop_box == "auto" else json.loads(a.crop_box)
    if a.formats:
        opts["formats"] = [s.strip() for s in a.formats.split(",") if s.strip()]
    if a.binary_fbx:
        opts["fbx_binary"] = True
    try:
        rep = main(a.splat_ply, a.out_prefix, glb=a.glb, obj=a.obj, fbx=a.fbx, report_path=a.report, options=opts,
                   crop_model=a.crop_model)
    except ValueError as e:
        if isinstance(e, InputError):
            raise
        ap.error(str(e))
    if a.preview:
        from .preview import compare_png

        src = rep["outputs"].get("glb") or rep["outputs"].get("obj")
        compare_png(a.splat_ply, src, a.preview)
    for k, p in rep["outputs"].items():
        print(f"{k}: {p}")
    return 0
