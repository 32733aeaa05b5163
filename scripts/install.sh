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
