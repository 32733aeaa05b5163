"""UV unwrap with xatlas (https://github.com/jpcy/xatlas, python binding ``xatlas``)."""

from __future__ import annotations

import numpy as np

from ..log import get_logger

_LOG = get_logger("export.uv")


def _blocks(centroids: np.ndarray, idx: np.ndarray, block_faces: int) -> list[np.ndarray]:
    """Recursive median split of faces along the longest axis until blocks <= block_faces."""
    if len(idx) <= block_faces:
        return [idx]
    c = centroids[idx]
    ax = int(np.argmax(np.ptp(c, axis=0)))
    order = idx[np.argsort(c[:, ax], kind="stable")]
    h = len(order) // 2
    return _blocks(centroids, order[:h], block_faces) + _blocks(centroids, order[h:], block_faces)


def unwrap(vertices: np.ndarray, faces: np.ndarray, texture_size: int, padding: int = 2,
           max_chart_iterations: int = 1, max_chart_faces: int = 400, block_faces: int = 5000):
    """Cut the mesh into charts and pack them into a ``texture_size`` square atlas.

    Args:
        vertices: [V, 3] float64 positions (metres). faces: [F, 3] int64.
        texture_size: atlas edge in texels; xatlas packs charts for that resolution.
        padding: texels left between charts (room for bilinear filtering / dilation).
        max_chart_iterations: xatlas ChartOptions.max_iterations (more = better charts, slower).
        max_chart_faces: caps each chart's area at ``max_chart_faces`` mean triangles
            (ChartOptions.max_chart_area). Without a cap, the smooth Poisson surface grows
            into a few huge charts whose parameterisation dominates: on an 82k-face sphere
            xatlas took 42 s uncapped and 1.5 s with ~400-face charts (288 charts; measured
            2026-11-23 on the shared 2-core machine).
        block_faces: the mesh is cut into spatial blocks of at most this many faces (median
            splits) that xatlas charts as separate meshes and packs into one atlas. On a
            300k-face Poisson sphere (4096^2) xatlas took 219 s as one mesh, 86 s in 20k-face
            blocks and 13 s in 5k-face blocks (shared 2-core machine, 2026-11-23): chart
            computation grows faster than linearly with mesh size. Block borders become
            chart seams (charts are capped at ``max_chart_faces`` anyway).

    Returns:
        vmapping: [V'] int64, the original vertex of each new vertex (seams split vertices).
        faces: [F, 3] int64 indices into the new vertices (faces grouped by block, so the
            order differs from the input).
        uv: [V', 2] float64 texture coordinates in [0, 1], OBJ/trimesh convention
            (origin bottom-left, v up: texel row = (1 - v) * texture_size).
    """
    import xatlas

    from ..errors import SplatForgeError

    atlas = xatlas.Atlas()
    cent = vertices[faces].mean(axis=1)
    blocks = _blocks(cent, np.arange(len(faces)), max(int(block_faces), 1))
    block_verts = []
    for b in blocks:
        fb = faces[b]
        uniq, inv = np.unique(fb.ravel(), return_inverse=True)
        block_verts.append(uniq)
        atlas.add_mesh(np.ascontiguousarray(vertices[uniq], dtype=np.float32),
                       np.ascontiguousarray(inv.reshape(-1, 3), dtype=np.uint32))
    co = xatlas.ChartOptions()
    co.max_iterations = int(max_chart_iterations)
    tri = vertices[faces]
    area = 0.5 * float(np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum())
    if area <= 0:
        raise SplatForgeError("UV unwrap: the mesh has zero surface area")
    # resolution = texture_size with texels_per_unit = 0 lets xatlas pick the scale; the atlas
    # can come out somewhat larger than the resolution (e.g. 5049^2 for 4096), and is then
    # scaled uniformly into the texture square (padding shrinks by that factor). Setting
    # texels_per_unit ourselves with resolution 0 made packing pathologically slow on a
    # 300k-face Poisson mesh (> 4 min, measured 2026-11-23).
    po = xatlas.PackOptions()
    po.resolution = int(texture_size)
    po.texels_per_unit = 0.0
    po.padding = int(padding)
    po.bilinear = True
    atlas.generate(co, po)
    if atlas.atlas_count != 1:
        raise SplatForgeError(f"UV unwrap: xatlas produced {atlas.atlas_count} atlases, expected 1")
    vm_all, f_all, uv_all, off = [], [], [], 0
    for i, uniq in enumerate(block_verts):
        vmapping, new_faces, uvs = atlas[i]
        vm_all.append(uniq[np.asarray(vmapping, dtype=np.int64)])
        f_all.append(np.asarray(new_faces, dtype=np.int64) + off)
        uv_all.append(np.asarray(uvs, dtype=np.float64))
        off += len(vmapping)
    vmapping = np.concatenate(vm_all)
    new_faces = np.concatenate(f_all)
    uvs = np.concatenate(uv_all)
    # xatlas normalises by the atlas' own size; rescale to the full texture_size square
    side = max(float(texture_size), float(atlas.width), float(atlas.height))
    uv = np.asarray(uvs, dtype=np.float64) * np.array([atlas.width, atlas.height]) / side
    # xatlas texel space has its origin at the top-left (rows go down); flip to v-up.
    uv[:, 1] = 1.0 - uv[:, 1]
    _LOG.info("xatlas: %d charts, atlas %dx%d scaled into %d^2",
              atlas.chart_count, atlas.width, atlas.height, texture_size)
    return np.asarray(vmapping, dtype=np.int64), np.asarray(new_faces, dtype=np.int64), uv
