"""Codec preset registry: preset name -> :class:`Preset` (encoder, decoder, lossless, suffix, options).

Every function of the codec that depends on the preset (``main``, ``decompress``, ``check_preset``,
the CLI help, the config check of ``compress.preset``) looks it up here, so a new preset is one
module (with an ``encode(in_ply, out_path, opts, *, header, data)`` and a ``decode(path)``, see
:class:`Preset`) plus one entry in :data:`PRESETS`.

The preset's name is also what its output records as its codec: the ``splatforge_codec`` header
comment of a ``qat-3dgs`` PLY, the ``codec`` key of an ``.sfz`` container's metadata
(:mod:`.container`); :func:`preset_for_file` uses it to find the decoder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError
from . import entropy, lossless, qat_bundle, qat_lowbit, quantised
from . import scaffold_bundle
from ..scaffold.layout import validate_anchor_header
from .container import container_codec, is_container
from .layout import CODEC_COMMENT, parse_header


@dataclass(frozen=True)
class Preset:
    """One codec preset.

    Attributes:
        name: the preset's name (config ``compress.preset``, CLI ``--preset``) and the codec
            name its outputs carry.
        lossless: the output decodes to the input file byte for byte (the encoder checks this
            before the output is renamed into place); False: the report's ``delta_psnr_db``
            comes from the encoder's extra fields.
        suffix: the natural suffix of the output file, ``".ply"`` (a PLY every reader opens) or
            ``".sfz"`` (a :mod:`.container`). Informative only: the workflow writes
            ``results/{scene}.compressed.ply`` whatever the preset.
        description: one line for ``splatforge compress --help``.
        encode: ``encode(in_ply, out_path, opts, *, header, data) -> (EncodeResult, extra)``
            with ``opts`` a :class:`~splatforge_core.codec.CodecOptions`, ``header`` / ``data``
            the parsed header and the memory-mapped input (:func:`.layout.parse_header`,
            :func:`.layout.map_file`); ``extra`` is merged into the report.
        decode: ``decode(path) -> list`` of buffers (bytes or uint8-viewable arrays) that,
            written one after the other, are the restored PLY.
        options: the :class:`~splatforge_core.codec.CodecOptions` fields the preset reads.
        check: container presets: ``check(path, meta) -> PlyHeader`` validates the metadata of
            a container whose checksum passed (:func:`.container.verify_container`) without
            decoding it (``splatforge info``); PLY presets with metadata of their own
            (``qat-3dgs-bundle``): ``check(path, header) -> PlyHeader`` verifies the checksum and
            that metadata. Raises :class:`InputError`.
        needs_bundle: the preset retrains and takes a bundle (:mod:`.bundle`: splat + cameras +
            images), not a PLY: :func:`~splatforge_core.codec.main` validates and extracts it and
            calls ``encode(bundle.ply, out_path, opts, *, header, data, bundle)`` with the
            :class:`.bundle.Bundle`; the workflow packs one (rule ``bundle``) as the input.
        validate: ``validate(header)`` checks the input's layout before encoding (raises
            :class:`InputError` naming the file); None: the 3DGS layout
            (:func:`.layout.validate_3dgs`).
        bundle_kind: what a bundle preset's bundle holds, ``"3dgs"`` or ``"scaffold"``
            (:func:`.bundle.open_bundle`'s ``kind``).
    """

    name: str
    lossless: bool
    suffix: str
    description: str
    encode: Callable[..., tuple[Any, dict[str, Any]]]
    decode: Callable[[str | os.PathLike], list]
    options: tuple[str, ...] = ()
    check: Callable[..., Any] | None = None
    needs_bundle: bool = False
    validate: Callable[..., Any] | None = None
    bundle_kind: str = "3dgs"

    @property
    def container(self) -> bool:
        """True when the output is an ``.sfz`` container (else a PLY)."""
        return self.suffix == ".sfz"


#: Presets this version implements, in the order the help lists them.
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(lossless.PRESET, True, ".ply",
               "lossless; a valid PLY; bit-identical constant columns move to header comments",
               lossless.encode_preset, lossless.decode_ply_parts, ("keep_required",)),
        Preset(entropy.PRESET, True, ".sfz",
               "lossless .sfz container: constants + byte-plane shuffle + zstd per column",
               entropy.encode_preset, entropy.decode_sfz_parts, ("zstd_level",), entropy.validate_meta),
        Preset(quantised.PRESET, False, ".sfz",
               "lossy .sfz container: quantised positions/scales/rotations/opacity/SH + zstd",
               quantised.encode_quantised, quantised.decode_quantised_parts,
               ("zstd_level", "position_bits", "sh_bits", "rotation_bits", "evaluate_psnr", "psnr_views",
                "psnr_size"), quantised.validate_meta),
        Preset(qat_bundle.PRESET, False, ".ply",
               "lossy, needs a bundle (splat + cameras + images): int8 f_rest after a quantisation-aware finetune; "
               "a valid PLY",
               qat_bundle.encode_preset, qat_bundle.decode_parts,
               ("sh_bits", "finetune_iters", "finetune_max_side", "keep_required"), qat_bundle.check, needs_bundle=True),
        Preset(qat_lowbit.PRESET, False, ".sfz",
               "lossy, needs a bundle: few-bit SH per band + SPZ-like positions/scales/rotations, finetuned on the "
               "encoder's own grids; .sfz",
               qat_lowbit.encode_preset, quantised.decode_quantised_parts,
               ("finetune_iters", "finetune_max_side", "position_bits", "rotation_bits"), quantised.validate_meta,
               needs_bundle=True),
        Preset("qat-scaffold", True, ".ply",
               "lossless on Scaffold-GS anchor PLYs; constant columns (normals, opacity, rot) move to header comments",
               lossless.encode_scaffold_preset, lossless.decode_ply_parts, ("keep_required",),
               validate=validate_anchor_header),
        Preset(scaffold_bundle.PRESET, False, ".ply",
               "lossy, needs a Scaffold-GS bundle (anchor PLY + MLPs + cfg_args + cameras + images): int8 anchor "
               "features after a quantisation-aware finetune; a valid anchor PLY",
               scaffold_bundle.encode_preset, scaffold_bundle.decode_parts,
               ("finetune_iters", "finetune_max_side", "keep_required"), scaffold_bundle.check, needs_bundle=True,
               bundle_kind="scaffold"),
    )
}

#: Presets named in the roadmap but not implemented yet (rejected with this reason).
PLANNED: dict[str, str] = {
    "qat-int8": "int8 quantisation-aware finetuning is the preset qat-3dgs-bundle (it needs a bundle: splat + cameras + images)",
}

#: PLY-output presets are told apart by the ``splatforge_codec`` comment of the header; the first
#: (``qat-3dgs``) also decodes PLYs without one (its decoder rejects them with a clear error).
_PLY_PRESETS = [p for p in PRESETS.values() if not p.container]


def check_preset(preset: str) -> None:
    """Raise :class:`InputError` for an unknown or not yet implemented preset (lists the known ones)."""
    if preset in PRESETS:
        return
    known = ", ".join(PRESETS)
    if preset in PLANNED:
        raise InputError(f"preset {preset!r} is not implemented yet: {PLANNED[preset]}. Available presets: {known}")
    raise InputError(f"unknown preset {preset!r}. Available presets: {known}")


def get_preset(preset: str) -> Preset:
    """The registry entry of ``preset``; :class:`InputError` (via :func:`check_preset`) otherwise."""
    check_preset(preset)
    return PRESETS[preset]


def preset_for_file(path: str | os.PathLike) -> Preset:
    """The preset that wrote ``path``: a container's ``codec`` key, else the PLY-output preset
    its ``splatforge_codec`` header comment names (none: ``qat-3dgs``, whose decoder rejects a
    PLY without its header comment).

    Raises:
        InputError: a container whose codec no preset of the registry has.
    """
    path = Path(path)
    if is_container(path):
        codec = container_codec(path)
        p = PRESETS.get(codec) if codec else None
        if p is None or not p.container:
            raise InputError(f"{path}: unknown codec {codec!r} in container")
        return p
    try:
        comments = parse_header(path).comments
    except InputError:
        comments = []
    for c in comments:
        tok = c.split()
        if tok[:1] == [CODEC_COMMENT] and len(tok) > 1 and tok[1] in PRESETS and not PRESETS[tok[1]].container:
            return PRESETS[tok[1]]
    return PRESETS[lossless.PRESET]
