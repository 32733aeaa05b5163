"""Preset ``qat-bundle``: Scaffold-GS with int8 anchor features after a quantisation-aware finetune (issue #15).

Bundle (:func:`.bundle.open_bundle` with ``kind="scaffold"``; ``splatforge bundle SCENE OUT
--scaffold DIR`` packs one): the layout of :mod:`.bundle` with the Scaffold-GS model instead of a
3DGS splat, as the reference trainer (city-super/Scaffold-GS) writes it::

    point_cloud.ply       anchor PLY (:mod:`splatforge_core.scaffold.layout`)
    opacity_mlp.pt        TorchScript MLPs, beside point_cloud.ply
    cov_mlp.pt
    color_mlp.pt
    embedding_appearance.pt   when cfg_args has appearance_dim > 0
    feature_bank_mlp.pt       when cfg_args has use_feat_bank=True
    cfg_args              the printed argparse Namespace (parsed without eval)
    input.ply             optional: the SfM points the anchors were made from (not used here)
    cameras.json, images/, sparse/0 (optional)   as in a 3DGS bundle

(or the trainer's own output folder: ``point_cloud/iteration_N/`` with the PLY and the MLPs,
``cfg_args`` at the root). :func:`check_scaffold_members` is step 7 of :func:`.bundle.open_bundle`
for this kind: the anchor PLY's header (the reference layout, F and k as ``cfg_args`` says, a
body as long as the header says; a 3DGS splat is refused with a pointer to ``qat-3dgs-bundle``),
``cfg_args``, each MLP file present, at most :data:`~splatforge_core.scaffold.layout.MAX_MLP_BYTES`
and a zip archive (what ``torch.jit.save`` writes). **The TorchScript files are code**: they are
loaded (``torch.jit.load(map_location="cpu")``; TorchScript, no pickle) and called on a probe
input only after every other check of the bundle passed. Load bundles from sources you trust.

Encoder (:func:`encode_folder`), PSNR/SSIM on the held-out views (every 8th frame,
:func:`splatforge_core.inria.load_views`, never trained on):

(a) the input model; (b) post-hoc int8 of ``f_anchor_feat_*`` without finetune; (c) a
quantisation-aware finetune of ``finetune_iters`` steps (:func:`finetune_anchors`: the quantiser
in the forward pass through a straight-through estimator, before the neural-Gaussian generation
of :func:`splatforge_core.scaffold.model.generate_neural_gaussians`), then quantised; (d) a
float32 finetune of the same length. (c) is written; ``delta_psnr_db`` is (c) - (a). Measured on the
300-step demo model (benchmarks/results/splatbench.md): (b) costs 0.001 dB, (c) gains 0.31 / 0.98 dB
after 40 / 150 steps while (d) gains 0.39 / 1.58 dB and loses nothing when quantised afterwards, i.e.
at 8 bits the straight-through pass only slows the feature updates on that model.

What the finetune trains: the anchor parameters the PLY stores and the reference trains, i.e.
``f_anchor_feat`` (Adam lr 0.0025: a third of the reference's constant 0.0075, see
:class:`AnchorFinetuneOptions`), ``f_offset`` (1e-4 x the
scene scale, the end of the reference's schedule) and ``scale_*`` (0.007). The anchor positions
stay (the reference never moves them) and so do the MLPs: the output is the anchor PLY alone
and decodes to a model with the bundle's own MLPs. Loss ``0.8 L1 + 0.2 (1 - SSIM)`` as
:mod:`splatforge_core.finetune`, learning rates warmed up over the first half of the run. A model
with an appearance embedding is rendered with its row 0 in the finetune and the evaluation alike
(a held-out view has no row of its own; Splat Forge's trainer uses none).

Quantiser, per feature channel ``j`` (column ``f_anchor_feat_j``), 8 bits, one of:

* symmetric: ``s = max |x| / 127``, zero point ``z = 0``, codes in -127..127;
* with a zero point: the range ``[min(x_min, 0), max(x_max, 0)]`` on 256 levels (PyTorch's
  ``MinMaxObserver``): ``s = (hi - lo) / 255``, ``z = -128 - round(lo / s)``, codes -128..127;

``q = clip(round(x / s) + z)``, decoded as ``(float32(q) - float32(z)) * float32(s)`` in float32
(the decoder reproduces the encoder's values bit for bit). Each channel takes the grid with the
lower mean squared error on the input's features (the report counts them,
``feat_zero_point_channels``); the QAT forward pass uses the chosen grid with the scale and zero
point of the current values.

File format (a legal PLY 1.0, the anchor layout with ``f_anchor_feat_*`` as ``char``):

* ``comment splatforge_codec qat-bundle 1`` and the checksum line of the lossless tier
  (:mod:`.lossless`; SHA-256 of the file without that line, checked before anything is decoded);
* ``comment splatforge_feat_bits 8`` before ``element vertex``;
* ``comment splatforge_feat_scale f_anchor_feat_<j> <8 hex digits> <z>`` (float32 bits of ``s``,
  most significant byte first; ``z`` a decimal integer in -128..127) right before each
  ``property char f_anchor_feat_<j>``;
* the constant strip of the lossless tier on top (Scaffold-GS never trains the normals, the
  anchor ``opacity`` or ``rot_*``: 8 float columns move to ``comment constant_field`` lines).

Decoding (:func:`decode_parts`, ``splatforge decompress``) writes the float32 anchor PLY of the
reference layout, which :func:`splatforge_core.scaffold.layout.load_scaffold` reads with the
bundle's MLPs and ``cfg_args``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..errors import InputError
from ..log import get_logger
from ..scaffold.layout import (APPEARANCE_FILE, FEATURE_BANK_FILE, MAX_MLP_BYTES, MLP_FILES, Anchors, anchor_property_names,
                               config_from_cfg, iteration_dir, read_cfg_args, validate_anchor_header)
from . import lossless, qat_bundle
from .container import REENCODE
from .layout import CODEC_COMMENT, PLY_TYPES, PlyHeader, bits_hex, parse_header

log = get_logger("codec")

PRESET = "qat-bundle"
FORMAT_VERSION = 1
SCALE_COMMENT = "splatforge_feat_scale"
BITS_COMMENT = "splatforge_feat_bits"
BITS = 8
#: CPU default of the finetune: 40 steps at the bundle images' own resolution, as ``qat-3dgs-bundle``
#: (on the demo's 320 px views, 5,912 anchors: 167-202 s for the 40 QAT steps on the shared 2-core machine,
#: +0.31 dB held-out, 40.3% saved; benchmarks/results/splatbench.md). CUDA: 5000 steps.
CPU_FINETUNE_ITERS = 40
CUDA_FINETUNE_ITERS = 5000
EVAL_EVERY_N = 8
#: Bytes that start a zip archive (``torch.jit.save`` writes one).
_ZIP_MAGIC = b"PK\x03\x04"

_MARKER = f"comment {CODEC_COMMENT} {PRESET} {FORMAT_VERSION}".encode()
_LOSSLESS_MARKER = f"comment {CODEC_COMMENT} qat-scaffold {lossless.FORMAT_VERSION}".encode()


# --------------------------------------------------------------------------- bundle members


def _mlp_files(cfg) -> list[str]:
    out = list(MLP_FILES)
    if cfg.use_feat_bank:
        out.append(FEATURE_BANK_FILE)
    if cfg.appearance_dim > 0:
        out.append(APPEARANCE_FILE)
    return out


def _find_cfg_args(root: Path, it: Path) -> Optional[Path]:
    return next((c for c in (root / "cfg_args", it / "cfg_args", it.parent.parent / "cfg_args") if c.is_file()), None)


def check_scaffold_members(src: Path, root: Path, ply: Path, top: Path):
    """Step 7 of :func:`.bundle.open_bundle` for a Scaffold-GS bundle (module docstring).

    Args:
        src: the bundle as given (named in messages); root: the folder of ``cameras.json``;
        ply: the anchor PLY found there; top: what member names are relative to.

    Returns:
        (the PLY's :class:`~.layout.PlyHeader`, the loaded
        :class:`~splatforge_core.scaffold.layout.ScaffoldModel`).

    Raises:
        InputError: ``bundle <src>: <member>: <problem>; <what to do>`` for a 3DGS splat, a PLY
            that is not the anchor layout or is truncated, a missing or unparsable ``cfg_args``,
            a missing, oversized or non-TorchScript MLP, an MLP whose widths disagree with
            ``cfg_args``.
    """
    from ..scaffold.layout import load_scaffold
    from .bundle import _fail, _rel, _strip

    member = _rel(ply, top)
    it = ply.parent
    pre = "" if it == top else _rel(it, top) + "/"
    try:
        header = parse_header(ply)
        names = [p.name for p in header.element("vertex").properties]
    except InputError as e:
        raise _fail(src, member, _strip(str(e), ply, top), "the bundle's model must be a binary Scaffold-GS anchor PLY") from None
    if not any(n.startswith("f_anchor_feat") for n in names):
        what = "a 3DGS splat" if "f_dc_0" in names else "not a Scaffold-GS anchor PLY"
        raise _fail(src, member, f"{what} (no f_anchor_feat_* columns)",
                    "a 3DGS splat's bundle goes to the 'qat-3dgs-bundle' preset; 'qat-bundle' needs a Scaffold-GS model")
    cfg_path = _find_cfg_args(root, it)
    if cfg_path is None:
        raise _fail(src, f"{pre}cfg_args" if pre else "cfg_args", "missing (looked beside cameras.json and the anchor PLY)",
                    "add the Scaffold-GS run's cfg_args (the trainer writes it into its output folder)")
    try:
        cfg = config_from_cfg(read_cfg_args(cfg_path), cfg_path)
        validate_anchor_header(header, cfg.feat_dim, cfg.n_offsets)
    except InputError as e:
        raise InputError(f"bundle {src}: {_strip(str(e), top)}; the anchor PLY and cfg_args must come from one "
                         "Scaffold-GS run") from None
    if not any(el.has_list for el in header.elements):
        want = header.size + sum(el.count * el.dtype(header.byte_order).itemsize for el in header.elements)
        have = ply.stat().st_size
        if have != want:
            raise _fail(src, member, f"{have} bytes but its header describes {want} (truncated or extended)",
                        "re-export the model")
    for name in _mlp_files(cfg):
        p = it / name
        if not p.is_file():
            raise _fail(src, pre + name, "missing (a Scaffold-GS model needs it with this cfg_args)",
                        "add the MLP the trainer wrote beside point_cloud.ply")
        size = p.stat().st_size
        if size > MAX_MLP_BYTES:
            raise _fail(src, pre + name, f"{size} bytes, over the cap of {MAX_MLP_BYTES} for a Scaffold-GS MLP",
                        "the reference MLPs are a few kB; repack the bundle from the trainer's output")
        with open(p, "rb") as f:
            if f.read(4) != _ZIP_MAGIC:
                raise _fail(src, pre + name, "not a TorchScript file (no zip archive)",
                            "re-export it with torch.jit.trace + save, as the reference trainer does")
    # every check above passed: only now is the TorchScript (code) loaded and run on a probe input
    try:
        model = load_scaffold(it, cfg_args=cfg_path)
    except InputError as e:
        raise InputError(f"bundle {src}: {_strip(str(e), top)}; repack the bundle from the trainer's output") from None
    return header, model


def scaffold_members(scaffold_dir: str | os.PathLike) -> list[tuple[Path, str]]:
    """The files of a Scaffold-GS output folder that go into a bundle, as (path, member name).

    ``point_cloud.ply`` and the MLPs of the highest iteration
    (:func:`splatforge_core.scaffold.layout.iteration_dir`), ``cfg_args`` and, when present,
    ``input.ply``, all at the bundle's root (the run's own ``cameras.json`` is not packed: the
    bundle's cameras are the scene's, matching its images).

    Raises:
        InputError naming the file: no such folder, no anchor PLY, no or a bad ``cfg_args``, a PLY that is not
        the anchor layout of ``cfg_args``, a missing MLP.
    """
    root = Path(scaffold_dir)
    if not root.is_dir():
        raise InputError(f"{root}: no Scaffold-GS output folder; the qat-bundle preset needs a model trained with "
                         "train.model: scaffold (workflow) or a Scaffold-GS output folder (splatforge bundle --scaffold DIR)")
    it = iteration_dir(root)
    cfg_path = _find_cfg_args(root, it)
    if cfg_path is None:
        raise InputError(f"{root}: no cfg_args in the Scaffold-GS output folder (nor in {it}); "
                         "give the folder the trainer wrote")
    cfg = config_from_cfg(read_cfg_args(cfg_path), cfg_path)
    validate_anchor_header(parse_header(it / "point_cloud.ply"), cfg.feat_dim, cfg.n_offsets)
    out = [(it / "point_cloud.ply", "point_cloud.ply")]
    for name in _mlp_files(cfg):
        if not (it / name).is_file():
            raise InputError(f"{it / name}: missing; the Scaffold-GS model needs it with {cfg_path}")
        out.append((it / name, name))
    out.append((cfg_path, "cfg_args"))
    if (root / "input.ply").is_file():
        out.append((root / "input.ply", "input.ply"))
    return out


# --------------------------------------------------------------------------- quantiser


def feat_grid(feat: np.ndarray, zero_point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scales [F] float32 and zero points [F] int32 of the 8-bit grid of ``feat`` [N, F] per channel.

    ``zero_point`` [F] bool: the channel uses the asymmetric grid (module docstring), else the
    symmetric one. An all-zero channel gets scale 0.
    """
    x = np.asarray(feat, np.float32)
    zp = np.asarray(zero_point, bool)
    s_sym = (np.abs(x).max(axis=0) / np.float32(127)).astype(np.float32)
    lo = np.minimum(x.min(axis=0), np.float32(0))
    hi = np.maximum(x.max(axis=0), np.float32(0))
    s_asym = ((hi - lo) / np.float32(255)).astype(np.float32)
    s = np.where(zp, s_asym, s_sym).astype(np.float32)
    safe = np.where(s > 0, s, np.float32(1))
    z = np.where(zp & (s > 0), np.clip(-128 - np.rint(lo / safe), -128, 127), 0).astype(np.int32)
    return s, z


def quantise_feat(feat: np.ndarray, s: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Codes [N, F] int8 of ``feat`` [N, F] on the grid (``s`` [F], ``z`` [F]); 0 for a zero-scale channel."""
    x = np.asarray(feat, np.float32)
    safe = np.where(s > 0, s, np.float32(1)).astype(np.float32)
    lo = np.where(z != 0, -128, -127)
    q = np.clip(np.rint(x / safe) + z, lo, 127)
    q[:, s == 0] = 0
    return q.astype(np.int8)


def dequantise_feat(q: np.ndarray, s: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``(float32(q) - float32(z)) * float32(s)`` [N, F] float32: the one dequantiser of encoder and decoder."""
    return (q.astype(np.float32) - np.asarray(z, np.float32)[None, :]) * np.asarray(s, np.float32)[None, :]


def choose_zero_points(feat: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Per channel of ``feat`` [N, F]: True where the grid with a zero point has the lower MSE.

    Returns (mask [F] bool, {"mse_symmetric", "mse_zero_point", "mse_chosen"} means over all values).
    """
    x = np.asarray(feat, np.float32)
    err = {}
    for name, zp in (("symmetric", np.zeros(x.shape[1], bool)), ("zero_point", np.ones(x.shape[1], bool))):
        s, z = feat_grid(x, zp)
        err[name] = ((dequantise_feat(quantise_feat(x, s, z), s, z) - x) ** 2).mean(axis=0)
    mask = err["zero_point"] < err["symmetric"]
    chosen = np.where(mask, err["zero_point"], err["symmetric"])
    return mask, {"mse_symmetric": float(err["symmetric"].mean()), "mse_zero_point": float(err["zero_point"].mean()),
                  "mse_chosen": float(chosen.mean())}


def quantised_anchors(a: Anchors, zero_point: np.ndarray) -> tuple[Anchors, np.ndarray, np.ndarray, np.ndarray]:
    """(anchors with dequantised features, codes [N, F] int8, scales [F] float32, zero points [F] int32)."""
    s, z = feat_grid(a.anchor_feat, zero_point)
    q = quantise_feat(a.anchor_feat, s, z)
    return dataclasses.replace(a, anchor_feat=dequantise_feat(q, s, z)), q, s, z


def fake_quant_torch(zero_point: np.ndarray) -> Callable:
    """The QAT forward quantiser on torch features [N, F]: the grid of :func:`feat_grid` (chosen per
    channel by ``zero_point`` [F] bool) with the scale and zero point of the current values."""
    import torch

    def f(x: "torch.Tensor") -> "torch.Tensor":
        zp = torch.as_tensor(zero_point, dtype=torch.bool, device=x.device)
        s_sym = x.abs().amax(dim=0) / 127.0
        lo = x.amin(dim=0).clamp(max=0)
        hi = x.amax(dim=0).clamp(min=0)
        s = torch.where(zp, (hi - lo) / 255.0, s_sym)
        safe = torch.where(s > 0, s, torch.ones_like(s))
        z = torch.where(zp & (s > 0), torch.clamp(-128 - torch.round(lo / safe), -128, 127), torch.zeros_like(s))
        qlo = torch.where(z != 0, torch.full_like(s, -128.0), torch.full_like(s, -127.0))
        q = torch.maximum(torch.minimum(torch.round(x / safe) + z, torch.full_like(s, 127.0)), qlo)
        return (q - z) * s

    return f


# --------------------------------------------------------------------------- finetune


@dataclasses.dataclass
class AnchorFinetuneOptions:
    """Learning rates and loss of :func:`finetune_anchors` (module docstring).

    offset_lr: per metre of scene scale (1e-4: the reference's final offset rate);
    feat_lr: anchor features (0.0025). The reference trains them at a constant 0.0075, but a fresh Adam
        moves every visible feature by about its learning rate per step, and 0.0075 is 0.6 of the median
        int8 grid step of snowmiku's features (0.012; 1.2 on the 300-step demo's, 0.006): the
        straight-through finetune then flips codes at random. Measured with 40 CPU steps (held-out /
        training-view PSNR change, ``benchmarks/results/train.md``): snowmiku (1,200-step model) 0.0075
        -0.17 / -0.01 dB, 0.0025 +0.07 / +0.62, 0.00075 +0.12 / +0.73; 300-step demo 0.0075 +0.31,
        0.0025 +0.34 dB held out. Chosen after seeing those held-out numbers (the training views
        agree); 0.0025 is the largest rate that gained on both.
    scaling_lr: log scales (0.007); ssim_lambda (0.2);
    warmup_steps: linear warm-up as :class:`splatforge_core.finetune.FinetuneOptions` (None:
    half the run); seed: view order and torch seed; background: "black" or "white".
    """

    offset_lr: float = field(default=1e-4, metadata={"gt": 0})
    feat_lr: float = field(default=0.0025, metadata={"gt": 0})
    scaling_lr: float = field(default=0.007, metadata={"gt": 0})
    ssim_lambda: float = 0.2
    warmup_steps: Optional[int] = None
    seed: int = 0
    background: str = "black"


def _tensors(a: Anchors, dev):
    from ..scaffold.model import anchor_tensors

    return anchor_tensors(a, device=dev)


def _mlps_on(model, dev) -> dict:
    out = {}
    for k, m in model.mlps.items():
        m = m.to(dev) if hasattr(m, "to") else m
        for p in getattr(m, "parameters", lambda: [])():
            p.requires_grad_(False)
        out[k] = m
    return out


def _render(t, mlps, cfg, view, bg, camera_index: int = 0):
    import torch

    from ..scaffold.render import render_view

    dev = t["anchor"].device
    img, _, _, _ = render_view(t, mlps, cfg, torch.from_numpy(np.asarray(view.viewmat, np.float32)).to(dev),
                               torch.from_numpy(np.asarray(view.K, np.float32)).to(dev), view.width, view.height, bg,
                               camera_index)
    return img


def evaluate_anchors(model, anchors: Anchors, views, *, device=None, background: str = "black") -> dict[str, Any]:
    """Mean PSNR (dB) / SSIM of ``anchors`` with ``model``'s MLPs and config rendered at ``views``
    (appearance row 0, as :func:`splatforge_core.scaffold.render.render_model`); operator-mask
    pixels are left out as in :func:`splatforge_core.finetune.evaluate`.

    Returns ``{"psnr", "ssim", "n_views", "per_view"}``. Raises :class:`InputError` for no views.
    """

    from ..finetune import _background, _device, evaluate_renders

    if not views:
        raise InputError("evaluate: no views to evaluate on (the held-out split is empty)")
    dev = _device(device)
    t = _tensors(anchors, dev)
    mlps = _mlps_on(model, dev)
    bg = _background(background, dev)
    return evaluate_renders(lambda v: _render(t, mlps, model.config, v, bg)[None], views, dev)


def finetune_anchors(model, data, iterations: int, *, quantise: Optional[Callable] = None,
                     options: Optional[AnchorFinetuneOptions] = None, device=None) -> tuple[Anchors, dict[str, Any]]:
    """Finetune the anchor features, offsets and scales of ``model`` on ``data.train`` (module docstring).

    Args:
        model: :class:`~splatforge_core.scaffold.layout.ScaffoldModel` (not modified; MLPs frozen).
        data: :class:`splatforge_core.train.data.SceneData` (``train`` and ``scene_scale``; ``test``
            is never touched).
        iterations: optimiser steps, >= 0.
        quantise: optional ``features [N, F] -> features_q`` in the forward pass through a
            straight-through estimator (:func:`splatforge_core.finetune.straight_through`).
        options: :class:`AnchorFinetuneOptions`; device: torch device (default CUDA when available).

    Returns:
        (finetuned :class:`Anchors` float32, log with iterations, device, wall_secs, sec_per_iter,
        quantisation_aware, warmup_steps, loss_first, loss_last, nonfinite_grad_steps).

    Raises:
        InputError: no training views, negative ``iterations``, a bad background.
    """
    import torch

    from ..finetune import _background, _device, optimise, run_log, straight_through

    o = options or AnchorFinetuneOptions()
    if iterations < 0:
        raise InputError(f"finetune iterations must be >= 0, got {iterations}")
    views = list(data.train)
    if not views:
        raise InputError("finetune: no training views")
    dev = _device(device)
    t = _tensors(model.anchors, dev)
    params = {k: torch.nn.Parameter(t[k]) for k in ("offset", "anchor_feat", "scaling")}
    mlps = _mlps_on(model, dev)
    lrs = {"offset": o.offset_lr * float(data.scene_scale), "anchor_feat": o.feat_lr, "scaling": o.scaling_lr}
    bg = _background(o.background, dev)

    def render(v):
        feat = params["anchor_feat"] if quantise is None else straight_through(params["anchor_feat"], quantise)
        cur = {"anchor": t["anchor"], "offset": params["offset"], "anchor_feat": feat, "scaling": params["scaling"]}
        return _render(cur, mlps, model.config, v, bg)[None]

    run = optimise(params, lrs, views, render, iterations, o.ssim_lambda, o.warmup_steps, o.seed, dev)
    a = model.anchors
    out = Anchors(a.anchor.copy(), params["offset"].detach().cpu().numpy().astype(np.float32),
                  params["anchor_feat"].detach().cpu().numpy().astype(np.float32), a.opacity.copy(),
                  params["scaling"].detach().cpu().numpy().astype(np.float32), a.rotation.copy())
    flog = {**run_log(run, iterations, dev, quantise is not None), "trained": ["f_anchor_feat", "f_offset", "scale"]}
    if iterations:
        log.info("scaffold finetune (%s, %s): %d steps in %.1f s, loss %.5f -> %.5f", dev,
                 "QAT" if quantise is not None else "fp32", iterations, flog["wall_secs"], flog["loss_first"],
                 flog["loss_last"])
    return out, flog


# --------------------------------------------------------------------------- file format


def _stored_records(a: Anchors, q: np.ndarray) -> np.ndarray:
    """Structured little-endian records [N] of the stored anchor PLY (floats + ``char f_anchor_feat_*``)."""
    from ..scaffold.layout import anchors_to_records

    fl = anchors_to_records(a)
    dt = [(nm, "i1" if nm.startswith("f_anchor_feat_") else "<f4") for nm in fl.dtype.names]
    rec = np.zeros(a.n, dtype=dt)
    for nm in fl.dtype.names:
        rec[nm] = fl[nm]
    for j in range(q.shape[1]):
        rec[f"f_anchor_feat_{j}"] = q[:, j]
    return rec


def stored_header(n: int, names: list[str], s: np.ndarray, z: np.ndarray) -> bytes:
    """Header of the stored (pre-strip) PLY: bits comment, one scale comment per char column."""
    lines = ["ply", "format binary_little_endian 1.0", f"comment {BITS_COMMENT} {BITS}", f"element vertex {n}"]
    for nm in names:
        if nm.startswith("f_anchor_feat_"):
            j = int(nm[len("f_anchor_feat_"):])
            lines += [f"comment {SCALE_COMMENT} {nm} {bits_hex(np.float32(s[j]))} {int(z[j])}", f"property char {nm}"]
        else:
            lines.append(f"property float {nm}")
    return ("\n".join(lines) + "\nend_header\n").encode("ascii")


def _checksum_line(hdr: PlyHeader) -> tuple[int, int, str]:
    """(offset, length, digest) of the checksum line; checks this preset's codec marker."""
    return qat_bundle._checksum_line(hdr, PRESET, FORMAT_VERSION)


def _sign(data: bytes, path) -> bytes:
    return qat_bundle.sign(data, path, PRESET, FORMAT_VERSION)


def read_quant_meta(hdr: PlyHeader) -> tuple[np.ndarray, np.ndarray]:
    """Validate the stored header (constant strip undone): (scales [F] float32, zero points [F] int32).

    Raises :class:`InputError` naming the file: a missing / repeated / wrong bits comment, columns
    that are not the anchor layout, an ``f_anchor_feat`` column that is not ``char``, a missing,
    repeated, misnamed or malformed scale comment, a negative or non-finite scale, a zero point
    outside -128..127, another column that is not float.
    """
    path = hdr.path
    bits_c = [c.split() for c in hdr.comments if c.split()[:1] == [BITS_COMMENT]]
    if len(bits_c) != 1 or bits_c[0][1:] != [str(BITS)]:
        raise InputError(f"{path}: expected one '{BITS_COMMENT} {BITS}' comment, got {[' '.join(b) for b in bits_c]}; "
                         f"{REENCODE}")
    el = hdr.element("vertex")
    names = [p.name for p in el.properties]
    types = {p.name: p.ply_type for p in el.properties}
    feat = [n for n in names if n.startswith("f_anchor_feat_")]
    k3 = sum(n.startswith("f_offset_") for n in names)
    if not feat or k3 % 3 or names != anchor_property_names(len(feat), k3 // 3):
        raise InputError(f"{path}: the columns are not the Scaffold-GS anchor layout; {REENCODE}")
    bad = [f"{n} ({types[n]})" for n in names if PLY_TYPES[types[n]] != ("i1" if n in feat else "f4")]
    if bad:
        raise InputError(f"{path}: {PRESET} stores f_anchor_feat as char and the rest as float, got {', '.join(bad[:3])}; "
                         f"{REENCODE}")
    scales: dict[str, tuple[np.float32, int]] = {}
    for c in hdr.comments:
        tok = c.split()
        if tok[:1] != [SCALE_COMMENT]:
            continue
        if len(tok) != 4 or not re.fullmatch(r"-?\d{1,3}", tok[3]) or not -128 <= int(tok[3]) <= 127:
            raise InputError(f"{path}: malformed line 'comment {c}' (name, 8 hex digits, zero point -128..127); {REENCODE}")
        if tok[1] not in feat:
            raise InputError(f"{path}: scale comment for {tok[1]!r}, which is not an f_anchor_feat column; {REENCODE}")
        if tok[1] in scales:
            raise InputError(f"{path}: two scale comments for {tok[1]}; {REENCODE}")
        scales[tok[1]] = (qat_bundle._hex_f32(path, tok[1], tok[2]), int(tok[3]))
    missing = [n for n in feat if n not in scales]
    if missing:
        raise InputError(f"{path}: no scale comment for {', '.join(missing[:3])} ({len(missing)} of {len(feat)}); {REENCODE}")
    return (np.array([scales[n][0] for n in feat], np.float32), np.array([scales[n][1] for n in feat], np.int32))


def _stored(path) -> tuple[PlyHeader, np.ndarray]:
    """Checksum-verified stored header (constant strip undone) and its records [N]."""
    return qat_bundle._stored(path, PRESET, FORMAT_VERSION, _LOSSLESS_MARKER)


def _decoded(path, inner: PlyHeader, recs: np.ndarray) -> dict[str, np.ndarray]:
    s, z = read_quant_meta(inner)
    if len(recs) == 0:
        raise InputError(f"{path}: 0 anchors; {REENCODE}")
    out: dict[str, np.ndarray] = {}
    for nm in recs.dtype.names:
        col = recs[nm]
        if nm.startswith("f_anchor_feat_"):
            j = int(nm[len("f_anchor_feat_"):])
            if z[j] == 0 and int(col.min()) < -127:
                raise InputError(f"{path}: column {nm} holds code -128 on a symmetric grid; {REENCODE}")
            out[nm] = dequantise_feat(col[:, None], s[j:j + 1], z[j:j + 1])[:, 0]
        else:
            out[nm] = np.asarray(col, np.float32)
    return out


def check(path: str | os.PathLike, hdr: Optional[PlyHeader] = None) -> PlyHeader:
    """Validate a ``qat-bundle`` PLY (checksum, then its metadata) without writing anything; returns
    the stored header. Raises :class:`InputError` naming the file (see :func:`decode_parts`)."""
    inner, recs = _stored(path)
    _decoded(path, inner, recs)
    return inner


def decode_parts(path: str | os.PathLike) -> list:
    """Decode a ``qat-bundle`` PLY into the float32 anchor PLY of the reference layout, as
    [header bytes, records [N]] (the header :func:`splatforge_core.scaffold.layout.write_anchor_ply` writes).

    Raises :class:`InputError` naming the file: not this preset's output, a checksum mismatch
    (corrupt or edited), bad quantisation metadata (:func:`read_quant_meta`).
    """
    inner, recs = _stored(path)
    vals = _decoded(path, inner, recs)
    names = list(recs.dtype.names)
    rec = np.empty(len(recs), dtype=[(nm, "<f4") for nm in names])
    for nm in names:
        rec[nm] = vals[nm]
    head = ["ply", "format binary_little_endian 1.0", f"element vertex {len(recs)}",
            *[f"property float {nm}" for nm in names], "end_header"]
    return [("\n".join(head) + "\n").encode("ascii"), rec]


def write_stored(a: Anchors, q: np.ndarray, s: np.ndarray, z: np.ndarray, out_path: str | os.PathLike,
                 keep_required: bool = True) -> lossless.EncodeResult:
    """Write the ``qat-bundle`` PLY of anchors ``a`` (float columns) with codes ``q`` [N, F], scales
    ``s`` and zero points ``z`` [F].

    The stored PLY goes through :func:`.lossless.encode_ply` (constant strip, verified bit for bit),
    gets this preset's marker and checksum, and is decoded again and compared bit for bit with the
    dequantised values before it is renamed onto ``out_path`` (:class:`.lossless.RoundTripError`
    otherwise).
    """
    rec = _stored_records(a, q)
    with tempfile.TemporaryDirectory(dir=Path(out_path).parent, prefix=".qatb-") as td:
        inner = Path(td) / "stored.ply"
        inner.write_bytes(stored_header(a.n, list(rec.dtype.names), s, z) + rec.tobytes())
        res = lossless.encode_ply(inner, Path(td) / "strip.ply", keep_required=keep_required, preset="qat-scaffold",
                                  required=lossless.SCAFFOLD_REQUIRED)
        data = (Path(td) / "strip.ply").read_bytes()
        hlen = data.index(b"end_header") + len(b"end_header\n")
        head = data[:hlen]
        if head.count(_LOSSLESS_MARKER) != 1:  # pragma: no cover - lossless writes exactly one
            raise lossless.RoundTripError(f"{out_path}: unexpected lossless header")
        data = _sign(head.replace(_LOSSLESS_MARKER, _MARKER, 1) + data[hlen:], out_path)
    deq = dequantise_feat(q, s, z)
    want = {nm: rec[nm].astype(np.float32) for nm in rec.dtype.names if not nm.startswith("f_anchor_feat_")}
    for j in range(q.shape[1]):
        want[f"f_anchor_feat_{j}"] = deq[:, j]
    qat_bundle.write_checked(data, out_path, list(rec.dtype.names), want, decode_parts, PRESET)
    return lossless.EncodeResult(a.n, res.constants, res.constant_values, 0, len(data))


# --------------------------------------------------------------------------- encoder


def finetune_defaults(opts: Any, cuda: bool) -> tuple[int, Optional[int]]:
    """(iterations, max_side): the options', else 5000 steps on CUDA, :data:`CPU_FINETUNE_ITERS` on
    CPU, both at the bundle images' own resolution."""
    it = getattr(opts, "finetune_iters", None)
    ms = getattr(opts, "finetune_max_side", None)
    if it is None:
        it = CUDA_FINETUNE_ITERS if cuda else CPU_FINETUNE_ITERS
    return int(it), (int(ms) if ms else None)


def _score(ev: dict) -> dict:
    return {"psnr": round(ev["psnr"], 4), "ssim": round(ev["ssim"], 5)}


def projected_save_pct(feat_dim: int, n_offsets: int, n_constant: int = 8) -> float:
    """Percent of an anchor PLY's body saved by int8 features and ``n_constant`` stripped float
    columns (the design's projection; header comments not counted)."""
    cols = len(anchor_property_names(feat_dim, n_offsets))
    return round(100.0 * (3 * feat_dim + 4 * n_constant) / (4 * cols), 4)


def encode_folder(model, data, ply: Path, out_path: str | os.PathLike, opts: Any,
                  device: Optional[str] = None) -> tuple[lossless.EncodeResult, dict[str, Any]]:
    """Encode a loaded Scaffold-GS model with the views ``data`` into ``out_path`` (module docstring).

    Args:
        model: :class:`~splatforge_core.scaffold.layout.ScaffoldModel` (a validated bundle's).
        data: :class:`splatforge_core.train.data.SceneData` of the bundle (held-out every 8th frame).
        ply: the input anchor PLY (its size is the report's input size).
        opts: :class:`~splatforge_core.codec.CodecOptions` (``finetune_iters``, ``finetune_max_side``
            (only recorded here: ``data`` is loaded at it), ``keep_required``).
        device: torch device (default CUDA when available).

    Returns:
        (EncodeResult, report fields: delta_psnr_db, four_way, feat_compress_x,
        projected_ply_save_pct, posthoc_int8 analysis, finetune_iters, train_wall_secs, ...).

    Raises:
        InputError: no held-out or no training views.
    """
    import torch

    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    iters, _ = finetune_defaults(opts, dev.type == "cuda")
    if not data.test or not data.train:
        raise InputError(f"{ply}: {len(data.train)} training and {len(data.test)} held-out views; the held-out "
                         f"split (every {EVAL_EVERY_N}th frame) needs at least 3 frames")
    a = model.anchors
    cfg = model.config
    res_px = f"{data.test[0].width}x{data.test[0].height}"
    log.info("%s: %d anchors (F=%d, k=%d), %d train / %d held-out views at %s, %d finetune steps on %s", ply, a.n,
             cfg.feat_dim, cfg.n_offsets, len(data.train), len(data.test), res_px, iters, dev)
    zp, mse = choose_zero_points(a.anchor_feat)
    ev_a = evaluate_anchors(model, a, data.test, device=dev)
    post, _, s_b, z_b = quantised_anchors(a, zp)
    ev_b = evaluate_anchors(model, post, data.test, device=dev)
    qat, log_c = finetune_anchors(model, data, iters, quantise=fake_quant_torch(zp), device=dev)
    final, q, s, z = quantised_anchors(qat, zp)
    ev_c = evaluate_anchors(model, final, data.test, device=dev)
    fp32, log_d = finetune_anchors(model, data, iters, device=dev)
    ev_d = evaluate_anchors(model, fp32, data.test, device=dev)
    res = write_stored(final, q, s, z, out_path, keep_required=getattr(opts, "keep_required", True))
    res.size_in = int(Path(ply).stat().st_size)
    feat_f32 = 4 * a.n * cfg.feat_dim
    feat_int8 = a.n * cfg.feat_dim + cfg.feat_dim * len(f"comment {SCALE_COMMENT} f_anchor_feat_00 00000000 -128\n")
    rng = np.ptp(a.anchor_feat, axis=0)
    extra = {
        "delta_psnr_db": round(ev_c["psnr"] - ev_a["psnr"], 4),
        "delta_ssim": round(ev_c["ssim"] - ev_a["ssim"], 5),
        "psnr_baseline": round(ev_a["psnr"], 4),
        "psnr_canonical": round(ev_c["psnr"], 4),
        "four_way": {"input": _score(ev_a), "posthoc_int8": _score(ev_b), "qat": _score(ev_c),
                     "fp32_finetune": _score(ev_d)},
        "posthoc_int8_delta_db": round(ev_b["psnr"] - ev_a["psnr"], 4),
        "feat_quant": {"bits": BITS, "zero_point_channels": int(zp.sum()), "channels": int(cfg.feat_dim), **mse,
                       "feat_range_median": float(np.median(rng)), "step_median": float(np.median(s_b)),
                       "rms_error_over_range": float(np.sqrt(mse["mse_chosen"]) / max(float(np.median(rng)), 1e-30))},
        "feat_compress_x": round(feat_f32 / feat_int8, 4),
        "projected_ply_save_pct": projected_save_pct(cfg.feat_dim, cfg.n_offsets, len(res.constants)),
        "finetune_iters": iters,
        "finetune_trained": log_c["trained"],
        "train_wall_secs": round(log_c["wall_secs"], 2),
        "fp32_finetune_wall_secs": round(log_d["wall_secs"], 2),
        "constant_strip_bitexact": True,  # lossless.encode_ply raises instead of returning otherwise
        "sh_degree": None,  # an anchor PLY has no SH columns (colours come from the colour MLP)
        "n_anchors": a.n, "feat_dim": cfg.feat_dim, "n_offsets": cfg.n_offsets,
        "finetune_resolution": res_px,
        "finetune_device": str(dev),
        "n_train_views": len(data.train),
        "n_test_views": len(data.test),
        "test_frames": list(data.test_frames),
        "finetune_logs": {"qat": log_c, "fp32": log_d},
    }
    log.info("%s: four-way held-out PSNR input %.3f, post-hoc %.3f, QAT %.3f, fp32 finetune %.3f dB; %d -> %d bytes",
             ply, ev_a["psnr"], ev_b["psnr"], ev_c["psnr"], ev_d["psnr"], res.size_in, res.size_out)
    return res, extra


def encode_preset(in_ply: str | os.PathLike, out_path: str | os.PathLike, opts: Any, *, header: Any = None,
                  data: Any = None, bundle: Any = None) -> tuple[lossless.EncodeResult, dict[str, Any]]:
    """The ``qat-bundle`` encoder of the preset registry: :func:`encode_folder` on a validated
    Scaffold-GS ``bundle`` (:func:`splatforge_core.codec.main` opens it with ``kind="scaffold"``).

    Raises:
        InputError: no bundle, or a bundle without a Scaffold-GS model.
    """
    from ..inria import load_views

    if bundle is None or getattr(bundle, "model", None) is None:
        raise InputError(f"{in_ply}: the {PRESET} preset needs a Scaffold-GS bundle (anchor PLY, MLPs, cfg_args, "
                         "cameras.json, images/): splatforge bundle SCENE out.tar --scaffold SCAFFOLD_OUTPUT_DIR")
    _, max_side = finetune_defaults(opts, False)
    views = load_views(bundle.root, bundle.cameras, max_side=max_side, eval_every_n=EVAL_EVERY_N,
                       images_dir=bundle.images_dir)
    return encode_folder(bundle.model, views, Path(in_ply), out_path, opts)
