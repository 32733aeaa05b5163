"""Texture and vertex-colour baking from the splat, and a triangle rasteriser.

Bake method (per texel, and per vertex for the vertex colours):

1. Rasterise every UV triangle into the atlas; each covered texel centre gets its surface
   point ``p`` (barycentric interpolation of the triangle's 3D corners) and normal ``n``
   (interpolated vertex normal).
2. Take the ``k`` Gaussians whose centres are nearest to ``p`` (scipy ``cKDTree``).
3. Composite them the way a 3DGS rasteriser would for an orthographic camera hovering above
   the texel and looking down ``-n``: a Gaussian's alpha on that ray is
   ``opacity * exp(-sigma / 2)`` where ``sigma = min_t (d + t n)^T Sigma^-1 (d + t n)``,
   ``d = p - mu``, i.e. the projected (2D) Gaussian evaluated at the texel
   (Kerbl et al. 2023, eq. 4-5, for an orthographic projection along ``n``). In the Gaussian's
   own frame (``A = S^-1 R^T``, ``d_l = A d``, ``n_l = A n``) this is
   ``sigma = |d_l x n_l|^2 / |n_l|^2``, computed that way for numerical stability with very
   flat Gaussians. Gaussians are blended front to back by the height of their centre along
   ``n`` (``C = sum c_i a_i T_i``), and the result is normalised by the accumulated alpha so
   a thin or half-transparent surface is not darkened by a black background.
   If no Gaussian contributes (alpha < 1/255) the nearest Gaussian's colour is used.

Why: the texture then shows what the splat shows when looked at face-on, including the
fine colour detail of flat Gaussians lying in the surface, while Gaussians away from the
surface along the view line are still weighed as the splat renderer would. The colour is the
view-independent SH DC term (0.5 + C0 * f_dc); a texture has one colour per texel, so the
view-dependent SH bands are dropped.

The compositing kernel is Numba-compiled (numba is already a project dependency through
``splatforge_core.render``): a vectorised numpy version needs [texels, k, 3, 3] temporaries
and was several times slower on the 16.7M texels of a 4096^2 atlas.
"""

from __future__ import annotations

import numba
import numpy as np

from ..log import get_logger
from ..rotations import quat_to_rotmat
from .mesh import Splat

_LOG = get_logger("export.bake")


# --------------------------------------------------------------------------------------
# triangle rasteriser (texture space for baking, screen space with a z-buffer for previews)
# --------------------------------------------------------------------------------------

def raster_triangles(xy: np.ndarray, width: int, height: int, depth: np.ndarray | None = None,
                     max_candidates: int = 4_000_000):
    """Which pixel centres each triangle covers (vectorised bounding-box scan).

    Args:
        xy: [F, 3, 2] float64 corner positions in pixels (x = column, y = row; pixel (c, r)
            has its centre at (c + 0.5, r + 0.5)).
        width, height: image size in pixels.
        depth: optional [F, 3] corner depths; when given, only the nearest (smallest depth)
            fragment per pixel is kept (z-buffer).
        max_candidates: bounding-box pixels examined per batch (memory bound).

    Returns:
        pix: [M] int64 flat pixel index ``row * width + col``; face: [M] int64 triangle index;
        bary: [M, 3] float32 barycentric weights of the three corners. Without ``depth`` a
        pixel shared by two triangles (an edge) appears twice.
    """
    xy = np.asarray(xy, dtype=np.float64)
    F = len(xy)
    if F == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.float32)
    lo = xy.min(axis=1)
    hi = xy.max(axis=1)
    c0 = np.clip(np.ceil(lo[:, 0] - 0.5), 0, width).astype(np.int64)
    c1 = np.clip(np.floor(hi[:, 0] - 0.5), -1, width - 1).astype(np.int64)
    r0 = np.clip(np.ceil(lo[:, 1] - 0.5), 0, height).astype(np.int64)
    r1 = np.clip(np.floor(hi[:, 1] - 0.5), -1, height - 1).astype(np.int64)
    w = np.maximum(c1 - c0 + 1, 0)
    h = np.maximum(r1 - r0 + 1, 0)
    n = w * h
    a = xy[:, 0]
    v0 = xy[:, 1] - a
    v1 = xy[:, 2] - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    ok = (n > 0) & (np.abs(den) > 1e-12)
    faces_ok = np.nonzero(ok)[0]
    out_p, out_f, out_b, out_z = [], [], [], []
    csum = np.cumsum(n[faces_ok])
    start = 0
    while start < len(faces_ok):
        base = csum[start - 1] if start else 0
        stop = int(np.searchsorted(csum, base + max_candidates, side="right"))
        stop = max(stop, start + 1)
        fs = faces_ok[start:stop]
        cnt = n[fs]
        fid = np.repeat(fs, cnt)
        offs = np.repeat(np.cumsum(cnt) - cnt, cnt)
        local = np.arange(len(fid), dtype=np.int64) - offs
        ww = w[fid]
        col = c0[fid] + local % ww
        row = r0[fid] + local // ww
        px = col + 0.5 - a[fid, 0]
        py = row + 0.5 - a[fid, 1]
        d = den[fid]
        beta = (px * v1[fid, 1] - v1[fid, 0] * py) / d
        gamma = (v0[fid, 0] * py - px * v0[fid, 1]) / d
        alpha = 1.0 - beta - gamma
        eps = -1e-7
        inside = (alpha >= eps) & (beta >= eps) & (gamma >= eps)
        bary = np.stack([alpha, beta, gamma], axis=1)[inside]
        fid = fid[inside]
        pix = (row * width + col)[inside]
        if depth is not None:
            z = np.einsum("ij,ij->i", bary, depth[fid])
            out_z.append(z)
        out_p.append(pix)
        out_f.append(fid)
        out_b.append(bary.astype(np.float32))
        start = stop
    pix = np.concatenate(out_p)
    fid = np.concatenate(out_f)
    bary = np.concatenate(out_b)
    if depth is not None and len(pix):
        z = np.concatenate(out_z)
        order = np.lexsort((z, pix))
        pix_sorted = pix[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = pix_sorted[1:] != pix_sorted[:-1]
        sel = order[first]
        pix, fid, bary = pix[sel], fid[sel], bary[sel]
    return pix, fid, bary


# --------------------------------------------------------------------------------------
# compositing
# --------------------------------------------------------------------------------------

@numba.njit(parallel=True, cache=True)
def _composite(p, nrm, idx, mu, A, opac, col, out, acc):  # pragma: no cover - compiled
    M, K = idx.shape
    N = mu.shape[0]
    for i in numba.prange(M):
        s = np.empty(K)
        al = np.empty(K)
        nx, ny, nz = nrm[i, 0], nrm[i, 1], nrm[i, 2]
        for j in range(K):
            g = idx[i, j]
            if g >= N:
                al[j] = 0.0
                s[j] = -1e30
                continue
            dx = mu[g, 0] - p[i, 0]
            dy = mu[g, 1] - p[i, 1]
            dz = mu[g, 2] - p[i, 2]
            s[j] = dx * nx + dy * ny + dz * nz
            # d and n in the Gaussian's whitened frame: A = S^-1 R^T
            d0 = A[g, 0, 0] * dx + A[g, 0, 1] * dy + A[g, 0, 2] * dz
            d1 = A[g, 1, 0] * dx + A[g, 1, 1] * dy + A[g, 1, 2] * dz
            d2 = A[g, 2, 0] * dx + A[g, 2, 1] * dy + A[g, 2, 2] * dz
            m0 = A[g, 0, 0] * nx + A[g, 0, 1] * ny + A[g, 0, 2] * nz
            m1 = A[g, 1, 0] * nx + A[g, 1, 1] * ny + A[g, 1, 2] * nz
            m2 = A[g, 2, 0] * nx + A[g, 2, 1] * ny + A[g, 2, 2] * nz
            mm = m0 * m0 + m1 * m1 + m2 * m2
            c0 = d1 * m2 - d2 * m1
            c1 = d2 * m0 - d0 * m2
            c2 = d0 * m1 - d1 * m0
            sig = (c0 * c0 + c1 * c1 + c2 * c2) / max(mm, 1e-30)
            a = opac[g] * np.exp(-0.5 * sig)
            al[j] = min(a, 0.99)
        order = np.argsort(-s)
        T = 1.0
        r = 0.0
        gg = 0.0
        b = 0.0
        wsum = 0.0
        for jj in range(K):
            j = order[jj]
            a = al[j]
            if a < 1.0 / 255.0:
                continue
            wgt = a * T
            g = idx[i, j]
            r += wgt * col[g, 0]
            gg += wgt * col[g, 1]
            b += wgt * col[g, 2]
            wsum += wgt
            T *= 1.0 - a
            if T < 1e-4:
                break
        if wsum > 1e-8:
            out[i, 0] = r / wsum
            out[i, 1] = gg / wsum
            out[i, 2] = b / wsum
        else:
            g = idx[i, 0]
            if g < N:
                out[i, 0] = col[g, 0]
                out[i, 1] = col[g, 1]
                out[i, 2] = col[g, 2]
        acc[i] = 1.0 - T


class SplatColourSampler:
    """Colour of the splat seen face-on at surface points (see the module docstring).

    Build once per splat (kd-tree over centres + whitening matrices), then call
    :meth:`sample` with points and normals.
    """

    def __init__(self, splat: Splat, k: int = 8, workers: int = -1) -> None:
        from scipy.spatial import cKDTree

        self.k = int(min(k, len(splat)))
        self.workers = workers
        self.tree = cKDTree(splat.means)
        rot = quat_to_rotmat(splat.quats)
        inv_s = 1.0 / np.maximum(splat.scales, 1e-12)
        # A = S^-1 R^T: row a of A is R[:, a] / s_a
        self.A = np.ascontiguousarray(np.transpose(rot, (0, 2, 1)) * inv_s[:, :, None])
        self.mu = np.ascontiguousarray(splat.means)
        self.opac = np.ascontiguousarray(splat.opacities)
        self.col = np.ascontiguousarray(splat.colors)

    def sample(self, points: np.ndarray, normals: np.ndarray, chunk: int = 1_000_000):
        """points, normals: [M, 3] (metres; unit normals pointing out of the surface).

        Returns (rgb [M, 3] float32 in [0, 1], alpha [M] float32 accumulated opacity).
        """
        M = len(points)
        rgb = np.zeros((M, 3), dtype=np.float64)
        acc = np.zeros(M, dtype=np.float64)
        for s in range(0, M, chunk):
            p = np.ascontiguousarray(points[s:s + chunk], dtype=np.float64)
            n = np.ascontiguousarray(normals[s:s + chunk], dtype=np.float64)
            _, idx = self.tree.query(p, k=self.k, workers=self.workers)
            idx = np.ascontiguousarray(idx.reshape(len(p), self.k), dtype=np.int64)
            _composite(p, n, idx, self.mu, self.A, self.opac, self.col, rgb[s:s + chunk], acc[s:s + chunk])
        return rgb.astype(np.float32), acc.astype(np.float32)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals [V, 3] float64 (unit; zero-area neighbourhoods -> +Z)."""
    fn = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    vn = np.zeros_like(vertices)
    for c in range(3):
        np.add.at(vn, faces[:, c], fn)
    ln = np.linalg.norm(vn, axis=1, keepdims=True)
    vn = np.where(ln > 0, vn / np.maximum(ln, 1e-300), np.array([0.0, 0.0, 1.0]))
    return vn


def bake_texture(sampler: SplatColourSampler, vertices: np.ndarray, vnormals: np.ndarray,
                 faces: np.ndarray, uv: np.ndarray, size: int):
    """Bake the splat colour into a ``size`` x ``size`` atlas.

    Args:
        vertices: [V, 3] float64 (metres), vnormals: [V, 3] unit, faces: [F, 3] int64,
        uv: [V, 2] in [0, 1], v up (row = (1 - v) * size).

    Returns:
        image: [size, size, 3] uint8 RGB, row 0 = top (v = 1); texels outside every chart are
        filled with the colour of the nearest chart texel (no dark seams under filtering or
        mip-mapping). coverage: fraction of texels inside a chart.
    """
    from scipy import ndimage

    xy = np.stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size], axis=1)[faces]
    pix, fid, bary = raster_triangles(xy, size, size)
    # Triangles smaller than a texel may cover no texel centre; give each of them the texel
    # under its centroid (if still free) so tiny charts do not take a neighbour's colour.
    missed = np.ones(len(faces), dtype=bool)
    missed[fid] = False
    if missed.any():
        mf = np.nonzero(missed)[0]
        cxy = xy[mf].mean(axis=1)
        cpix = (np.clip(cxy[:, 1].astype(np.int64), 0, size - 1) * size
                + np.clip(cxy[:, 0].astype(np.int64), 0, size - 1))
        free = ~np.isin(cpix, pix)
        pix = np.concatenate([pix, cpix[free]])
        fid = np.concatenate([fid, mf[free]])
        bary = np.concatenate([bary, np.full((int(free.sum()), 3), 1.0 / 3.0, dtype=np.float32)])
    # one sample per texel (edge texels may be hit by both neighbouring triangles)
    pix, first = np.unique(pix, return_index=True)
    fid, bary = fid[first], bary[first].astype(np.float64)
    fv = faces[fid]
    pts = np.einsum("mi,mij->mj", bary, vertices[fv])
    nrm = np.einsum("mi,mij->mj", bary, vnormals[fv])
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    rgb, _ = sampler.sample(pts, nrm)
    img = np.zeros((size * size, 3), dtype=np.uint8)
    img[pix] = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    mask = np.zeros(size * size, dtype=bool)
    mask[pix] = True
    img = img.reshape(size, size, 3)
    mask = mask.reshape(size, size)
    if mask.any() and not mask.all():
        _, (ri, ci) = ndimage.distance_transform_edt(~mask, return_indices=True)
        img = img[ri, ci]
    return img, float(mask.mean())
