"""Post-hoc quantisation of Scaffold-GS anchor features, without finetune, on a Scaffold bundle's held-out views (#15).

The design reported that naive post-hoc int8 of the anchor features lost 14.5 dB, while HAC
(Chen et al. 2024) trains with far coarser feature quantisation at no loss. This measures what
post-hoc quantisation of ``f_anchor_feat`` alone costs on the held-out views (every 8th frame,
:func:`splatforge_core.inria.load_views`), rendered with the bundle's MLPs
(:func:`splatforge_core.codec.scaffold_bundle.evaluate_anchors`), for these grids:

* ``per-channel 8-bit`` with the zero point where it measures better (what ``qat-bundle`` stores);
* ``per-channel b-bit symmetric`` for b = 8, 6, 4, 3, 2 (``s_j = max |x_j| / (2^(b-1) - 1)``);
* ``per-tensor 8-bit symmetric`` (one scale for all F channels);
* ``int8 cast without a scale`` (``clip(round(x), -128, 127)``: the feature values rounded to integers);
* ``int8 codes used without dequantisation`` (the per-channel 8-bit codes read back as the features,
  i.e. a decoder that forgets the scale).

With ``--finetune N`` it also runs the QAT and the fp32 finetunes of ``qat-bundle`` (N steps each,
:func:`splatforge_core.codec.scaffold_bundle.finetune_anchors`) and scores each finetuned model's
float features and their per-channel 8-bit quantisation (so "fp32 finetune, then post-hoc int8" is
measured beside QAT).

It also decodes a ``qat-bundle`` output (``--encoded``), loads it with the bundle's MLPs
(:func:`splatforge_core.scaffold.layout.load_scaffold`) and scores it on the same views.

Usage: ``python benchmarks/bench_scaffold_qat.py BUNDLE_DIR [--encoded OUT.ply] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _sym(x: np.ndarray, bits: int, axis) -> np.ndarray:
    q = (1 << (bits - 1)) - 1
    s = np.abs(x).max(axis=axis, keepdims=True) / np.float32(q)
    s = np.where(s > 0, s, np.float32(1))
    return (np.clip(np.rint(x / s), -q, q) * s).astype(np.float32)


def main(argv=None) -> int:
    from splatforge_core.codec import decompress
    from splatforge_core.codec import scaffold_bundle as sb
    from splatforge_core.codec.bundle import open_bundle
    from splatforge_core.inria import load_views
    from splatforge_core.scaffold.layout import load_scaffold

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--encoded", default=None, help="a qat-bundle output of this bundle to decode and score")
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", nargs="+", default=None, help="only the variants whose names contain one of these")
    ap.add_argument("--finetune", type=int, default=0, help="also finetune N steps (QAT and fp32) and score both, "
                    "with and without quantisation")
    a = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        b = open_bundle(a.bundle, work, kind="scaffold")
        model = b.model
        views = load_views(b.root, b.cameras, eval_every_n=8, images_dir=b.images_dir).test
        x = model.anchors.anchor_feat
        zp, mse = sb.choose_zero_points(x)
        variants = {"input (float32)": x, "per-channel 8-bit, zero point where better (qat-bundle)":
                    sb.quantised_anchors(model.anchors, zp)[0].anchor_feat}
        for bits in (8, 6, 4, 3, 2):
            variants[f"per-channel {bits}-bit symmetric"] = _sym(x, bits, 0)
        variants["per-tensor 8-bit symmetric"] = _sym(x, 8, None)
        variants["int8 cast without a scale"] = np.clip(np.rint(x), -128, 127).astype(np.float32)
        variants["int8 codes used without dequantisation"] = sb.quantised_anchors(model.anchors, zp)[1].astype(np.float32)
        if a.only:
            variants = {k: v for k, v in variants.items() if any(o in k for o in a.only)}
        rows = []
        for name, feat in variants.items():
            t = time.perf_counter()
            ev = sb.evaluate_anchors(model, dataclasses.replace(model.anchors, anchor_feat=feat), views, device="cpu")
            rows.append({"variant": name, "psnr": round(ev["psnr"], 4), "ssim": round(ev["ssim"], 5),
                         "feat_rms_error": float(np.sqrt(np.mean((feat - x) ** 2))), "secs": round(time.perf_counter() - t, 1)})
            print(json.dumps(rows[-1]), flush=True)
        fine = []
        if a.finetune:
            data = load_views(b.root, b.cameras, eval_every_n=8, images_dir=b.images_dir)
            for name, quant in (("QAT", sb.fake_quant_torch(zp)), ("fp32", None)):
                anchors, flog = sb.finetune_anchors(model, data, a.finetune, quantise=quant, device="cpu")
                for label, an in ((f"{name} finetune, float features", anchors),
                                  (f"{name} finetune, per-channel 8-bit", sb.quantised_anchors(anchors, zp)[0])):
                    ev = sb.evaluate_anchors(model, an, views, device="cpu")
                    fine.append({"variant": label, "steps": a.finetune, "psnr": round(ev["psnr"], 4),
                                 "ssim": round(ev["ssim"], 5), "loss_last": flog["loss_last"], "wall_secs": flog["wall_secs"]})
                    print(json.dumps(fine[-1]), flush=True)
        dec = None
        if a.encoded:
            d = Path(work) / "dec"
            d.mkdir()
            decompress(a.encoded, d / "point_cloud.ply")
            for f in b.ply.parent.glob("*.pt"):
                shutil.copy(f, d / f.name)
            cfg = next(p for p in (b.root / "cfg_args", b.ply.parent / "cfg_args") if p.is_file())
            m2 = load_scaffold(d, cfg_args=cfg)
            ev = sb.evaluate_anchors(m2, m2.anchors, views, device="cpu")
            dec = {"decoded_psnr": round(ev["psnr"], 4), "decoded_ssim": round(ev["ssim"], 5)}
            print(json.dumps(dec), flush=True)
    res = {"bundle": a.bundle, "n_anchors": int(model.anchors.n), "feat_dim": int(x.shape[1]), "n_views": len(views),
           "feat_abs_max": float(np.abs(x).max()), "feat_abs_median": float(np.median(np.abs(x))),
           "channel_range_median": float(np.median(np.ptp(x, axis=0))), "mse": mse, "rows": rows, "finetune": fine, "decoded": dec,
           "load": [load0, os.getloadavg()[0]]}
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
