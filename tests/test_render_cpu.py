"""CPU rasteriser vs a naive dense per-pixel renderer (gsplat conventions)."""

from __future__ import annotations

import math

import pytest
import torch
from gsplat.cuda._torch_impl import (
    _fully_fused_projection,
    _quat_scale_to_covar_preci,
    _spherical_harmonics,
)

from splatforge_core.render import cpu_rasterization, rasterization


# ---------------------------------------------------------------- dense reference
def dense_reference(means, quats, scales, opacities, colors, viewmats, Ks, W, H,
                    sh_degree=None, backgrounds=None, near_plane=0.01, far_plane=1e10,
                    eps2d=0.3, depth_channel=False, antialiased=False):
    """Every pixel looks at every Gaussian, sorted by depth: no tiles, no radii."""
    covars, _ = _quat_scale_to_covar_preci(quats, scales, True, False)
    _, m2, depths, conics, comp = _fully_fused_projection(
        means, covars, viewmats, Ks, W, H, eps2d=eps2d, near_plane=near_plane,
        far_plane=far_plane, calc_compensations=antialiased)
    C = viewmats.shape[0]
    opac_c = opacities[None].expand(C, -1)
    if antialiased:
        opac_c = opac_c * comp
    if sh_degree is not None:
        campos = torch.inverse(viewmats)[:, :3, 3]
        cols = torch.clamp_min(_spherical_harmonics(
            sh_degree, means[None] - campos[:, None],
            colors[None].expand(C, *colors.shape)) + 0.5, 0.0)
    elif colors.dim() == 3:  # per-camera colours [C, N, D]
        cols = colors
    else:
        cols = colors[None].expand(C, *colors.shape)
    if depth_channel:
        cols = torch.cat([cols, depths[..., None]], -1)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=means.dtype),
                            torch.arange(W, dtype=means.dtype), indexing="ij")
    px = xs.reshape(-1, 1) + 0.5
    py = ys.reshape(-1, 1) + 0.5
    imgs, alphas = [], []
    for c in range(C):
        ok = (depths[c] >= near_plane) & (depths[c] <= far_plane) & (opac_c[c] >= 1 / 255)
        order = torch.argsort(depths[c])
        order = order[ok[order]]
        mu, cn, op, col = m2[c, order], conics[c, order], opac_c[c, order], cols[c, order]
        dx = mu[None, :, 0] - px
        dy = mu[None, :, 1] - py
        sigma = 0.5 * (cn[:, 0] * dx * dx + cn[:, 2] * dy * dy) + cn[:, 1] * dx * dy
        alpha = torch.clamp_max(op[None] * torch.exp(-sigma), 0.999)
        keep = (sigma >= 0) & (alpha >= 1 / 255)
        alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
        one_m = 1 - alpha
        t_before = torch.cumprod(torch.cat([torch.ones_like(one_m[:, :1]), one_m[:, :-1]], 1), 1)
        # gsplat stops *before* the first Gaussian that would bring T to <= 1e-4
        included = (t_before * one_m > 1e-4).detach()
        w = alpha * t_before * included
        T_final = torch.prod(torch.where(included, one_m, torch.ones_like(one_m)), 1)
        img = w @ col
        if backgrounds is not None:
            img = img + T_final[:, None] * backgrounds[c]
        imgs.append(img.reshape(H, W, -1))
        alphas.append((1 - T_final).reshape(H, W, 1))
    return torch.stack(imgs), torch.stack(alphas)


# ---------------------------------------------------------------- scenes
def make_scene(n=120, seed=0, dtype=torch.float64, C=1, sh_degree=None, W=45, H=37,
               opaque=False):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * 0.7
    means[:, 2] += 4.0
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.25 + 0.03
    if opaque:
        opac = torch.rand(n, generator=g, dtype=dtype) * 0.05 + 0.94
    else:
        opac = torch.rand(n, generator=g, dtype=dtype) * 0.9 + 0.05
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=g, dtype=dtype)
    else:
        colors = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=dtype) * 0.3
    vms, Ks = [], []
    for c in range(C):
        ang = 0.15 * c
        R = torch.tensor([[math.cos(ang), 0, math.sin(ang)], [0, 1, 0],
                          [-math.sin(ang), 0, math.cos(ang)]], dtype=dtype)
        vm = torch.eye(4, dtype=dtype)
        vm[:3, :3] = R
        vm[:3, 3] = torch.tensor([0.1 * c, -0.05 * c, 0.2 * c], dtype=dtype)
        vms.append(vm)
        Ks.append(torch.tensor([[40.0 + 3 * c, 0, W / 2 + 1.3], [0, 41.0, H / 2 - 0.7],
                                [0, 0, 1]], dtype=dtype))
    params = [means, quats, scales, opac, colors]
    for p in params:
        p.requires_grad_(True)
    return params, torch.stack(vms), torch.stack(Ks), W, H


def _grads(out, params, seed=1):
    g = torch.Generator().manual_seed(seed)
    loss = 0
    for o in out:
        loss = loss + (o * torch.rand(o.shape, generator=g, dtype=o.dtype)).sum()
    return torch.autograd.grad(loss, params)


NAMES = ["means", "quats", "scales", "opacities", "colors"]


def _compare(params, vms, Ks, W, H, img_tol=1e-9, grad_rtol=1e-6, **kw):
    img, alpha, info = cpu_rasterization(*params, vms, Ks, W, H, **kw)
    ref_kw = {k: v for k, v in kw.items() if k in ("sh_degree", "backgrounds")}
    ref_kw["antialiased"] = kw.get("rasterize_mode") == "antialiased"
    if kw.get("render_mode") == "RGB+D":
        ref_kw["depth_channel"] = True
    rimg, ralpha = dense_reference(*params, vms, Ks, W, H, **ref_kw)
    assert img.shape == rimg.shape and alpha.shape == ralpha.shape
    assert (img - rimg).abs().max().item() < img_tol
    assert (alpha - ralpha).abs().max().item() < img_tol
    g = _grads([img, alpha], params)
    rg = _grads([rimg, ralpha], params)
    for name, a, b in zip(NAMES, g, rg):
        err = (a - b).abs().max().item()
        scale = b.abs().max().item()
        assert scale > 0, name
        assert err <= grad_rtol * scale + 1e-10, f"{name}: {err} vs scale {scale}"
    return img, alpha, info


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("seed,opaque", [(0, False), (1, False), (2, True)])
def test_matches_dense_float64(seed, opaque):
    params, vms, Ks, W, H = make_scene(seed=seed, opaque=opaque)
    img, alpha, _ = _compare(params, vms, Ks, W, H)
    assert alpha.max() > 0.5
    if opaque:  # early termination (T <= 1e-4) must have been hit somewhere
        assert alpha.max() > 1 - 1e-3


def test_float32_image_within_1e5_of_float64_dense():
    params, vms, Ks, W, H = make_scene(seed=3)
    p32 = [p.detach().float() for p in params]
    img, alpha, _ = cpu_rasterization(*p32, vms.float(), Ks.float(), W, H)
    rimg, ralpha = dense_reference(*[p.detach() for p in params], vms, Ks, W, H)
    assert img.dtype == torch.float32
    assert (img.double() - rimg).abs().max() < 1e-5
    assert (alpha.double() - ralpha).abs().max() < 1e-5


def test_backgrounds_and_grad():
    params, vms, Ks, W, H = make_scene(seed=4)
    bg = torch.tensor([[0.2, 0.5, 0.9]], dtype=torch.float64, requires_grad=True)
    _compare(params, vms, Ks, W, H, backgrounds=bg)
    img, alpha, _ = cpu_rasterization(*params, vms, Ks, W, H, backgrounds=bg)
    (gb,) = torch.autograd.grad(img.sum(), bg)
    assert torch.allclose(gb, (1 - alpha).sum(dim=(1, 2)).expand(1, 3))


def test_sh_degree_3():
    params, vms, Ks, W, H = make_scene(seed=5, sh_degree=3)
    _compare(params, vms, Ks, W, H, sh_degree=3)


def test_multiple_cameras_and_depth():
    params, vms, Ks, W, H = make_scene(seed=6, C=3)
    img, alpha, info = _compare(params, vms, Ks, W, H, render_mode="RGB+D")
    assert img.shape == (3, H, W, 4)
    assert info["means2d"].shape == (3, params[0].shape[0], 2)
    assert info["n_cameras"] == 3
    # the cameras see different images
    assert (img[0] - img[1]).abs().max() > 1e-2
    ed, a2, _ = cpu_rasterization(*params, vms, Ks, W, H, render_mode="ED")
    expect = img[..., 3:] / alpha.clamp(min=1e-10)
    assert torch.allclose(ed, expect, atol=1e-9)


def test_antialiased_mode():
    params, vms, Ks, W, H = make_scene(seed=12)
    img, _, _ = _compare(params, vms, Ks, W, H, rasterize_mode="antialiased")
    img_c, _, _ = cpu_rasterization(*[p.detach() for p in params], vms, Ks, W, H)
    assert (img.detach() - img_c).abs().max() > 1e-3  # compensation changes the image


def test_per_camera_colors_with_5_channels():
    params, vms, Ks, W, H = make_scene(seed=13, C=2)
    g = torch.Generator().manual_seed(3)
    params[4] = torch.rand(2, params[0].shape[0], 5, generator=g,
                           dtype=torch.float64).requires_grad_(True)
    img, _, _ = _compare(params, vms, Ks, W, H)
    assert img.shape == (2, H, W, 5)


def test_radius_clip_culls_small_splats():
    params, vms, Ks, W, H = make_scene(seed=14)
    _, _, info0 = cpu_rasterization(*params, vms, Ks, W, H)
    _, _, info1 = cpu_rasterization(*params, vms, Ks, W, H, radius_clip=4.0)
    r0, r1 = info0["radii"], info1["radii"]
    small = (r0 > 0).all(-1) & (r0 <= 4).all(-1)
    assert small.any()
    assert (r1[small] == 0).all()
    assert torch.equal(r1[~small], r0[~small])


def test_behind_camera_and_outside_image_are_ignored():
    params, vms, Ks, W, H = make_scene(seed=7, n=60)
    with torch.no_grad():
        extra_m = torch.tensor([[0.0, 0.0, -3.0], [0.1, 0.2, -0.5], [0.0, 0.0, 0.005],
                                [50.0, 0.0, 4.0], [0.0, -60.0, 4.0]], dtype=torch.float64)
    n_extra = extra_m.shape[0]
    g = torch.Generator().manual_seed(0)
    full = [torch.cat([p.detach(), e]) for p, e in zip(params, [
        extra_m, torch.randn(n_extra, 4, generator=g, dtype=torch.float64),
        torch.full((n_extra, 3), 0.2, dtype=torch.float64),
        torch.full((n_extra,), 0.9, dtype=torch.float64),
        torch.rand(n_extra, 3, generator=g, dtype=torch.float64)])]
    for p in full:
        p.requires_grad_(True)
    _compare(full, vms, Ks, W, H)
    img, alpha, info = cpu_rasterization(*full, vms, Ks, W, H)
    img0, alpha0, _ = cpu_rasterization(*[p.detach() for p in params], vms, Ks, W, H)
    assert torch.allclose(img, img0, atol=1e-12)
    assert (info["radii"][0, -n_extra:] == 0).all()
    (gm,) = torch.autograd.grad(img.sum(), full[0])
    assert torch.isfinite(gm).all()
    assert (gm[-n_extra:] == 0).all()


def test_empty_view():
    params, vms, Ks, W, H = make_scene(seed=8, n=10)
    with torch.no_grad():
        means = params[0].detach().clone()
        means[:, 2] = -5.0
    img, alpha, info = cpu_rasterization(means, *params[1:], vms, Ks, W, H)
    assert img.abs().max() == 0 and alpha.abs().max() == 0
    assert info["flatten_ids"].numel() == 0


def test_gradcheck_tiny():
    params, vms, Ks, W, H = make_scene(seed=9, n=6, W=12, H=10)

    def f(*ps):
        img, alpha, _ = cpu_rasterization(*ps, vms, Ks, W, H)
        return img, alpha

    assert torch.autograd.gradcheck(f, tuple(params), eps=1e-7, atol=1e-5, rtol=1e-4)


def test_absgrad_and_dispatch():
    params, vms, Ks, W, H = make_scene(seed=10, C=2)
    img, alpha, info = rasterization(*params, vms, Ks, W, H, absgrad=True)
    info["means2d"].retain_grad()
    img.sum().backward()
    grad = info["means2d"].grad
    absgrad = info["means2d"].absgrad
    assert absgrad.shape == grad.shape
    assert (absgrad >= grad.abs() - 1e-12).all()
    assert absgrad.sum() > grad.abs().sum()  # sign changes across pixels exist
    img2, _, _ = cpu_rasterization(*[p.detach() for p in params], vms, Ks, W, H)
    assert torch.equal(img.detach(), img2)


def test_unsupported_options_raise():
    params, vms, Ks, W, H = make_scene(seed=11, n=5)
    with pytest.raises(NotImplementedError):
        cpu_rasterization(*params, vms, Ks, W, H, packed=True)
    with pytest.raises(NotImplementedError):
        cpu_rasterization(*params, vms, Ks, W, H, with_ut=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'not_an_option'"):
        cpu_rasterization(*params, vms, Ks, W, H, not_an_option=1)


def test_default_strategy_step_on_cpu():
    from gsplat.strategy import DefaultStrategy

    torch.manual_seed(0)
    n = 300
    params = torch.nn.ParameterDict({
        "means": torch.nn.Parameter(torch.randn(n, 3) * 0.6 + torch.tensor([0, 0, 4.0])),
        "scales": torch.nn.Parameter(torch.log(torch.rand(n, 3) * 0.1 + 0.02)),
        "quats": torch.nn.Parameter(torch.randn(n, 4)),
        "opacities": torch.nn.Parameter(torch.logit(torch.rand(n) * 0.8 + 0.1)),
        "sh0": torch.nn.Parameter(torch.randn(n, 1, 3) * 0.3),
        "shN": torch.nn.Parameter(torch.zeros(n, 15, 3)),
    })
    optimizers = {k: torch.optim.Adam([v], lr=1e-3) for k, v in params.items()}
    # refine at step 1 with a tiny gradient threshold so that densification really runs
    strategy = DefaultStrategy(refine_start_iter=0, refine_every=1, grow_grad2d=1e-9,
                               prune_opa=0.0)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state()
    W, H = 64, 48
    vms = torch.eye(4)[None]
    Ks = torch.tensor([[[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]]])
    target = torch.rand(1, H, W, 3)
    for step in range(2):
        for opt in optimizers.values():
            opt.zero_grad()
        img, alpha, info = rasterization(
            params["means"], params["quats"], torch.exp(params["scales"]),
            torch.sigmoid(params["opacities"]),
            torch.cat([params["sh0"], params["shN"]], 1), vms, Ks, W, H, sh_degree=3)
        strategy.step_pre_backward(params, optimizers, state, step, info)
        loss = (img - target).abs().mean()
        loss.backward()
        for opt in optimizers.values():
            opt.step()
        if step == 0:
            strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
            assert state["grad2d"] is not None and state["grad2d"].shape == (n,)
            assert state["grad2d"].sum() > 0
            assert state["count"].sum() == (info["radii"] > 0).all(-1).sum()
        else:
            n_vis = int((info["radii"] > 0).all(-1).sum())
            strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
    # every visible Gaussian had grad2d > 1e-9: duplicated or split -> more Gaussians
    assert len(params["means"]) >= n + n_vis
    img, _, _ = rasterization(params["means"], params["quats"], torch.exp(params["scales"]),
                              torch.sigmoid(params["opacities"]),
                              torch.cat([params["sh0"], params["shN"]], 1), vms, Ks, W, H,
                              sh_degree=3)
    assert torch.isfinite(img).all()
