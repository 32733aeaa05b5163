"""The JavaScript tools Splat Forge takes from npm at install time (``vendor/js``, see
``scripts/install.sh``): where they are, and running ``@playcanvas/splat-transform``.

``scripts/install.sh`` runs ``npm ci`` in ``vendor/js/`` (``package.json`` and ``package-lock.json``
are committed, ``node_modules/`` is git-ignored). ``SPLATFORGE_NODE_MODULES`` points elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import SplatForgeError
from ..log import get_logger

__all__ = ["node_modules", "node_executable", "splat_transform", "vendored_file", "JSToolMissing"]

_LOG = get_logger("formats")
_REPO = Path(__file__).resolve().parents[2]
SPLAT_TRANSFORM_CLI = "@playcanvas/splat-transform/bin/cli.mjs"


class JSToolMissing(SplatForgeError):
    """node or a vendored npm package is not installed (run scripts/install.sh)."""


def node_modules() -> Path:
    """The ``node_modules`` folder of the vendored npm packages (``$SPLATFORGE_NODE_MODULES`` or
    ``<repo>/vendor/js/node_modules``); it may not exist."""
    env = os.environ.get("SPLATFORGE_NODE_MODULES")
    return Path(env) if env else _REPO / "vendor" / "js" / "node_modules"


def vendored_file(rel: str) -> Path:
    """A file of a vendored npm package, e.g. ``three/build/three.module.min.js``.

    Raises:
        JSToolMissing: not installed (the message says how to install it).
    """
    p = node_modules() / rel
    if not p.is_file():
        raise JSToolMissing(f"{p}: npm package file not installed; run `bash scripts/install.sh` "
                            f"(it runs `npm ci` in vendor/js) or set SPLATFORGE_NODE_MODULES")
    return p


def node_executable() -> str:
    """Path of ``node`` (Node.js >= 20).

    Raises:
        JSToolMissing: no ``node`` on PATH.
    """
    node = shutil.which("node")
    if node is None:
        raise JSToolMissing("node (Node.js) not found on PATH; install it (Debian: apt-get install nodejs npm) "
                            "and run `bash scripts/install.sh`")
    return node


def splat_transform(src: str | os.PathLike, dst: str | os.PathLike, *args: str, timeout: float = 600) -> None:
    """Run ``splat-transform -q -w [args] SRC DST`` (format of each side from its suffix).

    SOG compression runs its k-means on the CPU (``-g cpu``): no GPU adapter is needed.

    Raises:
        JSToolMissing: node or splat-transform missing.
        SplatForgeError: splat-transform failed (its last stderr lines are in the message, with
            both file names).
    """
    cli = vendored_file(SPLAT_TRANSFORM_CLI)
    cmd = [node_executable(), str(cli), "-q", "-w", "-g", "cpu", *args, str(src), str(dst)]
    _LOG.debug("running %s", " ".join(cmd))
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SplatForgeError(f"{src} -> {dst}: splat-transform did not finish in {timeout:.0f} s") from None
    if res.returncode != 0 or not Path(dst).exists():
        tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
        raise SplatForgeError(f"{src} -> {dst}: splat-transform failed (exit {res.returncode}): {tail}")
