"""Shared fixtures: where the repository and the real UTD-MHAD copy are."""
from __future__ import annotations

import os
from pathlib import Path

# One intra-op thread for the whole session, subprocesses included (they inherit the environment):
# CPU float results depend in the last bits on the thread count, so tests that compare a subprocess's
# output with an in-process run need the same count, and tiny models run far faster on one thread.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
UTD_ROOT = REPO_ROOT.parent / "shared" / "data" / "utd_mhad"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def utd_root() -> Path:
    """The real UTD-MHAD copy (Inertial, Skeleton, Depth) beside the project; skips where absent."""
    missing = [folder for folder in ("Inertial", "Skeleton", "Depth") if not (UTD_ROOT / folder).is_dir()]
    if missing:
        pytest.skip(f"real UTD-MHAD not found at {UTD_ROOT} (no {', '.join(missing)} folder; it sits beside the "
                    "project as ../shared/data/utd_mhad)")
    return UTD_ROOT
