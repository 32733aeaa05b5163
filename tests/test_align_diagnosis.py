"""Geo-alignment explains itself: the GPS spread vs its noise, with the numbers (#19)."""

from __future__ import annotations

import numpy as np

from splatforge_core.sfm.align import _fit_up, diagnose


def test_scale_error_formula_matches_monte_carlo():
    """The predicted 1-sigma scale error agrees with the spread of least-squares fits to noisy GPS."""
    rng = np.random.default_rng(0)
    n, sigma = 8, 2.0
    p = np.c_[rng.uniform(-6, 6, (n, 2)), np.zeros(n)]
    scales = []
    for _ in range(2000):
        noisy = p + rng.normal(0, sigma, p.shape)
        c, _, _ = _fit_up(p, noisy)
        scales.append(abs(c))
    measured = float(np.std(scales))
    predicted = diagnose(p, np.full(n, 1.54 * sigma), np.ones(n, bool), 10.0)["scale_error"]
    assert 0.8 < measured / predicted < 1.25, (measured, predicted)


def test_small_spread_is_explained_with_numbers():
    """Three photos 3 m apart with metre-level GPS noise: scale and heading are called uncertain."""
    g = np.array([[0.0, 0, 0], [3, 0, 0], [0, 3, 0]])
    d = diagnose(g, np.array([2.0, 2.5, 3.0]), np.ones(3, bool), 10.0)
    assert d["scale_error"] > 0.3
    (problem,) = [p for p in d["problems"] if "spread only" in p]
    assert "spread only 2.0 m" in problem and "extent 4.2 m" in problem and "wider area" in problem


def test_wide_capture_and_outliers():
    """A 180 m walk with 3 m residuals is sound; one in which most positions disagree is not."""
    rng = np.random.default_rng(1)
    g = np.c_[np.linspace(0, 180, 29), rng.uniform(-20, 20, 29), np.zeros(29)]
    sound = diagnose(g, np.full(29, 3.0), np.ones(29, bool), 10.0)
    assert sound["problems"] == [] and sound["heading_error_deg"] < 1.0
    bad = diagnose(g, np.full(29, 60.0), np.arange(29) < 10, 10.0)
    assert any("10 of 29 registered positions" in p for p in bad["problems"])
    assert any("median residual (60.00 m)" in p for p in bad["problems"])
