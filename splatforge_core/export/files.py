"""Mesh files: GLB (trimesh), OBJ + MTL + PNG (own writer), FBX (system assimp via pyassimp).

All files are written to temporary names and renamed into place; the OBJ's three files are
written into a temporary folder and moved texture first, then .mtl, then .obj, so an .obj
that exists always has its material and texture. Each file is read back and checked.

Axes: vertex data is ENU metres, Z up, in every format. glTF 2.0 defines +Y as up, so the
GLB puts the mesh under a node whose matrix maps ENU to glTF axes (x_gltf = E,
y_gltf = U, z_gltf = -N); the mesh's own vertex data stays ENU. OBJ has no axis convention.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import SplatForgeError
from ..io import atomic_path
from ..log import get_logger

_LOG = get_logger("export.files")

#: ENU (Z up) -> glTF (Y up): rotation of -90 degrees about X. Rows: x_gltf = E, y_gltf = U, z_gltf = -N.
ENU_TO_GLTF = np.array([[1.0, 0.0, 0.0, 0.0],
                        [0.0, 0.0, 1.0, 0.0],
                        [0.0, -1.0, 0.0, 0.0],
                        [0.0, 0.0, 0.0, 1.0]])


class ExportVerifyError(SplatForgeError):
    """A written mesh file did not read back with the expected content."""


def _png_bytes(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise SplatForgeError("could not encode the texture as PNG")
    return buf.tobytes()


def write_glb(path: str | Path, vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray,
              normals: np.ndarray, image: np.ndarray) -> None:
    """Write a textured binary glTF (trimesh). image: [H, W, 3] uint8 RGB base colour.

    Vertex colours are not put in the GLB: glTF multiplies COLOR_0 with the base colour
    texture (glTF 2.0 spec, 3.9.2 "Metallic-Roughness Material"), which would darken it.
    """
    import PIL.Image
    import trimesh

    mat = trimesh.visual.material.PBRMaterial(
        name="splat_bake", baseColorTexture=PIL.Image.fromarray(image), metallicFactor=0.0,
        roughnessFactor=1.0, doubleSided=True)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_normals=normals,
                           visual=trimesh.visual.TextureVisuals(uv=uv, material=mat), process=False)
    scene = trimesh.Scene()
    scene.add_geometry(mesh, node_name="enu_mesh", geom_name="enu_mesh", transform=ENU_TO_GLTF)
    with atomic_path(path) as tmp:
        scene.export(str(tmp), file_type="glb")


def _obj_text(vertices, faces, uv, normals, colors, mtl_name: str) -> str:
    """OBJ text: ``v x y z r g b`` (vertex-colour extension read by MeshLab, Blender, assimp),
    ``vt``, ``vn`` and ``f v/vt/vn`` with one shared index (vertices are split at UV seams)."""
    parts = [f"# splatforge export: ENU metres, Z up\nmtllib {mtl_name}\no splat_mesh\n"]
    vc = np.concatenate([vertices, colors], axis=1)
    parts.append("".join(_fmt_rows("v", vc, "%.6f %.6f %.6f %.4f %.4f %.4f")))
    parts.append("".join(_fmt_rows("vt", uv, "%.6f %.6f")))
    parts.append("".join(_fmt_rows("vn", normals, "%.5f %.5f %.5f")))
    parts.append("usemtl splat_bake\n")
    f1 = faces + 1
    fi = np.repeat(f1, 3, axis=1)
    parts.append("".join(_fmt_rows("f", fi, "%d/%d/%d %d/%d/%d %d/%d/%d")))
    return "".join(parts)


def _fmt_rows(tag: str, arr: np.ndarray, fmt: str):
    line = f"{tag} {fmt}\n"
    n = len(arr)
    step = 200_000
    for s in range(0, n, step):
        block = arr[s:s + step]
        yield (line * len(block)) % tuple(block.ravel().tolist())


def write_obj(path: str | Path, vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray,
              normals: np.ndarray, colors: np.ndarray, image: np.ndarray) -> dict:
    """Write ``path`` (.obj), ``path.with_suffix('.mtl')`` and ``path.with_suffix('.png')``.

    Own writer because trimesh's OBJ export drops vertex colours on a textured mesh.
    colors: [V, 3] float in [0, 1]. Returns {"obj", "mtl", "texture"} final paths.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    final = {"obj": path, "mtl": path.with_suffix(".mtl"), "texture": path.with_suffix(".png")}
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", suffix=".tmpobj", dir=path.parent))
    try:
        (tmpdir / final["texture"].name).write_bytes(_png_bytes(image))
        (tmpdir / final["mtl"].name).write_text(
            "# splatforge export\nnewmtl splat_bake\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\n"
            f"map_Kd {final['texture'].name}\n", encoding="utf-8")
        (tmpdir / path.name).write_text(_obj_text(vertices, faces, uv, normals, colors, final["mtl"].name),
                                        encoding="utf-8")
        for key in ("texture", "mtl", "obj"):
            os.replace(tmpdir / final[key].name, final[key])
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return final


def write_fbx(path: str | Path, obj_path: str | Path, binary: bool = False) -> str:
    """Convert the written OBJ (with its .mtl and texture) to FBX with the system assimp.

    Uses pyassimp + libassimp5: import the OBJ (triangulate, join identical vertices), export
    as "fbxa" (ASCII FBX 7.5, the default) or "fbx" (binary). ASCII is the default because a
    binary FBX written by assimp 5.2.5 (Debian libassimp5 5.2.5~ds0-1) does not read back in
    the same library: import fails with "FBX-Tokenize (offset 0x1ef) block offset is out of
    range" (checked 2026-11-23), so a binary file cannot be verified here. The texture is referenced by file name, so keep the
    FBX beside the OBJ's PNG. Returns the assimp format id used.
    """
    import pyassimp
    from pyassimp import postprocess as pp

    import pyassimp.errors

    fmt = "fbx" if binary else "fbxa"
    try:
        with atomic_path(path) as tmp:
            with pyassimp.load(str(obj_path), processing=pp.aiProcess_Triangulate | pp.aiProcess_JoinIdenticalVertices) as scene:
                pyassimp.export(scene, str(tmp), file_type=fmt, processing=0)
    except pyassimp.errors.AssimpError as e:  # derives from BaseException, not Exception
        raise SplatForgeError(f"{path}: assimp could not convert {obj_path} to FBX ({e})") from None
    return fmt


def verify_glb(path, n_vertices: int, n_faces: int) -> dict:
    """Read the GLB back with trimesh; check counts, UVs, texture and the ENU node transform."""
    import trimesh

    sc = trimesh.load(str(path), force="scene", process=False)
    geoms = list(sc.geometry.values())
    if len(geoms) != 1:
        raise ExportVerifyError(f"{path}: expected 1 mesh, read back {len(geoms)}")
    m = geoms[0]
    _check(path, len(m.vertices), len(m.faces), n_vertices, n_faces)
    uv = getattr(m.visual, "uv", None)
    if uv is None or len(uv) != n_vertices:
        raise ExportVerifyError(f"{path}: texture coordinates did not survive")
    mat = m.visual.material
    tex = getattr(mat, "baseColorTexture", None)
    if tex is None:
        raise ExportVerifyError(f"{path}: base colour texture missing")
    node = sc.graph.nodes_geometry[0]
    T, _ = sc.graph[node]
    if not np.allclose(T, ENU_TO_GLTF, atol=1e-6):
        raise ExportVerifyError(f"{path}: node transform is not the ENU->glTF rotation")
    return {"vertices": len(m.vertices), "faces": len(m.faces), "uv": True, "texture_size": list(tex.size)}


def verify_obj(paths: dict, n_vertices: int, n_faces: int) -> dict:
    """Read the OBJ back with trimesh; check counts, UVs, vertex colours and the texture."""
    import trimesh

    m = trimesh.load(str(paths["obj"]), force="mesh", process=False, maintain_order=True)
    _check(paths["obj"], len(m.vertices), len(m.faces), n_vertices, n_faces)
    uv = getattr(m.visual, "uv", None)
    if uv is None or len(uv) != n_vertices:
        raise ExportVerifyError(f"{paths['obj']}: texture coordinates did not survive")
    img = getattr(m.visual.material, "image", None)
    if img is None:
        raise ExportVerifyError(f"{paths['obj']}: texture {paths['texture'].name} not found through the .mtl")
    return {"vertices": len(m.vertices), "faces": len(m.faces), "uv": True, "texture_size": list(img.size)}


def verify_fbx(path, n_vertices: int, n_faces: int) -> dict:
    """Read the FBX back with assimp; check counts, UVs, vertex colours and the texture reference."""
    import pyassimp
    import pyassimp.errors
    from pyassimp import postprocess as pp

    try:
        with pyassimp.load(str(path), processing=pp.aiProcess_Triangulate | pp.aiProcess_JoinIdenticalVertices) as sc:
            return _check_fbx_scene(path, sc, n_vertices, n_faces)
    except pyassimp.errors.AssimpError as e:  # derives from BaseException, not Exception
        raise ExportVerifyError(f"{path}: assimp cannot read the FBX back ({e})") from None


def _check_fbx_scene(path, sc, n_vertices: int, n_faces: int) -> dict:
    meshes = sc.meshes
    nv = sum(len(m.vertices) for m in meshes)
    nf = sum(len(m.faces) for m in meshes)
    _check(path, nv, nf, n_vertices, n_faces)
    m = meshes[0]
    tc = np.asarray(m.texturecoords)
    if tc.ndim != 3 or tc.shape[1] != nv:
        raise ExportVerifyError(f"{path}: texture coordinates did not survive")
    has_colors = len(getattr(m, "colors", [])) > 0
    texfile = None
    for mat in sc.materials:
        for key, val in mat.properties.items():
            if key == "file" or str(key).endswith("|file"):
                texfile = str(val)
    if texfile is None:
        raise ExportVerifyError(f"{path}: no texture file referenced by the material")
    return {"vertices": nv, "faces": nf, "uv": True, "vertex_colors": has_colors, "texture": texfile}


def _check(path, nv, nf, ev, ef) -> None:
    if nv != ev or nf != ef:
        raise ExportVerifyError(f"{path}: read back {nv} vertices / {nf} faces, wrote {ev} / {ef}")
