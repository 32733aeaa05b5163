"""`splatforge prune` (#16): LightGaussian global significance from the rasteriser's backward pass."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from splatforge_core.errors import InputError
from splatforge_core.prune import prune_splat, significance
from splatforge_core.render import rasterization
from splatforge_core.viewer import intrinsics_from_fov, look_at_viewmat


def _splat(means, scale=0.1, logit=1.0):
    n = len(means)
    return {"means": np.asarray(means, np.float32), "scales": np.full((n, 3), np.log(scale), np.float32),
            "quats": np.tile(np.float32([1, 0, 0, 0]), (n, 1)), "opacities": np.full(n, logit, np.float32),
            "sh0": np.zeros((n, 3), np.float32), "shN": np.zeros((n, 0, 3), np.float32), "sh_degree": 0}


def _view(pos, look, w=64, h=48):
    return SimpleNamespace(viewmat=look_at_viewmat(pos, look), K=intrinsics_from_fov(60, w, h), width=w, height=h)


def test_significance_sums_to_the_rendered_alpha():
    """sum_i w_i(p) = alpha(p): with beta = 0 the scores add up to the alpha image's sum."""
    rng = np.random.default_rng(1)
    s = _splat(rng.uniform([-1, 4, -1], [1, 6, 1], (200, 3)), scale=0.15)
    v = _view([0, 0, 0], [0, 5, 0])
    score = significance(s, [v], beta=0.0)
    t = {k: torch.as_tensor(np.array(s[k])) for k in ("means", "quats", "scales", "opacities")}
    _, alpha, _ = rasterization(t["means"], t["quats"], torch.exp(t["scales"]), torch.sigmoid(t["opacities"]),
                                torch.ones(200, 1), torch.as_tensor(np.float32(v.viewmat))[None],
                                torch.as_tensor(np.float32(v.K))[None], v.width, v.height)
    assert score.sum() == pytest.approx(float(alpha.sum()), rel=1e-4)


def test_unseen_and_occluded_gaussians_rank_last():
    """Behind the camera: 0; hidden behind an opaque Gaussian: far below the one in front."""
    s = _splat([[0, 3, 0], [0, 6, 0], [0, -3, 0]], scale=0.3, logit=6.0)
    score = significance(s, [_view([0, 0, 0], [0, 1, 0])])
    assert score[2] == 0 and score[0] > 10 * score[1]  # the far one shows only through the near one's tails
    kept = prune_splat(s, score, 1 / 3)
    np.testing.assert_array_equal(kept["means"], s["means"][:1])


def test_prune_refuses_a_bad_fraction():
    s = _splat([[0, 3, 0]])
    for keep in (0.0, 1.5):
        with pytest.raises(InputError):
            prune_splat(s, np.ones(1), keep)
