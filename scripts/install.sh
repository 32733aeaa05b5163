#!/usr/bin/env bash
# Install Splat Forge and everything it needs into a virtual environment (default .venv).
# torch is installed first, CPU build, so that nothing else pulls a CUDA build on a machine
# without a GPU. The system assimp library (for FBX export) comes from Debian's packages.
set -euo pipefail
VENV=${1:-.venv}
PY=${PY:-python3}

if ! ldconfig -p 2>/dev/null | grep -q 'libassimp\.so\.5'; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[install] installing Debian libassimp5 (FBX export)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libassimp5 >/dev/null
  else
    echo "[install] WARNING: libassimp5 missing and cannot apt-get install it: FBX export will fail" >&2
  fi
fi

# tests/test_slurm.py starts a real one-node SLURM (Debian's slurm-wlm and munge); CI installs them
# here, a developer's machine when that test first runs (it installs them itself when root).
# Running on a cluster needs neither: only snakemake-executor-plugin-slurm (a dependency below).
if [ "${CI:-}" = true ] && ! command -v slurmctld >/dev/null 2>&1 && ! [ -x /usr/sbin/slurmctld ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[install] CI: installing Debian slurm-wlm and munge (tests/test_slurm.py)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
  else
    echo "[install] WARNING: CI without root/apt-get: tests/test_slurm.py will be skipped" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# The machines this project runs on carry a cached CPU build of torch 2.13.0 for pip.
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q -e ".[test]" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
"$VENV/bin/python" -c "import torch, pycolmap, gsplat, snakemake, snakemake_executor_plugin_slurm; print('[install] torch', torch.__version__, 'pycolmap', pycolmap.__version__, 'gsplat', gsplat.__version__)"
# JavaScript tools from the npm registry (versions pinned in vendor/js/package-lock.json, installed
# into the git-ignored vendor/js/node_modules): splat-transform converts SPZ/SOG (`splatforge
# convert`), gaussian-splats-3d + three are the viewer copied into results/{scene}_viewer/.
if command -v npm >/dev/null 2>&1; then
  (cd vendor/js && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) \
    || echo "[install] WARNING: npm ci in vendor/js failed: SPZ/SOG conversion and the viewer page will not work" >&2
else
  echo "[install] WARNING: npm (Node.js >= 20) not found: SPZ/SOG conversion and the viewer page will not work" >&2
fi
# Headless Chromium for the viewer page's browser test (tests/test_viewer.py; skipped without it).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "[install] installing Debian chromium (viewer test)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
    || echo "[install] WARNING: apt-get install chromium failed: the viewer browser test will be skipped" >&2
fi
