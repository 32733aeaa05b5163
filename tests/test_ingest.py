"""Tests of the ingest stage on the real photos in ../shared/data (lund, pano360).

Broken inputs are made as copies in ``tmp_path``; the shared data is never modified.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import piexif
import pytest
from PIL import Image

from splatforge_core import ingest
from splatforge_core.errors import InputError
from splatforge_core.geodesy import enu_to_geodetic, geodetic_to_enu
from splatforge_core.ingest import IngestOptions

G = piexif.GPSIFD


# ---------------------------------------------------------------- helpers


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)  # copyfile: not the read-only mode bits of the shared data
    return dst


def _lund(lund_dir: Path, folder: Path, names=("01", "02", "03")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        _copy(lund_dir / f"{n}.jpg", folder / f"{n}.jpg")
    return folder


def _edit_gps(path: Path, update: dict | None = None, remove: tuple = ()) -> None:
    """Rewrite the GPS IFD of a (copied) JPEG in place with piexif."""
    exif = piexif.load(str(path))
    gps = exif["GPS"]
    for k in remove:
        gps.pop(k, None)
    gps.update(update or {})
    exif["thumbnail"] = None
    piexif.insert(piexif.dump(exif), str(path))


def _strip_xmp(src: Path, dst: Path) -> None:
    """Copy a JPEG without its XMP APP1 segment (header segments walked per ITU-T T.81 B.1.1)."""
    data = src.read_bytes()
    out = bytearray(data[:2])
    i = 2
    while i < len(data):
        assert data[i] == 0xFF
        marker = data[i + 1]
        if marker == 0xDA:  # start of scan: rest is entropy-coded data
            out += data[i:]
            break
        seg_len = int.from_bytes(data[i + 2 : i + 4], "big")
        seg = data[i : i + 2 + seg_len]
        if not (marker == 0xE1 and seg[4:].startswith(b"http://ns.adobe.com/xap/1.0/")):
            out += seg
        i += 2 + seg_len
    dst.write_bytes(bytes(out))


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _reasons(m: dict) -> dict[str, str]:
    return {s["name"]: s["reason"] for s in m["skipped"]}


@pytest.fixture(scope="module")
def lund_manifest(lund_dir: Path, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("lund") / "manifest.json"
    return ingest.main(lund_dir, out), out


# ---------------------------------------------------------------- real data


def test_lund_manifest(lund_manifest, lund_dir):
    m, path = lund_manifest
    assert json.loads(path.read_text()) == m
    assert m["schema_version"] == 1
    assert m["input_dir"] == str(lund_dir.resolve())
    assert m["camera_kind"] == "perspective"
    assert len(m["images"]) == 29 and m["skipped"] == []
    assert [r["name"] for r in m["images"]] == [f"{i:02d}.jpg" for i in range(1, 30)]
    assert m["origin"]["name"] == "01.jpg"
    assert m["images"][0]["enu"] == [0.0, 0.0, 0.0]
    for r in m["images"]:
        assert (r["width"], r["height"], r["kind"]) == (1024, 768, "perspective")
        assert r["make"] is None and r["model"] is None
        # SOURCES.md says "no focal length", but the EXIF of every lund photo does hold
        # FocalLength 43/10 mm and FocalLengthIn35mmFilm 35 (iPhone 4S values); read as written.
        assert r["focal_length_mm"] == pytest.approx(4.3) and r["focal_length_35mm"] == 35
        assert Path(r["path"]) == lund_dir.resolve() / r["name"]
    enu = np.array([r["enu"] for r in m["images"]])
    span = np.ptp(enu, axis=0)
    assert 150 < span[1] < 250, span  # ~200 m walk north-south
    assert span[0] < span[1]
    # images 27-29 share one GPS fix
    assert m["images"][26]["enu"] == m["images"][27]["enu"] == m["images"][28]["enu"]


def test_enu_matches_pycolmap(lund_manifest):
    pycolmap = pytest.importorskip("pycolmap")
    m, _ = lund_manifest
    lla = np.array([[r["lat"], r["lon"], r["alt"]] for r in m["images"]], dtype=np.float64)
    o = m["origin"]
    ref = pycolmap.GPSTransform(pycolmap.GPSTransformEllipsoid.WGS84).ellipsoid_to_enu(
        lla, o["lat"], o["lon"], o["alt"]
    )
    ours = geodetic_to_enu(lla[:, 0], lla[:, 1], lla[:, 2], o["lat"], o["lon"], o["alt"])
    assert ours.shape == (29, 3) and ours.dtype == np.float64
    np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)
    np.testing.assert_allclose(np.array([r["enu"] for r in m["images"]]), ref, atol=1e-3, rtol=0)
    assert np.abs(ref).max() > 100  # the comparison covers a real extent


def test_enu_far_points_match_pycolmap_and_roundtrip():
    pycolmap = pytest.importorskip("pycolmap")
    lla = np.array([[52.45, 6.9, 120.0], [52.40, 6.80, -20.0], [52.5, 7.0, 1000.0]])
    o = (52.4434123, 6.8899343, 89.43)
    ref = pycolmap.GPSTransform(pycolmap.GPSTransformEllipsoid.WGS84).ellipsoid_to_enu(lla, *o)
    ours = geodetic_to_enu(lla[:, 0], lla[:, 1], lla[:, 2], *o)
    np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)
    back = enu_to_geodetic(ours, *o)
    np.testing.assert_allclose(back[:, :2], lla[:, :2], atol=1e-10, rtol=0)
    np.testing.assert_allclose(back[:, 2], lla[:, 2], atol=1e-6, rtol=0)
    # a scalar input gives one row; origin maps to 0
    np.testing.assert_allclose(geodetic_to_enu(o[0], o[1], o[2], *o), np.zeros((1, 3)), atol=1e-9)
    with pytest.raises(ValueError, match=r"latitude must be in \[-90, 90\]"):
        geodetic_to_enu(91.0, 0.0, 0.0, *o)


def test_gopro_panorama(pano_path, tmp_path):
    m = ingest.main(pano_path.parent, tmp_path / "m.json", {"min_images": 1})
    assert m["camera_kind"] == "equirectangular"
    (r,) = m["images"]
    assert r["kind"] == "equirectangular" and (r["width"], r["height"]) == (5760, 2880)
    # EXIF holds seconds to 1e-7 and altitude 89426/1000 m
    assert r["lat"] == pytest.approx(52.4434123, abs=1e-7)
    assert r["lon"] == pytest.approx(6.8899343, abs=1e-7)
    assert r["alt"] == pytest.approx(89.43, abs=0.005)
    assert (r["make"], r["model"]) == ("GoPro", "GoPro Max")
    assert r["timestamp"] == "2020-05-09T14:16:30"
    assert m["origin"]["name"] == pano_path.name and r["enu"] == [0.0, 0.0, 0.0]


def test_pano_without_xmp_detected_by_aspect(pano_path, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    _strip_xmp(pano_path, d / "p.jpg")
    assert "xmp" not in Image.open(d / "p.jpg").info
    m = ingest.main(d, tmp_path / "a.json", {"min_images": 1})
    assert m["images"][0]["kind"] == "equirectangular"
    m = ingest.main(d, tmp_path / "b.json", {"min_images": 1, "equirect_by_aspect": False})
    assert m["images"][0]["kind"] == "perspective"


def test_gpano_projection_and_partial_panorama(pano_path, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    data = pano_path.read_bytes()
    # same-length byte edits inside the XMP packet keep every segment length valid
    cyl = data.replace(b">equirectangular<", b">cylindrical    <", 1)
    part = data.replace(b"<GPano:CroppedAreaImageWidthPixels>5760<", b"<GPano:CroppedAreaImageWidthPixels>2880<", 1)
    assert cyl != data and part != data
    (d / "cyl.jpg").write_bytes(cyl)
    (d / "part.jpg").write_bytes(part)
    (d / "ok.jpg").symlink_to(pano_path)
    m = ingest.main(d, tmp_path / "m.json", {"min_images": 1})
    rs = _reasons(m)
    assert "unsupported GPano ProjectionType 'cylindrical'" in rs["cyl.jpg"]
    assert "partial equirectangular panorama" in rs["part.jpg"] and "2880x2880 of 5760x2880" in rs["part.jpg"]
    assert [r["name"] for r in m["images"]] == ["ok.jpg"]


# ---------------------------------------------------------------- bad input


def test_no_gps_skipped_or_kept(lund_dir, tmp_path):
    d = _lund(lund_dir, tmp_path / "in")
    _copy(lund_dir / "04.jpg", d / "00.jpg")
    _edit_gps(d / "00.jpg", remove=tuple(piexif.load(str(d / "00.jpg"))["GPS"]))
    m = ingest.main(d, tmp_path / "a.json")
    assert _reasons(m) == {"00.jpg": "no GPS in EXIF or XMP"}
    assert [r["name"] for r in m["images"]] == ["01.jpg", "02.jpg", "03.jpg"]

    m = ingest.main(d, tmp_path / "b.json", {"require_gps": False})
    assert m["skipped"] == []
    r0 = m["images"][0]
    assert r0["name"] == "00.jpg" and r0["lat"] is r0["lon"] is r0["alt"] is r0["enu"] is None
    assert m["origin"]["name"] == "01.jpg"  # first *valid* fix
    assert m["images"][1]["enu"] == [0.0, 0.0, 0.0]


def test_truncated_and_corrupt_jpeg_skipped(lund_dir, tmp_path):
    d = _lund(lund_dir, tmp_path / "in")
    data = (lund_dir / "04.jpg").read_bytes()
    (d / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (d / "trunc_end.jpg").write_bytes(data[:-200])
    bad = bytearray(data)
    bad[2:400] = b"\x00" * 398  # header segments destroyed, SOI kept
    (d / "corrupt.jpg").write_bytes(bytes(bad))
    m = ingest.main(d, tmp_path / "m.json")
    rs = _reasons(m)
    assert set(rs) == {"trunc.jpg", "trunc_end.jpg", "corrupt.jpg"}
    assert "truncated" in rs["trunc.jpg"] and "truncated" in rs["trunc_end.jpg"]
    assert "corrupt JPEG" in rs["corrupt.jpg"]
    assert len(m["images"]) == 3
    # without the decode check the half file is not caught (documents what check_decode buys)
    m = ingest.main(d, tmp_path / "n.json", {"check_decode": False})
    assert "trunc.jpg" in [r["name"] for r in m["images"]]


def test_non_jpeg_named_jpg_and_other_files(lund_dir, tmp_path):
    d = _lund(lund_dir, tmp_path / "in")
    Image.open(lund_dir / "05.jpg").save(d / "fake.jpg", format="PNG")
    _copy(lund_dir / "06.jpg", d / "photo.png")
    (d / "notes.txt").write_text("hello")
    (d / "sub").mkdir()
    _copy(lund_dir / "07.jpg", d / "sub" / "07.jpg")
    m = ingest.main(d, tmp_path / "m.json")
    rs = _reasons(m)
    assert rs["fake.jpg"].startswith("not a JPEG file although named .jpg") and "PNG" in rs["fake.jpg"]
    assert rs["notes.txt"] == "not a .jpg/.jpeg file (ignored)"
    assert rs["photo.png"] == "JPEG data in a file named .png (skipped): rename it to .jpg to use it"
    assert "sub-folders" in rs["sub"]
    assert [r["name"] for r in m["images"]] == ["01.jpg", "02.jpg", "03.jpg"]


def test_duplicate_stems(lund_dir, tmp_path):
    d = _lund(lund_dir, tmp_path / "in")
    _copy(lund_dir / "10.jpg", d / "A.JPG")
    _copy(lund_dir / "11.jpg", d / "a.jpg")
    _copy(lund_dir / "12.jpg", d / "a.jpeg")
    (d / "B.jpg").write_bytes(b"not an image")  # unusable first copy of stem b
    _copy(lund_dir / "13.jpg", d / "b.jpeg")
    m = ingest.main(d, tmp_path / "m.json")
    rs = _reasons(m)
    assert rs["a.jpg"] == rs["a.jpeg"] == "duplicate of A.JPG (same name stem ignoring case)"
    assert "not a JPEG" in rs["B.jpg"]
    names = [r["name"] for r in m["images"]]
    assert names == ["01.jpg", "02.jpg", "03.jpg", "A.JPG", "b.jpeg"]


@pytest.mark.parametrize(
    "update, remove, reason",
    [
        ({G.GPSLatitude: ((0, 1), (0, 1), (0, 1)), G.GPSLongitude: ((0, 1), (0, 1), (0, 1))}, (), "GPS at (0, 0)"),
        ({G.GPSLatitude: ((95, 1), (0, 1), (0, 1))}, (), "GPS out of range"),
        ({G.GPSLongitude: ((181, 1), (0, 1), (0, 1))}, (), "GPS out of range"),
        ({G.GPSStatus: b"V"}, (), "void"),
        ({}, (G.GPSLatitudeRef,), "hemisphere reference"),
        ({G.GPSLatitude: ((55, 0), (41, 1), (0, 1))}, (), "unreadable"),
    ],
)
def test_bad_gps_skipped(lund_dir, tmp_path, update, remove, reason):
    d = _lund(lund_dir, tmp_path / "in")
    _copy(lund_dir / "08.jpg", d / "08.jpg")
    _edit_gps(d / "08.jpg", update, remove)
    m = ingest.main(d, tmp_path / "m.json")
    assert list(_reasons(m)) == ["08.jpg"] and reason in m["skipped"][0]["reason"]
    m = ingest.main(d, tmp_path / "k.json", {"require_gps": False})
    r = next(r for r in m["images"] if r["name"] == "08.jpg")
    assert r["lat"] is None and r["enu"] is None


def test_altitude_below_sea_level_and_missing(lund_dir, tmp_path):
    d = _lund(lund_dir, tmp_path / "in")
    _edit_gps(d / "02.jpg", {G.GPSAltitudeRef: 1})
    _edit_gps(d / "03.jpg", remove=(G.GPSAltitude, G.GPSAltitudeRef))
    _edit_gps(d / "01.jpg", {G.GPSDateStamp: b"2014:06:07", G.GPSTimeStamp: ((8, 1), (24, 1), (5, 1))})
    m = ingest.main(d, tmp_path / "m.json")
    r1, r2, r3 = m["images"]
    assert r1["alt"] == 37.0 and r2["alt"] < 0
    src2 = piexif.load(str(lund_dir / "02.jpg"))["GPS"][G.GPSAltitude]
    assert r2["alt"] == pytest.approx(-src2[0] / src2[1])
    assert r2["enu"][2] == pytest.approx(r2["alt"] - 37.0, abs=0.01)
    assert r3["alt_filled"] is True and r3["alt"] == pytest.approx(np.median([r1["alt"], r2["alt"]]))
    assert r1["alt_filled"] is False
    # no DateTimeOriginal in lund: the GPS UTC time is used when present
    assert (r1["timestamp"], r1["timestamp_source"]) == ("2014-06-07T08:24:05Z", "gps_utc")
    assert (r2["timestamp"], r2["timestamp_source"]) == (None, None)


def test_mixed_input(lund_dir, pano_path, tmp_path):
    d = _lund(lund_dir, tmp_path / "in")
    (d / "pano.jpg").symlink_to(pano_path)
    out = tmp_path / "m.json"
    far = {"gps_outlier_floor_m": 1e6, "max_extent_m": 1e6}  # the panorama was taken 549 km from lund: no GPS checks here
    with pytest.raises(InputError) as e:
        ingest.main(d, out, far)
    msg = str(e.value)
    assert "1 equirectangular panorama(s) ['pano.jpg']" in msg
    assert "3 perspective photo(s) ['01.jpg', '02.jpg', '03.jpg']" in msg and str(d) in msg
    assert not out.exists()
    m = ingest.main(d, out, {"allow_mixed": True, **far})
    assert m["camera_kind"] == "mixed"
    assert {r["name"]: r["kind"] for r in m["images"]}["pano.jpg"] == "equirectangular"


def test_too_few_images(lund_dir, tmp_path):
    d = _lund(lund_dir, tmp_path / "in", names=("01", "02"))
    (d / "x.jpg").write_bytes(b"garbage")
    out = tmp_path / "m.json"
    with pytest.raises(InputError) as e:
        ingest.main(d, out)
    msg = str(e.value)
    assert str(d.resolve()) in msg and "only 2 usable image(s), need at least 3" in msg
    assert "3 entries, 1 skipped" in msg and "not a JPEG" in msg
    assert not out.exists() and list(tmp_path.glob("*.json*")) == [] and list(tmp_path.glob(".m*")) == []
    with pytest.raises(InputError, match="does not exist"):
        ingest.main(tmp_path / "nope", out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="only 0 usable"):
        ingest.main(tmp_path / "empty", out)


def test_inputs_not_modified(lund_dir, tmp_path):
    d = _lund(lund_dir, tmp_path / "in")
    before = {p.name: (_sha(p), p.stat().st_mtime_ns) for p in d.iterdir()}
    ingest.main(d, tmp_path / "m.json")
    assert {p.name: (_sha(p), p.stat().st_mtime_ns) for p in d.iterdir()} == before


def test_options():
    assert IngestOptions.from_dict({}) == IngestOptions()
    o = IngestOptions.from_dict({"require_gps": False, "min_images": 5, "allow_mixed": True})
    assert (o.require_gps, o.min_images, o.allow_mixed) == (False, 5, True)
    with pytest.raises(InputError, match="unknown ingest option"):
        IngestOptions.from_dict({"min_image": 3})
    with pytest.raises(InputError, match="min_images"):
        IngestOptions(min_images=0)
    with pytest.raises(InputError, match="require_gps"):
        IngestOptions.from_dict({"require_gps": "no"})


def test_cli(lund_dir, tmp_path):
    from splatforge_core import cli as sf_cli

    d = _lund(lund_dir, tmp_path / "in", names=("01", "02"))
    out = tmp_path / "m.json"
    assert ingest.cli([str(d), str(out), "--min-images", "2"]) == 0
    assert len(json.loads(out.read_text())["images"]) == 2
    out.unlink()
    assert sf_cli.main(["ingest", str(d), str(out)]) == 1  # InputError -> exit 1, nothing written
    assert not out.exists()
    (d / "03.jpg").write_bytes((lund_dir / "03.jpg").read_bytes())
    _edit_gps(d / "03.jpg", remove=tuple(piexif.load(str(d / "03.jpg"))["GPS"]))
    assert sf_cli.main(["ingest", str(d), str(out), "--no-require-gps"]) == 0
    assert json.loads(out.read_text())["images"][2]["lat"] is None


def test_hidden_files_are_ignored_silently(tmp_path, lund_dir):
    import shutil

    from splatforge_core import ingest

    for n in ["01.jpg", "02.jpg", "03.jpg"]:
        shutil.copy(lund_dir / n, tmp_path / n)
    (tmp_path / ".snakemake_timestamp").write_bytes(b"")
    (tmp_path / ".DS_Store").write_bytes(b"\0\0")
    m = ingest.main(tmp_path, tmp_path.parent / f"{tmp_path.name}_manifest.json")
    assert len(m["images"]) == 3
    assert m["skipped"] == []


def test_hostile_options_ranges():
    o = IngestOptions.from_dict({"max_pixels": 5, "gps_outlier_k": 3, "gps_outlier_floor_m": 0, "alt_min_m": -10, "alt_max_m": 10})
    assert (o.max_pixels, o.gps_outlier_k, o.gps_outlier_floor_m) == (5, 3, 0)
    for bad in [{"max_pixels": 0}, {"max_pixels": 2**41}, {"gps_outlier_k": 0.5}, {"gps_outlier_floor_m": -1},
                {"alt_outlier_floor_m": float("nan")}, {"alt_min_m": 100.0, "alt_max_m": 50.0}]:
        with pytest.raises(InputError, match=next(iter(bad))):
            IngestOptions.from_dict(bad)


def test_read_jpeg_frame_matches_pillow(lund_dir, pano_path):
    for p in (lund_dir / "01.jpg", pano_path):  # EXIF thumbnails (a second SOF inside APP1) are skipped
        with open(p, "rb") as f:
            fr = ingest.read_jpeg_frame(f)
        assert (fr.width, fr.height) == Image.open(p).size
        assert (fr.precision, fr.components) == (8, 3) and fr.marker in (0xC0, 0xC2)
    import io

    for data, what in [(b"\xff\xd8\xff\xe1\x00", "ends inside"), (b"\xff\xd8\xff\xda\x00\x02", "no frame header"),
                       (b"\xff\xd8\x00", "broken marker chain"), (b"\x89PNG", "no JPEG start")]:
        with pytest.raises(ValueError, match=what):
            ingest.read_jpeg_frame(io.BytesIO(data))


def test_grey_fill_rows():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    assert ingest._grey_fill_rows(a) == 0
    a[-16:] = 128
    assert ingest._grey_fill_rows(a) == 16
    a[-16:, :, 0] = 127  # not one value in every channel: not the decoder's fill
    assert ingest._grey_fill_rows(a) == 0
    cmyk = np.full((32, 8, 4), 127, np.uint8)  # Pillow inverts Adobe CMYK: zero blocks read 127
    assert ingest._grey_fill_rows(cmyk) == 32
    assert ingest._grey_fill_rows(np.full((8, 8), 128, np.uint8)) == 8


@pytest.mark.hostile(cls="gps", expect="clear_error")
def test_positions_spread_too_far_are_one_clear_error(lund_dir, pano_path, tmp_path):
    """Photos 549 km apart (lund and a GoPro panorama) are not one capture: one error, every file
    named with its position, before anything is written; a wider max_extent_m accepts them."""
    d = _lund(lund_dir, tmp_path / "in")
    (d / "pano.jpg").symlink_to(pano_path)
    out = tmp_path / "m.json"
    opts = {"gps_outlier_floor_m": 1e6, "allow_mixed": True}
    with pytest.raises(InputError, match=r"span 548\.\d km, more than ingest.max_extent_m \(50 km\)") as e:
        ingest.main(d, out, opts)
    assert "pano.jpg at 52.443412, 6.889934" in str(e.value) and "01.jpg at 55.69" in str(e.value)
    assert not out.exists()
    assert len(ingest.main(d, out, {**opts, "max_extent_m": 600_000.0})["images"]) == 4


@pytest.mark.hostile(cls="image", expect="correct")
def test_tiny_and_non_2to1_panoramas_are_skipped_by_name(lund_dir, shared_data, tmp_path):
    """A 16x16 photo and a panorama whose GPano XMP says equirectangular but is 3:1 are skipped,
    each with its reason; the rest of the capture goes on."""
    d = _lund(lund_dir, tmp_path / "in", names=("01", "02", "03", "04"))
    im = Image.open(d / "04.jpg")
    im.resize((16, 16)).save(d / "04.jpg", exif=im.info.get("exif"))
    m = ingest.main(d, tmp_path / "m.json", {})
    reasons = {s["name"]: s["reason"] for s in m["skipped"]}
    assert "image too small: 16x16 px" in reasons["04.jpg"] and len(m["images"]) == 3
    pano = tmp_path / "pano"
    pano.mkdir()
    src = Image.open(shared_data / "geovisio360" / "1.jpg")
    src.crop((0, 0, src.width, src.width // 3)).save(pano / "1.jpg", exif=src.info.get("exif"), xmp=src.info.get("xmp"),
                                                       quality=90)
    with pytest.raises(InputError, match=r"1\.jpg: its GPano XMP says equirectangular but it is 5760x1920 px \(3\.00:1"):
        ingest.main(pano, tmp_path / "p.json", {"min_images": 1})
