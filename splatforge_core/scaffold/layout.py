"""Read and write the canonical Scaffold-GS output folder (city-super/Scaffold-GS, ``scene/__init__.py``).

Layout (what the reference trainer writes under its ``model_path``)::

    cfg_args                                  printed argparse Namespace of the run's options
    cameras.json                              Inria camera records (splatforge_core.inria)
    input.ply                                 the SfM points the anchors were made from
    point_cloud/iteration_<N>/point_cloud.ply one vertex per anchor (see ANCHOR_PLY below)
    point_cloud/iteration_<N>/opacity_mlp.pt  TorchScript (torch.jit.trace of nn.Sequential)
    point_cloud/iteration_<N>/cov_mlp.pt
    point_cloud/iteration_<N>/color_mlp.pt
    point_cloud/iteration_<N>/embedding_appearance.pt   when appearance_dim > 0
    point_cloud/iteration_<N>/feature_bank_mlp.pt       when use_feat_bank

``point_cloud.ply`` (``GaussianModel.save_ply``): binary float32 vertex properties in this
order: ``x y z``, ``nx ny nz`` (zeros), ``f_offset_0..3k-1`` (the [N, k, 3] offsets stored
*transposed*: all x of the k offsets, then all y, then all z), ``f_anchor_feat_0..F-1``,
``opacity`` (inverse-sigmoid, constant in training), ``scale_0..5`` (log scales: 0..2 scale
the offsets, 3..5 the neural Gaussians), ``rot_0..3`` (constant identity quaternion).
Defaults F = ``feat_dim`` = 32, k = ``n_offsets`` = 10 (``arguments/__init__.py``).

Security: ``*.pt`` files are TorchScript, i.e. code. :func:`torch.jit.load` runs
TorchScript only (no pickle), but a crafted module can still compute anything when it is
called. Load Scaffold folders and bundles only from sources you trust.

``cfg_args`` is parsed without ``eval``: :func:`parse_cfg_args` accepts only
``Namespace(key=literal, ...)`` with int, float, bool, None, str and list/tuple literals.
"""

from __future__ import annotations

import ast
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import InputError
from ..io import atomic_path
from ..log import get_logger
from ..splat import parse_header, read_body

_LOG = get_logger("scaffold")

#: Caps on what the reader accepts (hostile inputs).
MAX_CFG_ARGS_BYTES = 64 << 10
MAX_MLP_BYTES = 64 << 20
MAX_FEAT_DIM = 1024
MAX_N_OFFSETS = 256
MAX_APPEARANCE_DIM = 1024
MAX_ANCHORS = 50_000_000

#: The reference defaults (arguments/__init__.py ModelParams) used for keys a cfg_args lacks.
DEFAULTS: dict[str, Any] = {
    "feat_dim": 32, "n_offsets": 10, "voxel_size": 0.001, "update_depth": 3, "update_init_factor": 16,
    "update_hierachy_factor": 4, "use_feat_bank": False, "appearance_dim": 32, "ratio": 1,
    "add_opacity_dist": False, "add_cov_dist": False, "add_color_dist": False, "white_background": False,
}

MLP_FILES = ("opacity_mlp.pt", "cov_mlp.pt", "color_mlp.pt")
APPEARANCE_FILE = "embedding_appearance.pt"
FEATURE_BANK_FILE = "feature_bank_mlp.pt"
ANCHOR_PLY = "point_cloud.ply"


# --------------------------------------------------------------------------- cfg_args


def parse_cfg_args_text(text: str, path: str | os.PathLike = "cfg_args") -> dict[str, Any]:
    """Parse a printed argparse Namespace (``str(argparse.Namespace(...))``) without ``eval``.

    Args:
        text: e.g. ``"Namespace(feat_dim=32, source_path='/data', eval=True, voxel_size=0.001)"``.
        path: the file named in errors.

    Returns:
        {key: value} with values int, float, bool, None, str, or lists/tuples of those.

    Raises:
        InputError naming ``path``: not one ``Namespace(...)`` call, positional arguments,
        ``**kwargs``, or any value that is not a literal (a function call, a name, an
        attribute, an operator other than a sign).
    """
    if len(text) > MAX_CFG_ARGS_BYTES:
        raise InputError(f"{path}: cfg_args is {len(text)} characters (cap {MAX_CFG_ARGS_BYTES}); not a Scaffold-GS cfg_args")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise InputError(f"{path}: cfg_args is not a printed Namespace(...): {type(e).__name__}") from None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Namespace"):
        raise InputError(f"{path}: cfg_args must be one 'Namespace(key=value, ...)', as the Scaffold-GS trainer writes it")
    if call.args:
        raise InputError(f"{path}: cfg_args Namespace(...) has positional arguments; only key=value is allowed")
    out: dict[str, Any] = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise InputError(f"{path}: cfg_args uses **kwargs; only key=literal is allowed")
        try:
            out[kw.arg] = ast.literal_eval(kw.value)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            raise InputError(f"{path}: cfg_args value of {kw.arg!r} is not a literal (int, float, bool, None, "
                             "string or list): it is code, which is never evaluated") from None
        if isinstance(out[kw.arg], (dict, set, bytes, complex)):
            raise InputError(f"{path}: cfg_args value of {kw.arg!r} has an unsupported type {type(out[kw.arg]).__name__}")
    return out


def read_cfg_args(path: str | os.PathLike) -> dict[str, Any]:
    """Read and parse a ``cfg_args`` file (:func:`parse_cfg_args_text`); InputError naming it."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no cfg_args file (a Scaffold-GS output folder has one at its top)")
    if p.stat().st_size > MAX_CFG_ARGS_BYTES:
        raise InputError(f"{p}: cfg_args is {p.stat().st_size} bytes (cap {MAX_CFG_ARGS_BYTES})")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{p}: cfg_args is not UTF-8 text") from None
    return parse_cfg_args_text(text, p)


def format_cfg_args(values: dict[str, Any]) -> str:
    """The reference's ``str(Namespace(**vars(args)))`` of ``values`` (keys sorted, as argparse prints)."""
    import argparse

    return str(argparse.Namespace(**values))


@dataclass(frozen=True)
class ScaffoldConfig:
    """The model-shape options of a Scaffold-GS run (reference ``ModelParams``).

    feat_dim: F, anchor feature width; n_offsets: k, neural Gaussians per anchor;
    appearance_dim: per-camera appearance embedding width (0: none); use_feat_bank: the
    multi-resolution feature bank MLP; add_*_dist: the MLP input also gets the camera distance;
    voxel_size: anchor grid (scene units); raw: every key of cfg_args.
    """

    feat_dim: int = 32
    n_offsets: int = 10
    appearance_dim: int = 32
    use_feat_bank: bool = False
    add_opacity_dist: bool = False
    add_cov_dist: bool = False
    add_color_dist: bool = False
    voxel_size: float = 0.001
    update_depth: int = 3
    update_init_factor: int = 16
    update_hierachy_factor: int = 4
    raw: dict = field(default_factory=dict, compare=False)

    @property
    def opacity_in(self) -> int:
        return self.feat_dim + 3 + int(self.add_opacity_dist)

    @property
    def cov_in(self) -> int:
        return self.feat_dim + 3 + int(self.add_cov_dist)

    @property
    def color_in(self) -> int:
        return self.feat_dim + 3 + int(self.add_color_dist) + self.appearance_dim

    def to_cfg(self) -> dict[str, Any]:
        """The keys this config sets, merged over ``raw`` (for :func:`format_cfg_args`)."""
        d = dict(self.raw)
        for k in ("feat_dim", "n_offsets", "appearance_dim", "use_feat_bank", "add_opacity_dist", "add_cov_dist",
                  "add_color_dist", "voxel_size", "update_depth", "update_init_factor", "update_hierachy_factor"):
            d[k] = getattr(self, k)
        return d


def _int(cfg: dict, key: str, lo: int, hi: int, path) -> int:
    v = cfg.get(key, DEFAULTS[key])
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise InputError(f"{path}: {key}={v!r} must be an integer in {lo}..{hi}")
    return v


def _bool(cfg: dict, key: str, path) -> bool:
    v = cfg.get(key, DEFAULTS[key])
    if not isinstance(v, bool):
        raise InputError(f"{path}: {key}={v!r} must be True or False")
    return v


def config_from_cfg(cfg: dict[str, Any], path: str | os.PathLike = "cfg_args") -> ScaffoldConfig:
    """Validate the model-shape keys of a parsed cfg_args (missing keys: the reference defaults).

    Raises:
        InputError naming ``path`` for a key of the wrong type or out of range.
    """
    vs = cfg.get("voxel_size", DEFAULTS["voxel_size"])
    if isinstance(vs, bool) or not isinstance(vs, (int, float)) or not np.isfinite(vs):
        raise InputError(f"{path}: voxel_size={vs!r} must be a finite number")
    return ScaffoldConfig(
        feat_dim=_int(cfg, "feat_dim", 1, MAX_FEAT_DIM, path), n_offsets=_int(cfg, "n_offsets", 1, MAX_N_OFFSETS, path),
        appearance_dim=_int(cfg, "appearance_dim", 0, MAX_APPEARANCE_DIM, path),
        use_feat_bank=_bool(cfg, "use_feat_bank", path), add_opacity_dist=_bool(cfg, "add_opacity_dist", path),
        add_cov_dist=_bool(cfg, "add_cov_dist", path), add_color_dist=_bool(cfg, "add_color_dist", path),
        voxel_size=float(vs), update_depth=_int(cfg, "update_depth", 1, 16, path),
        update_init_factor=_int(cfg, "update_init_factor", 1, 1 << 20, path),
        update_hierachy_factor=_int(cfg, "update_hierachy_factor", 1, 1 << 10, path), raw=dict(cfg))


# --------------------------------------------------------------------------- anchor PLY


def anchor_property_names(feat_dim: int, n_offsets: int) -> list[str]:
    """Vertex property names of ``point_cloud.ply`` in the reference order (``construct_list_of_attributes``)."""
    return (["x", "y", "z", "nx", "ny", "nz"] + [f"f_offset_{i}" for i in range(3 * n_offsets)]
            + [f"f_anchor_feat_{i}" for i in range(feat_dim)] + ["opacity"]
            + [f"scale_{i}" for i in range(6)] + [f"rot_{i}" for i in range(4)])


@dataclass
class Anchors:
    """The anchor parameters of a Scaffold-GS model (float32 numpy, N anchors).

    anchor: [N, 3] positions (scene units); offset: [N, k, 3] offsets in units of
    ``exp(scaling[:, :3])``; anchor_feat: [N, F]; opacity: [N, 1] inverse-sigmoid (unused by
    rendering); scaling: [N, 6] log scales; rotation: [N, 4] (unused by rendering).
    """

    anchor: np.ndarray
    offset: np.ndarray
    anchor_feat: np.ndarray
    opacity: np.ndarray
    scaling: np.ndarray
    rotation: np.ndarray

    @property
    def n(self) -> int:
        return int(self.anchor.shape[0])

    @property
    def feat_dim(self) -> int:
        return int(self.anchor_feat.shape[1])

    @property
    def n_offsets(self) -> int:
        return int(self.offset.shape[1])


def anchors_to_records(a: Anchors) -> np.ndarray:
    """[N] structured float32 little-endian array of the anchor PLY's vertices (offsets transposed)."""
    n, k, f = a.n, a.n_offsets, a.feat_dim
    cols = np.concatenate([a.anchor, np.zeros((n, 3), np.float32), np.transpose(a.offset, (0, 2, 1)).reshape(n, 3 * k),
                           a.anchor_feat, a.opacity.reshape(n, 1), a.scaling, a.rotation], axis=1).astype("<f4")
    dt = np.dtype([(name, "<f4") for name in anchor_property_names(f, k)])
    return np.ascontiguousarray(cols).view(dt).reshape(n)


def write_anchor_ply(path: str | os.PathLike, a: Anchors) -> None:
    """Write ``point_cloud.ply`` as ``GaussianModel.save_ply`` does (binary little-endian float32), atomically."""
    rec = anchors_to_records(a)
    head = ["ply", "format binary_little_endian 1.0", f"element vertex {a.n}"]
    head += [f"property float {n}" for n in rec.dtype.names] + ["end_header"]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(("\n".join(head) + "\n").encode("ascii"))
            f.write(rec.tobytes())


def validate_anchor_header(hdr, feat_dim: Optional[int] = None, n_offsets: Optional[int] = None) -> tuple[int, int]:
    """Check a parsed PLY header (:func:`splatforge_core.splat.parse_header`) has the Scaffold-GS
    anchor layout: binary, float32, the exact reference property order; returns ``(F, k)``.

    Args:
        feat_dim, n_offsets: expected F and k (from cfg_args); None: inferred from the columns.

    Raises:
        InputError naming the file: an ASCII body, no f_offset_*/f_anchor_feat_* columns, a
        property out of the reference order, counts that disagree with cfg_args, a column that
        is not float32.
    """
    path = hdr.path
    if hdr.fmt == "ascii":
        raise InputError(f"{path}: ASCII PLY; the Scaffold-GS trainer writes binary_little_endian float32")
    el = hdr.element("vertex")
    names = [p.name for p in el.properties]
    k3 = sum(n.startswith("f_offset_") for n in names)
    f = sum(n.startswith("f_anchor_feat_") for n in names)
    if k3 == 0 or f == 0:
        raise InputError(f"{path}: not a Scaffold-GS anchor PLY (no f_offset_*/f_anchor_feat_* columns); "
                         "a vanilla 3DGS PLY is read with splatforge_core.splat.read_splat_ply")
    if k3 % 3:
        raise InputError(f"{path}: {k3} f_offset_* columns is not a multiple of 3 (k offsets x xyz)")
    k = k3 // 3
    if n_offsets is not None and k != n_offsets:
        raise InputError(f"{path}: {k} offsets per anchor ({k3} f_offset_* columns) but cfg_args says n_offsets={n_offsets}")
    if feat_dim is not None and f != feat_dim:
        raise InputError(f"{path}: {f} f_anchor_feat_* columns but cfg_args says feat_dim={feat_dim}")
    want = anchor_property_names(f, k)
    if names != want:
        i = next((j for j, (a, b) in enumerate(zip(names, want)) if a != b), min(len(names), len(want)))
        got = names[i] if i < len(names) else "<end>"
        raise InputError(f"{path}: property {i} is {got!r}, the Scaffold-GS layout has {want[i] if i < len(want) else '<end>'!r} "
                         "there (order: x y z nx ny nz f_offset_* f_anchor_feat_* opacity scale_0..5 rot_0..3)")
    bad = [p.name for p in el.properties if p.ply_type not in ("float", "float32")]
    if bad:
        raise InputError(f"{path}: Scaffold-GS columns must be float32, not: {', '.join(bad[:5])}")
    return f, k


def read_anchor_ply(path: str | os.PathLike, feat_dim: Optional[int] = None, n_offsets: Optional[int] = None) -> Anchors:
    """Read a Scaffold-GS ``point_cloud.ply`` (binary, float32, the exact reference property order).

    Args:
        path: the PLY.
        feat_dim, n_offsets: expected F and k (from cfg_args); None: inferred from the columns.

    Returns:
        :class:`Anchors` (float32, native byte order).

    Raises:
        InputError naming the file: not a binary PLY, a property that is not float32, the
        properties not in the reference order, counts that disagree with cfg_args, more than
        :data:`MAX_ANCHORS` anchors, a NaN or infinite value.
    """
    path = Path(path)
    hdr = parse_header(path)
    f, k = validate_anchor_header(hdr, feat_dim, n_offsets)
    k3 = 3 * k
    want = anchor_property_names(f, k)
    el = hdr.element("vertex")
    if el.count > MAX_ANCHORS:
        raise InputError(f"{path}: {el.count} anchors is over the cap of {MAX_ANCHORS}")
    body = read_body(hdr)
    n = el.count
    arr = body.vertices.view(body.vertices.dtype.fields["x"][0]).reshape(n, len(want)).astype(np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        col = want[int(np.argwhere(~finite)[0][1])]
        raise InputError(f"{path}: column {col!r} has NaN or infinite values; the model is broken, retrain or re-export it")
    o = 6
    offset = arr[:, o:o + k3].reshape(n, 3, k).transpose(0, 2, 1).copy()
    o += k3
    feat = arr[:, o:o + f].copy()
    o += f
    return Anchors(arr[:, 0:3].copy(), offset, feat, arr[:, o:o + 1].copy(), arr[:, o + 1:o + 7].copy(), arr[:, o + 7:o + 11].copy())


# --------------------------------------------------------------------------- MLPs


def load_torchscript(path: str | os.PathLike):
    """``torch.jit.load`` a TorchScript file on CPU (code: only from folders you trust).

    Raises:
        InputError naming the file: missing, over :data:`MAX_MLP_BYTES`, or not TorchScript.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: missing TorchScript file of the Scaffold-GS model")
    if p.stat().st_size > MAX_MLP_BYTES:
        raise InputError(f"{p}: {p.stat().st_size} bytes is over the cap of {MAX_MLP_BYTES} for a Scaffold-GS MLP")
    try:
        with warnings.catch_warnings():  # the reference format is TorchScript, deprecated or not
            warnings.simplefilter("ignore", DeprecationWarning)
            m = torch.jit.load(str(p), map_location="cpu")
    except Exception as e:  # torch raises RuntimeError/ValueError/zip errors for a non-TorchScript file
        raise InputError(f"{p}: not a TorchScript module ({type(e).__name__}); re-export it with torch.jit.trace") from None
    m.eval()
    return m


def _check_mlp(path: Path, m, in_dim: int, out_dim: int, dtype=None) -> None:
    import torch

    try:
        with torch.no_grad():
            x = torch.zeros(2, in_dim) if dtype is None else torch.zeros(2, dtype=dtype)
            y = m(x)
    except Exception as e:
        raise InputError(f"{path}: the module does not accept input [2, {in_dim}] ({type(e).__name__}); "
                         "cfg_args feat_dim/appearance_dim/add_*_dist do not match it") from None
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (2, out_dim):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise InputError(f"{path}: output is {got}, expected (2, {out_dim}) from cfg_args n_offsets")


@dataclass
class ScaffoldModel:
    """A loaded Scaffold-GS model: config, anchors and the MLPs (TorchScript or nn.Module, CPU).

    mlps: {"opacity", "cov", "color"} and optionally "appearance" (index -> [appearance_dim])
    and "feature_bank" ([*, 4] -> [*, 3] softmax weights).
    """

    config: ScaffoldConfig
    anchors: Anchors
    mlps: dict
    cameras: Optional[list] = None
    iteration_dir: Optional[Path] = None


def iteration_dir(root: str | os.PathLike) -> Path:
    """The folder that holds ``point_cloud.ply`` and the MLPs: ``root`` itself when it has one,
    else ``root/point_cloud/iteration_<max N>`` (the reference's ``searchForMaxIteration``).

    Raises:
        InputError naming ``root`` when neither exists.
    """
    root = Path(root)
    if (root / ANCHOR_PLY).is_file():
        return root
    pc = root / "point_cloud"
    its = []
    if pc.is_dir():
        for d in pc.iterdir():
            m = re.fullmatch(r"iteration_(\d{1,9})", d.name)
            if m and (d / ANCHOR_PLY).is_file():
                its.append((int(m.group(1)), d))
    if not its:
        raise InputError(f"{root}: not a Scaffold-GS output folder (no point_cloud.ply here nor in point_cloud/iteration_*/)")
    return max(its)[1]


def load_scaffold(root: str | os.PathLike, cfg_args: Optional[str | os.PathLike] = None) -> ScaffoldModel:
    """Load a Scaffold-GS output folder (module docstring) on CPU, checked against its cfg_args.

    Args:
        root: the run's ``model_path`` (or the iteration folder; then give ``cfg_args``, or
            it is looked for in ``root`` and two levels up).
        cfg_args: path of ``cfg_args`` (default: found as above).

    Returns:
        :class:`ScaffoldModel`; ``cameras`` from ``cameras.json`` when present.

    Raises:
        InputError naming the file at fault (see :func:`read_cfg_args`, :func:`read_anchor_ply`,
        :func:`load_torchscript`; an MLP whose input/output widths disagree with cfg_args).
        The TorchScript files are executed: load only folders you trust.
    """
    from ..inria import read_cameras_json

    root = Path(root)
    it = iteration_dir(root)
    if cfg_args is None:
        cands = [root / "cfg_args", it / "cfg_args", it.parent.parent / "cfg_args"]
        cfg_args = next((c for c in cands if c.is_file()), cands[0])
    cfg_path = Path(cfg_args)
    cfg = config_from_cfg(read_cfg_args(cfg_path), cfg_path)
    anchors = read_anchor_ply(it / ANCHOR_PLY, cfg.feat_dim, cfg.n_offsets)
    k = cfg.n_offsets
    mlps = {}
    for key, fname, din, dout in (("opacity", "opacity_mlp.pt", cfg.opacity_in, k), ("cov", "cov_mlp.pt", cfg.cov_in, 7 * k),
                                  ("color", "color_mlp.pt", cfg.color_in, 3 * k)):
        m = load_torchscript(it / fname)
        _check_mlp(it / fname, m, din, dout)
        mlps[key] = m
    if cfg.use_feat_bank:
        m = load_torchscript(it / FEATURE_BANK_FILE)
        _check_mlp(it / FEATURE_BANK_FILE, m, 4, 3)
        mlps["feature_bank"] = m
        if cfg.feat_dim % 4:
            raise InputError(f"{cfg_path}: use_feat_bank needs feat_dim divisible by 4, got {cfg.feat_dim}")
    if cfg.appearance_dim > 0:
        import torch

        m = load_torchscript(it / APPEARANCE_FILE)
        _check_mlp(it / APPEARANCE_FILE, m, 0, cfg.appearance_dim, dtype=torch.long)
        mlps["appearance"] = m
    cams_path = next((c for c in (root / "cameras.json", it.parent.parent / "cameras.json") if c.is_file()), None)
    cams = read_cameras_json(cams_path) if cams_path else None
    _LOG.info("%s: %d anchors, F=%d, k=%d, appearance_dim=%d", it, anchors.n, cfg.feat_dim, k, cfg.appearance_dim)
    return ScaffoldModel(cfg, anchors, mlps, cams, it)


def save_torchscript(module, example, path: str | os.PathLike) -> None:
    """``torch.jit.trace`` ``module`` (eval mode, CPU) on ``example`` and save it atomically
    (``save_mlp_checkpoints`` of the reference)."""
    import torch

    was = module.training
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():  # the reference format is TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(module.cpu(), example)
        with atomic_path(path) as tmp:
            traced.save(str(tmp))
    finally:
        module.train(was)


def save_scaffold(root: str | os.PathLike, model: ScaffoldModel, iteration: int, cameras: Optional[list] = None,
                  input_ply: Optional[str | os.PathLike] = None) -> Path:
    """Write ``model`` as the reference trainer does (module docstring), under ``root``.

    ``model.mlps`` values are ``torch.nn.Module`` (traced here) or TorchScript (saved as is).
    Returns the iteration folder. Each file is written to a temporary name and renamed.
    """
    import shutil

    import torch

    from ..inria import write_cameras_json

    root = Path(root)
    it = root / "point_cloud" / f"iteration_{int(iteration)}"
    it.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    write_anchor_ply(it / ANCHOR_PLY, model.anchors)
    specs = [("opacity", "opacity_mlp.pt", torch.rand(1, cfg.opacity_in)), ("cov", "cov_mlp.pt", torch.rand(1, cfg.cov_in)),
             ("color", "color_mlp.pt", torch.rand(1, cfg.color_in))]
    if cfg.use_feat_bank:
        specs.append(("feature_bank", FEATURE_BANK_FILE, torch.rand(1, 4)))
    if cfg.appearance_dim > 0:
        specs.append(("appearance", APPEARANCE_FILE, torch.zeros((1,), dtype=torch.long)))
    for key, fname, ex in specs:
        m = model.mlps[key]
        if isinstance(m, torch.jit.ScriptModule):
            with atomic_path(it / fname) as tmp:
                m.save(str(tmp))
        else:
            save_torchscript(m, ex, it / fname)
    with atomic_path(root / "cfg_args") as tmp:
        tmp.write_text(format_cfg_args(cfg.to_cfg()), encoding="utf-8")
    cams = cameras if cameras is not None else model.cameras
    if cams:
        write_cameras_json(root / "cameras.json", cams)
    if input_ply is not None and Path(input_ply).resolve() != (root / "input.ply").resolve():
        with atomic_path(root / "input.ply") as tmp:
            shutil.copyfile(input_ply, tmp)
    return it
