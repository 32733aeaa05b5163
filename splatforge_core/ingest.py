"""Ingest stage: read the GPS (EXIF, else XMP) of a folder of photos into ``manifest.json``.

What it does
------------
* Lists the input folder **non-recursively** (sub-folders are reported as skipped, not
  searched), in sorted file-name order (Python ``sorted`` on the names, i.e. code-point order).
* Keeps files named ``*.jpg`` / ``*.jpeg`` in any letter case; every other entry gets a
  ``skipped`` record with its reason.
* Hashes each file (sha256 of its bytes), reads its JPEG frame header (:func:`read_jpeg_frame`)
  and checks the size against ``max_pixels`` **before** decoding anything, then parses the
  header segments with Pillow and decodes the EXIF block with ``piexif``. The JPEG files are
  never copied or modified.
* With ``check_decode`` (default) each JPEG is fully decoded (Pillow, ``LOAD_TRUNCATED_IMAGES``
  off: a truncated file raises) and its bottom rows are checked for libjpeg's grey fill (a
  header claiming more pixels than the data holds decodes without error otherwise), so such a
  file is caught and named here and not, much later, in projection or SfM.
* Detects 360 equirectangular panoramas from the GPano XMP ``ProjectionType`` (Google Photo
  Sphere XMP metadata, https://developers.google.com/streetview/spherical-metadata), or, when
  no GPano data is present, from a 2:1 aspect ratio.
* Reads the GPS position from EXIF, or, when EXIF has none (or its EXIF block is unreadable),
  from XMP (:func:`xmp_gps`: ``exif:GPSLatitude``/``exif:GPSLongitude``/``exif:GPSAltitude`` as
  editors and some 360 cameras write them, or DJI's ``drone-dji:GpsLatitude``/``GpsLongitude``/
  ``AbsoluteAltitude``). EXIF wins when both have one; each image records ``gps_source``
  (``"exif"`` or ``"xmp"``). The XMP packet is parsed with ``defusedxml`` (:func:`parse_xmp`),
  DTDs and entity declarations forbidden and its size bounded.
* GPS outliers (:func:`gps_outliers`: robust distance from the median position, altitude far
  from the median altitude or physically absurd) are left out like any unusable fix. The first
  fix of the remaining (inlier) set in sorted file-name order is the origin; every fix is
  converted to local ENU metres with :func:`geodetic_to_enu`.
* Writes ``manifest.json`` (schema in ``docs/formats.md``) atomically; on any error nothing
  is written.

Decisions on bad input (each covered by ``tests/test_ingest.py``)
-----------------------------------------------------------------
* no GPS / unusable GPS (missing, (0, 0), out of range, ``GPSStatus`` void, missing hemisphere
  reference), in EXIF or, when EXIF has none, in XMP (an unreadable XMP value such as
  ``exif:GPSLatitude="abc"``, or a missing hemisphere): skipped with the reason, or kept with
  ``null`` position when ``require_gps`` is false;
* an XMP packet with a DTD, entity declarations or external references (an "XML bomb"; XMP
  needs none of them) or larger than 1 MiB: the file is skipped with the reason ("XMP metadata
  refused"), refused at the declaration without expanding anything. An XMP packet that is merely
  not well-formed XML is ignored (GPano falls back to a pattern search; no XMP GPS);
* not a JPEG although named ``.jpg`` (magic bytes: PNG, text...), zero bytes, corrupt header,
  truncated data, a header whose size the data cannot fill, more than ``max_pixels`` pixels,
  12-bit/lossless/hierarchical JPEG: skipped with the reason (a warning naming the file); an
  :class:`~splatforge_core.errors.InputError` is raised only if fewer than ``min_images``
  usable images remain, and it lists every skipped file with its reason;
* JPEG data in a file not named ``.jpg``/``.jpeg``: skipped with "rename it to .jpg";
* greyscale and CMYK JPEGs: kept (``color_mode`` ``"L"``/``"CMYK"``, with a warning); the later
  stages read images with OpenCV ``IMREAD_COLOR``, which gives 3-channel colour for both;
* exact duplicates (same sha256 of the bytes, any names): the first in sorted order is kept,
  later ones are skipped with ``duplicate of <name> (identical content ...)`` and listed in the
  manifest's ``duplicates``; a held-out frame whose copy is in training would inflate the
  held-out metrics;
* GPS outliers: skipped (or kept with ``null`` position when ``require_gps`` is false) with the
  numbers in the reason, and listed in the manifest's ``gps_outliers``;
* duplicate names: two files whose *stems* are equal ignoring letter case (``a.jpg``,
  ``A.JPG``, ``a.jpeg``) are duplicates, because downstream stages name frames and images by
  the stem and because the names collide on case-insensitive file systems. The first one that
  is usable (sorted order) is kept, later ones are skipped with ``duplicate of <name>``;
* mixed equirectangular and perspective input: ``InputError`` listing both groups unless
  ``allow_mixed`` (then ``camera_kind`` is ``"mixed"`` and each image carries its ``kind``);
* fewer usable images than ``min_images``: ``InputError`` naming the folder and the counts.

Altitude
--------
EXIF ``GPSAltitude`` is metres above mean sea level (orthometric height ``H``, a GNSS
receiver's geoid model), with ``GPSAltitudeRef = 1`` meaning below sea level (negative here).
It is used as-is as the WGS84 ellipsoidal height ``h``; the true value is ``h = H + N`` with
``N`` the geoid undulation (about +40 m in southern Sweden, +45 m in the Netherlands).
Precisely, the error this makes in local ENU coordinates is:

* the constant part of ``N`` moves the whole scene (origin included) along the ellipsoid normal,
  so ENU *up* differences are unchanged; horizontal ENU distances are scaled by
  ``(R + h - N) / (R + h)``, i.e. a relative error ``N / R`` of about 7e-6 (1.4 mm over 200 m);
* the variation of ``N`` across the scene enters the up axis directly; geoid slopes are
  typically below 1e-4 (under 2 cm over 200 m), far below consumer GPS altitude noise (metres).

XMP's ``exif:GPSAltitude`` is the same quantity as the EXIF tag; DJI's
``drone-dji:AbsoluteAltitude`` is the drone's altitude above sea level (DJI documents no geoid
model for it) and is used the same way.

An image with a horizontal fix but no ``GPSAltitude`` is kept with its altitude filled with the
median altitude of the images that have one (0.0 if none has), flagged ``"alt_filled": true``.

Extra manifest keys beyond the ``docs/formats.md`` example (additive, readers may ignore them):
``timestamp_source`` (``"exif_datetime_original"``, ``"gps_utc"`` or ``null``), ``alt_filled``
(bool), ``heading_deg`` / ``heading_ref`` (EXIF ``GPSImgDirection`` / ``GPSImgDirectionRef``, or
``null``; EXIF only), ``gpano_pose_deg`` (GPano pose heading/pitch/roll, or ``null``), ``gps_source``
(``"exif"``, ``"xmp"`` or ``null`` without a position), ``sha256`` (of the
file's bytes) and ``color_mode`` (Pillow mode: ``RGB``, ``L``, ``CMYK``) per image; ``path`` in
each ``skipped`` record; ``options`` (the options used), ``duplicates`` (``name``,
``duplicate_of``, ``sha256``) and ``gps_outliers`` (``name``, ``lat``, ``lon``, ``alt``,
``reason``) at the top level.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import piexif
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET
from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import InputError
from .geodesy import geodetic_to_enu
from .io import write_json
from .log import get_logger
from .options import build_options

log = get_logger("ingest")

SCHEMA_VERSION = 1
JPEG_SUFFIXES = (".jpg", ".jpeg")
ALTITUDE_REFERENCE = (
    "EXIF GPSAltitude: metres above mean sea level (used as-is as the ellipsoidal height; "
    "see splatforge_core/ingest.py docstring)"
)
GPANO_NS = "http://ns.google.com/photos/1.0/panorama/"
XMP_EXIF_NS = "http://ns.adobe.com/exif/1.0/"  # Adobe XMP Specification Part 2, 3.2 (the "exif:" prefix)
XMP_DJI_NS = "http://www.dji.com/drone-dji/1.0/"  # DJI drones' "drone-dji:" properties
XMP_MAX_BYTES = 1 << 20  # a standard XMP packet fits one 64 KiB APP1 segment; 1 MiB is a generous bound
REASON_NO_GPS = "no GPS in EXIF"
REASON_NO_GPS_ANY = "no GPS in EXIF or XMP"


# --------------------------------------------------------------------------------------
# options


@dataclass(frozen=True)
class IngestOptions:
    """Options of the ingest stage (config section ``ingest``).

    Attributes:
        require_gps: skip images without a usable GPS fix (default True). If False they are
            kept with ``lat/lon/alt/enu = null``.
        min_images: minimum number of kept images, else :class:`InputError` (default 3).
        allow_mixed: accept equirectangular panoramas and perspective photos in one folder
            (default False: :class:`InputError` listing which files are which).
        check_decode: fully decode every JPEG (Pillow, ``LOAD_TRUNCATED_IMAGES`` off) and check
            its bottom rows for libjpeg's grey fill, to catch truncated files and headers that
            claim more pixels than the data holds (default True; measured on one shared CPU core
            ~16 ms per 1024x768 photo, ~0.3 s per 5760x2880 panorama).
        equirect_by_aspect: without GPano XMP, treat an image of aspect ratio 2:1 as an
            equirectangular panorama (default True).
        aspect_tolerance: relative tolerance on ``width / height == 2`` for that test
            (default 0.01).
        max_pixels: largest ``width * height`` read from the JPEG frame header that is decoded;
            a larger image is skipped before any pixel is decoded (default 100,000,000: a 12K
            360 panorama, 11968x5984 = 71.6 MP, passes with margin, a 16K one (15360x7680 =
            118 MP) or a 60000x30000 decompression bomb does not; one decoded 100 MP RGB image
            takes 300 MB, and the projection stage holds a few such arrays). Pillow's own
            ``MAX_IMAGE_PIXELS`` is set to this value while ingest decodes.
        gps_outlier_k: a fix whose horizontal distance from the median position exceeds
            ``max(gps_outlier_k * 1.4826 * median distance, gps_outlier_floor_m)`` is an
            outlier (default 6.0; 1.4826 makes the median absolute deviation a standard
            deviation for normal data). The same ``k`` applies to the altitude test. Because
            ``k * 1.4826 > 1``, at most a minority of fixes can ever be outliers.
        gps_outlier_floor_m: lower bound of the horizontal outlier distance in metres, so that
            a compact capture (all fixes within metres) does not reject ordinary GPS noise
            (default 250 m, larger than consumer GPS errors in urban canyons).
        alt_outlier_floor_m: lower bound of the altitude outlier deviation in metres
            (default 100 m; consumer GPS altitude noise is tens of metres).
        alt_min_m, alt_max_m: physically plausible altitude range in metres; a fix outside it is
            an outlier whatever the others say (default -500 m, below the Dead Sea shore at
            -430 m, to 10,000 m, above Mount Everest at 8,849 m).
        min_side_px: an image whose shorter side has fewer pixels is skipped (default 64: SIFT
            finds too few features below that to match views; the projected pinhole views of a
            panorama are far larger).
        max_extent_m: the kept GPS positions must lie within this horizontal extent, metres
            (default 50,000: a walk, a drive or a drone survey; photos spread wider than that
            are not one capture, or their GPS is wrong, and no outlier rule can tell which
            half is right), else :class:`InputError` naming the files and positions.
    """

    require_gps: bool = True
    min_images: int = field(default=3, metadata={"min": 1})
    allow_mixed: bool = False
    check_decode: bool = True
    equirect_by_aspect: bool = True
    aspect_tolerance: float = field(default=0.01, metadata={"min": 0, "lt": 0.5})
    max_pixels: int = field(default=100_000_000, metadata={"min": 1, "max": 2**40})
    gps_outlier_k: float = field(default=6.0, metadata={"min": 1, "max": 1e6})
    gps_outlier_floor_m: float = field(default=250.0, metadata={"min": 0, "max": 2.1e7})
    alt_outlier_floor_m: float = field(default=100.0, metadata={"min": 0, "max": 1e5})
    alt_min_m: float = field(default=-500.0, metadata={"min": -1e5, "max": 1e5})
    alt_max_m: float = field(default=10_000.0, metadata={"min": -1e5, "max": 1e5})
    min_side_px: int = field(default=64, metadata={"min": 1, "max": 65535})
    max_extent_m: float = field(default=50_000.0, metadata={"gt": 0})

    def __post_init__(self) -> None:
        for f in ("require_gps", "allow_mixed", "check_decode", "equirect_by_aspect"):
            if not isinstance(getattr(self, f), bool):
                raise InputError(f"ingest option {f!r} must be true or false, got {getattr(self, f)!r}")
        if isinstance(self.min_images, bool) or not isinstance(self.min_images, int) or self.min_images < 1:
            raise InputError(f"ingest option 'min_images' must be an integer >= 1, got {self.min_images!r}")
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) or not 1 <= self.max_pixels <= 2**40:
            raise InputError(f"ingest option 'max_pixels' must be an integer in [1, 2**40], got {self.max_pixels!r}")
        # the numeric ranges are field metadata, checked by options.build_options
        if self.alt_min_m >= self.alt_max_m:
            raise InputError(f"ingest options: alt_min_m ({self.alt_min_m}) must be below alt_max_m ({self.alt_max_m})")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "IngestOptions":
        """Build options from a plain dict (config section); unknown keys raise :class:`InputError`."""
        return build_options(cls, d, "ingest")


# --------------------------------------------------------------------------------------
# EXIF / XMP parsing


def _rational(v) -> float | None:
    """EXIF RATIONAL ``(num, den)`` -> float; None for a zero denominator or bad value."""
    try:
        num, den = v
        if den == 0:
            return None
        return float(num) / float(den)
    except (TypeError, ValueError):
        return None


def _text(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        v = v.decode("utf-8", errors="replace")
    s = str(v).replace("\x00", "").strip()
    return s or None


def _dms(v) -> float | None:
    """EXIF GPS (deg, min, sec) rationals -> decimal degrees (unsigned)."""
    try:
        parts = [_rational(p) for p in v]
    except TypeError:
        return None
    if len(parts) != 3 or any(p is None for p in parts):
        return None
    d, m, s = parts
    return d + m / 60.0 + s / 3600.0


def _parse_gps(gps: dict) -> tuple[float, float, float | None] | str:
    """GPS IFD -> (lat, lon, alt or None), or the reason it is unusable (a string)."""
    G = piexif.GPSIFD
    if not gps or G.GPSLatitude not in gps or G.GPSLongitude not in gps:
        return REASON_NO_GPS
    status = _text(gps.get(G.GPSStatus))
    if status is not None and status.upper() == "V":
        return "GPS fix marked void in EXIF (GPSStatus V)"
    lat, lon = _dms(gps[G.GPSLatitude]), _dms(gps[G.GPSLongitude])
    if lat is None or lon is None:
        return "GPS latitude/longitude unreadable in EXIF"
    lat_ref, lon_ref = _text(gps.get(G.GPSLatitudeRef)), _text(gps.get(G.GPSLongitudeRef))
    if lat_ref is None or lat_ref.upper() not in ("N", "S") or lon_ref is None or lon_ref.upper() not in ("E", "W"):
        # Without the hemisphere the sign is unknown; guessing would mirror the scene.
        return f"GPS hemisphere reference missing or invalid (GPSLatitudeRef={lat_ref!r}, GPSLongitudeRef={lon_ref!r})"
    lat = -lat if lat_ref.upper() == "S" else lat
    lon = -lon if lon_ref.upper() == "W" else lon
    bad = _check_fix(lat, lon)
    if bad:
        return bad
    alt = _rational(gps[G.GPSAltitude]) if G.GPSAltitude in gps else None
    if alt is not None:
        if not math.isfinite(alt):
            alt = None
        elif gps.get(G.GPSAltitudeRef) in (1, b"\x01"):
            alt = -alt  # GPSAltitudeRef 1: below sea level (EXIF 2.32, tag 0x0005)
    return lat, lon, alt


def _parse_heading(gps: dict) -> tuple[float | None, str | None]:
    """EXIF ``GPSImgDirection`` (degrees clockwise from north of the image's centre direction,
    EXIF 2.32 tag 0x0011) and its ``GPSImgDirectionRef`` (``"T"`` true north, ``"M"`` magnetic).

    Returns ``(heading in [0, 360) degrees or None, ref or None)``; a missing, non-finite or
    out-of-range value (EXIF allows 0.00 to 359.99) gives ``(None, None)``.
    """
    G = piexif.GPSIFD
    if G.GPSImgDirection not in gps:
        return None, None
    h = _rational(gps[G.GPSImgDirection])
    if h is None or not math.isfinite(h) or not 0.0 <= h <= 360.0:
        return None, None
    ref = _text(gps.get(G.GPSImgDirectionRef))
    return float(h % 360.0), (ref.upper() if ref and ref.upper() in ("T", "M") else None)


def _parse_timestamp(exif: dict) -> tuple[str | None, str | None]:
    """ISO 8601 timestamp and its source.

    Prefers ``DateTimeOriginal`` (camera clock; with ``OffsetTimeOriginal`` appended when
    present, else naive local time), then GPS ``GPSDateStamp`` + ``GPSTimeStamp`` (UTC, ``Z``).
    """
    E, G = piexif.ExifIFD, piexif.GPSIFD
    dto = _text(exif.get("Exif", {}).get(E.DateTimeOriginal))
    if dto:
        m = re.fullmatch(r"(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})", dto)
        if m and m.group(1) != "0000":
            ts = "{}-{}-{}T{}:{}:{}".format(*m.groups())
            off = _text(exif.get("Exif", {}).get(getattr(E, "OffsetTimeOriginal", 36881)))
            if off and re.fullmatch(r"[+\-]\d{2}:\d{2}", off):
                ts += off
            return ts, "exif_datetime_original"
    gps = exif.get("GPS", {})
    ds, tm = _text(gps.get(G.GPSDateStamp)), gps.get(G.GPSTimeStamp)
    if ds and tm:
        m = re.fullmatch(r"(\d{4}):(\d{2}):(\d{2})", ds)
        try:
            h, mi, s = (_rational(p) for p in tm)
        except (TypeError, ValueError):
            h = mi = s = None
        if m and None not in (h, mi, s) and 0 <= h < 24 and 0 <= mi < 60 and 0 <= s < 61:
            sec = f"{s:06.3f}".rstrip("0").rstrip(".") if s != int(s) else f"{int(s):02d}"
            return f"{m.group(1)}-{m.group(2)}-{m.group(3)}T{int(h):02d}:{int(mi):02d}:{sec}Z", "gps_utc"
    return None, None


class XmpRefused(ValueError):
    """An XMP packet ingest will not parse: larger than ``XMP_MAX_BYTES`` or holding a DTD, entity
    declarations or external references (none of which XMP needs; an "XML bomb" uses them)."""


def parse_xmp(xmp: bytes | str, max_bytes: int = XMP_MAX_BYTES) -> ET.Element:
    """Parse an XMP packet (the RDF/XML in a JPEG's APP1 ``http://ns.adobe.com/xap/1.0/`` segment).

    Photos are untrusted input, so the packet is parsed with ``defusedxml`` with DTDs, entity
    declarations and external references forbidden: an entity-expansion bomb ("billion laughs")
    or an external entity is refused at its declaration, before anything is expanded.

    Args:
        xmp: the packet, bytes (UTF-8 per the XMP specification) or str; the ``<?xpacket?>``
            wrapper, surrounding whitespace and NUL padding are allowed.
        max_bytes: larger packets are refused unread.

    Returns:
        The root element (``x:xmpmeta`` or ``rdf:RDF``), an :class:`xml.etree.ElementTree.Element`.

    Raises:
        XmpRefused: too large, or a DTD / entity / external reference (the message says which).
        xml.etree.ElementTree.ParseError: not well-formed XML.
    """
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8", errors="replace")
    if len(xmp) > max_bytes:
        raise XmpRefused(f"XMP packet of {len(xmp)} bytes is larger than {max_bytes} bytes")
    try:
        return SafeET.fromstring(xmp.strip().strip(b"\x00"), forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as e:
        raise XmpRefused(f"XMP packet declares a DTD, entities or external references ({type(e).__name__}), as an "
                         f"XML bomb does") from e


def _xmp_properties(root: ET.Element | None, namespaces: tuple[str, ...]) -> dict[tuple[str, str], str]:
    """Simple (text) XMP properties of the given namespaces: ``{(namespace, local name): value}``.

    Handles both RDF forms, attributes on ``rdf:Description`` and child elements with text; the
    first occurrence wins. Structured values (``rdf:Seq``...) are left out (their text is empty).
    """
    out: dict[tuple[str, str], str] = {}
    if root is None:
        return out
    pre = {"{" + ns + "}": ns for ns in namespaces}

    def put(qname: str, v: str | None) -> None:
        if not qname.startswith("{") or v is None or not v.strip():
            return
        ns_end = qname.index("}") + 1
        ns = pre.get(qname[:ns_end])
        if ns is not None:
            out.setdefault((ns, qname[ns_end:]), v.strip())

    for el in root.iter():
        for k, v in el.attrib.items():
            put(k, v)
        if isinstance(el.tag, str):
            put(el.tag, el.text)
    return out


def _gpano(root: ET.Element | None, raw: bytes | None = None) -> dict[str, str]:
    """GPano properties (``ProjectionType``, ``FullPanoWidthPixels``...) from a parsed XMP packet.

    Args:
        root: :func:`parse_xmp`'s result, or None (no XMP, or not well-formed).
        raw: the raw packet; when ``root`` is None the one property that matters,
            ``GPano:ProjectionType``, is looked for with a plain pattern search in it.

    Returns:
        ``{local name: value}``; empty when there is no GPano data.
    """
    if root is not None:
        return {k[1]: v for k, v in _xmp_properties(root, (GPANO_NS,)).items()}
    if raw:
        m = re.search(rb"GPano:ProjectionType(?:>|=[\"'])\s*([A-Za-z]+)", raw[:XMP_MAX_BYTES])
        if m:
            return {"ProjectionType": m.group(1).decode()}
    return {}


_XMP_NUMBER = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:/([0-9]+))?")


def _xmp_number(s: str) -> float | None:
    """XMP ``Real`` (``"26.604738"``) or ``Rational`` (``"3628/100"``) text -> float (unsigned);
    None when unreadable or a zero denominator."""
    m = _XMP_NUMBER.fullmatch(s.strip())
    if not m:
        return None
    v = float(m.group(1))
    if m.group(2) is not None:
        den = int(m.group(2))
        if den == 0:
            return None
        v /= den
    return v


def _xmp_coordinate(value: str, ref: str | None, hemispheres: str) -> tuple[float, str] | None:
    """XMP ``GPSCoordinate`` text -> (unsigned decimal degrees, hemisphere letter).

    The XMP form (Adobe XMP Specification Part 2, 3.2.4 GPSCoordinate) is ``"DDD,MM,SSk"`` or
    ``"DDD,MM.mmk"`` with ``k`` one of N, S, E, W; writers also put EXIF-style rationals
    (``"52/1,26/1,3628/100"``) or decimal degrees there and the hemisphere in a separate
    ``exif:GPSLatitudeRef`` / ``exif:GPSLongitudeRef``. One to three comma-separated
    non-negative numbers (degrees, minutes, seconds; minutes and seconds under 60) are read; the
    letter in the value wins over the separate reference.

    Returns:
        None when the value is unreadable or the hemisphere is missing or not one of ``hemispheres``.
    """
    s = value.strip()
    letter = None
    if s and s[-1].upper() in "NSEW":
        letter, s = s[-1].upper(), s[:-1].strip()
    elif ref:
        letter = ref.strip().upper()[:1]
    if letter is None or letter not in hemispheres:
        return None
    parts = [_xmp_number(p) for p in s.split(",")] if s else []
    if not 1 <= len(parts) <= 3 or any(p is None or not math.isfinite(p) for p in parts):
        return None
    if any(p >= 60.0 for p in parts[1:]):
        return None
    return sum(p / 60.0**i for i, p in enumerate(parts)), letter


_DJI_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def _dji_decimal(s: str | None) -> float | None:
    """DJI's signed decimal text (``"+52.443412"``, ``"-1.684468"``) -> float, None if unreadable."""
    if s is None or not _DJI_DECIMAL.fullmatch(s.strip()):
        return None
    return float(s)


def _check_fix(lat: float, lon: float) -> str | None:
    """Why a signed (lat, lon) in degrees is not a usable position, or None."""
    if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
        return f"GPS out of range (lat {lat:.7f}, lon {lon:.7f})"
    if lat == 0 and lon == 0:
        return "GPS at (0, 0): placeholder fix, not a real position"
    return None


def xmp_gps(root: ET.Element | None) -> tuple[float, float, float | None] | str | None:
    """GPS position written in XMP, for photos whose EXIF has none.

    Read, in this order of preference:

    * the XMP EXIF schema (namespace ``http://ns.adobe.com/exif/1.0/``, Adobe XMP Specification
      Part 2, 3.2): ``exif:GPSLatitude`` / ``exif:GPSLongitude`` (GPSCoordinate text, see
      :func:`_xmp_coordinate`), ``exif:GPSAltitude`` (Rational, metres) with
      ``exif:GPSAltitudeRef`` (``1`` = below sea level) and ``exif:GPSStatus`` (``V`` = void);
    * DJI drones' ``drone-dji:GpsLatitude`` / ``drone-dji:GpsLongitude`` (older firmware spells it
      ``GpsLongtitude``; the ExifTool XMP-drone-dji tag table lists both) and
      ``drone-dji:AbsoluteAltitude``: signed decimal degrees and metres.

    Args:
        root: :func:`parse_xmp`'s result, or None.

    Returns:
        ``(lat, lon, alt or None)`` signed degrees WGS84 and metres; a string, the reason, when
        XMP has GPS properties that are unusable (unreadable, no hemisphere, out of range, (0, 0),
        void); None when XMP has no GPS position at all.
    """
    props = _xmp_properties(root, (XMP_EXIF_NS, XMP_DJI_NS))
    e = {k: v for (ns, k), v in props.items() if ns == XMP_EXIF_NS}
    dji = {k.lower(): v for (ns, k), v in props.items() if ns == XMP_DJI_NS}
    if "GPSLatitude" in e or "GPSLongitude" in e:
        shown = f"exif:GPSLatitude={e.get('GPSLatitude')!r}, exif:GPSLongitude={e.get('GPSLongitude')!r}"
        if "GPSLatitude" not in e or "GPSLongitude" not in e:
            return f"GPS latitude/longitude incomplete in XMP ({shown})"
        if e.get("GPSStatus", "").upper() == "V":
            return "GPS fix marked void in XMP (exif:GPSStatus V)"
        la = _xmp_coordinate(e["GPSLatitude"], e.get("GPSLatitudeRef"), "NS")
        lo = _xmp_coordinate(e["GPSLongitude"], e.get("GPSLongitudeRef"), "EW")
        if la is None or lo is None:
            return (f"GPS latitude/longitude unreadable in XMP ({shown}; expected \"DDD,MM.mmk\" or \"DDD,MM,SSk\" "
                    f"with k = N/S/E/W, or numbers with exif:GPSLatitudeRef/GPSLongitudeRef)")
        lat = -la[0] if la[1] == "S" else la[0]
        lon = -lo[0] if lo[1] == "W" else lo[0]
        alt = _xmp_number(e["GPSAltitude"]) if "GPSAltitude" in e else None
        if alt is not None and e.get("GPSAltitudeRef", "").strip() == "1":
            alt = -alt
    elif "gpslatitude" in dji or "gpslongitude" in dji or "gpslongtitude" in dji:
        lon_s = dji.get("gpslongitude", dji.get("gpslongtitude"))
        lat, lon = _dji_decimal(dji.get("gpslatitude")), _dji_decimal(lon_s)
        if lat is None or lon is None:
            return (f"GPS latitude/longitude unreadable in XMP (drone-dji:GpsLatitude={dji.get('gpslatitude')!r}, "
                    f"drone-dji:GpsLongitude={lon_s!r}; expected signed decimal degrees)")
        alt = _dji_decimal(dji.get("absolutealtitude"))
    else:
        return None
    bad = _check_fix(lat, lon)
    if bad:
        return bad + " in XMP"
    return lat, lon, (alt if alt is not None and math.isfinite(alt) else None)


def _gpano_pose(gp: dict[str, str]) -> dict[str, float] | None:
    """GPano ``PoseHeadingDegrees`` / ``PosePitchDegrees`` / ``PoseRollDegrees`` (the panorama's
    orientation when it was stitched; Google Photo Sphere XMP) as floats, None when absent.
    A camera that writes zeros (the GoPro MAX does) is levelled but says nothing of its heading."""
    out = {}
    for key, name in (("PoseHeadingDegrees", "heading"), ("PosePitchDegrees", "pitch"), ("PoseRollDegrees", "roll")):
        try:
            v = float(gp[key])
        except (KeyError, ValueError):
            continue
        if math.isfinite(v):
            out[name] = v
    return out or None


_MAGIC_HINTS = (
    (b"\x89PNG", "PNG"),
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"RIFF", "RIFF/WebP"),
    (b"BM", "BMP"),
)


def _not_jpeg_reason(head: bytes) -> str | None:
    if head[:2] == b"\xff\xd8":  # SOI marker (ITU-T T.81 B.1.1.3); the rest may still be corrupt
        return None
    if not head:
        return "empty file (0 bytes)"
    kind = next((k for m, k in _MAGIC_HINTS if head.startswith(m)), None)
    if kind is None and head[4:8] == b"ftyp":
        kind = "HEIF/ISO-BMFF"
    if kind:
        return f"not a JPEG file although named .jpg ({kind} data): convert it to JPEG"
    return f"not a JPEG file although named .jpg (starts with {head[:4]!r})"


# Start-of-frame markers (ITU-T T.81 Table B.1): SOF0-3, 5-7 (Huffman), 9-11, 13-15 (arithmetic).
# 0xC4 (DHT), 0xC8 (JPG), 0xCC (DAC) share the range but are not frame headers.
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# The frame types libjpeg(-turbo) decodes with 8-bit samples, i.e. what Pillow and OpenCV read:
# baseline, extended and progressive DCT, Huffman or arithmetic coded.
_SOF_SUPPORTED = frozenset({0xC0, 0xC1, 0xC2, 0xC9, 0xCA})


@dataclass(frozen=True)
class JpegFrame:
    """The frame header (SOF segment) of a JPEG file: what its pixel data claims to be.

    Attributes:
        marker: the SOF marker byte (0xC0 baseline, 0xC2 progressive...; ITU-T T.81 Table B.1).
        precision: bits per sample (8 for ordinary photos, 12 or 16 for extended/lossless).
        width, height: pixels (``height`` 0 means "defined later by a DNL marker").
        components: 1 greyscale, 3 YCbCr/RGB, 4 CMYK/YCCK.
    """

    marker: int
    precision: int
    width: int
    height: int
    components: int


def read_jpeg_frame(f, max_segments: int = 4096) -> JpegFrame:
    """Read the first frame header of a JPEG without decoding any pixel.

    Walks the marker segments from SOI to the first SOF (ITU-T T.81 / ISO 10918-1, B.1.1:
    each marker is ``0xFF`` + code, optionally preceded by ``0xFF`` fill bytes; every marker
    except SOI, EOI, RSTn and TEM is followed by a 2-byte big-endian length that includes
    itself). EXIF thumbnails live inside APP1 segments and are skipped with them.

    Args:
        f: binary file object positioned anywhere (it is rewound).
        max_segments: segments walked before giving up (bounds the work on hostile input).

    Returns:
        :class:`JpegFrame`.

    Raises:
        ValueError: no SOI, a broken segment chain, end of file, or start of scan before any
            frame header; the message says which.
    """
    f.seek(0)
    if f.read(2) != b"\xff\xd8":
        raise ValueError("no JPEG start-of-image marker")
    for _ in range(max_segments):
        b = f.read(1)
        if b != b"\xff":
            raise ValueError(f"broken marker chain at byte {f.tell() - 1} (expected 0xFF, got {b!r})")
        code = 0xFF
        while code == 0xFF:  # fill bytes
            c = f.read(1)
            if not c:
                raise ValueError("file ends inside the JPEG header")
            code = c[0]
        if code == 0x01 or 0xD0 <= code <= 0xD7:  # TEM, RSTn: no length
            continue
        if code in (0xD9, 0xDA):
            raise ValueError("no frame header (SOF) before the " + ("end of image" if code == 0xD9 else "image data"))
        ln = f.read(2)
        if len(ln) < 2:
            raise ValueError("file ends inside the JPEG header")
        n = int.from_bytes(ln, "big")
        if n < 2:
            raise ValueError(f"invalid segment length {n} for marker 0xFF{code:02X}")
        if code in _SOF_MARKERS:
            body = f.read(6)
            if len(body) < 6 or n < 8:
                raise ValueError("file ends inside the JPEG frame header")
            return JpegFrame(
                marker=code,
                precision=body[0],
                height=int.from_bytes(body[1:3], "big"),
                width=int.from_bytes(body[3:5], "big"),
                components=body[5],
            )
        f.seek(n - 2, os.SEEK_CUR)
    raise ValueError(f"no frame header (SOF) in the first {max_segments} JPEG segments")


def _sha256(f) -> str:
    """sha256 hex digest of a binary file object's whole content (read in 1 MiB chunks)."""
    f.seek(0)
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _pil_pixel_limit(max_pixels: int):
    """Set Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, a module global) to
    ``max_pixels`` for the duration, so that the ingest cap is the only one in force (ingest
    has checked the header against it already) and Pillow's own check stays as a backstop."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _grey_fill_rows(a: np.ndarray) -> int:
    """Number of bottom rows of a decoded image that are libjpeg's fill for missing data.

    When the entropy-coded data ends (or hits a marker) before the frame size in the header is
    filled, libjpeg warns ("premature end of data segment") and decodes every remaining block
    with all DCT coefficients zero, i.e. exactly mid-grey: sample value 128 in every component
    (127 after Pillow's inversion of Adobe CMYK). Pillow drops that warning, so a header edited
    to claim 12000x6000 over 1024x768 data decodes "fine"; this finds the fill instead.

    Args:
        a: ``[H, W]`` or ``[H, W, C]`` uint8 decoded image.

    Returns:
        how many rows, counted from the bottom, are entirely 127 or entirely 128 in every channel.
    """
    rows = a.reshape(a.shape[0], -1)
    n = 0
    for v in (128, 127):
        if not np.all(rows[-1] == v):  # the common case: one row compared, done
            continue
        flat = np.all(rows == v, axis=1)
        n = max(n, len(flat) if flat.all() else int(np.argmin(flat[::-1])))
    return n


def _jpeg_named_otherwise(path: Path) -> str | None:
    """Skip reason for JPEG data in a file not named .jpg/.jpeg (say, ``photo.png``), else None.

    Such a file is skipped, not read: its name is what later stages use, and a wrong extension
    usually means the file is not what the user thinks. The reason says to rename it.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(3)
    except OSError:
        return None
    if head == b"\xff\xd8\xff":
        return f"JPEG data in a file named {path.suffix or 'without extension'} (skipped): rename it to .jpg to use it"
    return None


@dataclass
class _Read:
    record: dict | None = None
    reason: str | None = None  # skip reason
    gps_reason: str | None = None  # why the position is null (record kept)
    sha256: str | None = None


def _check_pixels(path: Path, frame: JpegFrame, opts: IngestOptions) -> str | None:
    """Skip reason for a frame header ingest will not decode, or None."""
    w, h = frame.width, frame.height
    if w == 0 or h == 0:
        return f"JPEG frame header gives no image size ({w}x{h}; DNL-defined height is not supported)"
    if w * h > opts.max_pixels:
        return (
            f"image too large: its header claims {w}x{h} = {w * h / 1e6:.1f} megapixels, over the cap of "
            f"{opts.max_pixels / 1e6:g} MP (ingest.max_pixels; a decompression bomb, or a real image "
            f"to downscale, or raise ingest.max_pixels)"
        )
    if min(w, h) < opts.min_side_px:
        return (f"image too small: {w}x{h} px, the shorter side under {opts.min_side_px} px finds too few SIFT "
                f"features to match (ingest.min_side_px); use the full-size photo")
    if frame.marker not in _SOF_SUPPORTED or frame.precision != 8:
        kind = "lossless" if frame.marker in (0xC3, 0xC7, 0xCB, 0xCF) else "hierarchical" if frame.marker in (
            0xC5, 0xC6, 0xCD, 0xCE) else "DCT"
        return (
            f"unsupported JPEG variant: {frame.precision}-bit {kind} (SOF marker 0xFF{frame.marker:02X}); "
            f"only 8-bit baseline/progressive JPEG is read, export the photo as an ordinary 8-bit JPEG"
        )
    if frame.components not in (1, 3, 4):
        return f"unsupported JPEG with {frame.components} colour components (1, 3 or 4 are read)"
    return None


def _read_one(path: Path, opts: IngestOptions, seen: dict[str, str] | None = None) -> _Read:
    """Read one JPEG's header metadata; returns a record or a skip reason (never raises on bad files).

    Order (cheap before expensive, nothing decoded before its size is checked): magic bytes,
    sha256 of the bytes, frame header (size, precision, components) against ``max_pixels``,
    Pillow header parse, full decode with the grey-fill check, EXIF/XMP. A file whose sha256 is
    in ``seen`` (sha256 -> name of an earlier file) is a duplicate and is not decoded again.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            bad = _not_jpeg_reason(head)
            if bad:
                return _Read(reason=bad)
            sha = _sha256(f)
            if seen is not None and sha in seen:
                return _Read(reason=f"duplicate of {seen[sha]} (identical content, sha256 {sha[:12]}...)", sha256=sha)
            try:
                frame = read_jpeg_frame(f)
            except ValueError as e:
                return _Read(reason=f"corrupt JPEG header ({e})", sha256=sha)
    except OSError as e:
        return _Read(reason=f"cannot read file ({e.strerror or e})")
    bad = _check_pixels(path, frame, opts)
    if bad:
        return _Read(reason=bad, sha256=sha)
    try:
        with _pil_pixel_limit(opts.max_pixels), Image.open(path) as im:
            if im.format not in ("JPEG", "MPO"):
                return _Read(reason=f"not a JPEG file (Pillow reads it as {im.format})", sha256=sha)
            width, height = (int(v) for v in im.size)
            exif_bytes = im.info.get("exif")
            xmp = im.info.get("xmp")
            mode = im.mode
            if opts.check_decode:
                try:
                    im.load()
                    fill = _grey_fill_rows(np.asarray(im))
                except (OSError, ValueError, SyntaxError) as e:
                    return _Read(reason=f"truncated or corrupt JPEG data ({e})", sha256=sha)
                if fill >= 8:  # at least one block row: a real photo has no exactly flat 128 band
                    return _Read(
                        reason=f"JPEG data ends before the image size in its header ({width}x{height}): the bottom "
                        f"{fill} rows are the decoder's grey fill for missing data (truncated file or edited header)",
                        sha256=sha,
                    )
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return _Read(reason=f"corrupt JPEG header ({e})", sha256=sha)
    if width <= 0 or height <= 0:
        return _Read(reason=f"invalid image size {width}x{height}", sha256=sha)
    if (width, height) != (frame.width, frame.height):
        return _Read(reason=f"inconsistent JPEG header (frame header {frame.width}x{frame.height}, Pillow "
                     f"reads {width}x{height})", sha256=sha)

    exif: dict = {}
    exif_error = None
    if exif_bytes:
        try:
            exif = piexif.load(exif_bytes)
        except Exception as e:  # piexif raises assorted errors (struct.error, ValueError, KeyError) on bad IFDs
            exif_error = f"EXIF unreadable ({type(e).__name__}: {e})"

    # XMP: parsed once, refused (the file skipped) when it is a bomb or oversized
    xmp_root, xmp_broken = None, None
    if xmp:
        try:
            xmp_root = parse_xmp(xmp)
        except XmpRefused as e:
            return _Read(reason=f"XMP metadata refused: {e}; remove the XMP (for example exiftool -xmp= FILE) or "
                         f"re-export the photo", sha256=sha)
        except ET.ParseError as e:
            xmp_broken = f"its XMP packet is not well-formed XML ({e})"

    # camera kind
    gp = _gpano(xmp_root, xmp if isinstance(xmp, bytes) else None)
    proj = gp.get("ProjectionType")
    if proj is not None:
        if proj.lower() != "equirectangular":
            return _Read(reason=f"unsupported GPano ProjectionType {proj!r} (only equirectangular)", sha256=sha)
        try:
            full_w = int(float(gp.get("FullPanoWidthPixels", width)))
            full_h = int(float(gp.get("FullPanoHeightPixels", height)))
            crop_w = int(float(gp.get("CroppedAreaImageWidthPixels", full_w)))
            crop_h = int(float(gp.get("CroppedAreaImageHeightPixels", full_h)))
        except ValueError:
            return _Read(reason=f"unreadable GPano pixel sizes in XMP: {gp}", sha256=sha)
        if crop_w != full_w or crop_h != full_h:
            return _Read(
                reason=f"partial equirectangular panorama (GPano cropped area {crop_w}x{crop_h} of "
                f"{full_w}x{full_h}); only full 360x180 panoramas are supported",
                sha256=sha,
            )
        if abs(width / height - 2.0) > 2.0 * opts.aspect_tolerance:
            return _Read(reason=f"its GPano XMP says equirectangular but it is {width}x{height} px "
                         f"({width / height:.2f}:1, not 2:1): a cropped or wrongly stitched panorama; export the "
                         f"full 360x180 panorama", sha256=sha)
        kind = "equirectangular"
    elif opts.equirect_by_aspect and abs(width / height - 2.0) <= 2.0 * opts.aspect_tolerance:
        kind = "equirectangular"
    else:
        kind = "perspective"

    zeroth, exif_ifd = exif.get("0th", {}), exif.get("Exif", {})
    flen = _rational(exif_ifd.get(piexif.ExifIFD.FocalLength)) if piexif.ExifIFD.FocalLength in exif_ifd else None
    f35 = exif_ifd.get(piexif.ExifIFD.FocalLengthIn35mmFilm)
    timestamp, ts_source = _parse_timestamp(exif)
    rec: dict[str, Any] = {
        "name": path.name,
        "path": str(path),
        "width": width,
        "height": height,
        "kind": kind,
        "sha256": sha,
        "color_mode": mode,
        "lat": None,
        "lon": None,
        "alt": None,
        "enu": None,
        "timestamp": timestamp,
        "timestamp_source": ts_source,
        "make": _text(zeroth.get(piexif.ImageIFD.Make)),
        "model": _text(zeroth.get(piexif.ImageIFD.Model)),
        # 0 means "unknown" for both tags (EXIF 2.32)
        "focal_length_mm": flen if flen and flen > 0 and math.isfinite(flen) else None,
        "focal_length_35mm": int(f35) if isinstance(f35, int) and f35 > 0 else None,
        "alt_filled": False,
        "heading_deg": None,
        "heading_ref": None,
        "gpano_pose_deg": _gpano_pose(gp),
        "gps_source": None,
    }
    gps = exif_error or _parse_gps(exif.get("GPS", {}))
    source = "exif"
    if gps == REASON_NO_GPS or exif_error:
        # EXIF has no position (or no readable EXIF): GPS written in XMP instead, if any
        from_xmp = xmp_gps(xmp_root)
        if from_xmp is not None:
            gps, source = from_xmp, "xmp"
        elif gps == REASON_NO_GPS:
            gps = f"{REASON_NO_GPS}, and {xmp_broken}" if xmp_broken else REASON_NO_GPS_ANY
    if isinstance(gps, str):
        if opts.require_gps:
            return _Read(reason=gps, sha256=sha)
        return _Read(record=rec, gps_reason=gps, sha256=sha)
    rec["lat"], rec["lon"], rec["alt"] = gps
    rec["gps_source"] = source
    if source == "exif":
        rec["heading_deg"], rec["heading_ref"] = _parse_heading(exif.get("GPS", {}))
    return _Read(record=rec, sha256=sha)


# --------------------------------------------------------------------------------------
# GPS outliers


_MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation for normal data


def gps_outliers(lat, lon, alt, opts: IngestOptions) -> list[str | None]:
    """Find stray GPS fixes and absurd altitudes with robust statistics.

    Horizontal: every fix is expressed in a local Cartesian frame (ENU at the first fix, all
    altitudes set to 0, so the distances are chord lengths: correct across the antimeridian and
    for a fix on the far side of the Earth); the median position is the per-axis median there,
    and a fix is an outlier if its distance ``d_i`` from it exceeds
    ``max(k * 1.4826 * median(d), gps_outlier_floor_m)``. Altitude: an outlier if
    ``|alt_i - median(alt)| > max(k * 1.4826 * MAD(alt), alt_outlier_floor_m)`` (MAD: median
    absolute deviation; altitudes that are ``None`` take no part), or outside
    ``[alt_min_m, alt_max_m]``. Since ``k * 1.4826 > 1``, a fix at the median distance is never
    an outlier: a majority of the fixes always stays.

    Args:
        lat, lon: ``[N]`` degrees WGS84 (valid: |lat| <= 90, |lon| <= 180).
        alt: ``[N]`` metres, or None entries for fixes without altitude.
        opts: ``gps_outlier_k``, ``gps_outlier_floor_m``, ``alt_outlier_floor_m``, ``alt_min_m``,
            ``alt_max_m``.

    Returns:
        ``[N]`` list: None for an inlier, else the reason (a sentence with the numbers).
    """
    n = len(lat)
    out: list[str | None] = [None] * n
    if n == 0:
        return out
    k = opts.gps_outlier_k
    if n >= 2:
        xyz = geodetic_to_enu(lat, lon, np.zeros(n), lat[0], lon[0], 0.0)
        d = np.linalg.norm(xyz - np.median(xyz, axis=0), axis=1)
        med_d = float(np.median(d))
        limit = max(k * _MAD_TO_SIGMA * med_d, opts.gps_outlier_floor_m)
        for i in np.flatnonzero(d > limit):
            out[i] = (
                f"GPS outlier: {_fmt_m(d[i])} from the median position of the {n} fixes, over the limit of "
                f"{_fmt_m(limit)} (max of {k:g} x 1.4826 x median distance {_fmt_m(med_d)} and "
                f"ingest.gps_outlier_floor_m {_fmt_m(opts.gps_outlier_floor_m)})"
            )
    idx = [i for i in range(n) if alt[i] is not None]
    if idx:
        a = np.array([alt[i] for i in idx], dtype=np.float64)
        med = float(np.median(a))
        mad = float(np.median(np.abs(a - med)))
        limit = max(k * _MAD_TO_SIGMA * mad, opts.alt_outlier_floor_m)
        for j, i in enumerate(idx):
            why = None
            if not opts.alt_min_m <= a[j] <= opts.alt_max_m:
                why = (f"GPS altitude {a[j]:.1f} m is outside the plausible range [{opts.alt_min_m:g}, "
                       f"{opts.alt_max_m:g}] m (ingest.alt_min_m / alt_max_m)")
            elif len(idx) >= 2 and abs(a[j] - med) > limit:
                why = (f"GPS altitude outlier: {a[j]:.1f} m is {abs(a[j] - med):.1f} m from the median altitude "
                       f"{med:.1f} m of the {len(idx)} fixes, over the limit of {limit:.1f} m (max of {k:g} x "
                       f"1.4826 x MAD {mad:.1f} m and ingest.alt_outlier_floor_m {opts.alt_outlier_floor_m:g} m)")
            if why:
                out[i] = why if out[i] is None else f"{out[i]}; {why}"
    return out


def _fmt_m(x: float) -> str:
    return f"{x / 1000:.1f} km" if x >= 10_000 else f"{x:.1f} m"


# --------------------------------------------------------------------------------------
# stage


def main(
    input_dir: str | os.PathLike,
    manifest_path: str | os.PathLike,
    options: dict | IngestOptions | None = None,
) -> dict:
    """Read a folder of photos into ``manifest.json`` (schema: ``docs/formats.md``).

    Args:
        input_dir: folder with the photos (searched non-recursively; ``*.jpg``/``*.jpeg``, any case).
        manifest_path: output JSON path, written atomically.
        options: :class:`IngestOptions` or a plain dict of its fields.

    Returns:
        The manifest as written (dict). ``images[i]["enu"]`` is ``[east, north, up]`` metres
        relative to ``origin``; ``lat``/``lon`` degrees WGS84; ``alt`` metres (EXIF, above mean
        sea level, used as ellipsoidal height).

    Raises:
        InputError: missing/unreadable folder, bad options, mixed camera kinds (unless
            ``allow_mixed``), fewer than ``min_images`` usable images (the message lists every
            skipped file and why). Nothing is written then. Bad single files (corrupt, too
            large, duplicate, GPS outlier...) never raise: they are skipped with a warning.
    """
    opts = build_options(IngestOptions, options, "ingest")
    if opts.check_decode and ImageFile.LOAD_TRUNCATED_IMAGES:
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set by another module: truncated JPEGs may go undetected")
    folder = Path(input_dir)
    if not folder.is_dir():
        raise InputError(f"{folder}: input folder does not exist or is not a folder")
    folder = folder.resolve()
    try:
        entries = sorted(os.listdir(folder))
    except OSError as e:
        raise InputError(f"{folder}: cannot list folder ({e.strerror or e})") from e

    kept: list[dict] = []
    skipped: list[dict] = []
    duplicates: list[dict] = []
    stems: dict[str, str] = {}  # casefolded stem -> kept name
    hashes: dict[str, str] = {}  # sha256 of the bytes -> name of the first file with them

    def skip(name: str, reason: str, warn: bool = True) -> None:
        skipped.append({"name": name, "path": str(folder / name), "reason": reason})
        if warn:
            log.warning("%s: skipped: %s", folder / name, reason)

    for name in entries:
        p = folder / name
        if name.startswith("."):
            # Hidden files (".DS_Store", Snakemake's ".snakemake_timestamp" in a directory
            # output) are not photos and not worth a skipped entry.
            continue
        if p.is_dir():
            skip(name, "folder (ingest does not search sub-folders)", warn=False)
            continue
        if p.suffix.lower() not in JPEG_SUFFIXES:
            hint = _jpeg_named_otherwise(p) if p.is_file() else None
            skip(name, hint or "not a .jpg/.jpeg file (ignored)", warn=bool(hint))
            continue
        if not p.is_file():
            skip(name, "not a regular file")
            continue
        key = p.stem.casefold()
        if key in stems:
            skip(name, f"duplicate of {stems[key]} (same name stem ignoring case)")
            continue
        r = _read_one(p, opts, hashes)
        if r.sha256 is not None:
            first = hashes.setdefault(r.sha256, name)
            if first != name:
                duplicates.append({"name": name, "duplicate_of": first, "sha256": r.sha256})
        if r.record is None:
            skip(name, r.reason)
            continue
        if r.gps_reason:
            log.warning("%s: kept without position (require_gps is false): %s", p, r.gps_reason)
        if r.record["color_mode"] in ("L", "CMYK"):
            log.warning("%s: %s JPEG kept; later stages read it as 3-channel colour (OpenCV IMREAD_COLOR)",
                        p, "greyscale" if r.record["color_mode"] == "L" else "CMYK")
        stems[key] = name
        kept.append(r.record)

    # GPS outliers: left out like any unusable fix, before the origin is chosen
    with_fix = [r for r in kept if r["lat"] is not None]
    outliers: list[dict] = []
    bad = gps_outliers([r["lat"] for r in with_fix], [r["lon"] for r in with_fix], [r["alt"] for r in with_fix], opts)
    for r, why in zip(with_fix, bad):
        if why is None:
            continue
        outliers.append({"name": r["name"], "lat": r["lat"], "lon": r["lon"], "alt": r["alt"], "reason": why})
        if opts.require_gps:
            kept.remove(r)
            skip(r["name"], why)
        else:
            log.warning("%s: kept without position (require_gps is false): %s", r["path"], why)
            r["lat"] = r["lon"] = r["alt"] = None
    skipped.sort(key=lambda t: t["name"])

    # camera kind
    eq = [r["name"] for r in kept if r["kind"] == "equirectangular"]
    pe = [r["name"] for r in kept if r["kind"] == "perspective"]
    if eq and pe and not opts.allow_mixed:
        raise InputError(
            f"{folder}: mixed input: {len(eq)} equirectangular panorama(s) {eq} and {len(pe)} "
            f"perspective photo(s) {pe}; put them in separate folders or set allow_mixed"
        )
    camera_kind = "mixed" if (eq and pe) else ("equirectangular" if eq else "perspective")

    if len(kept) < opts.min_images:
        # one line (the CLI prints the message as its one-line error), every skipped file named
        listing = "; ".join(f"{s['name']}: {s['reason']}" for s in skipped)
        raise InputError(
            f"{folder}: only {len(kept)} usable image(s), need at least {opts.min_images} "
            f"({len(entries)} entries, {len(skipped)} skipped{': ' + listing if listing else ''})"
        )

    # altitude fill, origin, ENU
    with_fix = [r for r in kept if r["lat"] is not None]
    alts = [r["alt"] for r in with_fix if r["alt"] is not None]
    fill = float(np.median(alts)) if alts else 0.0
    for r in with_fix:
        if r["alt"] is None:
            r["alt"], r["alt_filled"] = fill, True
            log.warning("%s: no GPS altitude, using %.2f m (median of the others)", r["name"], fill)
    origin = None
    extent = [0.0, 0.0, 0.0]
    if with_fix:
        o = with_fix[0]  # the first fix of the inlier set in sorted file-name order
        origin = {"name": o["name"], "lat": o["lat"], "lon": o["lon"], "alt": o["alt"]}
        enu = geodetic_to_enu(
            [r["lat"] for r in with_fix],
            [r["lon"] for r in with_fix],
            [r["alt"] for r in with_fix],
            o["lat"],
            o["lon"],
            o["alt"],
        )
        for r, v in zip(with_fix, enu):
            r["enu"] = [float(x) for x in v]
        extent = [float(x) for x in np.ptp(enu, axis=0)]
        horizontal = float(np.hypot(extent[0], extent[1]))
        if horizontal > opts.max_extent_m:
            listing = "; ".join(f"{r['name']} at {r['lat']:.6f}, {r['lon']:.6f}" for r in with_fix[:8])
            raise InputError(
                f"{folder}: the GPS positions span {horizontal / 1000:.1f} km, more than ingest.max_extent_m "
                f"({opts.max_extent_m / 1000:g} km): these are not one capture, or their GPS is wrong "
                f"({listing}{'; ...' if len(with_fix) > 8 else ''}); split the folder or fix the GPS")

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "input_dir": str(folder),
        "camera_kind": camera_kind,
        "origin": origin,
        "altitude_reference": ALTITUDE_REFERENCE,
        "options": dataclasses.asdict(opts),
        "images": kept,
        "skipped": skipped,
        "duplicates": duplicates,
        "gps_outliers": outliers,
    }
    write_json(manifest_path, manifest)
    log.info(
        "ingest %s: kept %d, skipped %d, camera %s, %d with GPS, extent E %.1f m N %.1f m U %.1f m -> %s",
        folder,
        len(kept),
        len(skipped),
        camera_kind,
        len(with_fix),
        *extent,
        manifest_path,
    )
    return manifest


def cli(argv: list[str] | None = None) -> int:
    """``splatforge ingest INPUT_DIR MANIFEST [--no-require-gps] [--min-images N] [--allow-mixed]``."""
    ap = argparse.ArgumentParser(
        prog="splatforge ingest",
        description="Read the EXIF GPS of a folder of JPEG photos (non-recursive) into manifest.json.",
    )
    ap.add_argument("input_dir", help="folder with *.jpg / *.jpeg photos or 360 panoramas")
    ap.add_argument("manifest", help="output manifest.json path")
    ap.add_argument("--no-require-gps", action="store_true", help="keep images without GPS (null position)")
    ap.add_argument("--min-images", type=int, default=IngestOptions.min_images, help="minimum usable images (default %(default)s)")
    ap.add_argument("--allow-mixed", action="store_true", help="accept panoramas and perspective photos together")
    ap.add_argument("--no-check-decode", action="store_true", help="skip the full decode that catches truncated files and lying headers")
    ap.add_argument("--max-pixels", type=int, default=IngestOptions.max_pixels,
                    help="skip images whose header claims more pixels (default %(default)s)")
    a = ap.parse_args(argv)
    main(
        a.input_dir,
        a.manifest,
        IngestOptions(
            require_gps=not a.no_require_gps,
            min_images=a.min_images,
            allow_mixed=a.allow_mixed,
            check_decode=not a.no_check_decode,
            max_pixels=a.max_pixels,
        ),
    )
    return 0
