"""Check that the CPU rasteriser agrees with gsplat's CUDA rasteriser (needs a CUDA GPU).

Renders the same seeded scene (SH degree 3, two cameras, background, RGB+D) with
``gsplat.rasterization`` on CUDA and ``splatforge_core.render.cpu_rasterization`` on CPU,
backpropagates the same random-weighted loss through both and prints the image mean
absolute difference and the relative L2 error of every gradient.

Pass criteria: colour/alpha MAD <= 1e-3 (brief), depth MAD <= 1e-3 * mean depth, every
gradient relative error (||g_cpu - g_cuda|| / ||g_cuda||) <= ``--grad-tol`` (default 2e-2;
the CUDA backward sums float32 atomics in arbitrary order). Exits 1 on failure, 2 when
no CUDA device is present.

Usage: python benchmarks/check_cuda_parity.py [--n 20000] [--size 256] [--grad-tol 0.02]
"""

from __future__ import annotations

import argparse
import math
import sys

import torch


def make_scene(n: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    fx = 0.8 * size
    z = torch.rand(n, generator=g) * 6 + 2
    x = (torch.rand(n, generator=g) - 0.5) * z * size / fx * 1.2
    y = (torch.rand(n, generator=g) - 0.5) * z * size / fx * 1.2
    means = torch.stack([x, y, z], -1)
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.5 + math.log(0.03))
    opac = torch.rand(n, generator=g) * 0.9 + 0.1
    sh = torch.randn(n, 16, 3, generator=g) * 0.2
    vms = torch.eye(4).repeat(2, 1, 1)
    vms[1, :3, 3] = torch.tensor([0.2, -0.1, 0.3])
    Ks = torch.tensor([[fx, 0, size / 2], [0, fx, size / 2], [0, 0, 1]]).repeat(2, 1, 1)
    bgs = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]])
    weights = torch.rand(2, size, size, 4, generator=g)
    return [means, quats, scales, opac, sh], vms, Ks, bgs, weights


def render(fn, params, vms, Ks, bgs, weights, size, device):
    ps = [p.to(device).clone().requires_grad_(True) for p in params]
    img, alpha, info = fn(*ps, vms.to(device), Ks.to(device), size, size, sh_degree=3,
                          backgrounds=bgs.to(device), render_mode="RGB+D", packed=False)
    info["means2d"].retain_grad()
    loss = (img * weights.to(device)).sum() + alpha.sum()
    loss.backward()
    grads = {name: p.grad.detach().cpu() for name, p in
             zip(["means", "quats", "scales", "opacities", "sh"], ps)}
    grads["means2d"] = info["means2d"].grad.detach().cpu()
    return img.detach().cpu(), alpha.detach().cpu(), info["radii"].cpu(), grads


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--grad-tol", type=float, default=2e-2)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("check_cuda_parity: no CUDA device; cannot compare", file=sys.stderr)
        return 2
    import gsplat

    from splatforge_core.render import cpu_rasterization

    params, vms, Ks, bgs, weights = make_scene(args.n, args.size)
    img_g, a_g, radii_g, gr_g = render(gsplat.rasterization, params, vms, Ks, bgs, weights,
                                       args.size, "cuda")
    img_c, a_c, radii_c, gr_c = render(cpu_rasterization, params, vms, Ks, bgs, weights,
                                       args.size, "cpu")
    ok = True
    rgb_mad = (img_g[..., :3] - img_c[..., :3]).abs().mean().item()
    alpha_mad = (a_g - a_c).abs().mean().item()
    depth_mad = (img_g[..., 3] - img_c[..., 3]).abs().mean().item()
    depth_ref = img_g[..., 3].abs().mean().item()
    radii_diff = (radii_g != radii_c).any(-1).float().mean().item()
    print("| quantity | value | limit |\n|---|---|---|")
    for name, val, lim in [("RGB MAD", rgb_mad, 1e-3), ("alpha MAD", alpha_mad, 1e-3),
                           ("depth MAD", depth_mad, 1e-3 * max(depth_ref, 1e-6)),
                           ("fraction radii differ", radii_diff, 1e-2)]:
        flag = val <= lim
        ok &= flag
        print(f"| {name} | {val:.3e} | {lim:.1e} {'ok' if flag else 'FAIL'} |")
    for name in gr_g:
        a, b = gr_c[name], gr_g[name]
        rel = ((a - b).norm() / b.norm().clamp_min(1e-20)).item()
        flag = rel <= args.grad_tol and torch.isfinite(a).all().item()
        ok &= flag
        print(f"| grad {name} rel. L2 error | {rel:.3e} | {args.grad_tol:.1e} "
              f"{'ok' if flag else 'FAIL'} |")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
