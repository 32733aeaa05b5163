"""GPS from XMP when EXIF has none (#19): broken copies of real lund photos.

Each case copies real photos from ``shared/data/lund/images`` into ``tmp_path``, strips their
EXIF GPS with piexif and writes the same position into the photo's own XMP packet (lund's
photos carry an ExifTool-written packet with an ``exif:`` description) in one of the forms
cameras, editors and drones use; ingest must then give the positions the EXIF fixes give.
Hostile cases (malformed values, XML bombs) are marked ``hostile(cls="ingest-xmp")``.
"""

from __future__ import annotations

import re
import shutil
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import piexif
import pytest

from splatforge_core import ingest
from splatforge_core.errors import InputError

G = piexif.GPSIFD
GOOD = ("01", "02", "03", "04", "05")
XMP_APP1 = b"http://ns.adobe.com/xap/1.0/\x00"  # XMP Specification Part 3, 1.1.3: the APP1 namespace header
EXIF_NS = "http://ns.adobe.com/exif/1.0/"
DJI_NS = "http://www.dji.com/drone-dji/1.0/"


# ---------------------------------------------------------------- helpers: real files, edited


def _segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of the header segments before the scan (ITU-T T.81 B.1.1)."""
    out, i = [], 2
    while data[i + 1] != 0xDA:
        n = int.from_bytes(data[i + 2 : i + 4], "big")
        out.append((data[i + 1], i, i + 2 + n))
        i += 2 + n
    return out


def _xmp_of(path: Path) -> bytes:
    data = path.read_bytes()
    for m, a, b in _segments(data):
        if m == 0xE1 and data[a + 4 : a + 4 + len(XMP_APP1)] == XMP_APP1:
            return data[a + 4 + len(XMP_APP1) : b]
    raise AssertionError(f"{path} has no XMP packet")


def _set_xmp(path: Path, packet: bytes) -> None:
    """Replace the photo's XMP APP1 segment (or add one after the other APPn segments)."""
    data = path.read_bytes()
    segs = _segments(data)
    body = XMP_APP1 + packet
    assert len(body) + 2 < 65536
    seg = b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body
    old = [(a, b) for m, a, b in segs if m == 0xE1 and data[a + 4 : a + 4 + len(XMP_APP1)] == XMP_APP1]
    if old:
        a, b = old[0]
    else:
        a = b = max(e for m, _, e in segs if 0xE0 <= m <= 0xEF)
    path.write_bytes(data[:a] + seg + data[b:])


def _strip_gps(path: Path) -> tuple[float, float, float]:
    """Remove the EXIF GPS IFD; return the fix it held (lat, lon degrees, alt metres; lund: N, E)."""
    exif = piexif.load(str(path))
    g = exif["GPS"]
    assert g[G.GPSLatitudeRef] == b"N" and g[G.GPSLongitudeRef] == b"E"
    lat, lon = (sum(Fraction(*v) / 60**i for i, v in enumerate(g[t])) for t in (G.GPSLatitude, G.GPSLongitude))
    alt = Fraction(*g[G.GPSAltitude])
    exif["GPS"] = {}
    exif["thumbnail"] = None
    piexif.insert(piexif.dump(exif), str(path))
    assert piexif.load(str(path))["GPS"] == {}
    return float(lat), float(lon), float(alt)


def _deg_min(x: float) -> str:
    d = int(x)
    return f"{d},{(x - d) * 60:.10f}"


def _rationals(x: float) -> str:
    d = int(x)
    m = int((x - d) * 60)
    s = Fraction(((x - d) * 60 - m) * 60).limit_denominator(10**7)
    return f"{d}/1,{m}/1,{s.numerator}/{s.denominator}"


def _attr_dm(fix) -> tuple[str, str]:
    """The XMP spec's form, as properties (attributes): "DDD,MM.mmk" (Part 2, 3.2.4 GPSCoordinate)."""
    lat, lon, alt = fix
    alt_r = Fraction(alt).limit_denominator(1000)
    return EXIF_NS, (f" exif:GPSLatitude='{_deg_min(lat)}N' exif:GPSLongitude='{_deg_min(lon)}E'"
                     f" exif:GPSAltitude='{alt_r.numerator}/{alt_r.denominator}' exif:GPSAltitudeRef='0'")


def _element_rationals(fix) -> tuple[str, str]:
    """EXIF-style rationals as child elements, the hemisphere in separate ...Ref properties."""
    lat, lon, alt = fix
    return EXIF_NS, (f"<exif:GPSLatitude>{_rationals(lat)}</exif:GPSLatitude><exif:GPSLatitudeRef>N</exif:GPSLatitudeRef>"
                     f"<exif:GPSLongitude>{_rationals(lon)}</exif:GPSLongitude><exif:GPSLongitudeRef>E"
                     f"</exif:GPSLongitudeRef><exif:GPSAltitude>{alt:g}</exif:GPSAltitude>")


def _dji(fix) -> tuple[str, str]:
    """DJI drones: signed decimal degrees, older firmware's "GpsLongtitude" spelling."""
    lat, lon, alt = fix
    return DJI_NS, f" drone-dji:GpsLatitude='+{lat:.10f}' drone-dji:GpsLongtitude='+{lon:.10f}' drone-dji:AbsoluteAltitude='+{alt:.3f}'"


FORMS = {"xmp_attr_deg_min": _attr_dm, "xmp_element_rationals_ref": _element_rationals, "dji_decimal": _dji}


def _with_props(packet: bytes, ns: str, props: str) -> bytes:
    """Insert properties into a real XMP packet: attributes into its exif description, elements
    as that description's children, or a new description for another namespace."""
    text = packet.decode("utf-8")
    if ns == DJI_NS:
        desc = f"<rdf:Description rdf:about='' xmlns:drone-dji='{DJI_NS}'{props}/>"
        return text.replace("</rdf:RDF>", desc + "\n</rdf:RDF>", 1).encode("utf-8")
    m = re.search(r"xmlns:exif='http://ns.adobe.com/exif/1.0/'>", text)
    assert m, "lund's XMP has an exif: description"
    if props.startswith(" "):
        return (text[: m.end() - 1] + props + ">" + text[m.end():]).encode("utf-8")
    return (text[: m.end()] + props + text[m.end():]).encode("utf-8")


def _folder(lund_dir: Path, d: Path, names=GOOD) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copyfile(lund_dir / f"{n}.jpg", d / f"{n}.jpg")
    return d


def _move_gps_to_xmp(path: Path, form) -> tuple[float, float, float]:
    fix = _strip_gps(path)
    _set_xmp(path, _with_props(_xmp_of(path), *form(fix)))
    return fix


def _reasons(m: dict) -> dict[str, str]:
    return {s["name"]: s["reason"] for s in m["skipped"]}


@pytest.fixture()
def clean(lund_dir, tmp_path) -> dict:
    return ingest.main(_folder(lund_dir, tmp_path / "clean"), tmp_path / "clean.json")


# ---------------------------------------------------------------- GPS from XMP


@pytest.mark.parametrize("form", list(FORMS))
def test_gps_from_xmp_when_exif_has_none(lund_dir, tmp_path, clean, form):
    """Every photo's fix moved from EXIF to XMP: the same positions, origin and ENU, source "xmp"."""
    d = _folder(lund_dir, tmp_path / "in")
    for n in GOOD:
        _move_gps_to_xmp(d / f"{n}.jpg", FORMS[form])
    m = ingest.main(d, tmp_path / "m.json")
    assert m["skipped"] == []
    assert [r["gps_source"] for r in m["images"]] == ["xmp"] * len(GOOD)
    assert {r["gps_source"] for r in clean["images"]} == {"exif"}
    for r, c in zip(m["images"], clean["images"]):
        assert r["name"] == c["name"]
        assert r["lat"] == pytest.approx(c["lat"], abs=1e-9) and r["lon"] == pytest.approx(c["lon"], abs=1e-9)
        assert r["alt"] == pytest.approx(c["alt"], abs=1e-3) and not r["alt_filled"]
    assert m["origin"]["name"] == clean["origin"]["name"] == "01.jpg"
    np.testing.assert_allclose([r["enu"] for r in m["images"]], [r["enu"] for r in clean["images"]], rtol=0, atol=2e-3)


def test_exif_wins_over_xmp(lund_dir, tmp_path, clean):
    """A photo with both: the EXIF fix is used, the XMP one (1 degree north) ignored."""
    d = _folder(lund_dir, tmp_path / "in")
    lat, lon, alt = clean["images"][2]["lat"], clean["images"][2]["lon"], clean["images"][2]["alt"]
    p = d / "03.jpg"
    _set_xmp(p, _with_props(_xmp_of(p), *_attr_dm((lat + 1.0, lon, alt))))
    assert "exif:GPSLatitude" in _xmp_of(p).decode() and piexif.load(str(p))["GPS"]
    m = ingest.main(d, tmp_path / "m.json")
    r = m["images"][2]
    assert r["gps_source"] == "exif" and (r["lat"], r["lon"]) == (lat, lon)
    assert [x["enu"] for x in m["images"]] == [x["enu"] for x in clean["images"]]


def test_one_photo_from_xmp_among_exif(lund_dir, tmp_path, clean):
    d = _folder(lund_dir, tmp_path / "in")
    _move_gps_to_xmp(d / "04.jpg", _dji)
    m = ingest.main(d, tmp_path / "m.json")
    assert [r["gps_source"] for r in m["images"]] == ["exif", "exif", "exif", "xmp", "exif"]
    assert m["origin"] == clean["origin"]
    np.testing.assert_allclose(m["images"][3]["enu"], clean["images"][3]["enu"], rtol=0, atol=2e-3)


@pytest.mark.parametrize("lat_s, lon_s, sign", [("33,51.5S", "151,12.5E", (-1, 1)), ("33,51.5N", "151,12.5W", (1, -1))])
def test_xmp_hemispheres(lat_s, lon_s, sign):
    packet = (f"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>"
              f"<rdf:Description rdf:about='' xmlns:exif='{EXIF_NS}' exif:GPSLatitude='{lat_s}' exif:GPSLongitude='{lon_s}'"
              f" exif:GPSAltitude='12/1' exif:GPSAltitudeRef='1'/></rdf:RDF></x:xmpmeta>")
    lat, lon, alt = ingest.xmp_gps(ingest.parse_xmp(packet))
    assert (lat, lon) == pytest.approx((sign[0] * (33 + 51.5 / 60), sign[1] * (151 + 12.5 / 60)), abs=1e-12)
    assert alt == -12.0


# ---------------------------------------------------------------- malformed XMP GPS


def _bad_exif_value(prop, value):
    def form(fix):
        lat, lon, alt = fix
        vals = {"GPSLatitude": f"{_deg_min(lat)}N", "GPSLongitude": f"{_deg_min(lon)}E", prop: value}
        return EXIF_NS, "".join(f" exif:{k}='{v}'" for k, v in vals.items())
    return form


def _bad_dji(fix):
    return DJI_NS, f" drone-dji:GpsLatitude='+{fix[0]:.6f}x' drone-dji:GpsLongitude='+{fix[1]:.6f}'"


BAD_VALUES = {
    "text": (_bad_exif_value("GPSLatitude", "somewhere"), "GPS latitude/longitude unreadable in XMP"),
    "minutes_over_60": (_bad_exif_value("GPSLatitude", "55,61.5N"), "GPS latitude/longitude unreadable in XMP"),
    "no_hemisphere": (_bad_exif_value("GPSLatitude", "55,41.9"), "GPS latitude/longitude unreadable in XMP"),
    "wrong_hemisphere": (_bad_exif_value("GPSLongitude", "13,11.7N"), "GPS latitude/longitude unreadable in XMP"),
    "zero_denominator": (_bad_exif_value("GPSLatitude", "55/0,41/1,53/1N"), "GPS latitude/longitude unreadable in XMP"),
    "out_of_range": (_bad_exif_value("GPSLatitude", "95,0.0N"), "GPS out of range (lat 95.0000000"),
    "void_status": (_bad_exif_value("GPSStatus", "V"), "GPS fix marked void in XMP"),
    "dji_text": (_bad_dji, "drone-dji:GpsLatitude="),
}


@pytest.mark.hostile(cls="ingest-xmp", expect="correct")
@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_malformed_xmp_gps_skipped_by_name(lund_dir, tmp_path, clean, case, caplog):
    """Decision (like an unreadable EXIF fix): the photo is skipped with the reason, naming the
    XMP property; the other photos' result is unchanged."""
    d = _folder(lund_dir, tmp_path / "in")
    shutil.copyfile(lund_dir / "06.jpg", d / "00_xmp.jpg")
    _move_gps_to_xmp(d / "00_xmp.jpg", BAD_VALUES[case][0])
    m = ingest.main(d, tmp_path / "m.json")
    rs = _reasons(m)
    assert list(rs) == ["00_xmp.jpg"] and BAD_VALUES[case][1] in rs["00_xmp.jpg"], rs
    assert [r["enu"] for r in m["images"]] == [r["enu"] for r in clean["images"]] and m["origin"] == clean["origin"]
    assert any("00_xmp.jpg" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


@pytest.mark.hostile(cls="ingest-xmp", expect="clear_error")
def test_all_malformed_xmp_gps_error_names_each_file(lund_dir, tmp_path):
    d = _folder(lund_dir, tmp_path / "in", names=("01", "02", "03"))
    for n in ("01", "02", "03"):
        _move_gps_to_xmp(d / f"{n}.jpg", _bad_exif_value("GPSLongitude", "13,11.7"))
    out = tmp_path / "m.json"
    with pytest.raises(InputError) as e:
        ingest.main(d, out)
    msg = str(e.value)
    assert "only 0 usable image(s)" in msg and "\n" not in msg and not out.exists()
    for n in ("01", "02", "03"):
        assert f"{n}.jpg: GPS latitude/longitude unreadable in XMP" in msg


# ---------------------------------------------------------------- hostile XMP packets


def _billion_laughs(levels: int = 10) -> bytes:
    ents = "".join(f'<!ENTITY l{i} "{("&l%d;" % (i - 1)) * 10}">' for i in range(1, levels))
    return (f'<?xml version="1.0"?><!DOCTYPE x:xmpmeta [<!ENTITY l0 "lol">{ents}]>'
            f"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>"
            f"<rdf:Description rdf:about='' xmlns:exif='{EXIF_NS}'><exif:UserComment>&l{levels - 1};</exif:UserComment>"
            f"</rdf:Description></rdf:RDF></x:xmpmeta>").encode()


def _external_entity() -> bytes:
    return (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>&e;</x:xmpmeta>")


BOMBS = {"billion_laughs": _billion_laughs, "external_entity": _external_entity}


@pytest.mark.hostile(cls="ingest-xmp", expect="correct")
@pytest.mark.parametrize("case", list(BOMBS))
def test_xml_bomb_in_xmp_refused_quickly(lund_dir, tmp_path, clean, case):
    """10**9 "lol"s (3 GB expanded) in a photo's XMP: refused at the DTD, the file skipped by name
    within the time of an ordinary ingest; the others' result unchanged."""
    d = _folder(lund_dir, tmp_path / "in")
    shutil.copyfile(lund_dir / "06.jpg", d / "00_bomb.jpg")
    _set_xmp(d / "00_bomb.jpg", BOMBS[case]())
    t = time.perf_counter()
    with pytest.raises(ingest.XmpRefused):
        ingest.parse_xmp(_xmp_of(d / "00_bomb.jpg"))
    assert time.perf_counter() - t < 0.5
    m = ingest.main(d, tmp_path / "m.json")
    rs = _reasons(m)
    assert list(rs) == ["00_bomb.jpg"] and rs["00_bomb.jpg"].startswith("XMP metadata refused: XMP packet declares a DTD")
    assert [r["enu"] for r in m["images"]] == [r["enu"] for r in clean["images"]]


@pytest.mark.hostile(cls="ingest-xmp", expect="correct")
def test_oversized_xmp_refused_unread():
    packet = b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>" + b" " * 2000 + b"</x:xmpmeta>"
    assert ingest.parse_xmp(packet).tag == "{adobe:ns:meta/}xmpmeta"
    with pytest.raises(ingest.XmpRefused, match="larger than 1000 bytes"):
        ingest.parse_xmp(packet, max_bytes=1000)


@pytest.mark.hostile(cls="ingest-xmp", expect="correct")
def test_not_well_formed_xmp(lund_dir, tmp_path, clean):
    """Broken XML in XMP: ignored when EXIF has the fix; named in the reason when EXIF has none."""
    d = _folder(lund_dir, tmp_path / "in")
    broken = _xmp_of(d / "02.jpg").replace(b"</rdf:RDF>", b"</rdf:RDFX>")
    _set_xmp(d / "02.jpg", broken)
    shutil.copyfile(lund_dir / "06.jpg", d / "00_nogps.jpg")
    _strip_gps(d / "00_nogps.jpg")
    _set_xmp(d / "00_nogps.jpg", broken)
    m = ingest.main(d, tmp_path / "m.json")
    rs = _reasons(m)
    assert list(rs) == ["00_nogps.jpg"]
    assert rs["00_nogps.jpg"].startswith("no GPS in EXIF, and its XMP packet is not well-formed XML (mismatched tag")
    assert [r["enu"] for r in m["images"]] == [r["enu"] for r in clean["images"]]
