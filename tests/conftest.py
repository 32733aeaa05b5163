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
