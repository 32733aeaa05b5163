"""The Gaussian-splat data layout shared by the stages: Inria (3DGS) PLY properties, SH
constants and degree, activations, and the one reader/writer of splat PLYs. No stage logic.

Layout (graphdeco-inria/gaussian-splatting, ``scene/gaussian_model.py``,
``GaussianModel.construct_list_of_attributes`` and ``save_ply``), one binary little-endian
``vertex`` element with float32 properties in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 .. f_rest_{3(K-1)-1}
    opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3

* ``f_dc_*``: degree-0 SH coefficient per colour channel (R, G, B).
* ``f_rest_*``: higher SH coefficients, **channel-major**: the Inria code stores
  ``features_rest`` as [N, K-1, 3] and saves ``features_rest.transpose(1, 2).flatten(1)``,
  so the file holds all K-1 red coefficients, then all green, then all blue
  (K = (degree+1)^2, i.e. 45 f_rest for SH degree 3, 24 for 2, 9 for 1, none for 0).
* ``opacity``: logit of the opacity; ``scale_*``: natural log of the scale (metres);
  ``rot_*``: quaternion in wxyz order (not necessarily normalised); ``nx ny nz``: zeros.

gsplat's ``export_splats`` (format="ply"), SuperSplat, antimatter15/splat and the
other web viewers read this layout.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Dict

import numpy as np
import plyfile

from .errors import InputError
from .io import atomic_path

__all__ = ["SH_C0", "REQUIRED_PROPERTIES", "property_names", "sh_degree_from_rest", "sh_degree_from_names",
           "sigmoid", "write_splat_ply", "read_splat_ply"]

#: Zeroth-order real spherical-harmonic constant, 1 / (2 sqrt(pi)); colour = 0.5 + C0 * f_dc
#: (Inria 3DGS ``utils/sh_utils.py`` ``SH2RGB``).
SH_C0 = 0.28209479177387814

#: The properties every Inria-layout splat has (float32), in file order (Kerbl et al. 2023,
#: graphdeco-inria/gaussian-splatting ``GaussianModel.save_ply``); ``nx ny nz`` and ``f_rest_*`` are optional.
REQUIRED_PROPERTIES = (
    ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    + [f"scale_{i}" for i in range(3)]
    + [f"rot_{i}" for i in range(4)]
)


def property_names(n_rest: int) -> list[str]:
    """The ``vertex`` property names, in file order, of an Inria-layout splat with ``n_rest``
    ``f_rest_*`` columns (``3 * (K - 1)``), normals included."""
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(n_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def sh_degree_from_names(names: list[str]) -> int:
    """SH degree implied by the number of ``f_rest_*`` columns (0, 9, 24, 45 -> 0..3).

    Raises:
        InputError: the count matches no SH degree.
    """
    n_rest = sum(1 for n in names if n.startswith("f_rest_"))
    for d in range(5):
        if 3 * ((d + 1) ** 2 - 1) == n_rest:
            return d
    raise InputError(f"{n_rest} f_rest_* columns do not match any SH degree (expected 0, 9, 24 or 45)")


def sigmoid(logit) -> np.ndarray:
    """Opacity activation: ``1 / (1 + exp(-logit))`` in float64, the logit clipped to [-60, 60]
    (no overflow warning; the result is then exact to float64 rounding)."""
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logit, np.float64), -60, 60)))


def sh_degree_from_rest(n_rest_coeffs: int) -> int:
    """SH degree from the number of higher-order coefficients per channel (K - 1).

    Raises:
        ValueError: ``n_rest_coeffs + 1`` is not a perfect square.
    """
    k = n_rest_coeffs + 1
    d = int(round(math.sqrt(k))) - 1
    if (d + 1) ** 2 != k:
        raise ValueError(f"{n_rest_coeffs} SH rest coefficients per channel is not (d+1)^2-1")
    return d


# --------------------------------------------------------------------------- PLY header and binary body

#: PLY scalar type names (both spellings of the spec) -> numpy kind+size (no byte order).
PLY_TYPES: dict[str, str] = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


#: Caps of the PLY header parser (issue #18: a 2-vertex PLY with 10,000 properties took minutes):
#: header bytes, properties per element (an SH-degree-3 Inria splat has 62, SH 4 has 89) and elements.
MAX_HEADER_BYTES = 1 << 20
MAX_PROPERTIES = 1024
MAX_ELEMENTS = 64


@dataclasses.dataclass
class PlyProperty:
    name: str
    ply_type: str  # as spelled in the header ("float", "float32", ...)
    is_list: bool = False


@dataclasses.dataclass
class PlyElement:
    name: str
    count: int
    properties: list[PlyProperty]
    line_index: int  # index of the "element" line in PlyHeader.lines

    @property
    def has_list(self) -> bool:
        return any(p.is_list for p in self.properties)

    def dtype(self, byte_order: str) -> np.dtype:
        """Packed numpy structured dtype of one record (raises InputError on list props)."""
        if self.has_list:
            raise InputError(f"element {self.name!r} has list properties (no fixed record size)")
        return np.dtype([(p.name, byte_order + PLY_TYPES[p.ply_type]) for p in self.properties])


@dataclasses.dataclass
class PlyHeader:
    """A parsed PLY header that keeps its raw lines for byte-exact rewriting.

    ``lines`` holds each header line as raw bytes *including* its terminator
    (``b"\\n"`` or ``b"\\r\\n"``); ``b"".join(lines) == raw``.
    """

    path: str
    raw: bytes
    lines: list[bytes]
    fmt: str  # "binary_little_endian" | "binary_big_endian" | "ascii"
    elements: list[PlyElement]
    comments: list[str]

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def byte_order(self) -> str:
        return "<" if self.fmt == "binary_little_endian" else ">"

    def element(self, name: str) -> PlyElement:
        for e in self.elements:
            if e.name == name:
                return e
        raise InputError(f"{self.path}: PLY has no {name!r} element")


def _read_header_bytes(path: str | os.PathLike) -> bytes:
    """The header bytes (``ply`` .. ``end_header`` line) of the file at ``path``.

    Reads in 64 KiB chunks and searches only the new bytes for ``end_header`` (linear in the
    header size); at most :data:`MAX_HEADER_BYTES` are read. Raises :class:`InputError`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(4)
        if head[:3] != b"ply" or head[3:4] not in (b"\n", b"\r"):
            raise InputError(f"{path}: not a PLY file (does not start with 'ply')")
        buf = bytearray(head)
        searched = 0
        while True:
            i = buf.find(b"end_header", max(0, searched - len(b"end_header")))
            if i >= 0:
                j = buf.find(b"\n", i)
                if j >= 0:
                    return bytes(buf[: j + 1])
                searched = i  # "end_header" seen, its line end not yet
            else:
                searched = len(buf)
            if len(buf) > MAX_HEADER_BYTES:
                raise InputError(f"{path}: PLY header is larger than {MAX_HEADER_BYTES} bytes (no 'end_header' "
                                 "line in them); not a splat PLY this project reads")
            chunk = f.read(1 << 16)
            if not chunk:
                raise InputError(f"{path}: PLY header has no 'end_header' line (truncated or not a PLY)")
            buf += chunk


def parse_header(path: str | os.PathLike, raw: bytes | None = None) -> PlyHeader:
    """Parse the header of the PLY at ``path`` (or the given raw header bytes).

    Linear in the header size (the grammar of Paul Bourke's PLY 1.0 spec,
    http://paulbourke.net/dataformats/ply/). Returns a :class:`PlyHeader`. Raises
    :class:`InputError` naming the file for a file that is not a PLY, a header over
    :data:`MAX_HEADER_BYTES`, more than :data:`MAX_PROPERTIES` properties in an element or
    :data:`MAX_ELEMENTS` elements, an unknown format or type, a non-ASCII or malformed line,
    or duplicate element / property names.
    """
    path = str(path)
    if raw is None:
        raw = _read_header_bytes(path)
    if len(raw) > MAX_HEADER_BYTES:
        raise InputError(f"{path}: PLY header is larger than {MAX_HEADER_BYTES} bytes")
    lines = raw.splitlines(keepends=True)
    if not lines or lines[0].rstrip(b"\r\n") != b"ply":
        raise InputError(f"{path}: not a PLY file (first line is not 'ply')")
    fmt = None
    elements: list[PlyElement] = []
    comments: list[str] = []
    element_names: set[str] = set()
    prop_names: set[str] = set()  # of the current element
    for k, line in enumerate(lines[1:], start=1):
        try:
            text = line.decode("ascii").rstrip("\r\n")
        except UnicodeDecodeError:
            raise InputError(f"{path}: header line {k + 1} is not ASCII") from None
        tok = text.split()
        if not tok:
            raise InputError(f"{path}: empty header line {k + 1}")
        kw = tok[0]
        if kw == "format":
            if len(tok) != 3 or tok[1] not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise InputError(f"{path}: bad format line {text!r}")
            if tok[2] != "1.0":
                raise InputError(f"{path}: unsupported PLY version {tok[2]!r} (only 1.0)")
            fmt = tok[1]
        elif kw in ("comment", "obj_info"):
            if kw == "comment":
                comments.append(text[len("comment"):].strip())
        elif kw == "element":
            if len(tok) != 3:
                raise InputError(f"{path}: bad element line {text!r}")
            try:
                count = int(tok[2])
            except ValueError:
                raise InputError(f"{path}: element count {tok[2]!r} is not an integer") from None
            if count < 0:
                raise InputError(f"{path}: negative element count in {text!r}")
            if tok[1] in element_names:
                raise InputError(f"{path}: duplicate element name {tok[1]!r}")
            if len(elements) >= MAX_ELEMENTS:
                raise InputError(f"{path}: more than {MAX_ELEMENTS} elements in the PLY header (cap); not a splat PLY")
            element_names.add(tok[1])
            prop_names = set()
            elements.append(PlyElement(tok[1], count, [], k))
        elif kw == "property":
            if not elements:
                raise InputError(f"{path}: property line before any element: {text!r}")
            el = elements[-1]
            if len(tok) == 5 and tok[1] == "list":
                if tok[2] not in PLY_TYPES or tok[3] not in PLY_TYPES:
                    raise InputError(f"{path}: unknown list type in {text!r}")
                prop = PlyProperty(tok[4], tok[3], is_list=True)
            elif len(tok) == 3:
                if tok[1] not in PLY_TYPES:
                    raise InputError(f"{path}: unknown property type {tok[1]!r} in {text!r}")
                prop = PlyProperty(tok[2], tok[1])
            else:
                raise InputError(f"{path}: bad property line {text!r}")
            if prop.name in prop_names:
                raise InputError(f"{path}: duplicate property name {prop.name!r} in element {el.name!r}")
            if len(el.properties) >= MAX_PROPERTIES:
                raise InputError(f"{path}: element {el.name!r} has more than {MAX_PROPERTIES} properties (cap); "
                                 "not a splat PLY this project reads")
            prop_names.add(prop.name)
            el.properties.append(prop)
        elif kw == "end_header":
            if k != len(lines) - 1:
                raise InputError(f"{path}: text after end_header")
        else:
            raise InputError(f"{path}: unknown header keyword {kw!r} on line {k + 1}")
    if fmt is None:
        raise InputError(f"{path}: PLY header has no format line")
    return PlyHeader(path, raw, lines, fmt, elements, comments)


@dataclasses.dataclass
class SplatBody:
    """The binary body of a PLY split around its vertex element.

    ``vertices`` is a structured array (shape [N], packed dtype of the vertex element in
    the file's byte order), a zero-copy view of ``data``; ``prefix``/``suffix`` are the
    raw bytes of the elements before/after it.
    """

    header: PlyHeader
    vertex_index: int
    vertices: np.ndarray
    prefix: bytes
    suffix: bytes


def read_body(header: PlyHeader, data: bytes | memoryview | np.ndarray | None = None) -> SplatBody:
    """Map the binary body of ``header.path`` (or of the whole-file bytes ``data``).

    Raises :class:`InputError` for ASCII files, a missing vertex element, list properties
    in or before the vertex element, a truncated body (the header claims more vertices
    than there are bytes) and trailing bytes the header does not describe (the header
    claims fewer vertices than the body holds).
    """
    path = header.path
    if header.fmt == "ascii":
        raise InputError(
            f"{path}: ASCII PLY bodies are not supported here (the codec cannot restore values "
            "byte for byte from text); convert it to binary_little_endian first, e.g. with plyfile"
        )
    vi = next((i for i, e in enumerate(header.elements) if e.name == "vertex"), None)
    if vi is None:
        raise InputError(f"{path}: PLY has no 'vertex' element")
    el = header.elements[vi]
    if el.has_list:
        raise InputError(f"{path}: the vertex element has list properties; a splat PLY has scalars only")
    bo = header.byte_order
    pre = 0
    for e in header.elements[:vi]:
        if e.has_list:
            raise InputError(f"{path}: element {e.name!r} before 'vertex' has list properties (unsupported)")
        pre += e.count * e.dtype(bo).itemsize
    if data is None:
        data = map_file(path)
    buf = memoryview(data).cast("B") if not isinstance(data, np.ndarray) else data
    total = len(buf)
    dt = el.dtype(bo)
    start = header.size + pre
    need = el.count * dt.itemsize
    if start + need > total:
        have = max(total - header.size - pre, 0)
        raise InputError(
            f"{path}: truncated body: the header says {el.count} vertices x {dt.itemsize} bytes = "
            f"{need} bytes but only {have} bytes follow (header lies about the count, or the file is cut)"
        )
    end = start + need
    tail_known = all(not e.has_list for e in header.elements[vi + 1:])
    if tail_known:
        rest = sum(e.count * e.dtype(bo).itemsize for e in header.elements[vi + 1:])
        if end + rest != total:
            diff = total - (end + rest)
            raise InputError(
                f"{path}: body size does not match the header: {diff:+d} bytes "
                f"({'truncated' if diff < 0 else 'trailing data: the header lists fewer vertices than the body holds'})"
            )
    arr = np.frombuffer(buf, dtype=dt, count=el.count, offset=start) if el.count else np.empty(0, dt)
    return SplatBody(header, vi, arr, bytes(buf[header.size:start]), bytes(buf[end:]))


def map_file(path: str | os.PathLike) -> np.ndarray:
    """The whole file as a read-only uint8 array [size], memory-mapped.

    Mapping the page cache instead of reading into fresh memory saves a copy and the page
    faults of a new 287 MB buffer (measured: those faults cost more than the codec work);
    the structured view taken by :func:`read_body` is then zero-copy (plyfile would copy
    per element). Empty files give an empty array.
    """
    if os.path.getsize(path) == 0:
        return np.empty(0, np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r")


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def write_splat_ply(path: str | os.PathLike, means, scales, quats, opacities, sh0, shN) -> None:
    """Write a splat to ``path`` in the Inria PLY layout (binary, float32), atomically.

    Args:
        path: destination ``.ply``; written to a temporary file and renamed into place.
        means: [N, 3] positions (metres, ENU for this project).
        scales: [N, 3] log-scales (natural log of metres).
        quats: [N, 4] rotations, wxyz.
        opacities: [N] (or [N, 1]) opacity logits.
        sh0: [N, 3] or [N, 1, 3] degree-0 SH coefficients (R, G, B).
        shN: [N, K-1, 3] higher SH coefficients (coefficient-major, channel last, as in
            gsplat) or None / [N, 0, 3] for SH degree 0. Stored channel-major (see module).
        Arrays may be numpy arrays or torch tensors (any float dtype).

    Raises:
        ValueError: inconsistent shapes, K not a square number, or non-finite values.
    """
    means, scales, quats = _np(means), _np(scales), _np(quats)
    opac = _np(opacities).reshape(-1)
    sh0 = _np(sh0).reshape(len(means), 3) if len(means) else _np(sh0).reshape(0, 3)
    n = len(means)
    shN = np.zeros((n, 0, 3), np.float32) if shN is None else _np(shN)
    if shN.ndim != 3 or shN.shape[0] != n or shN.shape[2] != 3:
        raise ValueError(f"shN must be [N, K-1, 3], got {shN.shape}")
    sh_degree_from_rest(shN.shape[1])
    for name, arr, shape in (("means", means, (n, 3)), ("scales", scales, (n, 3)),
                             ("quats", quats, (n, 4)), ("opacities", opac, (n,))):
        if arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    f_rest = shN.transpose(0, 2, 1).reshape(n, -1)  # channel-major, as Inria save_ply
    cols = [means, np.zeros((n, 3), np.float32), sh0, f_rest, opac[:, None], scales, quats]
    data = np.concatenate(cols, axis=1)
    if not np.isfinite(data).all():
        raise ValueError("splat has non-finite values; refusing to write a broken PLY")
    names = property_names(f_rest.shape[1])
    rec = np.empty(n, dtype=[(nm, "<f4") for nm in names])
    for i, nm in enumerate(names):
        rec[nm] = data[:, i]
    el = plyfile.PlyElement.describe(rec, "vertex")
    with atomic_path(path) as tmp:
        plyfile.PlyData([el], text=False, byte_order="<").write(str(tmp))


def _read_ascii_vertices(path: Path, header: PlyHeader) -> np.ndarray:
    """The vertex records [N] of an ASCII PLY (plyfile), after checking that the body has
    exactly one non-empty line per record of every element (else :class:`InputError`)."""
    with open(path, "rb") as f:
        f.seek(header.size)
        n_lines = sum(1 for ln in f if ln.strip())
    want = sum(e.count for e in header.elements)
    if n_lines != want:
        raise InputError(f"{path}: ASCII PLY body has {n_lines} records but the header declares {want} "
                         f"({'truncated' if n_lines < want else 'the header lists fewer records than the body holds'})")
    try:
        return plyfile.PlyData.read(str(path))["vertex"].data
    except Exception as e:  # plyfile raises several types for malformed input
        raise InputError(f"{path}: not a readable PLY file ({e})") from e


def read_splat_ply(path: str | os.PathLike) -> Dict[str, np.ndarray]:
    """Read and validate an Inria-layout splat PLY (the one reader of splat PLYs in the project).

    Layout: ``x y z [nx ny nz] f_dc_0..2 [f_rest_0..] opacity scale_0..2 rot_0..3``; f_rest is
    channel-major in the file (all R coefficients, then G, then B), as written by Inria's
    ``GaussianModel.save_ply`` (graphdeco-inria/gaussian-splatting, scene/gaussian_model.py).

    Returns:
        dict of float32 numpy arrays: ``means`` [N, 3], ``scales`` [N, 3] (log),
        ``quats`` [N, 4] (wxyz, as stored: not normalised), ``opacities`` [N] (logit),
        ``sh0`` [N, 3], ``shN`` [N, K-1, 3] (channel last, like gsplat) and ``sh_degree``
        (Python int).

    The header is parsed by :func:`parse_header` (bounded); a binary body is mapped by
    :func:`read_body`, which checks that its size is exactly what the header's counts say
    (a header that claims fewer or more vertices than the body holds is an error, never a
    silent truncation); an ASCII body is read with plyfile after checking that it has one
    non-empty line per element record.

    Raises:
        InputError (naming the file): the file is missing or not a PLY, its header breaks a
            cap of :func:`parse_header`, its body size does not match the header's counts,
            it has no ``vertex`` element or no vertices, lacks a splat property, has an f_rest count that is no SH
            layout, or holds NaN/Inf values (the column and count are named).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: splat PLY not found")
    try:
        header = parse_header(path)  # bounded: size and property caps, linear time
    except InputError as e:
        raise InputError(f"{path}: not a readable PLY file ({str(e).removeprefix(f'{path}: ')})") from None
    if not any(e.name == "vertex" for e in header.elements):
        raise InputError(f"{path}: PLY has no 'vertex' element, not a Gaussian splat")
    v = _read_ascii_vertices(path, header) if header.fmt == "ascii" else read_body(header).vertices
    names = set(v.dtype.names or ())
    required = list(REQUIRED_PROPERTIES)
    missing = [p for p in required if p not in names]
    if missing:
        raise InputError(f"{path}: not a Gaussian-splat PLY (Inria 3DGS layout), missing properties {missing}")
    n = len(v)
    if n == 0:
        raise InputError(f"{path}: splat is empty (0 Gaussians)")
    n_rest = sum(1 for p in names if p.startswith("f_rest_"))
    rest_names = [f"f_rest_{i}" for i in range(n_rest)]
    gaps = [p for p in rest_names if p not in names]
    if n_rest % 3 or gaps:
        raise InputError(f"{path}: {n_rest} f_rest properties is not an SH layout (3 * ((d+1)^2 - 1) "
                         f"numbered from 0){'; missing ' + str(gaps[:3]) if gaps else ''}")
    try:
        degree = sh_degree_from_rest(n_rest // 3)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    for c in required + rest_names:
        bad = ~np.isfinite(np.asarray(v[c], dtype=np.float64))
        if bad.any():
            raise InputError(f"{path}: column {c} has {int(bad.sum())} NaN/Inf value(s) of {n}")

    def stack(keys):
        return np.stack([np.asarray(v[k], np.float32) for k in keys], axis=1)

    rest = stack(rest_names) if n_rest else np.zeros((n, 0), np.float32)
    return {
        "means": stack(["x", "y", "z"]),
        "scales": stack(["scale_0", "scale_1", "scale_2"]),
        "quats": stack(["rot_0", "rot_1", "rot_2", "rot_3"]),
        "opacities": np.asarray(v["opacity"], np.float32),
        "sh0": stack(["f_dc_0", "f_dc_1", "f_dc_2"]),
        "shN": rest.reshape(n, 3, n_rest // 3).transpose(0, 2, 1).copy(),
        "sh_degree": degree,
    }
