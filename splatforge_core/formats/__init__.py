"""The splat file formats of the ecosystem: read and write them, convert between them.

=========  =====================================  ==========================================
suffix     format                                 code
=========  =====================================  ==========================================
``.ply``   Inria 3DGS PLY (our canonical file)    :mod:`splatforge_core.splat`
``.splat`` antimatter15 ``.splat`` (SH 0, 32 B)   :mod:`.antisplat` (own code: no library writes it)
``.spz``   Niantic SPZ (glTF KHR splat extension) ``@playcanvas/splat-transform`` (npm, via node)
``.sog``   PlayCanvas SOG (WebP-packed bundle)    ``@playcanvas/splat-transform`` (npm, via node)
=========  =====================================  ==========================================

Every reader returns the dict of :func:`splatforge_core.splat.read_splat_ply` (``means``,
``scales`` (log), ``quats`` (wxyz), ``opacities`` (logit), ``sh0``, ``shN``, ``sh_degree``).
SPZ and SOG use ``@playcanvas/splat-transform`` (MIT, PlayCanvas; its SPZ code follows Niantic's
reference, versions 2-4), run with node from the npm packages ``scripts/install.sh`` vendors: the
PyPI SPZ bindings (``spz`` 0.0.1, ``alspz`` for one tiler) are single early releases, and no PyPI
package writes SOG. SPZ and SOG go through a temporary Inria PLY that splat-transform writes or reads, so our PLY
reader validates whatever the library produced. Before the library sees a file, its container is
checked against its size (:func:`check_spz`, :func:`check_sog`): a hostile count never reaches an
allocation.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Dict

import numpy as np

from ..errors import InputError, SplatForgeError
from ..io import atomic_path
from ..log import get_logger
from ..splat import read_splat_ply, write_splat_ply
from .antisplat import read_antisplat, write_antisplat
from .node import splat_transform

__all__ = ["SUFFIXES", "format_of", "read_any", "write_any", "convert", "check_spz", "check_sog", "cli"]

_LOG = get_logger("formats")

#: Suffix -> format name, the formats :func:`read_any` / :func:`write_any` know.
SUFFIXES = {".ply": "ply", ".splat": "splat", ".spz": "spz", ".sog": "sog"}

#: SPZ header (nianticlabs/spz, src/cc/load-spz.cc ``PackedGaussiansHeader``): magic "NGSP"
#: (0x5053474e), version, numPoints, shDegree, fractionalBits, flags, reserved.
_SPZ_HEADER = struct.Struct("<IIIBBBB")
_SPZ_MAGIC = 0x5053474E
#: deflate cannot compress better than about 1032:1, so N points need at least this many file bytes.
_DEFLATE_MAX_RATIO = 1032
#: SOG (PlayCanvas, splat-transform ``write-sog``): a zip with meta.json and WebP images whose
#: pixels hold one Gaussian each; a count larger than this is refused before decoding.
_MAX_GAUSSIANS = 1 << 28


def format_of(path: str | os.PathLike) -> str:
    """The format name of ``path`` from its suffix (case-insensitive).

    Raises:
        InputError: an unknown suffix (the known ones are listed).
    """
    sfx = Path(path).suffix.lower()
    if sfx not in SUFFIXES:
        raise InputError(f"{path}: unknown splat format {sfx or '(no suffix)'!r}; known: {', '.join(SUFFIXES)}")
    return SUFFIXES[sfx]


def check_spz(path: str | os.PathLike) -> dict:
    """Validate an SPZ file's header against its size before any decoding.

    Two containers (nianticlabs/spz ``load-spz.cc``; splat-transform ``read-spz``): versions 1-3 are
    one gzip stream holding a 16-byte header and the attribute blocks; version 4 is a 32-byte
    plain header (magic, version, numPoints, shDegree, fractionalBits, flags, numStreams, tocOffset)
    and a table of per-attribute zstd streams (16 bytes each: compressed, uncompressed size).
    Checked: magics, version, SH degree 0-3, ``numPoints`` in [1, 2^28] and, for version 4, the
    stream table inside the file with the uncompressed sizes ``numPoints`` implies; for gzip
    files, that the compressed size can hold ``numPoints`` (deflate's ratio is at most ~1032:1).

    Returns:
        ``{"version", "num_points", "sh_degree", "fractional_bits", "flags"}``.

    Raises:
        InputError (naming the file): not SPZ, truncated or inconsistent header or stream table.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(32)
    gz = raw[:2] == b"\x1f\x8b"
    if gz:
        try:
            with gzip.open(path, "rb") as g:
                raw = g.read(_SPZ_HEADER.size)
        except (OSError, EOFError) as e:
            raise InputError(f"{path}: SPZ gzip stream is broken ({e})") from None
    if len(raw) < _SPZ_HEADER.size:
        raise InputError(f"{path}: SPZ header truncated ({len(raw)} of {_SPZ_HEADER.size} bytes)")
    magic, version, n, sh, frac, flags, _ = _SPZ_HEADER.unpack(raw[:_SPZ_HEADER.size])
    if magic != _SPZ_MAGIC:
        raise InputError(f"{path}: not an SPZ file (magic {magic:#x}, expected {_SPZ_MAGIC:#x} 'NGSP')")
    if version not in ((1, 2, 3) if gz else (4,)):
        raise InputError(f"{path}: SPZ version {version} {'in a gzip stream ' if gz else ''}is not supported "
                         "(1-3 gzip, 4 zstd)")
    if sh > 3:
        raise InputError(f"{path}: SPZ SH degree {sh} is not 0-3")
    sizes = [9 * n, n, 3 * n, 3 * n, (3 if version <= 2 else 4) * n] + ([3 * ((sh + 1) ** 2 - 1) * n] if sh else [])
    if not 0 < n <= _MAX_GAUSSIANS:
        raise InputError(f"{path}: SPZ header claims {n} Gaussians (expected 1 to {_MAX_GAUSSIANS}); corrupt")
    if gz:
        if sum(sizes) > size * _DEFLATE_MAX_RATIO:
            raise InputError(f"{path}: SPZ header claims {n} Gaussians ({sum(sizes)} bytes) but the file has only "
                             f"{size} compressed bytes; truncated or corrupt")
    else:
        if len(raw) < 32:
            raise InputError(f"{path}: SPZ v4 header truncated ({len(raw)} of 32 bytes)")
        n_streams, toc = raw[15], struct.unpack_from("<I", raw, 16)[0]
        if n_streams != len(sizes) or toc < 32 or toc + 16 * n_streams > size:
            raise InputError(f"{path}: SPZ v4 stream table ({n_streams} streams at byte {toc}) does not fit the "
                             f"header ({len(sizes)} streams) or the file ({size} bytes); truncated or corrupt")
        with open(path, "rb") as f:
            f.seek(toc)
            table = np.frombuffer(f.read(16 * n_streams), "<u8").reshape(n_streams, 2)
        if int(table[:, 0].sum()) > size - toc - 16 * n_streams or table[:, 1].tolist() != sizes:
            raise InputError(f"{path}: SPZ v4 streams (compressed {table[:, 0].tolist()}, raw {table[:, 1].tolist()}) "
                             f"do not match {n} Gaussians or the file size {size}; truncated or corrupt")
    return {"version": version, "num_points": n, "sh_degree": sh, "fractional_bits": frac, "flags": flags}


def check_sog(path: str | os.PathLike) -> dict:
    """Validate a SOG bundle (a zip with ``meta.json``) before decoding: a readable zip, a
    ``meta.json`` with a ``count`` in [1, 2^28] and every file it names present.

    Returns:
        the parsed ``meta.json``.

    Raises:
        InputError (naming the file): not a zip, no or broken ``meta.json``, a bad count, a
            missing image.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "meta.json" not in names:
                raise InputError(f"{path}: SOG bundle has no meta.json")
            info = z.getinfo("meta.json")
            if info.file_size > 1 << 20:
                raise InputError(f"{path}: SOG meta.json is {info.file_size} bytes (over 1 MiB); corrupt")
            meta = json.loads(z.read("meta.json"))
            _check_sog_images(path, z, meta)
    except zipfile.BadZipFile as e:
        raise InputError(f"{path}: not a SOG file (SOG is a zip bundle: {e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: SOG meta.json is not valid JSON ({e})") from None
    return meta


def _check_sog_images(path: Path, z: zipfile.ZipFile, meta) -> None:
    """The count of a SOG ``meta.json`` against the images it names (their headers only: PIL
    reads a WebP's size without decoding it); :class:`InputError` naming ``path`` otherwise."""
    from PIL import Image

    count = meta.get("count") if isinstance(meta, dict) else None
    if not isinstance(count, int) or not 0 < count <= _MAX_GAUSSIANS:
        raise InputError(f"{path}: SOG meta.json count {count!r} is not an integer in [1, {_MAX_GAUSSIANS}]")
    wanted = sorted({f for v in meta.values() if isinstance(v, dict) for f in v.get("files", []) if isinstance(f, str)})
    missing = [f for f in wanted if f not in z.namelist()]
    if missing or not wanted:
        raise InputError(f"{path}: SOG bundle lacks the images its meta.json names: {missing[:3] or 'none named'}")
    # one pixel per Gaussian in these (the shN palette's centroids image is sized by the palette)
    per_gaussian = sorted({f for k in ("means", "quats", "scales", "sh0") if isinstance(meta.get(k), dict)
                           for f in meta[k].get("files", []) if isinstance(f, str)})
    for name in per_gaussian:
        try:
            with z.open(name) as f, Image.open(f) as im:
                w, h = im.size
        except Exception as e:  # PIL raises several types for a broken image header
            raise InputError(f"{path}: SOG image {name} is not a readable image ({e})") from None
        if w * h < count or w * h > 4 * _MAX_GAUSSIANS:
            raise InputError(f"{path}: SOG image {name} is {w}x{h} pixels, which cannot hold the {count} Gaussians "
                             "meta.json claims; corrupt")


def _via_ply(path: Path, check) -> Dict[str, np.ndarray]:
    check(path)
    with tempfile.TemporaryDirectory(prefix="splatforge-fmt-") as tmp:
        ply = Path(tmp) / "splat.ply"
        try:
            splat_transform(path, ply)
        except SplatForgeError as e:
            if type(e) is SplatForgeError:  # the library refused the file: bad input
                raise InputError(f"{path}: not a readable {path.suffix} file ({e})") from None
            raise
        return read_splat_ply(ply)


def read_any(path: str | os.PathLike) -> Dict[str, np.ndarray]:
    """Read a splat in any format of :data:`SUFFIXES` (by suffix) into the ``read_splat_ply`` dict.

    Raises:
        InputError (naming the file): missing, unknown suffix, or a broken file of its format.
        JSToolMissing: SPZ/SOG without the vendored splat-transform.
    """
    path = Path(path)
    fmt = format_of(path)
    if not path.is_file():
        raise InputError(f"{path}: splat file not found")
    if fmt == "ply":
        return read_splat_ply(path)
    if fmt == "splat":
        return read_antisplat(path)
    return _via_ply(path, check_spz if fmt == "spz" else check_sog)


def write_any(path: str | os.PathLike, splat: Dict[str, np.ndarray]) -> None:
    """Write ``splat`` (the ``read_splat_ply`` dict) in the format of ``path``'s suffix, atomically.

    ``.splat`` keeps SH degree 0 only; SPZ keeps SH up to degree 3 (quantised); SOG keeps SH
    (palette-compressed). SPZ/SOG are written by splat-transform from a temporary PLY.

    Raises:
        InputError: unknown suffix. ValueError: non-finite values. SplatForgeError: the library failed.
    """
    path = Path(path)
    fmt = format_of(path)
    args = (splat["means"], splat["scales"], splat["quats"], splat["opacities"], splat["sh0"], splat.get("shN"))
    if fmt == "ply":
        write_splat_ply(path, *args)
    elif fmt == "splat":
        write_antisplat(path, splat)
    else:
        with tempfile.TemporaryDirectory(prefix="splatforge-fmt-") as tmp:
            ply = Path(tmp) / "splat.ply"
            write_splat_ply(ply, *args)
            with atomic_path(path) as out:
                splat_transform(ply, out)


def convert(src: str | os.PathLike, dst: str | os.PathLike) -> dict:
    """Convert a splat file between formats (each picked by its suffix); returns a summary
    ``{"input", "output", "gaussians", "sh_degree", "bytes_in", "bytes_out"}``.

    Raises:
        InputError / SplatForgeError: see :func:`read_any` and :func:`write_any`.
    """
    splat = read_any(src)
    write_any(dst, splat)
    return {"input": str(src), "output": str(dst), "gaussians": int(len(splat["means"])),
            "sh_degree": int(splat["sh_degree"]), "bytes_in": Path(src).stat().st_size,
            "bytes_out": Path(dst).stat().st_size}


def cli(argv: list[str]) -> int:
    """``splatforge convert IN OUT``: convert between .ply, .splat, .spz and .sog (by suffix)."""
    ap = argparse.ArgumentParser(prog="splatforge convert", description=(
        "Convert a Gaussian splat between formats, each picked by its suffix: .ply (Inria 3DGS), "
        ".splat (antimatter15), .spz (Niantic), .sog (PlayCanvas)."))
    ap.add_argument("input")
    ap.add_argument("output")
    a = ap.parse_args(argv)
    print(json.dumps(convert(a.input, a.output), indent=2))
    return 0
