"""Bundles (splat + Inria cameras.json + images/): packing a scene, the accepted layouts, the
hostile-archive corpus (#18, #20), and codec.main's plumbing for presets that need a bundle."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from splatforge_core import codec
from splatforge_core.cli import main as cli_main
from splatforge_core.codec import lossless
from splatforge_core.codec.bundle import MIN_IMAGES, open_bundle, pack_scene
from splatforge_core.codec.presets import PRESETS, Preset
from splatforge_core.errors import InputError
from splatforge_core.inria import camera_from_pinhole, load_views
from splatforge_core.splat import write_splat_ply
from splatforge_core.train.data import load_scene
from splatforge_core.train.synthetic import make_synthetic_scene


def _splat(path: Path, n: int = 64, degree: int = 1, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2 - 1
    write_splat_ply(path, rng.normal(size=(n, 3)), rng.normal(size=(n, 3)) - 3, rng.normal(size=(n, 4)),
                    rng.normal(size=n), rng.normal(size=(n, 3)), rng.normal(size=(n, k, 3)))
    return path.read_bytes()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scene's work folder: synthetic aligned model + images + views.json (2 views per frame) + splat."""
    wd = tmp_path_factory.mktemp("work") / "syn"
    make_synthetic_scene(wd, n_cameras=20, width=48, height=32, n_gaussians=400, n_points=80, views_per_frame=2)
    (wd / "splat").mkdir()
    _splat(wd / "splat" / "splat.ply")
    return wd


@pytest.fixture(scope="module")
def packed(workdir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "syn.tar.gz"
    summary = pack_scene(workdir, out)
    assert summary["n_images"] == 20 and summary["n_frames"] == 10 and summary["sparse"]
    return out


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_pack_round_trip_keeps_splat_images_and_held_out_split(workdir, packed, tmp_path):
    b = open_bundle(packed, tmp_path)
    assert b.ply.read_bytes() == (workdir / "splat" / "splat.ply").read_bytes()
    assert b.root == tmp_path / "bundle" and b.sparse_dir == b.root / "sparse" / "0"
    assert sorted(p.name for p in b.sparse_dir.iterdir()) == sorted(p.name for p in (workdir / "aligned").iterdir())
    scene = load_scene(workdir / "aligned", workdir / "images", workdir / "views.json")
    views = {v.name.replace("/", "__")[:-4]: v for v in scene.train + scene.test}
    assert sorted(c.img_name for c in b.cameras) == sorted(views)
    for c in b.cameras:  # lossless PNG images and the same pinhole camera
        v = views[c.img_name]
        img = cv2.cvtColor(cv2.imread(str(b.image_path(c))), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(img, v.image)
        np.testing.assert_allclose(c.K(), v.K, atol=1e-4)
        np.testing.assert_allclose(c.cam_from_world, v.viewmat, atol=1e-5)
        assert c.frame == v.frame
    held = load_views(b.root, b.cameras)
    assert held.test_frames == scene.test_frames and len(held.test) == len(scene.test) > 0
    assert sorted(v.name[:-4] for v in held.test) == sorted(v.name.replace("/", "__")[:-4] for v in scene.test)


def test_pack_uncompressed_resized_without_sparse(workdir, tmp_path):
    out = tmp_path / "b.tar"
    pack_scene(workdir, out, max_side=24, with_sparse=False)
    with tarfile.open(out, "r:") as t:  # a plain tar: the images are PNG already
        names = t.getnames()
    assert "point_cloud.ply" in names and "cameras.json" in names and not any(n.startswith("sparse") for n in names)
    b = open_bundle(out, tmp_path / "w", max_bytes=out.stat().st_size)
    assert b.sparse_dir is None and {(c.width, c.height) for c in b.cameras} == {(24, 16)}
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("w")) == ["b.tar"]


def test_pack_refuses_a_scene_without_splat_or_enough_views(workdir, tmp_path):
    with pytest.raises(InputError, match=r"no trained splat.*snakemake"):
        pack_scene(tmp_path, tmp_path / "x.tar")
    few = tmp_path / "few"
    make_synthetic_scene(few, n_cameras=6, width=32, height=24, n_gaussians=100, n_points=30)
    (few / "splat").mkdir()
    _splat(few / "splat" / "splat.ply")
    with pytest.raises(InputError, match=rf"6 registered views, a bundle needs at least {MIN_IMAGES}"):
        pack_scene(few, tmp_path / "few.tar")
    with pytest.raises(InputError, match=r"\.tar, \.tar\.gz or \.tgz"):
        pack_scene(workdir, tmp_path / "x.zip")
    assert not list(tmp_path.glob("*.tar")) and not list(tmp_path.glob(".*"))


def test_cli_pack_and_check(workdir, tmp_path, capsys):
    out = tmp_path / "c.tar.gz"
    assert cli_main(["bundle", str(workdir), str(out), "--max-side", "32", "--no-sparse"]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 20
    assert cli_main(["bundle", "--check", str(out)]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["status"] == "ok" and s["n_cameras"] == 20 and s["n_gaussians"] == 64 and s["sh_degree"] == 1
    assert s["ply"] == "point_cloud.ply" and s["sparse"] is None
    # scene names are looked up in --work-root
    assert cli_main(["bundle", workdir.name, str(tmp_path / "d.tar"), "--work-root", str(workdir.parent)]) == 0
    assert (tmp_path / "d.tar").is_file()


# -- synthetic bundles: members in memory ---------------------------------------------------------


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> dict[str, bytes]:
    """A valid bundle's members: 8 cameras, 8 PNGs of 16x12, a degree-1 splat of 64 Gaussians."""
    d = tmp_path_factory.mktemp("members")
    out: dict[str, bytes] = {"point_cloud.ply": _splat(d / "s.ply")}
    cams = []
    for i in range(MIN_IMAGES):
        vm = np.eye(4)
        vm[:3, 3] = [i * 0.1, 0, 2.0]
        cams.append(camera_from_pinhole(i, f"cam{i}", np.array([[14.0, 0, 8], [0, 14, 6], [0, 0, 1]]), vm, 16, 12).to_json())
        out[f"images/cam{i}.png"] = cv2.imencode(".png", np.full((12, 16, 3), 20 * i, np.uint8))[1].tobytes()
    out["cameras.json"] = json.dumps(cams).encode()
    return out


def _ti(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.type, ti.linkname = size, kind, link
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        ti.devmajor, ti.devminor = 1, 3
    return ti


def _tar(files: dict[str, bytes], prefix: str = "", extra: list[tarfile.TarInfo] = (), gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as t:
        for name, data in files.items():
            t.addfile(_ti(prefix + name, len(data)), io.BytesIO(data))
        for ti in extra:
            t.addfile(ti, io.BytesIO(b"x" * ti.size) if ti.isfile() else None)
    return buf.getvalue()


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_one_level_down_layout(members, tmp_path):
    p = _write(tmp_path, "run.tgz", _tar(members, prefix="my_run/", gz=True))
    b = open_bundle(p, tmp_path / "w")
    assert b.root == tmp_path / "w" / "bundle" / "my_run" and len(b.cameras) == MIN_IMAGES
    assert b.summary()["ply"] == "my_run/point_cloud.ply"


def test_inria_trainer_output_takes_the_highest_iteration(members, tmp_path):
    """graphdeco-inria's output/<run>/: point_cloud/iteration_N/point_cloud.ply, here as a folder (validated in place)."""
    run = tmp_path / "output" / "run"
    for name, data in members.items():
        if name != "point_cloud.ply":
            (run / name).parent.mkdir(parents=True, exist_ok=True)
            (run / name).write_bytes(data)
    for it, seed in ((7000, 1), (30000, 2), (900, 3)):
        (run / f"point_cloud/iteration_{it}").mkdir(parents=True)
        _splat(run / f"point_cloud/iteration_{it}/point_cloud.ply", seed=seed)
    (run / "point_cloud/iteration_99999").mkdir()  # no PLY in it: not a candidate
    before = _files(tmp_path)
    b = open_bundle(tmp_path / "output", tmp_path / "w")  # one level down, a folder
    assert b.ply == run / "point_cloud/iteration_30000/point_cloud.ply" and b.root == run
    assert _files(tmp_path) == before  # nothing copied or written


def _bad_ply(names: list[str]) -> bytes:
    head = "ply\nformat binary_little_endian 1.0\nelement vertex 2\n" + "".join(f"property float {n}\n" for n in names)
    return (head + "end_header\n").encode() + np.zeros(2 * len(names), "<f4").tobytes()


def _without(m: dict, *names: str) -> dict:
    return {k: v for k, v in m.items() if k not in names}


def _seven(m: dict) -> dict:
    cams = json.loads(m["cameras.json"])[:7]
    return {**_without(m, "images/cam7.png"), "cameras.json": json.dumps(cams).encode()}


def _camera_without_image(m: dict) -> dict:
    cams = json.loads(m["cameras.json"])
    cams.append({**cams[0], "id": 99, "img_name": "lost"})
    return {**m, "cameras.json": json.dumps(cams).encode()}


def _two_top(m: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for prefix in ("a/", "b/"):
            for name, data in m.items():
                t.addfile(_ti(prefix + name, len(data)), io.BytesIO(data))
    return buf.getvalue()


SCAFFOLD = ["x", "y", "z", "f_offset_0", "f_anchor_feat_0", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1",
            "rot_2", "rot_3"]

#: case -> (bytes of the bundle from the valid members, file name, open_bundle caps, message regex naming the member)
HOSTILE = {
    "dotdot": (lambda m: _tar(m, extra=[_ti("../escape.txt", 1)]), "b.tar", {}, r"unsafe member name '\.\./escape\.txt'"),
    "absolute": (lambda m: _tar(m, extra=[_ti("/tmp/escape.txt", 1)]), "b.tar", {}, r"unsafe member name '/tmp/escape\.txt'"),
    "symlink": (lambda m: _tar(m, extra=[_ti("images/x.png", kind=tarfile.SYMTYPE, link="/etc/passwd")]), "b.tar", {},
                r"member 'images/x\.png' is a link"),
    "hardlink": (lambda m: _tar(m, extra=[_ti("images/x.png", kind=tarfile.LNKTYPE, link="cameras.json")]), "b.tar", {},
                 r"member 'images/x\.png' is a link"),
    "device": (lambda m: _tar(m, extra=[_ti("images/x.png", kind=tarfile.CHRTYPE)]), "b.tar", {},
               r"member 'images/x\.png' is a device or special file"),
    "fifo": (lambda m: _tar(m, extra=[_ti("images/x.png", kind=tarfile.FIFOTYPE)]), "b.tar", {},
             r"member 'images/x\.png' is a device or special file"),
    "too_many_members": (lambda m: _tar(m), "b.tar", {"max_members": 5}, r"more than 5 members"),
    # a small .tar.gz of a big member: the cap counts unpacked member sizes, not the archive's
    "unpacked_over_cap": (lambda m: _tar({**m, "images/pad.bin": bytes(200_000)}, gz=True), "b.tar.gz",
                          {"max_unpacked": 100_000}, r"more than 100000 bytes \(at member 'images/pad\.bin'\)"),
    "compressed_over_cap": (lambda m: _tar(m, gz=True), "b.tgz", {"max_bytes": 1000}, r"over the cap of 1000 bytes"),
    "seven_images": (lambda m: _tar(_seven(m)), "b.tar", {}, r"images/: 7 images, at least 8 needed"),
    "camera_without_image": (lambda m: _tar(_camera_without_image(m)), "b.tar", {},
                             r"images/lost: missing \(the image of camera id 99"),
    "scaffold_ply": (lambda m: _tar({**m, "point_cloud.ply": _bad_ply(SCAFFOLD)}), "b.tar", {},
                     r"point_cloud\.ply: a Scaffold-GS anchor PLY.*Scaffold presets \(issue #15\)"),
    "not_3dgs_ply": (lambda m: _tar({**m, "point_cloud.ply": _bad_ply(["x", "y", "z"])}), "b.tar", {},
                     r"point_cloud\.ply: not a 3DGS splat PLY, missing columns"),
    "truncated_ply": (lambda m: _tar({**m, "point_cloud.ply": m["point_cloud.ply"][:-100]}), "b.tar", {},
                      r"point_cloud\.ply: \d+ bytes but its header describes \d+"),
    "broken_cameras_json": (lambda m: _tar({**m, "cameras.json": b'[{"id": 0,'}), "b.tar", {},
                            r"cameras\.json: not valid JSON"),
    "truncated_tar_gz": (lambda m: _tar(m, gz=True)[:-300], "b.tar.gz", {}, r"not a readable tar archive"),
    "two_top_folders": (_two_top, "b.tar", {}, r"root has 2 top folders \(a/, b/\)"),
    "no_ply": (lambda m: _tar(_without(m, "point_cloud.ply")), "b.tar", {}, r"point_cloud\.ply: missing"),
    "not_an_archive_name": (lambda m: _tar(m), "b.zip", {}, r"not a bundle \(expected a \.tar"),
}


@pytest.mark.hostile(cls="bundle", expect="clear_error")
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_bundle_refused_naming_the_member_and_leaving_nothing(members, tmp_path, case):
    make, fname, caps, match = HOSTILE[case]
    data = make(members)
    sub = tmp_path / "in"
    sub.mkdir()
    p = _write(sub, fname, data)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(InputError, match=match) as ei:
        open_bundle(p, work, **caps)
    msg = str(ei.value)
    assert str(p) in msg and "\n" not in msg
    assert _files(tmp_path) == ["in", f"in/{fname}", "work"]  # no extraction left, nothing escaped


def test_valid_members_are_accepted(members, tmp_path):
    """The corpus' base is valid: each hostile case fails for its own defect only."""
    for gz, name in ((False, "ok.tar"), (True, "ok.tar.gz")):
        b = open_bundle(_write(tmp_path, name, _tar(members, gz=gz)), tmp_path / name.replace(".", "_"))
        assert len(b.cameras) == MIN_IMAGES and b.header.element("vertex").count == 64


@pytest.mark.hostile(cls="bundle", expect="clear_error")
def test_cli_check_of_a_hostile_bundle_is_one_line(members, tmp_path, capsys):
    p = _write(tmp_path, "b.tar", _tar(members, extra=[_ti("../escape.txt", 1)]))
    assert cli_main(["bundle", "--check", str(p)]) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "escape.txt").exists()


# -- codec.main with a preset that needs a bundle --------------------------------------------------


@pytest.fixture
def bundle_preset(monkeypatch):
    """A registered preset with needs_bundle=True whose encoder is the real lossless one; it records the bundle."""
    seen = {}

    def encode(in_ply, out_path, opts, *, header, data, bundle):
        seen.update(bundle=bundle, ply=Path(in_ply), root_existed=bundle.root.is_dir())
        return lossless.encode_preset(in_ply, out_path, opts, header=header, data=data)

    p = Preset("test-bundle", True, ".ply", "test", encode, lossless.decode_ply_parts, ("keep_required",),
               needs_bundle=True)
    monkeypatch.setitem(PRESETS, p.name, p)
    return seen


def test_codec_main_opens_a_bundle_for_a_bundle_preset(members, bundle_preset, tmp_path):
    src = _write(tmp_path, "b.tar.gz", _tar(members, gz=True))
    out = tmp_path / "out" / "c.ply"
    rep = codec.main(src, out, tmp_path / "out" / "c.json", "test-bundle")
    assert rep["input"] == str(src) and rep["n_vertices"] == 64 and rep["sh_degree"] == 1
    assert bundle_preset["root_existed"] and len(bundle_preset["bundle"].cameras) == MIN_IMAGES
    assert bundle_preset["ply"].name == "point_cloud.ply"
    assert not bundle_preset["bundle"].root.exists()  # the extraction beside the output is removed
    assert sorted(p.name for p in out.parent.iterdir()) == ["c.json", "c.ply"]
    codec.decompress(out, tmp_path / "back.ply")
    assert (tmp_path / "back.ply").read_bytes() == members["point_cloud.ply"]


@pytest.mark.hostile(cls="bundle", expect="clear_error")
def test_codec_main_refuses_a_ply_for_a_bundle_preset_and_a_bundle_for_a_ply_preset(members, bundle_preset, tmp_path):
    ply = _write(tmp_path, "s.ply", members["point_cloud.ply"])
    with pytest.raises(InputError, match=r"s\.ply: preset 'test-bundle' .*needs a bundle.*splatforge bundle"):
        codec.main(ply, tmp_path / "o.ply", None, "test-bundle")
    tar = _write(tmp_path, "b.tar", _tar(members))
    with pytest.raises(InputError, match=r"b\.tar: preset 'qat-3dgs' takes a splat PLY, not a bundle"):
        codec.main(tar, tmp_path / "o.ply", None, "qat-3dgs")
    bad = _write(tmp_path, "bad.tar", _tar(_seven(members)))
    with pytest.raises(InputError, match=r"bad\.tar: images/: 7 images"):
        codec.main(bad, tmp_path / "o.ply", None, "test-bundle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar", "bad.tar", "s.ply"]


def test_compress_cli_takes_a_bundle(members, bundle_preset, tmp_path, capsys):
    src = _write(tmp_path, "b.tar", _tar(members))
    assert cli_main(["compress", "--preset", "test-bundle", str(src), str(tmp_path / "c.ply")]) == 0
    assert json.loads(capsys.readouterr().out)["input"] == str(src)

