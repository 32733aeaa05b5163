"""Bundles: one splat with its training cameras and images, for the codec's retraining presets.

A bundle is the layout the Inria trainer (graphdeco-inria/gaussian-splatting) writes beside a
trained splat, in one ``.tar``, ``.tar.gz``/``.tgz`` or an already extracted folder::

    point_cloud.ply    the 3DGS splat (Inria PLY layout, :func:`.layout.validate_3dgs`)
    cameras.json       Inria camera list (:mod:`splatforge_core.inria`), one record per image
    images/            the undistorted training images, one per camera (``img_name`` + suffix)
    sparse/0/          optional COLMAP model

at the archive root or one level down inside a single top folder. The trainer's own output
folder (``output/<run>/``) is accepted too: without ``point_cloud.ply`` at the root,
``point_cloud/iteration_N/point_cloud.ply`` with the highest ``N`` is the splat.

:func:`open_bundle` validates a bundle before any compute, in this order, each failure an
:class:`~splatforge_core.errors.InputError` naming the bundle, the member and what to do:

1. the archive's size (``max_bytes``, 1 GB by default);
2. safe extraction (:func:`splatforge_core.archive.safe_extract`: ``tarfile``'s ``data``
   filter and our own checks: no ``..``, no absolute paths, no links, devices or FIFOs, caps
   on the member count and the unpacked size, extraction into a fresh temporary folder renamed
   into place);
3. the layout (``cameras.json`` at the root or in a single top folder);
4. ``cameras.json`` (:func:`splatforge_core.inria.read_cameras_json`);
5. every camera's image present (:func:`splatforge_core.inria.find_image`);
6. at least :data:`MIN_IMAGES` images (the held-out split takes every 8th frame: both halves
   need images);
7. the PLY: found, a 3DGS vertex layout (a Scaffold-GS anchor PLY is refused with a pointer to
   the Scaffold presets, issue #15), a body as long as its header says.

A Scaffold-GS bundle (``kind="scaffold"``, preset ``qat-bundle``) holds the anchor
``point_cloud.ply`` with the model's TorchScript MLPs beside it and ``cfg_args``; step 7 checks
those instead and then loads the MLPs (:mod:`.scaffold_bundle`, which documents its layout).

:func:`pack_scene` writes a bundle of a Splat Forge scene (``splatforge bundle``; rule ``bundle``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Optional

from ..archive import ArchiveError, safe_extract
from ..errors import InputError
from ..inria import InriaCamera, find_image, read_cameras_json, write_scene_dataset
from ..io import atomic_path, remove_stale_temporaries
from .layout import PlyHeader, parse_header, validate_3dgs

log = logging.getLogger("splatforge.codec.bundle")

#: Default caps of :func:`open_bundle`: archive size on disk, member count, unpacked size.
MAX_BUNDLE_BYTES = 1_000_000_000
MAX_BUNDLE_MEMBERS = 100_100
MAX_UNPACKED_BYTES = 16 << 30
#: Fewest images a bundle may have: the held-out split takes every 8th frame (one test frame
#: for 8) and the rest trains, so both halves are non-empty from 8 on.
MIN_IMAGES = 8
#: Archive suffixes and their ``tarfile`` read modes.
ARCHIVE_MODES = {".tar": "r:", ".tar.gz": "r:gz", ".tgz": "r:gz"}

#: What to do about a refused archive, by :attr:`splatforge_core.archive.ArchiveError.kind`.
_ARCHIVE_ADVICE = {
    "unsafe": "repack it from regular files only (`splatforge bundle` writes a valid bundle)",
    "cap": "raise the cap (compress option bundle_max_unpacked; open_bundle's max_members / max_unpacked) only if "
           "you trust the bundle",
    "unreadable": "the file is truncated or damaged: copy or download it again",
    "exists": "remove the folder or extract elsewhere",
}

_ITERATION = re.compile(r"iteration_(\d{1,9})")


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A validated bundle (:func:`open_bundle`).

    Attributes:
        source: the bundle as given (archive file or folder).
        root: the folder holding ``cameras.json`` (inside the extraction folder for an archive).
        ply: the 3DGS splat PLY.
        cameras: the validated cameras, in ``cameras.json`` order.
        images_dir: the ``images/`` folder; every camera's image is in it.
        sparse_dir: ``sparse/0`` when present, else None.
        header: the PLY's parsed header.
        top: the extraction folder (or the given folder): what member names are relative to.
        kind: ``"3dgs"`` or ``"scaffold"`` (:mod:`.scaffold_bundle`).
        model: a Scaffold-GS bundle's loaded model (:class:`splatforge_core.scaffold.layout.ScaffoldModel`,
            its MLPs loaded after every other check passed); None for a 3DGS bundle.
    """

    source: Path
    root: Path
    ply: Path
    cameras: list[InriaCamera]
    images_dir: Path
    sparse_dir: Optional[Path]
    header: PlyHeader
    top: Path
    kind: str = "3dgs"
    model: Any = dataclasses.field(default=None, compare=False, repr=False)

    def image_path(self, cam: InriaCamera) -> Path:
        """The image file of ``cam`` (present: :func:`open_bundle` checked it)."""
        return find_image(self.images_dir, cam.img_name)

    def summary(self) -> dict[str, Any]:
        """JSON-able description: members, counts, frames, PLY layout (``splatforge bundle --check``)."""
        from ..splat import sh_degree_from_names

        names = [p.name for p in self.header.element("vertex").properties]
        try:
            deg: Optional[int] = sh_degree_from_names(names)
        except InputError:
            deg = None
        if self.kind == "scaffold":
            deg = None  # anchors: colours come from the colour MLP
        sizes = sorted({(c.width, c.height) for c in self.cameras})
        extra = {} if self.model is None else {"kind": self.kind, "feat_dim": self.model.config.feat_dim,
                                                "n_offsets": self.model.config.n_offsets}
        return {
            **extra,
            "bundle": str(self.source),
            "ply": _rel(self.ply, self.top),
            "n_gaussians": self.header.element("vertex").count,
            "sh_degree": deg,
            "n_cameras": len(self.cameras),
            "n_frames": len({c.frame or c.img_name for c in self.cameras}),
            "camera_sizes": [f"{w}x{h}" for w, h in sizes[:8]] + (["..."] if len(sizes) > 8 else []),
            "sparse": _rel(self.sparse_dir, self.top) if self.sparse_dir else None,
            "size_bytes": _size(self.source),
        }


_EXTRACTED = "bundle"


def _rel(p: Path, top: Path) -> str:
    try:
        return p.relative_to(top).as_posix()
    except ValueError:
        return str(p)


def _size(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def is_bundle_path(path: str | os.PathLike) -> bool:
    """True for a folder or a file named like a bundle archive (``.tar``, ``.tar.gz``, ``.tgz``)."""
    p = Path(path)
    return p.is_dir() or _archive_mode(p) is not None


def _archive_mode(p: Path) -> Optional[str]:
    name = p.name.lower()
    for sfx, mode in ARCHIVE_MODES.items():
        if name.endswith(sfx):
            return mode
    return None


def _fail(bundle: Path, member: str, problem: str, todo: str) -> InputError:
    return InputError(f"bundle {bundle}: {member}: {problem}; {todo}")


def _strip(msg: str, *paths: Path) -> str:
    """``msg`` without the absolute temporary paths (the member is named separately)."""
    for p in paths:
        msg = msg.replace(f"{p}: ", "").replace(f"{p}/", "").replace(str(p), ".")
    return msg


def _layout_root(bundle: Path, top: Path) -> Path:
    """The folder of ``cameras.json``: ``top`` itself or its single sub-folder."""
    if (top / "cameras.json").is_file():
        return top
    entries = sorted(top.iterdir(), key=lambda p: p.name)
    dirs = [e for e in entries if e.is_dir()]
    if len(entries) == 1 and dirs and (dirs[0] / "cameras.json").is_file():
        return dirs[0]
    if len(dirs) > 1:
        names = ", ".join(d.name + "/" for d in dirs[:5])
        raise _fail(bundle, "cameras.json", f"not at the root, and the root has {len(dirs)} top folders ({names})",
                    "put point_cloud.ply, cameras.json and images/ at the root or inside one single top folder")
    raise _fail(bundle, "cameras.json", "missing (looked at the root and inside a single top folder)",
                "a bundle needs point_cloud.ply, cameras.json and images/ (make one with `splatforge bundle`)")


def _find_ply(bundle: Path, root: Path, top: Path, what: str = "the 3DGS splat") -> Path:
    """``root/point_cloud.ply`` or the trainer's ``point_cloud/iteration_N/point_cloud.ply``, highest N."""
    p = root / "point_cloud.ply"
    if p.is_file():
        return p
    its = []
    if (root / "point_cloud").is_dir():
        for d in (root / "point_cloud").iterdir():
            m = _ITERATION.fullmatch(d.name)
            if m and (d / "point_cloud.ply").is_file():
                its.append((int(m.group(1)), d / "point_cloud.ply"))
    if its:
        return max(its)[1]
    rel = _rel(root, top)
    prefix = "" if rel == "." else rel + "/"
    raise _fail(bundle, f"{prefix}point_cloud.ply", "missing (nor point_cloud/iteration_N/point_cloud.ply)",
                f"add {what} as point_cloud.ply beside cameras.json")


def _check_ply(bundle: Path, ply: Path, top: Path) -> PlyHeader:
    member = _rel(ply, top)
    try:
        header = parse_header(ply)
    except InputError as e:
        raise _fail(bundle, member, _strip(str(e), ply, top), "the bundle's splat must be a binary 3DGS PLY") from None
    try:
        names = [p.name for p in header.element("vertex").properties]
    except InputError as e:
        raise _fail(bundle, member, _strip(str(e), ply, top), "the bundle's splat must be a 3DGS PLY") from None
    if any(n.startswith(("f_anchor_feat", "f_offset")) for n in names):
        raise _fail(bundle, member, "a Scaffold-GS anchor PLY (f_anchor_feat_*/f_offset_* columns), not a 3DGS splat",
                    "Scaffold-GS splats need the Scaffold presets (issue #15), not a 3DGS bundle preset: use the "
                    "'qat-bundle' preset")
    try:
        validate_3dgs(header)
    except InputError as e:
        raise _fail(bundle, member, _strip(str(e), ply, top),
                    "the bundle's splat must have the Inria 3DGS columns (x, y, z, f_dc_*, opacity, scale_*, rot_*)") from None
    if header.fmt != "ascii" and not any(el.has_list for el in header.elements):
        want = header.size + sum(el.count * el.dtype(header.byte_order).itemsize for el in header.elements)
        have = ply.stat().st_size
        if have != want:
            raise _fail(bundle, member, f"{have} bytes but its header describes {want} (truncated or extended)",
                        "re-export the splat")
    return header


def open_bundle(path: str | os.PathLike, work_dir: str | os.PathLike, *, max_bytes: int = MAX_BUNDLE_BYTES,
                max_members: int = MAX_BUNDLE_MEMBERS, max_unpacked: int = MAX_UNPACKED_BYTES,
                kind: str = "3dgs") -> Bundle:
    """Validate a bundle (see the module docstring for the layout and the order of checks).

    Args:
        path: a ``.tar``, ``.tar.gz`` / ``.tgz``, or a folder in the bundle layout (validated in
            place, not copied; the archive caps do not apply to it).
        work_dir: an existing folder to extract an archive into (as ``work_dir/bundle``, which must
            not exist); the caller removes it. Nothing is written outside it, and nothing is left
            in it when validation fails.
        max_bytes: cap on the archive's size on disk, bytes (1 GB).
        max_members: cap on the archive's member count.
        max_unpacked: cap on the archive members' total size, bytes (16 GiB).
        kind: ``"3dgs"`` (a 3DGS splat), ``"scaffold"`` (a Scaffold-GS model,
            :func:`.scaffold_bundle.check_scaffold_members`) or ``"auto"`` (whichever the PLY's
            columns say).

    Returns:
        the validated :class:`Bundle`.

    Raises:
        InputError: the first failed check, naming the bundle, the member and what to do.
        DiskFullError: the disk filled up during extraction.
    """
    src = Path(path)
    if kind not in ("3dgs", "scaffold", "auto"):
        raise ValueError(f"open_bundle: kind must be '3dgs', 'scaffold' or 'auto', got {kind!r}")
    if not src.exists():
        raise InputError(f"bundle {src}: no such file or folder")
    if src.is_dir():
        top = src
    else:
        mode = _archive_mode(src)
        if mode is None:
            raise InputError(f"bundle {src}: not a bundle (expected a .tar, .tar.gz or .tgz archive, or a folder); "
                             "make one with `splatforge bundle SCENE_OR_WORKDIR out.tar.gz`")
        size = src.stat().st_size
        if size > max_bytes:
            raise InputError(f"bundle {src}: {size} bytes, over the cap of {max_bytes} bytes for a bundle; "
                             "shrink its images (splatforge bundle --max-side) or, if you trust it, raise the cap "
                             "(compress option bundle_max_bytes, splatforge bundle --check --max-bytes)")
        top = Path(work_dir) / _EXTRACTED
        try:
            safe_extract(src, top, max_members=max_members, max_bytes=max_unpacked, mode=mode)
        except ArchiveError as e:
            raise InputError(f"bundle {e}; {_ARCHIVE_ADVICE.get(e.kind, _ARCHIVE_ADVICE['unsafe'])}") from None
    try:
        return _validate(src, top, kind)
    except BaseException:
        if top != src:
            shutil.rmtree(top, ignore_errors=True)
        raise


def _is_scaffold_ply(ply: Path) -> bool:
    try:
        names = [p.name for p in parse_header(ply).element("vertex").properties]
    except InputError:
        return False  # the kind's own check names the problem
    return any(n.startswith("f_anchor_feat") for n in names)


def _validate(src: Path, top: Path, kind: str = "3dgs") -> Bundle:
    root = _layout_root(src, top)
    prefix = "" if root == top else root.name + "/"
    try:
        cams = read_cameras_json(root / "cameras.json")
    except InputError as e:
        raise _fail(src, f"{prefix}cameras.json", _strip(str(e), root / "cameras.json", top),
                    "fix or regenerate cameras.json (Inria trainer layout)") from None
    images = root / "images"
    if not images.is_dir():
        raise _fail(src, f"{prefix}images/", "missing", "put one image per camera of cameras.json into images/")
    for c in cams:
        try:
            find_image(images, c.img_name)
        except InputError:
            raise _fail(src, f"{prefix}images/{c.img_name}", f"missing (the image of camera id {c.id}; looked for "
                        f"{c.img_name} with and without .png/.jpg/.jpeg)",
                        "every camera in cameras.json needs its image: add it or remove the camera") from None
    if len(cams) < MIN_IMAGES:
        raise _fail(src, f"{prefix}images/", f"{len(cams)} images, at least {MIN_IMAGES} needed (every 8th frame is "
                    "held out for evaluation, the rest is trained on)", "add images (with their cameras)")
    ply = _find_ply(src, root, top, *(["the Scaffold-GS anchor PLY (with its MLPs and cfg_args)"] if kind == "scaffold" else []))
    if kind == "auto":
        kind = "scaffold" if _is_scaffold_ply(ply) else "3dgs"
    model = None
    if kind == "scaffold":
        from .scaffold_bundle import check_scaffold_members

        header, model = check_scaffold_members(src, root, ply, top)
    else:
        header = _check_ply(src, ply, top)
    sparse = root / "sparse" / "0"
    b = Bundle(src, root, ply, cams, images, sparse if sparse.is_dir() else None, header, top, kind, model)
    log.info("bundle %s: %d cameras, %d Gaussians in %s", src, len(cams), header.element("vertex").count, _rel(ply, top))
    return b


# -- packing -------------------------------------------------------------------------------------


def resolve_workdir(scene_or_workdir: str | os.PathLike, work_root: str | os.PathLike = "work") -> Path:
    """A scene name -> ``work_root/<scene>``; an existing folder path -> itself.

    Raises:
        InputError: neither an existing folder nor a scene with a work folder.
    """
    p = Path(scene_or_workdir)
    if p.is_dir():
        return p
    if re.fullmatch(r"[A-Za-z0-9_-]+", str(scene_or_workdir)) and (Path(work_root) / p).is_dir():
        return Path(work_root) / p
    raise InputError(f"{scene_or_workdir}: neither a scene's work folder nor a scene name with a folder in "
                     f"{work_root}/; run the workflow on the scene first (snakemake work/<scene>/splat/splat.ply)")


def write_bundle_sparse(aligned_dir: str | os.PathLike, cams: list[InriaCamera], out_dir: str | os.PathLike) -> None:
    """Write the COLMAP model ``aligned_dir`` as the bundle's ``sparse/0``, matching its images.

    The bundle's images are undistorted, resized and renamed (:func:`splatforge_core.inria.write_dataset`),
    so the model is rewritten to describe them, as the Inria trainer's ``convert.py`` leaves
    ``sparse/0`` beside its undistorted ``images/``: every image is renamed to its bundle file
    (``<img_name>.png``), every camera becomes ``PINHOLE`` with the bundle's size and focal
    lengths and the principal point at the image centre (as in ``cameras.json``), and every 2D
    observation is undistorted and rescaled with it (``Camera.cam_from_img`` of the original
    camera, then the new intrinsics). Poses, rigs, frames and 3D points are unchanged (ENU metres).

    Args:
        aligned_dir: COLMAP model (binary or text) of the scene's images.
        cams: the bundle's cameras (their ``img_name`` is the model's image name with ``/`` ->
            ``__`` and no extension).
        out_dir: folder to write the binary model into (created).

    Raises:
        InputError: an unreadable model, a posed image of the model without a bundle camera, or
            two images of one COLMAP camera with different bundle intrinsics.
    """
    import numpy as np
    import pycolmap

    try:
        rec = pycolmap.Reconstruction(str(aligned_dir))
    except Exception as e:  # pycolmap raises plain exceptions for unreadable models
        raise InputError(f"{aligned_dir}: cannot read COLMAP model ({e})") from e
    by_name = {c.img_name: c for c in cams}
    old = {cid: pycolmap.Camera(camera_id=cid, model=c.model_name, width=c.width, height=c.height,
                                params=np.array(c.params, np.float64)) for cid, c in rec.cameras.items()}
    new: dict[int, tuple[int, int, float, float]] = {}
    for im in rec.images.values():
        if not im.has_pose:
            continue
        bc = by_name.get(os.path.splitext(im.name.replace("/", "__"))[0])
        if bc is None:
            raise InputError(f"{aligned_dir}: image {im.name!r} of the model is not among the bundle's views")
        intr = (bc.width, bc.height, bc.fx, bc.fy)
        prev = new.setdefault(im.camera_id, intr)
        if prev[:2] != intr[:2] or not np.allclose(prev[2:], intr[2:], rtol=1e-6):
            raise InputError(f"{aligned_dir}: images of camera {im.camera_id} have different sizes or focal lengths "
                             f"in the bundle ({prev} and {intr})")
        pts = im.points2D
        if len(pts):
            norm = old[im.camera_id].cam_from_img(np.array([p.xy for p in pts], np.float64))
            xy = norm * [bc.fx, bc.fy] + [bc.width / 2.0, bc.height / 2.0]
            for p, q in zip(pts, xy):
                p.xy = q
        im.name = f"{bc.img_name}.png"
    for cid, (w, h, fx, fy) in new.items():
        c = rec.cameras[cid]
        c.model = pycolmap.CameraModelId.PINHOLE
        c.width, c.height = w, h
        c.params = [fx, fy, w / 2.0, h / 2.0]
    rec.update_point_3d_errors()  # reprojection errors in the new pixels
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    rec.write(str(out_dir))


def trained_max_side(metrics_json: str | os.PathLike, fallback: Optional[int]) -> Optional[int]:
    """The longer image side the splat was trained at: ``resolution.max_side`` of the trainer's
    ``metrics.json`` (None there: full resolution), else ``fallback`` (a merged splat's
    ``metrics.json`` has no ``resolution``; an unreadable file is left to the other stages).
    """
    import json

    try:
        res = json.loads(Path(metrics_json).read_text()).get("resolution")
    except (OSError, ValueError, AttributeError):
        return fallback
    if isinstance(res, dict) and "max_side" in res:
        ms = res["max_side"]
        return ms if isinstance(ms, int) and not isinstance(ms, bool) and ms > 0 else None
    return fallback


def work_dir_pattern(out_path: str | os.PathLike, kind: str) -> str:
    """Regular expression of the temporary folders named ``.<out name>.<kind>.<random>.tmp`` beside
    ``out_path`` (``tempfile`` names), for :func:`splatforge_core.io.remove_stale_temporaries`."""
    return rf"^\.{re.escape(Path(out_path).name)}\.{re.escape(kind)}\.[A-Za-z0-9_]+\.tmp$"


def _tarinfo_clean(ti: tarfile.TarInfo) -> tarfile.TarInfo:
    """No owner names or ids in a bundle (they mean nothing elsewhere)."""
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def pack_scene(scene_or_workdir: str | os.PathLike, out_path: str | os.PathLike, *, max_side: Optional[int] = None,
               with_sparse: bool = True, work_root: str | os.PathLike = "work", gzip_level: int = 6,
               scaffold: Optional[str | os.PathLike] = None) -> dict[str, Any]:
    """Pack a Splat Forge scene into a bundle (the layout of the module docstring, files at the root).

    ``point_cloud.ply`` is ``<workdir>/splat/splat.ply``; ``images/`` + ``cameras.json`` are the
    scene's registered views, undistorted to pinhole and resized to ``max_side``
    (:func:`splatforge_core.inria.write_scene_dataset`, which keeps each view's frame, so a
    bundle's held-out split is the trainer's); ``sparse/0`` is the aligned (ENU) COLMAP model
    ``<workdir>/aligned`` rewritten for the bundle's images (:func:`write_bundle_sparse`:
    renamed images, PINHOLE cameras, undistorted observations). The archive is written to a
    temporary path and renamed into place.

    Args:
        scene_or_workdir: a scene name (``work_root/<scene>``) or a work folder path.
        out_path: ``.tar`` (uncompressed; the PNGs are compressed already) or ``.tar.gz``/``.tgz``.
        max_side: longer image side in pixels (None: the images' own size).
        with_sparse: add ``sparse/0``.
        work_root: where scene names are looked up.
        gzip_level: gzip level of a ``.tar.gz`` (1..9).
        scaffold: a Scaffold-GS output folder (the reference layout,
            :func:`splatforge_core.scaffold.layout.iteration_dir`) trained on this scene: its
            model files (:func:`.scaffold_bundle.scaffold_members`) replace the 3DGS splat, for
            the ``qat-bundle`` preset. The images and cameras are the scene's as above.

    Returns:
        summary dict: bundle, workdir, n_images, n_frames, size_bytes, sparse (and ``kind``
        ``"scaffold"`` with ``scaffold``).

    Raises:
        InputError: no work folder, no splat, a splat that is not 3DGS, an unreadable model or
            image, fewer than :data:`MIN_IMAGES` views, or an output name that is not a bundle's.
    """
    wd = resolve_workdir(scene_or_workdir, work_root)
    out = Path(out_path)
    mode = _archive_mode(out)
    if mode is None:
        raise InputError(f"{out}: a bundle is written as .tar, .tar.gz or .tgz")
    if scaffold is not None:
        from .scaffold_bundle import scaffold_members

        model_files = scaffold_members(scaffold)
    else:
        splat = wd / "splat" / "splat.ply"
        if not splat.is_file():
            raise InputError(f"{splat}: the scene has no trained splat; run the workflow up to training first "
                             f"(snakemake {splat})")
        validate_3dgs(parse_header(splat))
        model_files = [(splat, "point_cloud.ply")]
    aligned = wd / "aligned"
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries([out], patterns=[work_dir_pattern(out, "stage")])  # a killed run's
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.stage.", suffix=".tmp") as stage:
        cams = write_scene_dataset(wd, stage, max_side=max_side)
        if len(cams) < MIN_IMAGES:
            raise InputError(f"{wd}: {len(cams)} registered views, a bundle needs at least {MIN_IMAGES} (every 8th "
                             "frame is held out); capture more photos")
        wmode = mode.replace("r", "w", 1)
        kw = {"compresslevel": gzip_level} if wmode == "w:gz" else {}
        with atomic_path(out) as tmp:
            with tarfile.open(tmp, wmode, **kw) as tar:
                for f, name in model_files:
                    tar.add(f, name, filter=_tarinfo_clean)
                tar.add(Path(stage) / "cameras.json", "cameras.json", filter=_tarinfo_clean)
                for c in cams:
                    tar.add(Path(stage) / "images" / f"{c.img_name}.png", f"images/{c.img_name}.png",
                            filter=_tarinfo_clean)
                sparse = with_sparse and aligned.is_dir()
                if sparse:
                    write_bundle_sparse(aligned, cams, Path(stage) / "sparse" / "0")
                    for f in sorted((Path(stage) / "sparse" / "0").iterdir()):
                        tar.add(f, f"sparse/0/{f.name}", filter=_tarinfo_clean)
    summary = {"bundle": str(out), "workdir": str(wd), "n_images": len(cams),
               "n_frames": len({c.frame or c.img_name for c in cams}), "size_bytes": out.stat().st_size,
               "sparse": bool(sparse), **({"kind": "scaffold", "scaffold": str(scaffold)} if scaffold is not None else {})}
    log.info("bundle %s: %d images of %s, %.1f MB", out, len(cams), wd, summary["size_bytes"] / 1e6)
    return summary
