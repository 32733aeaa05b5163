"""Ingest stage: read the EXIF GPS of a folder of photos into ``manifest.json``.

What it does
------------
* Lists the input folder **non-recursively** (sub-folders are reported as skipped, not
  searched), in sorted file-name order (Python ``sorted`` on the names, i.e. code-point order).
* Keeps files named ``*.jpg`` / ``*.jpeg`` in any letter case; every other entry gets a
  ``skipped`` record with its reason.
* Reads only the JPEG header segments (Pillow's ``Image.open`` parses the markers up to the
  start of scan, no pixel decode) and decodes the EXIF block with ``piexif``. The JPEG files are
  never copied or modified.
* With ``check_decode`` (default) each JPEG is additionally decoded at 1/8 scale (Pillow draft
  mode: libjpeg DCT scaling) so that a truncated file is caught here and not in SfM.
* Detects 360 equirectangular panoramas from the GPano XMP ``ProjectionType`` (Google Photo
  Sphere XMP metadata, https://developers.google.com/streetview/spherical-metadata), or, when
  no GPano data is present, from a 2:1 aspect ratio.
* The first valid GPS fix in sorted file-name order is the origin; every fix is converted to
  local ENU metres with :func:`geodetic_to_enu`.
* Writes ``manifest.json`` (schema in ``docs/formats.md``) atomically; on any error nothing
  is written.

Decisions on bad input (each covered by ``tests/test_ingest.py``)
-----------------------------------------------------------------
* no GPS / unusable GPS (missing, (0, 0), out of range, ``GPSStatus`` void, missing hemisphere
  reference): skipped with the reason, or kept with ``null`` position when
  ``require_gps`` is false;
* not a JPEG although named ``.jpg`` (magic bytes), corrupt header, truncated data: skipped
  with the reason; an :class:`~splatforge_core.errors.InputError` is raised only if fewer
  than ``min_images`` usable images remain;
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

An image with a horizontal fix but no ``GPSAltitude`` is kept with its altitude filled with the
median altitude of the images that have one (0.0 if none has), flagged ``"alt_filled": true``.

Extra manifest keys beyond the ``docs/formats.md`` example (additive, readers may ignore them):
``timestamp_source`` (``"exif_datetime_original"``, ``"gps_utc"`` or ``null``), ``alt_filled``
(bool), ``heading_deg`` / ``heading_ref`` (EXIF ``GPSImgDirection`` / ``GPSImgDirectionRef``, or
``null``) and ``gpano_pose_deg`` (GPano pose heading/pitch/roll, or ``null``) per image, and
``options`` (the options used) at the top level.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import piexif
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
REASON_NO_GPS = "no GPS in EXIF"


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
        check_decode: decode every JPEG at 1/8 scale (Pillow draft mode) to catch truncated
            files (default True; measured ~2 ms per 1024x768 photo, ~30 ms per 5760x2880
            panorama on one CPU core).
        equirect_by_aspect: without GPano XMP, treat an image of aspect ratio 2:1 as an
            equirectangular panorama (default True).
        aspect_tolerance: relative tolerance on ``width / height == 2`` for that test
            (default 0.01).
    """

    require_gps: bool = True
    min_images: int = 3
    allow_mixed: bool = False
    check_decode: bool = True
    equirect_by_aspect: bool = True
    aspect_tolerance: float = 0.01

    def __post_init__(self) -> None:
        for f in ("require_gps", "allow_mixed", "check_decode", "equirect_by_aspect"):
            if not isinstance(getattr(self, f), bool):
                raise InputError(f"ingest option {f!r} must be true or false, got {getattr(self, f)!r}")
        if isinstance(self.min_images, bool) or not isinstance(self.min_images, int) or self.min_images < 1:
            raise InputError(f"ingest option 'min_images' must be an integer >= 1, got {self.min_images!r}")
        tol = self.aspect_tolerance
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < 0.5:
            raise InputError(f"ingest option 'aspect_tolerance' must be a number in [0, 0.5), got {tol!r}")

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
    if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
        return f"GPS out of range (lat {lat:.7f}, lon {lon:.7f})"
    if lat == 0 and lon == 0:
        return "GPS at (0, 0): placeholder fix, not a real position"
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


def _gpano(xmp: bytes | str | None) -> dict[str, str]:
    """GPano properties (``ProjectionType``, ``FullPanoWidthPixels``...) from an XMP packet.

    Handles both RDF forms, attributes on ``rdf:Description`` and child elements.
    Returns an empty dict when there is no XMP or no GPano data.
    """
    if not xmp:
        return {}
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8", errors="replace")
    out: dict[str, str] = {}
    try:
        # strip the <?xpacket ...?> processing instructions and padding around the packet
        root = ET.fromstring(xmp.strip().strip(b"\x00"))
        pre = "{" + GPANO_NS + "}"
        for el in root.iter():
            for k, v in el.attrib.items():
                if k.startswith(pre):
                    out[k[len(pre):]] = v.strip()
            if isinstance(el.tag, str) and el.tag.startswith(pre) and el.text:
                out[el.tag[len(pre):]] = el.text.strip()
    except ET.ParseError:
        # Malformed XML: fall back to a plain pattern search for the one property that matters.
        m = re.search(rb"GPano:ProjectionType(?:>|=[\"'])\s*([A-Za-z]+)", xmp)
        if m:
            out["ProjectionType"] = m.group(1).decode()
    return out


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
    kind = next((k for m, k in _MAGIC_HINTS if head.startswith(m)), None)
    if kind is None and head[4:8] == b"ftyp":
        kind = "HEIF/ISO-BMFF"
    what = f"looks like {kind}" if kind else f"starts with {head[:4]!r}"
    return f"not a JPEG file although named .jpg ({what})"


@dataclass
class _Read:
    record: dict | None = None
    reason: str | None = None  # skip reason
    gps_reason: str | None = None  # why the position is null (record kept)


def _read_one(path: Path, opts: IngestOptions) -> _Read:
    """Read one JPEG's header metadata; returns a record or a skip reason (never raises on bad files)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return _Read(reason=f"cannot read file ({e.strerror or e})")
    bad = _not_jpeg_reason(head)
    if bad:
        return _Read(reason=bad)
    try:
        with Image.open(path) as im:
            if im.format not in ("JPEG", "MPO"):
                return _Read(reason=f"not a JPEG file (Pillow reads it as {im.format})")
            width, height = (int(v) for v in im.size)
            exif_bytes = im.info.get("exif")
            xmp = im.info.get("xmp")
            if opts.check_decode:
                try:
                    im.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                    im.load()
                except (OSError, ValueError, SyntaxError) as e:
                    return _Read(reason=f"truncated or corrupt JPEG data ({e})")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        return _Read(reason=f"corrupt JPEG header ({e})")
    if width <= 0 or height <= 0:
        return _Read(reason=f"invalid image size {width}x{height}")

    exif: dict = {}
    exif_error = None
    if exif_bytes:
        try:
            exif = piexif.load(exif_bytes)
        except Exception as e:  # piexif raises assorted errors (struct.error, ValueError, KeyError) on bad IFDs
            exif_error = f"EXIF unreadable ({type(e).__name__}: {e})"

    # camera kind
    gp = _gpano(xmp)
    proj = gp.get("ProjectionType")
    if proj is not None:
        if proj.lower() != "equirectangular":
            return _Read(reason=f"unsupported GPano ProjectionType {proj!r} (only equirectangular)")
        try:
            full_w = int(float(gp.get("FullPanoWidthPixels", width)))
            full_h = int(float(gp.get("FullPanoHeightPixels", height)))
            crop_w = int(float(gp.get("CroppedAreaImageWidthPixels", full_w)))
            crop_h = int(float(gp.get("CroppedAreaImageHeightPixels", full_h)))
        except ValueError:
            return _Read(reason=f"unreadable GPano pixel sizes in XMP: {gp}")
        if crop_w != full_w or crop_h != full_h:
            return _Read(
                reason=f"partial equirectangular panorama (GPano cropped area {crop_w}x{crop_h} of "
                f"{full_w}x{full_h}); only full 360x180 panoramas are supported"
            )
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
    }
    gps = exif_error or _parse_gps(exif.get("GPS", {}))
    if isinstance(gps, str):
        if opts.require_gps:
            return _Read(reason=gps)
        return _Read(record=rec, gps_reason=gps)
    rec["lat"], rec["lon"], rec["alt"] = gps
    rec["heading_deg"], rec["heading_ref"] = _parse_heading(exif.get("GPS", {}))
    return _Read(record=rec)


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
            ``allow_mixed``), fewer than ``min_images`` usable images. Nothing is written then.
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
    stems: dict[str, str] = {}  # casefolded stem -> kept name
    for name in entries:
        p = folder / name
        if name.startswith("."):
            # Hidden files (".DS_Store", Snakemake's ".snakemake_timestamp" in a directory
            # output) are not photos and not worth a skipped entry.
            continue
        if p.is_dir():
            skipped.append({"name": name, "reason": "folder (ingest does not search sub-folders)"})
            continue
        if p.suffix.lower() not in JPEG_SUFFIXES:
            skipped.append({"name": name, "reason": "not a .jpg/.jpeg file (ignored)"})
            continue
        if not p.is_file():
            skipped.append({"name": name, "reason": "not a regular file"})
            continue
        key = p.stem.casefold()
        if key in stems:
            skipped.append({"name": name, "reason": f"duplicate of {stems[key]} (same name stem ignoring case)"})
            continue
        r = _read_one(p, opts)
        if r.record is None:
            skipped.append({"name": name, "reason": r.reason})
            log.warning("%s: skipped: %s", p, r.reason)
            continue
        if r.gps_reason:
            log.warning("%s: kept without position (require_gps is false): %s", p, r.gps_reason)
        stems[key] = name
        kept.append(r.record)

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
        reasons: dict[str, int] = {}
        for s in skipped:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
        detail = "; ".join(f"{n} x {r}" for r, n in sorted(reasons.items(), key=lambda t: -t[1])[:5])
        raise InputError(
            f"{folder}: only {len(kept)} usable image(s), need at least {opts.min_images} "
            f"({len(entries)} entries, {len(skipped)} skipped{': ' + detail if detail else ''})"
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
        o = with_fix[0]
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

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "input_dir": str(folder),
        "camera_kind": camera_kind,
        "origin": origin,
        "altitude_reference": ALTITUDE_REFERENCE,
        "options": dataclasses.asdict(opts),
        "images": kept,
        "skipped": skipped,
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
    ap.add_argument("--no-check-decode", action="store_true", help="skip the 1/8-scale decode that catches truncated files")
    a = ap.parse_args(argv)
    main(
        a.input_dir,
        a.manifest,
        IngestOptions(
            require_gps=not a.no_require_gps,
            min_images=a.min_images,
            allow_mixed=a.allow_mixed,
            check_decode=not a.no_check_decode,
        ),
    )
    return 0
