"""Hostile-input corpus (#18) for the ingest stage: broken copies of real lund photos.

Each case copies a handful of photos from ``shared/data/lund/images`` into ``tmp_path``,
breaks one (or adds a broken one) and checks that ingest either goes on with the bad file
skipped, named and the result unchanged for the good photos (``expect="correct"``), or
fails with an :class:`InputError` naming every bad file (``expect="clear_error"``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import piexif
import pytest
from PIL import Image

from splatforge_core import ingest
from splatforge_core.errors import InputError, SplatForgeError
from splatforge_core.geodesy import geodetic_to_enu

G = piexif.GPSIFD
GOOD = ("01", "02", "03", "04", "05")


# ---------------------------------------------------------------- helpers


def _folder(lund_dir: Path, d: Path, names=GOOD) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copyfile(lund_dir / f"{n}.jpg", d / f"{n}.jpg")
    return d


def _sof_offset(data: bytes) -> int:
    """Byte offset of the first SOF marker (walk of the header segments, ITU-T T.81 B.1.1)."""
    i = 2
    while True:
        assert data[i] == 0xFF
        marker = data[i + 1]
        if marker in (0xC0, 0xC1, 0xC2):
            return i
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")


def _with_sof(data: bytes, width: int | None = None, height: int | None = None, precision: int | None = None) -> bytes:
    """A copy of a JPEG whose frame header claims another size or sample precision."""
    o = _sof_offset(data)
    b = bytearray(data)
    if precision is not None:
        b[o + 4] = precision
    if height is not None:
        b[o + 5 : o + 7] = height.to_bytes(2, "big")
    if width is not None:
        b[o + 7 : o + 9] = width.to_bytes(2, "big")
    return bytes(b)


def _edit_gps(path: Path, update: dict | None = None, remove: tuple = ()) -> None:
    exif = piexif.load(str(path))
    for k in remove:
        exif["GPS"].pop(k, None)
    exif["GPS"].update(update or {})
    exif["thumbnail"] = None
    piexif.insert(piexif.dump(exif), str(path))


def _dms(deg: float) -> tuple:
    d = int(deg)
    m = int((deg - d) * 60)
    s = round(((deg - d) * 60 - m) * 60 * 1000)
    return ((d, 1), (m, 1), (s, 1000))


def _reasons(m: dict) -> dict[str, str]:
    return {s["name"]: s["reason"] for s in m["skipped"]}


def _geo(m: dict) -> tuple[dict, dict[str, list[float]]]:
    return m["origin"], {r["name"]: r["enu"] for r in m["images"]}


@pytest.fixture()
def clean(lund_dir, tmp_path) -> dict:
    """Manifest of the five good photos alone: what every ``correct`` case must reproduce."""
    return ingest.main(_folder(lund_dir, tmp_path / "clean"), tmp_path / "clean.json")


def _assert_same_geo(m: dict, clean: dict) -> None:
    """Origin and positions of the good photos equal those of the run without the bad file."""
    o, pos = _geo(m)
    o0, pos0 = _geo(clean)
    assert o == o0
    assert pos == pos0


# ---------------------------------------------------------------- images


def _bomb(lund_dir, d):
    (d / "00_bomb.jpg").write_bytes(_with_sof((lund_dir / "06.jpg").read_bytes(), 60000, 30000))
    return "00_bomb.jpg", ["image too large", "60000x30000", "1800.0 megapixels", "ingest.max_pixels"]


def _truncated(lund_dir, d):
    data = (lund_dir / "06.jpg").read_bytes()
    (d / "00_trunc.jpg").write_bytes(data[: len(data) * 2 // 3])
    return "00_trunc.jpg", ["truncated"]


def _truncated_eoi(lund_dir, d):
    # cut and "repaired" with an end-of-image marker: Pillow decodes it without an error
    data = (lund_dir / "06.jpg").read_bytes()
    (d / "00_cut.jpg").write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    return "00_cut.jpg", ["ends before the image size in its header (1024x768)", "grey fill"]


def _lying(lund_dir, d):
    # the case: a header claiming 12000x6000 over 1024x768 data
    (d / "00_lying.jpg").write_bytes(_with_sof((lund_dir / "06.jpg").read_bytes(), 12000, 6000))
    return "00_lying.jpg", ["ends before the image size in its header (12000x6000)", "grey fill"]


def _wider(lund_dir, d):
    # a header that only widens the frame: 1024 wide rows are read as 2048, half the rows are missing
    (d / "00_wide.jpg").write_bytes(_with_sof((lund_dir / "06.jpg").read_bytes(), width=2048))
    return "00_wide.jpg", ["ends before the image size in its header (2048x768)"]


def _zero(lund_dir, d):
    (d / "00_empty.jpg").write_bytes(b"")
    return "00_empty.jpg", ["empty file (0 bytes)"]


def _text(lund_dir, d):
    (d / "00_notes.jpg").write_text("these are my holiday notes\n")
    return "00_notes.jpg", ["not a JPEG file although named .jpg", "b'thes'"]


def _png_as_jpg(lund_dir, d):
    Image.open(lund_dir / "06.jpg").save(d / "00_png.jpg", format="PNG")
    return "00_png.jpg", ["not a JPEG file although named .jpg (PNG data): convert it to JPEG"]


def _jpg_as_png(lund_dir, d):
    shutil.copyfile(lund_dir / "06.jpg", d / "00_photo.png")
    return "00_photo.png", ["JPEG data in a file named .png", "rename it to .jpg"]


def _twelve_bit(lund_dir, d):
    (d / "00_12bit.jpg").write_bytes(_with_sof((lund_dir / "06.jpg").read_bytes(), precision=12))
    return "00_12bit.jpg", ["unsupported JPEG variant: 12-bit"]


IMAGE_CASES = {
    "header_bomb": _bomb,
    "truncated_body": _truncated,
    "truncated_with_eoi": _truncated_eoi,
    "lying_header": _lying,
    "lying_header_width": _wider,
    "zero_bytes": _zero,
    "text_named_jpg": _text,
    "png_named_jpg": _png_as_jpg,
    "jpeg_named_png": _jpg_as_png,
    "jpeg_12bit": _twelve_bit,
}


@pytest.mark.hostile(cls="image", expect="correct")
@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_bad_image_skipped_by_name(lund_dir, tmp_path, clean, case, caplog):
    d = _folder(lund_dir, tmp_path / "in")
    name, expected = IMAGE_CASES[case](lund_dir, d)
    m = ingest.main(d, tmp_path / "m.json")
    rs = _reasons(m)
    assert list(rs) == [name]
    for part in expected:
        assert part in rs[name], rs[name]
    assert m["skipped"][0]["path"] == str(d.resolve() / name)
    assert [r["name"] for r in m["images"]] == [f"{n}.jpg" for n in GOOD]
    _assert_same_geo(m, clean)
    if case != "jpeg_named_png":
        assert any(name in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


@pytest.mark.hostile(cls="image", expect="correct")
def test_bomb_not_decoded_and_cap_configurable(lund_dir, tmp_path):
    """The cap is read from the header: a 1024x768 photo passes a cap of its own size, not one pixel less."""
    d = _folder(lund_dir, tmp_path / "in", names=("01", "02", "03"))
    m = ingest.main(d, tmp_path / "a.json", {"max_pixels": 1024 * 768})
    assert m["skipped"] == [] and m["options"]["max_pixels"] == 1024 * 768
    with pytest.raises(InputError) as e:
        ingest.main(d, tmp_path / "b.json", {"max_pixels": 1024 * 768 - 1})
    for n in ("01.jpg", "02.jpg", "03.jpg"):
        assert f"{n}: image too large: its header claims 1024x768" in str(e.value)
    # a real 12K panorama size passes the default cap, the bomb does not
    assert 11968 * 5984 <= ingest.IngestOptions().max_pixels < 60000 * 30000


@pytest.mark.hostile(cls="image", expect="correct")
@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_greyscale_and_cmyk_kept(lund_dir, tmp_path, mode):
    """Decision: greyscale and CMYK JPEGs are kept (later stages read them with OpenCV IMREAD_COLOR)."""
    d = _folder(lund_dir, tmp_path / "in", names=("01", "02", "03"))
    src = Image.open(lund_dir / "04.jpg")
    src.convert(mode).save(d / "04.jpg", quality=95, exif=src.info["exif"])
    m = ingest.main(d, tmp_path / "m.json")
    assert m["skipped"] == []
    r = m["images"][3]
    assert r["name"] == "04.jpg" and r["color_mode"] == mode
    ref = ingest.main(_folder(lund_dir, tmp_path / "ref", names=("01", "02", "03", "04")), tmp_path / "r.json")
    assert r["enu"] == ref["images"][3]["enu"]
    assert ref["images"][3]["color_mode"] == "RGB"


@pytest.mark.hostile(cls="image", expect="correct")
def test_duplicate_content_under_other_name(lund_dir, tmp_path, clean, caplog):
    d = _folder(lund_dir, tmp_path / "in")
    shutil.copyfile(lund_dir / "03.jpg", d / "holdout_copy.jpg")
    m = ingest.main(d, tmp_path / "m.json")
    rs = _reasons(m)
    assert list(rs) == ["holdout_copy.jpg"] and rs["holdout_copy.jpg"].startswith("duplicate of 03.jpg (identical content")
    sha = m["images"][2]["sha256"]
    assert m["duplicates"] == [{"name": "holdout_copy.jpg", "duplicate_of": "03.jpg", "sha256": sha}]
    assert len({r["sha256"] for r in m["images"]}) == len(GOOD)
    _assert_same_geo(m, clean)
    assert any("holdout_copy.jpg" in r.getMessage() and "03.jpg" in r.getMessage() for r in caplog.records)


@pytest.mark.hostile(cls="image", expect="clear_error")
def test_all_images_bad_lists_every_file(lund_dir, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copyfile(lund_dir / "01.jpg", d / "01.jpg")
    _bomb(lund_dir, d)
    _zero(lund_dir, d)
    _lying(lund_dir, d)
    _text(lund_dir, d)
    out = tmp_path / "m.json"
    with pytest.raises(SplatForgeError) as e:
        ingest.main(d, out)
    msg = str(e.value)
    assert "only 1 usable image(s), need at least 3" in msg and str(d.resolve()) in msg and "\n" not in msg
    for name, reason in [("00_bomb.jpg", "image too large"), ("00_empty.jpg", "empty file"),
                         ("00_lying.jpg", "grey fill"), ("00_notes.jpg", "not a JPEG")]:
        entry = next(e for e in msg.split("; ") if e.startswith(name + ":") or f"skipped: {name}:" in e)
        assert reason in entry
    assert not out.exists()


# ---------------------------------------------------------------- GPS


def _stray_first(lund_dir, d):
    # ~1,260 km north of Lund, first in file order (the issue: it became the ENU origin)
    shutil.copyfile(lund_dir / "06.jpg", d / "00_stray.jpg")
    _edit_gps(d / "00_stray.jpg", {G.GPSLatitude: _dms(67.05)})
    return "00_stray.jpg", ["GPS outlier", "km from the median position"]


def _stray_near(lund_dir, d):
    # 0.01 deg of latitude (1.1 km) off a capture that spans under 30 m
    shutil.copyfile(lund_dir / "06.jpg", d / "00_stray.jpg")
    lat = piexif.load(str(d / "00_stray.jpg"))["GPS"][G.GPSLatitude]
    deg = lat[0][0] + lat[1][0] / 60 + lat[2][0] / lat[2][1] / 3600
    _edit_gps(d / "00_stray.jpg", {G.GPSLatitude: _dms(deg + 0.01)})
    return "00_stray.jpg", ["GPS outlier", "from the median position", "gps_outlier_floor_m"]


def _absurd_alt(lund_dir, d):
    shutil.copyfile(lund_dir / "06.jpg", d / "00_high.jpg")
    _edit_gps(d / "00_high.jpg", {G.GPSAltitude: (90000, 1)})
    return "00_high.jpg", ["GPS altitude 90000.0 m is outside the plausible range"]


def _alt_outlier(lund_dir, d):
    # plausible on Earth, but 2 km above the other photos of a walk
    shutil.copyfile(lund_dir / "06.jpg", d / "00_high.jpg")
    _edit_gps(d / "00_high.jpg", {G.GPSAltitude: (2039, 1)})
    return "00_high.jpg", ["GPS altitude outlier: 2039.0 m", "from the median altitude"]


def _below_sea(lund_dir, d):
    shutil.copyfile(lund_dir / "06.jpg", d / "00_deep.jpg")
    _edit_gps(d / "00_deep.jpg", {G.GPSAltitude: (6000, 1), G.GPSAltitudeRef: 1})
    return "00_deep.jpg", ["GPS altitude -6000.0 m is outside the plausible range"]


def _no_gps(lund_dir, d):
    shutil.copyfile(lund_dir / "06.jpg", d / "00_nogps.jpg")
    _edit_gps(d / "00_nogps.jpg", remove=tuple(piexif.load(str(d / "00_nogps.jpg"))["GPS"]))
    return "00_nogps.jpg", ["no GPS in EXIF"]


GPS_CASES = {
    "stray_fix_first": _stray_first,
    "stray_fix_1km": _stray_near,
    "absurd_altitude": _absurd_alt,
    "altitude_outlier": _alt_outlier,
    "altitude_below_sea": _below_sea,
    "no_gps": _no_gps,
}


@pytest.mark.hostile(cls="gps", expect="correct")
@pytest.mark.parametrize("case", list(GPS_CASES))
def test_bad_gps_left_out_origin_robust(lund_dir, tmp_path, clean, case, caplog):
    d = _folder(lund_dir, tmp_path / "in")
    name, expected = GPS_CASES[case](lund_dir, d)
    m = ingest.main(d, tmp_path / "m.json")
    rs = _reasons(m)
    assert list(rs) == [name]
    for part in expected:
        assert part in rs[name], rs[name]
    assert [r["name"] for r in m["images"]] == [f"{n}.jpg" for n in GOOD]
    _assert_same_geo(m, clean)  # origin: first fix of the inlier set, not the bad one
    assert m["origin"]["name"] == "01.jpg"
    if case != "no_gps":
        assert [o["name"] for o in m["gps_outliers"]] == [name]
    assert any(name in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    # kept without position when GPS is optional; the origin is still robust
    m = ingest.main(d, tmp_path / "k.json", {"require_gps": False})
    assert m["skipped"] == []
    bad = m["images"][0]
    assert bad["name"] == name and bad["lat"] is None and bad["enu"] is None
    _assert_same_geo({**m, "images": m["images"][1:]}, clean)


@pytest.mark.hostile(cls="gps", expect="correct")
def test_absurd_altitude_in_origin_photo(lund_dir, tmp_path, clean):
    d = _folder(lund_dir, tmp_path / "in")
    _edit_gps(d / "01.jpg", {G.GPSAltitude: (50000, 1)})
    m = ingest.main(d, tmp_path / "m.json")
    assert list(_reasons(m)) == ["01.jpg"] and m["origin"]["name"] == "02.jpg"
    ref = ingest.main(_folder(lund_dir, tmp_path / "ref", names=GOOD[1:]), tmp_path / "r.json")
    _assert_same_geo(m, ref)


@pytest.mark.hostile(cls="gps", expect="clear_error")
def test_too_few_after_gps_outliers_names_them(lund_dir, tmp_path):
    d = _folder(lund_dir, tmp_path / "in", names=("01", "02"))
    _stray_first(lund_dir, d)
    with pytest.raises(InputError) as e:
        ingest.main(d, tmp_path / "m.json")
    msg = str(e.value)
    assert "only 2 usable image(s)" in msg and "00_stray.jpg: GPS outlier" in msg


def test_lund_and_real_captures_have_no_outliers(shared_data, lund_dir, tmp_path):
    """Defaults keep every real photo; lund's origin and positions are those of the plain EXIF fixes."""
    for d, opts in [(lund_dir, {}), (shared_data / "geovisio360", {}), (shared_data / "geovisio_sony", {})]:
        m = ingest.main(d, tmp_path / f"{d.name}.json", opts)
        assert len(m["images"]) == len(list(d.glob("*.jpg"))) > 0, d
        assert m["gps_outliers"] == [] and m["duplicates"] == [], d
    m = ingest.main(lund_dir, tmp_path / "lund.json")
    fixes = []
    for r in m["images"]:
        g = piexif.load(str(lund_dir / r["name"]))["GPS"]
        lat, lon = (sum(v[0] / v[1] / 60**i for i, v in enumerate(g[t])) for t in (G.GPSLatitude, G.GPSLongitude))
        fixes.append((lat, lon, g[G.GPSAltitude][0] / g[G.GPSAltitude][1]))
    fixes = np.array(fixes)
    assert m["origin"] == {"name": "01.jpg", "lat": fixes[0, 0], "lon": fixes[0, 1], "alt": fixes[0, 2]}
    enu = geodetic_to_enu(fixes[:, 0], fixes[:, 1], fixes[:, 2], *fixes[0])
    np.testing.assert_allclose(np.array([r["enu"] for r in m["images"]]), enu, rtol=0, atol=1e-9)


@pytest.mark.hostile(cls="image", expect="clear_error")
def test_cli_bad_folder_one_line_error(lund_dir, tmp_path):
    """``splatforge ingest`` as a subprocess: exit 1, one error line naming the bad files, no traceback."""
    import subprocess
    import sys

    d = _folder(lund_dir, tmp_path / "in", names=("01", "02"))
    _bomb(lund_dir, d)
    out = tmp_path / "m.json"
    r = subprocess.run([sys.executable, "-m", "splatforge_core.cli", "ingest", str(d), str(out)],
                       capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 1
    err = [ln for ln in (r.stdout + r.stderr).splitlines() if "usable image" in ln]
    assert len(err) == 1 and "00_bomb.jpg: image too large" in err[0]
    assert "Traceback" not in r.stdout + r.stderr and not out.exists()
