"""Splat PLY codec: lossless and quantised compression of 3D Gaussian splat PLYs.

Presets (registry ``PRESETS`` in :mod:`.presets`: name -> encoder, decoder, lossless, suffix, options):

* ``qat-3dgs`` (:mod:`.lossless`): lossless, output is still a PLY that every reader opens;
  bit-identical constant columns (the normals of Inria PLYs) move into header comments.
* ``lossless-zstd`` (:mod:`.entropy`): lossless ``.sfz`` container, constants + byte-plane
  shuffled columns compressed with zstd.
* ``quantised`` (:mod:`.quantised`): lossy ``.sfz`` container in the spirit of SPZ.
* ``qat-scaffold`` (:mod:`.lossless` on a Scaffold-GS anchor PLY): lossless PLY, the constant
  normals / opacity / rot columns of the anchors move into header comments.
* ``qat-bundle`` (:mod:`.scaffold_bundle`): a Scaffold-GS bundle in, an anchor PLY with int8
  features after a quantisation-aware finetune out.

Every lossless encoder decodes its own output in-process and compares it bit for bit with
the source before the output is renamed into place (:func:`splatforge_core.io.atomic_path`);
a failure deletes it and raises. ``main`` is what the Snakemake rule calls.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import remove_stale_temporaries, write_json
from ..log import get_logger
from ..options import build_options
from .container import is_container, verify_container
from ..splat import sh_degree_from_names
from .layout import map_file, parse_header, read_body, validate_3dgs
from .presets import PLANNED, PRESETS, Preset, check_preset, get_preset, preset_for_file

__all__ = ["CodecOptions", "PLANNED", "PRESETS", "Preset", "check_preset", "decompress", "get_preset", "info", "main",
           "preset_for_file"]

log = get_logger("codec")


@dataclasses.dataclass
class CodecOptions:
    """Options of :func:`main` (config section ``compress``).

    keep_required: qat-3dgs never drops the 14 required 3DGS columns even when constant,
        so viewers still find them (default True).
    zstd_level: zstd level of the .sfz tiers, 1..22 (default None: 3 for lossless-zstd,
        16 for quantised, whose arrays are ~10x smaller than the PLY so a slower level is
        affordable; 16 is the fastest level that reaches 10x on inria3dgs_sh3_9080).
    position_bits: quantised tier: bits per position coordinate, 8..24 (default 16).
    sh_bits: bits per higher-order SH coefficient, 4..8 (default None: 4 for quantised, as SPZ;
        8 for qat-3dgs-bundle, whose PLY stores them as char).
    rotation_bits: quantised tier: bits per smallest-three quaternion component, 6..12 (default 8).
    evaluate_psnr: quantised tier: render original and decoded splat and report PSNR (default True).
    psnr_views: number of orbit cameras for the PSNR evaluation (default 8).
    psnr_size: width = height of the PSNR renders in pixels (default 256).
    bundle_max_bytes: presets that take a bundle: cap on the bundle archive's size on disk in
        bytes (default 1 GB; :func:`.bundle.open_bundle`).
    bundle_max_unpacked: presets that take a bundle: cap on its members' total unpacked size in
        bytes (default 16 GiB).
    finetune_iters: qat-3dgs-bundle and qat-bundle: finetune steps, 0..100000 (default None: 5000 on CUDA,
        40 on CPU, the configuration measured in benchmarks/results/qat.md).
    finetune_max_side: qat-3dgs-bundle and qat-bundle: longer image side of the finetune and the held-out
        evaluation in pixels, 16..16384 (default None: the bundle images' own resolution; a
        lower one finetunes the splat for that resolution and loses PSNR at its own, see qat_bundle).
    """

    keep_required: bool = True
    zstd_level: int | None = field(default=None, metadata={"min": 1, "max": 22})
    position_bits: int = field(default=16, metadata={"min": 8, "max": 24})
    sh_bits: int | None = field(default=None, metadata={"min": 4, "max": 8})
    rotation_bits: int = field(default=8, metadata={"min": 6, "max": 12})
    evaluate_psnr: bool = True
    psnr_views: int = field(default=8, metadata={"min": 1})
    psnr_size: int = field(default=256, metadata={"min": 16, "max": 8192})
    bundle_max_bytes: int = field(default=1_000_000_000, metadata={"min": 1})
    bundle_max_unpacked: int = field(default=16 << 30, metadata={"min": 1})
    finetune_iters: int | None = field(default=None, metadata={"min": 0, "max": 100000})
    finetune_max_side: int | None = field(default=None, metadata={"min": 16, "max": 16384})

    @classmethod
    def from_dict(cls, d: dict | None) -> "CodecOptions":
        """Build from a plain dict; unknown keys or values out of range raise :class:`InputError`."""
        o = build_options(cls, d, "compress")
        if o.zstd_level is not None and not 1 <= o.zstd_level <= 22:
            raise InputError(f"compress options: zstd_level {o.zstd_level} not in 1..22")
        if not 8 <= o.position_bits <= 24:
            raise InputError(f"compress options: position_bits {o.position_bits} not in 8..24")
        if o.sh_bits is not None and not 4 <= o.sh_bits <= 8:
            raise InputError(f"compress options: sh_bits {o.sh_bits} not in 4..8")
        if not 6 <= o.rotation_bits <= 12:
            raise InputError(f"compress options: rotation_bits {o.rotation_bits} not in 6..12")
        if o.finetune_iters is not None and not 0 <= o.finetune_iters <= 100000:
            raise InputError(f"compress options: finetune_iters {o.finetune_iters} not in 0..100000")
        if o.finetune_max_side is not None and not 16 <= o.finetune_max_side <= 16384:
            raise InputError(f"compress options: finetune_max_side {o.finetune_max_side} not in 16..16384")
        return o


#: Splat formats of the ecosystem the codec takes as input (#16): read by :mod:`splatforge_core.formats`
#: (antimatter15 ``.splat``, Niantic SPZ, PlayCanvas SOG) and encoded as the Inria PLY they convert to.
IMPORTED_SUFFIXES = (".splat", ".spz", ".sog")


def _main_imported(in_path: Path, out_path: Path, report_path, preset: str, options: dict | None) -> dict[str, Any]:
    """:func:`main` for a ``.splat``/``.spz``/``.sog`` input: converted (:func:`splatforge_core.formats.convert`,
    which validates the file before it allocates) to an Inria PLY in a temporary folder beside
    ``out_path``, encoded, the folder removed. The report's ``input`` is ``in_path``; its sizes and
    ``ply_save_pct`` are against the converted PLY (``imported_ply_bytes``; ``imported_bytes``: the file given)."""
    from ..formats import convert

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=f".{out_path.name}.import.", suffix=".tmp") as d:
        ply = Path(d) / f"{in_path.stem}.ply"
        convert(in_path, ply)
        rep = main(ply, out_path, None, preset, options, _importing=True)  # keeps this folder
    rep.update(input=str(in_path), imported_from=in_path.suffix.lower().lstrip("."),
               imported_bytes=in_path.stat().st_size, imported_ply_bytes=rep.get("size_bytes_in"))
    if report_path:
        write_json(report_path, rep)
    return rep


def main(
    in_ply: str | os.PathLike,
    out_path: str | os.PathLike,
    report_path: str | os.PathLike | None,
    preset: str,
    options: dict | None = None,
    *,
    _importing: bool = False,
) -> dict[str, Any]:
    """Compress the splat PLY ``in_ply`` into ``out_path`` with ``preset``; return the report.

    A ``.splat``, ``.spz`` or ``.sog`` file (:data:`IMPORTED_SUFFIXES`) is converted to an Inria PLY
    first (:func:`_main_imported`).

    A preset that needs a bundle (:attr:`.presets.Preset.needs_bundle`) takes a bundle as
    ``in_ply`` (``.tar``, ``.tar.gz``/``.tgz`` or a folder, :mod:`.bundle`): it is validated and
    extracted into a temporary folder beside ``out_path`` (removed afterwards; caps: options
    ``bundle_max_bytes``, ``bundle_max_unpacked``) and the encoder gets its PLY plus ``bundle=``.
    Other presets take a PLY; a bundle given to them, or a PLY given to a bundle preset, is an
    :class:`InputError` saying what to pass instead.

    The report (also written as JSON to ``report_path`` when given) has: status, preset,
    lossless, size_bytes_in, size_bytes_out, ply_save_pct (percent of the input size saved),
    delta_psnr_db (0.0 for lossless presets, by construction: the self-check proved the
    output decodes to the identical bytes), n_vertices, sh_degree, constants_detected
    (column names), constant_values ({name: {"hex", "value"}}), bitexact_roundtrip,
    wall_seconds, plus input/output paths.

    Raises :class:`InputError` for bad input or options, :class:`.lossless.RoundTripError`
    when a lossless self-check fails (no output is left behind in either case).
    """
    t0 = time.perf_counter()
    spec = get_preset(preset)
    opts = CodecOptions.from_dict(options)
    in_ply, out_path = Path(in_ply), Path(out_path)
    if in_ply.resolve() == out_path.resolve():
        raise InputError(f"{in_ply}: output path must differ from the input")
    from .bundle import is_bundle_path, open_bundle, work_dir_pattern

    # a killed run's temporaries: output, report, and a bundle's extraction folder
    remove_stale_temporaries([out_path, *([Path(report_path)] if report_path else [])],
                             patterns=[work_dir_pattern(out_path, "bundle"),
                                       *([] if _importing else [work_dir_pattern(out_path, "import")])])

    if not spec.needs_bundle and in_ply.suffix.lower() in IMPORTED_SUFFIXES:
        return _main_imported(in_ply, out_path, report_path, preset, options)

    if spec.needs_bundle:
        if not is_bundle_path(in_ply):
            raise InputError(f"{in_ply}: preset {preset!r} retrains the splat and needs a bundle (splat + cameras + "
                             "images: .tar, .tar.gz or a folder), not a PLY; make one with "
                             "`splatforge bundle SCENE_OR_WORKDIR out.tar.gz`")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=f".{out_path.name}.bundle.", suffix=".tmp") as work:
            bundle = open_bundle(in_ply, work, max_bytes=opts.bundle_max_bytes, max_unpacked=opts.bundle_max_unpacked,
                                 kind=spec.bundle_kind)
            header = bundle.header
            data = map_file(bundle.ply)
            res, extra = spec.encode(bundle.ply, out_path, opts, header=header, data=data, bundle=bundle)
            del data
    else:
        if in_ply.is_dir() or is_bundle_path(in_ply):
            raise InputError(f"{in_ply}: preset {preset!r} takes a splat PLY, not a bundle; pass the bundle's "
                             "point_cloud.ply, or use a preset that needs a bundle")
        header = parse_header(in_ply)
        (spec.validate or validate_3dgs)(header)
        data = map_file(in_ply)
        res, extra = spec.encode(in_ply, out_path, opts, header=header, data=data)
    names = [p.name for p in header.element("vertex").properties]
    try:
        deg: int | None = sh_degree_from_names(names)
    except InputError:
        deg = None
    lossless = spec.lossless
    report: dict[str, Any] = {
        "status": "ok",
        "preset": preset,
        "lossless": lossless,
        "input": str(in_ply),
        "output": str(out_path),
        "size_bytes_in": res.size_in,
        "size_bytes_out": res.size_out,
        "ply_save_pct": round(100.0 * (1.0 - res.size_out / res.size_in), 4),
        "compression_ratio": round(res.size_in / res.size_out, 4),
        "delta_psnr_db": 0.0 if lossless else extra.get("delta_psnr_db"),
        "n_vertices": res.n_vertices,
        "sh_degree": deg,
        "constants_detected": list(res.constants),
        "constant_values": res.constant_values,
        "bitexact_roundtrip": lossless,  # lossless tiers raise instead of returning when not bit-exact
        "wall_seconds": round(time.perf_counter() - t0, 4),
    }
    report.update({k: v for k, v in extra.items() if k != "delta_psnr_db"})
    if report_path:
        write_json(report_path, report)
    return report


def decompress(in_path: str | os.PathLike, out_ply: str | os.PathLike) -> dict[str, Any]:
    """Restore a PLY from a codec output (``qat-3dgs`` PLY or ``.sfz`` container).

    Lossless tiers reproduce the original file byte for byte; the quantised tier writes a
    float32 Inria-layout PLY of the dequantised values. Returns a small report dict.
    Raises :class:`InputError` for a file no preset wrote.
    """
    from ..io import atomic_path

    t0 = time.perf_counter()
    in_path = Path(in_path)
    if not in_path.is_file():
        raise InputError(f"{in_path}: no such file")
    spec = preset_for_file(in_path)
    codec = spec.name
    out = spec.decode(in_path)
    from .lossless import _u8

    size = 0
    with atomic_path(out_ply) as tmp:
        with open(tmp, "wb") as f:
            for part in out:
                u = _u8(part)
                f.write(memoryview(u))
                size += u.size
    return {
        "status": "ok",
        "codec": codec,
        "input": str(in_path),
        "output": str(out_ply),
        "size_bytes_in": in_path.stat().st_size,
        "size_bytes_out": size,
        "wall_seconds": round(time.perf_counter() - t0, 4),
    }


def info(path: str | os.PathLike) -> dict[str, Any]:
    """Describe a splat PLY or codec output: format, vertex count, columns, SH degree, codec.

    The file is checked first: a container's checksum, block table and metadata, a
    ``qat-3dgs`` PLY's checksum, a PLY body's size against the header's counts.
    Raises :class:`InputError` naming the file for a file that is neither, or is broken
    (truncated, extended, damaged or edited).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    out_body = None
    if is_container(path):
        _, meta, _ = verify_container(path)
        spec = preset_for_file(path)
        if spec.check is None:
            raise InputError(f"{path}: codec {spec.name!r} has no metadata check")
        hdr = spec.check(path, meta)
        codec = meta["codec"]
        consts = [c["name"] for c in meta.get("columns", []) if c.get("constant") is not None]
    else:
        hdr = parse_header(path)
        codec = None
        consts = []
        from .layout import CODEC_COMMENT, CONSTANT_COMMENT

        for c in hdr.comments:
            tok = c.split()
            if tok[:1] == [CODEC_COMMENT]:
                codec = tok[1] if len(tok) > 1 else "?"
            if tok[:1] == [CONSTANT_COMMENT] and len(tok) >= 3:
                consts.append(tok[1])
        if codec is not None:
            if codec not in PRESETS or PRESETS[codec].container:
                raise InputError(f"{path}: unknown codec {codec!r} in the PLY header")
            if PRESETS[codec].check is not None:  # a PLY preset with metadata of its own (qat-3dgs-bundle)
                PRESETS[codec].check(path, hdr)
            else:
                from .lossless import verify_checksum

                verify_checksum(hdr)
        if hdr.fmt == "ascii":
            out_body = "not checked (ASCII body)"
        else:
            read_body(hdr)  # raises InputError for a truncated body or one the header does not describe
            out_body = "ok"
    elements = [
        {"name": e.name, "count": e.count, "properties": [f"{p.ply_type} {p.name}" for p in e.properties]}
        for e in hdr.elements
    ]
    out: dict[str, Any] = {"path": str(path), "format": hdr.fmt, "codec": codec, "elements": elements}
    if out_body:
        out["body"] = out_body
    try:
        names = [p.name for p in hdr.element("vertex").properties] + consts
        out["n_vertices"] = hdr.element("vertex").count
        # a Scaffold-GS anchor PLY has no SH (its colours come from the colour MLP)
        out["sh_degree"] = None if any(n.startswith("f_anchor_feat_") for n in names) else sh_degree_from_names(names)
    except InputError as e:
        out["sh_degree"] = None
        out["layout_problem"] = str(e)
    out["constant_fields"] = consts
    return out
