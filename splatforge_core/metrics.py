"""Image metrics (PSNR, SSIM, optional LPIPS) and the training figures.

SSIM is ``pytorch_msssim.ssim`` (11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03,
"valid" convolution: Wang et al. 2004, "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 13(4)), the same definition 3DGS/gsplat train and evaluate
with. LPIPS is computed only when the ``lpips`` package and its AlexNet weights are already
on disk (no download is ever attempted); otherwise it is left out of metrics.json and the
reason is recorded there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from .io import atomic_path

__all__ = ["psnr", "ssim", "try_load_lpips", "save_comparison_png", "save_curve_png"]


def psnr(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB of images in [0, 1]; pred, gt: [..., H, W, 3] float. 10 log10(1 / MSE).

    mask: optional [..., H, W, 1] bool (or 0/1 float): the MSE is taken over the pixels where
    it is true only (masked pixels, e.g. the camera operator, do not count).
    """
    err = (pred.clamp(0, 1) - gt) ** 2
    if mask is None:
        mse = torch.mean(err).item()
    else:
        m = mask.to(err.dtype).expand_as(err)
        mse = (torch.sum(err * m) / torch.clamp(m.sum(), min=1.0)).item()
    return float("inf") if mse <= 0 else float(-10.0 * np.log10(mse))


def ssim(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean SSIM (differentiable); pred, gt: [B, H, W, 3] float in [0, 1] -> scalar tensor.

    Images smaller than the 11-pixel window fall back to a window of their size (odd).
    """
    from pytorch_msssim import ssim as _ssim

    x = pred.permute(0, 3, 1, 2)
    y = gt.permute(0, 3, 1, 2)
    win = min(11, min(x.shape[-2:]) // 2 * 2 - 1)
    return _ssim(x, y, data_range=1.0, size_average=True, win_size=max(win, 3))


def try_load_lpips(device: torch.device) -> Tuple[Optional[object], str]:
    """Return ``(lpips_fn, note)``: an LPIPS-Alex callable if it loads fully offline.

    Only tried when the ``lpips`` package is installed and torchvision's AlexNet weights are
    already in the torch hub cache; never downloads. ``lpips_fn(pred, gt)`` takes
    [B, H, W, 3] in [0, 1]. Returns ``(None, reason)`` otherwise.
    """
    try:
        import lpips  # noqa: F401
    except ImportError:
        return None, "LPIPS not computed: the 'lpips' package is not installed (weights are never downloaded)"
    ckpt_dir = Path(torch.hub.get_dir()) / "checkpoints"
    if not any(ckpt_dir.glob("alexnet-*.pth")):
        return None, f"LPIPS not computed: AlexNet weights not in {ckpt_dir} (offline, no download)"
    try:
        import lpips

        net = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
    except Exception as e:  # any failure to load offline -> leave LPIPS out
        return None, f"LPIPS not computed: weights failed to load offline ({e})"

    def fn(pred: torch.Tensor, gt: torch.Tensor) -> float:
        with torch.no_grad():
            return float(net(pred.permute(0, 3, 1, 2) * 2 - 1, gt.permute(0, 3, 1, 2) * 2 - 1).mean())

    return fn, "LPIPS-Alex (lpips package, offline weights)"


def save_comparison_png(path: str | os.PathLike, pairs: List[Tuple[str, np.ndarray, np.ndarray]]) -> None:
    """Write a PNG with one row per view: render | ground truth.

    Args:
        pairs: (title, render [H, W, 3] float in [0, 1], ground truth [H, W, 3]) per view.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(pairs)
    fig, axes = plt.subplots(n, 2, figsize=(8, 4 * n * max(p[1].shape[0] / p[1].shape[1] for p in pairs)),
                             squeeze=False)
    for row, (title, pred, gt) in zip(axes, pairs):
        row[0].imshow(np.clip(pred, 0, 1))
        row[0].set_title(f"render: {title}", fontsize=8)
        row[1].imshow(np.clip(gt, 0, 1))
        row[1].set_title("ground truth", fontsize=8)
        for a in row:
            a.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def save_curve_png(path: str | os.PathLike, steps: List[int], losses: List[float],
                   train_psnr: List[float], eval_steps: List[int], eval_psnr: List[float]) -> None:
    """Write the training curve: loss (left axis, log) and PSNR (train, held-out) per step.

    ``losses``/``train_psnr`` are single-view samples (one every ``log_every`` steps) whose
    spread between views (sky vs ground) hides the trend, so they are drawn faint with a
    centred moving mean over 15 samples drawn on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    def smooth(y):
        y = np.asarray(y, float)
        w = min(15, len(y))
        if w < 3:
            return y
        k = np.ones(w) / w
        return np.convolve(y, k, "same") / np.convolve(np.ones_like(y), k, "same")

    ax.plot(steps, losses, color="tab:red", lw=0.6, alpha=0.3)
    ax.plot(steps, smooth(losses), color="tab:red", lw=1.5, label="loss (L1+SSIM), moving mean")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.plot(steps, train_psnr, color="tab:blue", lw=0.6, alpha=0.3)
    ax2.plot(steps, smooth(train_psnr), color="tab:blue", lw=1.5, label="train PSNR, moving mean")
    if eval_steps:
        ax2.plot(eval_steps, eval_psnr, "o-", color="tab:green", label="held-out PSNR")
    ax2.set_ylabel("PSNR (dB)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
