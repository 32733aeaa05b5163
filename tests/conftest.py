"""Shared pytest fixtures: where the real test data lives (``../shared/data``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SPLATFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``../shared/data`` (real photos, panorama, PLYs); skips if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def lund_dir(shared_data: Path) -> Path:
    return shared_data / "lund" / "images"


@pytest.fixture(scope="session")
def pano_path(shared_data: Path) -> Path:
    return shared_data / "pano360" / "gopro_max_GSAG2002.JPG"


#: Test files that wait more than they compute (a real SLURM cluster's sbatch/squeue cycles, worker
#: processes, Snakemake subprocesses): `make test` runs the suite on 2 pytest-xdist workers with
#: ``--dist loadfile`` (one file per worker at a time), and these start first so that their
#: waiting overlaps the rest of the suite instead of ending it. Measured: test_slurm.py ~8 min
#: of a 14.5 min serial suite (stop 11); the others 2-5 min each.
LONG_FIRST = ("test_slurm.py", "test_farm_workflow.py", "test_workflow.py", "test_bad_input_workflow.py")


def pytest_collection_modifyitems(config, items):
    """Move the tests of :data:`LONG_FIRST` files to the front, keeping every other order."""
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda it: rank.get(Path(str(it.fspath)).name, len(rank)))
