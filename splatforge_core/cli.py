"""``splatforge`` command line: a thin dispatcher to each stage module's own ``cli(argv)``.

Each entry maps a sub-command to ``module:function``; the function takes the remaining
argument list, parses it with its own argparse parser and returns an exit code. Modules
are imported lazily so that ``splatforge info`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import sys

from .errors import SplatForgeError
from .log import get_logger, setup_logging

COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("splatforge_core.demo", "cli", "make the embedded demo capture (GPS-tagged panoramas + ground truth)"),
    "ingest": ("splatforge_core.ingest", "cli", "read EXIF GPS of a photo folder into manifest.json"),
    "project": ("splatforge_core.project", "cli", "equirectangular panoramas -> pinhole perspective views (rig)"),
    "sfm": ("splatforge_core.sfm.cli", "cli", "structure from motion stages: extract, pairs, match, map, align"),
    "train": ("splatforge_core.train.trainer", "cli", "train a 3D Gaussian splat (gsplat on CUDA, torch on CPU)"),
    "export": ("splatforge_core.export", "cli", "splat -> Poisson mesh, UV atlas, baked texture (glb/obj/fbx)"),
    "report": ("splatforge_core.report", "cli", "per-scene run report (Markdown + PNG figures)"),
    "compress": ("splatforge_core.codec.cli", "cli_compress", "compress a splat PLY with a codec preset"),
    "decompress": ("splatforge_core.codec.cli", "cli_decompress", "restore a compressed splat PLY"),
    "info": ("splatforge_core.codec.cli", "cli_info", "print a splat PLY's layout"),
    "bundle": ("splatforge_core.codec.cli", "cli_bundle", "pack a scene's splat + cameras + images into a bundle; --check one"),
    "worker": ("splatforge_core.farm.worker", "cli", "serve LAN farm jobs for a coordinator (CurveZMQ, UDP beacons)"),
    "farm": ("splatforge_core.farm.cli", "cli", "LAN farm: `farm keys DIR` (certificates), `farm status` (peers, jobs)"),
    "viewer": ("splatforge_core.viewer", "cli", "offline web viewer page of a splat with the capture trajectory"),
    "flythrough": ("splatforge_core.video", "cli", "fly-through MP4 of a splat along the smoothed capture trajectory"),
    "prune": ("splatforge_core.prune", "cli", "keep the most significant fraction of a splat's Gaussians (--keep 0.25)"),
    "convert": ("splatforge_core.formats", "cli", "convert a splat between .ply, .splat, .spz and .sog (by suffix)"),
}


def _usage() -> str:
    lines = ["usage: splatforge COMMAND [ARGS...]", "", "commands:"]
    for name, (_, _, help_) in COMMANDS.items():
        lines.append(f"  {name:<11} {help_}")
    lines.append("")
    lines.append("Run 'splatforge COMMAND --help' for a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``splatforge`` console script; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from . import __version__

        print(__version__)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"splatforge: unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    setup_logging()
    module_name, func_name, _ = COMMANDS[cmd]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("splatforge_core"):
            print(f"splatforge {cmd}: this stage is not implemented yet ({e.name} missing)", file=sys.stderr)
            return 3
        raise
    try:
        return int(getattr(module, func_name)(rest) or 0)
    except SplatForgeError as e:  # an error the user can act on: one line, no traceback, exit 1
        get_logger().error("%s", " ".join(str(e).split()))
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
