"""Tests of the export stage (splat -> Poisson mesh -> UV atlas -> baked texture -> glb/obj/fbx)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from splatforge_core.errors import InputError
from splatforge_core.export import ExportOptions, cli, main
from splatforge_core.export import mesh as M
from splatforge_core.export.bake import raster_triangles
from splatforge_core.export.synthetic import sphere_colour, sphere_splat, write_ply

CENTRE = np.array([10.0, 20.0, 5.0])
FAST = {"texture_size": 128, "poisson_depth": 6, "target_faces": 3000}


@pytest.fixture(scope="module")
def sphere_ply(tmp_path_factory) -> Path:
    return write_ply(tmp_path_factory.mktemp("splat") / "sphere.ply", sphere_splat(3000, centre=CENTRE, sh_degree=1))


@pytest.fixture(scope="module")
def exported(sphere_ply, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    rep = main(sphere_ply, out / "sphere_mesh", report_path=out / "report.json", options=FAST)
    return out, rep


def test_outputs_and_report(exported):
    out, rep = exported
    names = sorted(p.name for p in out.iterdir())
    assert names == ["report.json", "sphere_mesh.fbx", "sphere_mesh.glb", "sphere_mesh.mtl",
                     "sphere_mesh.obj", "sphere_mesh.png"]
    c = rep["counts"]
    assert c["gaussians_in"] == 3000 and c["faces"] <= FAST["target_faces"]
    assert c["faces"] > 1000
    assert rep["normals"]["n_shortest_axis"] == 3000  # all synthetic Gaussians are flat
    assert set(rep["timings_s"]) >= {"poisson", "trim", "decimate", "uv", "bake", "total"}
    assert rep["verify"]["fbx"]["assimp_format"] == "fbxa"
    # the .mtl references the final texture name, not a temporary one
    assert "map_Kd sphere_mesh.png" in (out / "sphere_mesh.mtl").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_glb_readback_enu(exported):
    import trimesh

    out, rep = exported
    sc = trimesh.load(out / "sphere_mesh.glb", force="scene", process=False)
    (m,) = sc.geometry.values()
    assert len(m.vertices) == rep["counts"]["vertices"] and len(m.faces) == rep["counts"]["faces"]
    assert m.visual.uv.shape == (len(m.vertices), 2)
    assert m.visual.material.baseColorTexture.size == (128, 128)
    # raw vertex data is ENU metres: a unit sphere around CENTRE
    r = np.linalg.norm(np.asarray(m.vertices) - CENTRE, axis=1)
    assert np.abs(r - 1.0).max() < 0.08
    # the node maps ENU (Z up) to glTF Y up: world-space top of the sphere is +Y
    world = sc.to_geometry()
    assert np.isclose(world.vertices[:, 1].max(), CENTRE[2] + 1.0, atol=0.08)


def test_obj_readback_and_colours(exported):
    import trimesh

    out, rep = exported
    m = trimesh.load(out / "sphere_mesh.obj", force="mesh", process=False, maintain_order=True)
    assert len(m.vertices) == rep["counts"]["vertices"] and len(m.faces) == rep["counts"]["faces"]
    assert m.visual.uv.shape == (len(m.vertices), 2)
    assert m.visual.material.image.size == (128, 128)
    # vertex colours (v x y z r g b) match the synthetic ground truth colour of the sphere
    rows = [ln.split() for ln in (out / "sphere_mesh.obj").read_text().splitlines() if ln.startswith("v ")]
    arr = np.array(rows)[:, 1:].astype(float)
    assert arr.shape == (rep["counts"]["vertices"], 6)
    err = np.abs(arr[:, 3:] - sphere_colour(arr[:, :3], CENTRE))
    assert np.median(err) < 0.05 and np.mean(err) < 0.12


def test_texture_matches_ground_truth(exported):
    """Sample the baked PNG at each vertex's UV and compare with the sphere's true colour."""
    import trimesh
    from PIL import Image

    out, _ = exported
    m = trimesh.load(out / "sphere_mesh.obj", force="mesh", process=False, maintain_order=True)
    tex = np.asarray(Image.open(out / "sphere_mesh.png").convert("RGB")).astype(float) / 255
    uv = m.visual.uv
    H, W = tex.shape[:2]
    col = tex[np.clip(((1 - uv[:, 1]) * H).astype(int), 0, H - 1), np.clip((uv[:, 0] * W).astype(int), 0, W - 1)]
    err = np.abs(col - sphere_colour(np.asarray(m.vertices), CENTRE))
    assert np.median(err) < 0.06


def test_fbx_readback(exported):
    import pyassimp
    from pyassimp import postprocess as pp

    out, rep = exported
    with pyassimp.load(str(out / "sphere_mesh.fbx"),
                       processing=pp.aiProcess_Triangulate | pp.aiProcess_JoinIdenticalVertices) as sc:
        assert sum(len(m.vertices) for m in sc.meshes) == rep["counts"]["vertices"]
        assert sum(len(m.faces) for m in sc.meshes) == rep["counts"]["faces"]
        tc = np.asarray(sc.meshes[0].texturecoords)
        assert tc.shape[1] == rep["counts"]["vertices"]
        files = [v for mat in sc.materials for k, v in mat.properties.items() if k == "file"]
        assert "sphere_mesh.png" in [str(f) for f in files]


def test_shortest_axis_normals_point_out(sphere_ply):
    s = M._read_splat_ply(sphere_ply)
    n, stats = M.gaussian_normals(s, "shortest_axis")
    radial = (s.means - CENTRE) / np.linalg.norm(s.means - CENTRE, axis=1, keepdims=True)
    d = np.sum(n * radial, axis=1)
    # exact surface normal, pointing out everywhere (MST propagation + top points face up)
    assert np.abs(d - 1).max() < 1e-4


def test_mesh_faces_point_outward(exported):
    import trimesh

    out, _ = exported
    m = trimesh.load(out / "sphere_mesh.obj", force="mesh", process=False, maintain_order=True)
    c = np.asarray(m.triangles_center) - CENTRE
    assert np.mean(np.sum(np.asarray(m.face_normals) * c, axis=1) > 0) > 0.99


def test_raster_triangles_area_and_zbuffer():
    xy = np.array([[[0, 0], [64, 0], [0, 64]]], dtype=float)
    pix, fid, bary = raster_triangles(xy, 64, 64)
    assert abs(len(pix) - 64 * 64 / 2) < 64 + 1
    assert np.allclose(bary.sum(axis=1), 1, atol=1e-5)
    # two overlapping full-screen triangles: the nearer one wins everywhere
    tri = np.array([[-1, -1], [200, -1], [-1, 200]], dtype=float)
    pix, fid, _ = raster_triangles(np.stack([tri, tri]), 32, 32, depth=np.array([[2.0] * 3, [1.0] * 3]))
    assert len(pix) == 32 * 32 and (fid == 1).all()


def test_options_reject_unknown_key():
    with pytest.raises(ValueError, match="unknown export option"):
        ExportOptions.from_dict({"texture_sise": 512})
    with pytest.raises(ValueError, match="normals"):
        ExportOptions.from_dict({"normals": "magic"})


# ----------------------------------------------------------------------------- bad input


def _cols(n=500, seed=1):
    return sphere_splat(n, centre=CENTRE, seed=seed)


def _bad_cases(tmp: Path):
    c = _cols()
    planar = dict(c)
    planar["z"] = np.zeros_like(c["z"])
    few = {k: v[:10] for k, v in c.items()}
    empty = {k: v[:0] for k, v in c.items()}
    noop = {k: v for k, v in c.items() if k != "opacity"}
    nan = dict(c)
    nan["x"] = c["x"].copy()
    nan["x"][3] = np.nan
    inf = dict(c)
    inf["scale_1"] = c["scale_1"].copy()
    inf["scale_1"][7] = np.inf
    transparent = dict(c)
    transparent["opacity"] = np.full_like(c["opacity"], -8.0)
    (tmp / "garbage.ply").write_bytes(b"this is not a ply file\n")
    return {
        "planar": (write_ply(tmp / "planar.ply", planar), "plane"),
        "few": (write_ply(tmp / "few.ply", few), "only 10"),
        "empty": (write_ply(tmp / "empty.ply", empty), "empty"),
        "no_opacity": (write_ply(tmp / "noop.ply", noop), "missing properties.*opacity"),
        "nan": (write_ply(tmp / "nan.ply", nan), "column x has 1 NaN/Inf"),
        "inf": (write_ply(tmp / "inf.ply", inf), "column scale_1 has 1 NaN/Inf"),
        "transparent": (write_ply(tmp / "transparent.ply", transparent), "only 0 usable"),
        "garbage": (tmp / "garbage.ply", "not a readable PLY"),
        "missing": (tmp / "nope.ply", "not found"),
    }


@pytest.mark.parametrize("case", ["planar", "few", "empty", "no_opacity", "nan", "inf", "transparent",
                                  "garbage", "missing"])
def test_bad_input_clear_error_no_outputs(tmp_path, case):
    (tmp_path / "in").mkdir()
    path, msg = _bad_cases(tmp_path / "in")[case]
    out = tmp_path / "out"
    with pytest.raises(InputError, match=msg) as ei:
        main(path, out / "mesh", report_path=out / "report.json", options=FAST)
    assert str(path) in str(ei.value)
    assert not out.exists() or not any(out.iterdir())


def test_cli_bad_input_exit_code(tmp_path):
    from splatforge_core.cli import main as sf_main

    p = tmp_path / "garbage.ply"
    p.write_bytes(b"nope")
    assert sf_main(["export", str(p), "--out-prefix", str(tmp_path / "m")]) == 1
    assert sorted(x.name for x in tmp_path.iterdir()) == ["garbage.ply"]


def test_cli_runs(sphere_ply, tmp_path):
    rc = cli([str(sphere_ply), "--out-prefix", str(tmp_path / "s_mesh"), "--formats", "glb",
              "--texture-size", "64", "--poisson-depth", "5", "--target-faces", "800"])
    assert rc == 0
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s_mesh.glb"]


@pytest.mark.slow
def test_real_splat_export(shared_data, tmp_path):
    """A real trained splat (Mip-Splatting donut, SH degree 0): every format reads back."""
    ply = shared_data / "ply" / "mipsplat_sh0_45624.ply"
    rep = main(ply, tmp_path / "donut_mesh", options={"texture_size": 512, "poisson_depth": 8,
                                                      "target_faces": 20000})
    assert rep["counts"]["faces"] <= 20000 and rep["counts"]["faces"] > 2000
    assert set(rep["verify"]) == {"glb", "obj", "fbx"}


def test_crop_box_validation_and_effect(tmp_path):
    """crop_box keeps only Gaussians inside (the workflow passes the SfM extent, so a far sky shell is not meshed)."""
    import pytest

    from splatforge_core.export import ExportOptions, main
    from splatforge_core.export.synthetic import sphere_splat, write_ply

    with pytest.raises(ValueError, match="crop_box"):
        ExportOptions.from_dict({"crop_box": [[0, 0, 0], [0, 1, 1]]})
    ply = write_ply(tmp_path / "s.ply", sphere_splat(6000))
    common = {"texture_size": 64, "target_faces": 4000, "formats": ["glb"]}
    full = main(ply, tmp_path / "full", options=common)
    half = main(ply, tmp_path / "half", options={**common, "crop_box": [[8, 18, 5.0], [12, 22, 7]]})
    assert half["counts"]["gaussians_used"] < 0.7 * full["counts"]["gaussians_used"]
    assert half["counts"]["poisson_faces"] < full["counts"]["poisson_faces"]
    with pytest.raises(InputError, match=r"only 0 usable Gaussian\(s\)"):
        main(ply, tmp_path / "none", options={**common, "crop_box": [[100, 100, 100], [101, 101, 101]]})
    assert not list(tmp_path.glob("none*"))


def test_crop_box_auto_from_model(tmp_path):
    """crop_box 'auto' is resolved by the stage from crop_model (the workflow and ``splatforge export
    --crop-box auto --crop-model`` crop the same way); the report holds the resolved box."""
    import pycolmap
    import pytest

    from splatforge_core.export import ExportOptions, crop_box_from_model, main
    from splatforge_core.export.synthetic import sphere_splat, write_ply

    with pytest.raises(ValueError, match="crop_box"):
        ExportOptions.from_dict({"crop_box": "everything"})
    ply = write_ply(tmp_path / "s.ply", sphere_splat(6000))
    common = {"texture_size": 64, "target_faces": 4000, "formats": ["glb"], "crop_box": "auto"}
    with pytest.raises(ValueError, match="crop_model"):
        main(ply, tmp_path / "nomodel", options=common)
    rec = pycolmap.Reconstruction()
    for xyz in np.random.default_rng(0).uniform([8.5, 18.5, 5.0], [11.5, 21.5, 6.5], (200, 3)):
        rec.add_point3D(xyz, pycolmap.Track(), np.array([1, 2, 3], np.uint8))
    (tmp_path / "m").mkdir()
    rec.write(str(tmp_path / "m"))
    rep = main(ply, tmp_path / "auto", options=common, crop_model=tmp_path / "m")
    assert rep["options"]["crop_box"] == crop_box_from_model(tmp_path / "m")
    assert rep["counts"]["gaussians_used"] < 0.7 * rep["counts"]["gaussians_in"]


def test_trim_keeps_surface_between_clustered_gaussians(tmp_path):
    """Clustered Gaussians (lund: dense clumps on a 270 m street) must not make the trim
    distance smaller than the Poisson octree cell: the surface between clumps would go."""
    cols = sphere_splat(3000, radius=50.0, centre=CENTRE, sh_degree=0)
    rng = np.random.default_rng(1)
    clumped = {k: np.repeat(np.asarray(v), 10, axis=0) for k, v in cols.items()}
    for c in ("x", "y", "z"):  # 10 Gaussians within ~1 cm per clump: median 4-NN spacing ~1 cm
        clumped[c] = clumped[c] + rng.normal(0, 0.005, len(clumped[c])).astype(clumped[c].dtype)
    ply = write_ply(tmp_path / "clumps.ply", clumped)
    rep = main(ply, tmp_path / "out" / "m", report_path=tmp_path / "out" / "r.json", options=FAST)
    voxel = M.poisson_voxel_size(np.stack([clumped[c] for c in "xyz"], 1), FAST["poisson_depth"])
    assert rep["poisson_voxel_m"] == pytest.approx(voxel)
    assert rep["trim_distance_m"] >= 2 * voxel
    c = rep["counts"]
    # (the spacing rule alone, 4 x 1 cm, trimmed everything: "no surface left after trimming")
    assert c["faces_after_trim"] > 0.4 * c["poisson_faces"], c


def test_preview_frames_the_mesh_and_compares_with_the_splat(exported, sphere_ply, tmp_path):
    """The mesh-vs-splat PNG: cameras frame the mesh; far Gaussians (a sky sphere) are left out."""
    from PIL import Image

    from splatforge_core.export.preview import compare_png

    out, _ = exported
    # the sphere plus a big opaque far shell around it, as the trainer's sky sphere
    cols = sphere_splat(3000, centre=CENTRE, sh_degree=1)
    sky = sphere_splat(2000, radius=50.0, centre=CENTRE, sh_degree=1, seed=3)
    both = write_ply(tmp_path / "with_sky.ply", {k: np.concatenate([cols[k], sky[k]]) for k in cols})
    png = tmp_path / "cmp.png"
    rep = compare_png(both, out / "sphere_mesh.glb", png, n_views=2, size=160)
    assert rep["views"] == 2 and Image.open(png).size == (2 * 160 + 8, 2 * 160)
    # the mesh and the splat render the same sphere: far from the ~5 dB of an image hidden by the shell
    assert min(rep["psnr_mesh_vs_splat"]) > 15.0, rep
