"""Bad-input corpus through the workflow (#19): a user's own folder, broken in each way a real
capture arrives broken, run with the documented command ``snakemake --config input=PATH``.

Each case is a broken copy of real photos (``shared/data/lund``, ``geovisio360``). A case
passes when the run stops before any expensive stage (ingest is the first job) with a
message naming the file or folder and no traceback, and nothing appears under ``results/``;
or, for inputs that are fine (spaces and unicode in the path), when ingest succeeds. The
wall time of each case is printed (``-s``) and counted by ``benchmarks/bench_reliability.py``'s
table, not asserted (speed belongs to benchmarks).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import piexif
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
G = piexif.GPSIFD


def _run(workdir: Path, photos: Path, *target: str) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "1",
           *target, "--config", f"input={photos}"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return r, time.perf_counter() - t0


def _copy(src: Path, d: Path, names: list[str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copyfile(src / n, d / n)
    return d


def _set_gps(path: Path, lat: float, lon: float) -> None:
    def dms(v: float) -> tuple:
        v = abs(v)
        d, m = int(v), int((v - int(v)) * 60)
        return ((d, 1), (m, 1), (round(((v - d) * 60 - m) * 60 * 1000), 1000))

    ex = piexif.load(str(path))
    ex["GPS"].update({G.GPSLatitudeRef: b"N" if lat >= 0 else b"S", G.GPSLatitude: dms(lat),
                      G.GPSLongitudeRef: b"E" if lon >= 0 else b"W", G.GPSLongitude: dms(lon)})
    ex["thumbnail"] = None
    piexif.insert(piexif.dump(ex), str(path))


def _strip_gps(path: Path) -> None:
    ex = piexif.load(str(path))
    ex["GPS"] = {}
    ex["thumbnail"] = None
    piexif.insert(piexif.dump(ex), str(path))


LUND = [f"{i:02d}.jpg" for i in range(1, 6)]


def _make(case: str, lund: Path, geo360: Path, base: Path) -> Path:
    """The broken input folder of one case."""
    d = base / "capture"
    if case == "missing_folder":
        return base / "no_such_folder"
    if case == "empty_folder":
        d.mkdir(parents=True)
        return d
    if case == "nested_folders":
        _copy(lund, d / "day1", LUND)
        return d
    if case == "no_gps":
        _copy(lund, d, LUND)
        for p in d.iterdir():
            _strip_gps(p)
        return d
    if case == "corrupt_exif":
        _copy(lund, d, LUND)
        for p in d.iterdir():  # the APP1 (Exif) segment's length says more bytes than it has
            b = bytearray(p.read_bytes())
            i = b.find(b"Exif\x00\x00")
            b[i + 10:i + 30] = b"\xff" * 20
            p.write_bytes(bytes(b))
        return d
    if case == "truncated":
        _copy(lund, d, LUND)
        for p in d.iterdir():
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
        return d
    if case == "zero_byte":
        _copy(lund, d, LUND)
        for p in d.iterdir():
            p.write_bytes(b"")
        return d
    if case == "text_named_jpg":
        d.mkdir(parents=True)
        for n in LUND:
            (d / n).write_text("this is not a photo\n")
        return d
    if case == "png_photos":
        d.mkdir(parents=True)
        for n in LUND:
            Image.open(lund / n).save(d / n.replace(".jpg", ".png"))
        return d
    if case == "non_2to1_panorama":
        _copy(geo360, d, ["1.jpg", "2.jpg", "3.jpg"])
        for p in d.iterdir():  # cropped to 3:1, its GPano XMP still claiming a full sphere
            im = Image.open(p)
            exif = im.info.get("exif")
            im.crop((0, 0, im.width, im.width // 3)).save(p, exif=exif, xmp=im.info.get("xmp"), quality=90)
        return d
    if case == "oversize_header":
        _copy(lund, d, LUND)
        for p in d.iterdir():
            b = bytearray(p.read_bytes())
            i = b.find(b"\xff\xc0")
            b[i + 5:i + 9] = (30000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
            p.write_bytes(bytes(b))
        return d
    if case == "duplicates":
        d.mkdir(parents=True)
        for k in range(5):
            shutil.copyfile(lund / "01.jpg", d / f"copy_{k}.jpg")
        return d
    if case == "one_photo":
        return _copy(lund, d, LUND[:1])
    if case == "two_photos":
        return _copy(lund, d, LUND[:2])
    if case == "absurd_gps_extent":
        _copy(lund, d, LUND[:4])
        for k, p in enumerate(sorted(d.iterdir())):  # four fixes ~1,440 km apart
            _set_gps(p, 45.0 + 13.0 * (k % 2), 5.0 + 13.0 * (k // 2))
        return d
    if case == "tiny_images":
        d.mkdir(parents=True)
        for n in LUND:
            im = Image.open(lund / n)
            im.resize((16, 16)).save(d / n, exif=im.info.get("exif"))
        return d
    raise AssertionError(case)


BAD = ["missing_folder", "empty_folder", "nested_folders", "no_gps", "corrupt_exif", "truncated", "zero_byte",
       "text_named_jpg", "png_photos", "non_2to1_panorama", "oversize_header", "duplicates", "one_photo",
       "two_photos", "absurd_gps_extent", "tiny_images"]

#: What the message must name besides the folder: a file of the case, where one is at fault.
NAMES = {"nested_folders": "day1", "png_photos": "01.png", "truncated": "01.jpg", "zero_byte": "01.jpg",
         "text_named_jpg": "01.jpg", "oversize_header": "01.jpg", "duplicates": "copy_1.jpg",
         "absurd_gps_extent": "01.jpg", "tiny_images": "01.jpg", "no_gps": "01.jpg", "non_2to1_panorama": "1.jpg"}


@pytest.mark.slow
@pytest.mark.hostile(cls="capture", expect="clear_error")
@pytest.mark.parametrize("case", BAD)
def test_bad_capture_stops_at_ingest_with_a_clear_error(case, tmp_path, shared_data, capsys):
    """A broken capture stops at its first job with a one-line message naming what is wrong."""
    photos = _make(case, shared_data / "lund" / "images", shared_data / "geovisio360", tmp_path)
    work = tmp_path / "run"
    work.mkdir()
    r, wall = _run(work, photos)
    out = r.stdout + r.stderr
    with capsys.disabled():
        print(f"\n[bad input] {case}: exit {r.returncode} after {wall:.1f} s")
    assert r.returncode != 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert str(photos.name) in out, out[-3000:]
    if case in NAMES:
        assert NAMES[case] in out, out[-3000:]
    for rule in ("rule project", "rule sfm_extract", "rule train"):
        assert rule not in out, f"{case}: {rule} ran\n{out[-3000:]}"
    assert not (work / "results").exists() or not any((work / "results").iterdir())



@pytest.mark.slow
@pytest.mark.hostile(cls="capture", expect="correct")
def test_spaces_and_unicode_in_the_path_are_fine(tmp_path, shared_data):
    """A folder named with spaces and non-ASCII letters is a normal capture: ingest succeeds."""
    photos = _copy(shared_data / "lund" / "images", tmp_path / "Été à Lund (2)" / "my photos", LUND)
    work = tmp_path / "run"
    work.mkdir()
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
                        "--cores", "1", "work/my_photos/manifest.json", "--config", f"input={photos}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    import json

    m = json.loads((work / "work/my_photos/manifest.json").read_text())
    assert len(m["images"]) == 5
