"""PLY header parsing and splat layout validation for the codec.

Why not plyfile for everything: plyfile (the project's PLY library, used by the tests to
prove the outputs are valid PLYs) reads a binary body into a numpy structured array, but
(1) it does not keep the header's raw bytes (comment/obj_info positions, spelling of type
names such as ``float`` vs ``float32``, line endings), which byte-exact ``decompress``
needs, and (2) it copies the body element by element. The codec therefore parses only
the *header* itself (a few hundred bytes, the PLY 1.0 grammar of Paul Bourke's spec,
http://paulbourke.net/dataformats/ply/) and maps a binary body with one
``np.frombuffer`` over a structured dtype: zero-copy, which is what makes the 150 MB/s
target reachable. The parser (:func:`parse_header`, :func:`read_body`, bounded and linear
in the header size) lives in :mod:`splatforge_core.splat`, shared with ``read_splat_ply``,
and is re-exported here.

Supported: ``binary_little_endian`` and ``binary_big_endian`` bodies (values keep their
byte order), elements before/after the vertex element (kept as opaque bytes, the ones
before must have no list properties). Rejected with :class:`InputError`: ASCII bodies,
list properties in the vertex element, duplicate property names, truncated bodies,
trailing bytes the header does not account for, and files that are not PLY.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import InputError
from ..splat import (  # noqa: F401 - the PLY parser lives in the shared splat module; re-exported
    MAX_HEADER_BYTES, MAX_PROPERTIES, PLY_TYPES, REQUIRED_PROPERTIES, PlyElement, PlyHeader, PlyProperty, SplatBody,
    map_file, parse_header, read_body,
)


#: Header comment prefix that records a dropped constant column.
CONSTANT_COMMENT = "constant_field"
#: Header comment that marks a file written by the qat-3dgs preset.
CODEC_COMMENT = "splatforge_codec"
#: Header comment of a qat-3dgs PLY holding the SHA-256 (64 hex digits) of the file without that line.
CHECKSUM_COMMENT = "splatforge_sha256"


def validate_3dgs(header: PlyHeader) -> None:
    """Check that the vertex element has the columns of a 3DGS splat (float32).

    Raises :class:`InputError` naming the missing columns; a Scaffold-GS PLY
    (``f_anchor_feat_*``, ``f_offset_*``) is rejected with a message naming the
    ``qat-scaffold`` preset.
    """
    el = header.element("vertex")
    names = [p.name for p in el.properties]
    if any(n.startswith("f_anchor_feat") or n.startswith("f_offset") for n in names):
        raise InputError(
            f"{header.path}: this is a Scaffold-GS anchor PLY (f_anchor_feat_*/f_offset_* columns); "
            "this preset handles vanilla 3DGS only; use the 'qat-scaffold' preset for Scaffold-GS"
        )
    missing = [n for n in REQUIRED_PROPERTIES if n not in names]
    if missing:
        raise InputError(f"{header.path}: not a 3DGS splat PLY, missing columns: {', '.join(missing)}")
    types = {p.name: p.ply_type for p in el.properties}
    bad = [f"{n} ({types[n]})" for n in REQUIRED_PROPERTIES if PLY_TYPES[types[n]] != "f4"]
    if bad:
        raise InputError(f"{header.path}: 3DGS columns must be float32, got: {', '.join(bad)}")


def bits_hex(value: np.ndarray) -> str:
    """IEEE-754 / integer bit pattern of one scalar as hex, most significant byte first.

    The hex string is big-endian (as ``struct.pack('>f', v).hex()``) whatever the byte
    order of the file: float32 1.0 -> ``3f800000``, -0.0 -> ``80000000``. 2 hex digits
    per byte (8 for float32). Only bytes are reordered, so NaN payloads survive.
    """
    v = np.asarray(value)
    raw = v.tobytes()
    little = v.dtype.byteorder == "<" or (v.dtype.byteorder == "=" and np.little_endian)
    return (raw[::-1] if little and v.dtype.itemsize > 1 else raw).hex()


def hex_to_bytes(hexstr: str, dtype: np.dtype) -> bytes:
    """Inverse of :func:`bits_hex`: the value's bytes in ``dtype``'s byte order."""
    try:
        be = bytes.fromhex(hexstr)
    except ValueError:
        raise InputError(f"constant {hexstr!r} is not hex") from None
    if len(be) != dtype.itemsize:
        raise InputError(f"constant {hexstr!r} has {len(be)} bytes, {dtype} needs {dtype.itemsize}")
    little = dtype.byteorder == "<" or (dtype.byteorder in "=|" and np.little_endian)
    return be[::-1] if little and dtype.itemsize > 1 else be


def stored_header(path: str | os.PathLike, meta: dict) -> PlyHeader:
    """Parse the PLY header a container stores under ``meta["ply_header"]`` (bounded parser).

    Raises :class:`InputError` naming the file when it is missing, not a string, not ASCII
    or not a valid binary PLY header with a scalar ``vertex`` element.
    """
    raw = meta.get("ply_header")
    if not isinstance(raw, str):
        raise InputError(f"{path}: container has no stored PLY header; re-encode it from the source splat")
    try:
        b = raw.encode("ascii")
    except UnicodeEncodeError:
        raise InputError(f"{path}: the stored PLY header has non-ASCII characters (edited?); "
                         "re-encode it from the source splat") from None
    hdr = parse_header(str(path), raw=b)
    if hdr.fmt == "ascii" or hdr.element("vertex").has_list:
        raise InputError(f"{path}: the stored PLY header is not a binary splat header; re-encode it from the source splat")
    return hdr


def check_constant(path: str | os.PathLike, name: str, hexstr, dtype: np.dtype) -> bytes:
    """The bytes of a stored constant (hex of its bits, :func:`bits_hex`), checked: a string
    of exactly ``2 * dtype.itemsize`` hex digits, else :class:`InputError` naming file and column."""
    if not isinstance(hexstr, str):
        raise InputError(f"{path}: constant of column {name!r} is {hexstr!r}, not a hex string; "
                         "re-encode it from the source splat")
    try:
        return hex_to_bytes(hexstr, dtype)
    except InputError as e:
        raise InputError(f"{path}: column {name!r}: {e}; re-encode it from the source splat") from None
