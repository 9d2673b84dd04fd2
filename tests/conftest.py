"""Shared fixtures: where the repository and the real UTD-MHAD copy are, and the tiny demo and UTD-MHAD datasets."""
from __future__ import annotations

import os
from pathlib import Path

# One intra-op thread for the whole session, subprocesses included (they inherit the environment):
# CPU float results depend in the last bits on the thread count, so tests that compare a subprocess's
# output with an in-process run need the same count, and tiny models run far faster on one thread.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest

from tests.fixtures import IMAGE_SIZE, TinyDemo, TinyUTD, write_utd_mhad

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


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> TinyDemo:
    """Written and extracted once per test session (a fixture imported into each module would run once per module)."""
    from pipeline.datasets import build_index
    from pipeline.demo import write_demo_dataset
    from pipeline.extract import ExtractSettings, run_extract
    from pipeline.modalities import dataset_modalities, select_modalities

    base = tmp_path_factory.mktemp("tiny_demo")
    root = write_demo_dataset(base / "demo", n_subjects=4, n_sessions=2, n_frames=12, frame_size=IMAGE_SIZE)
    samples = build_index("demo", root).samples
    settings = ExtractSettings(image_size=IMAGE_SIZE, weights="random", part_size=16)
    run_extract(samples, "demo", dataset_modalities("demo"), base / "demo.zarr", settings, show_progress=False)
    run_extract(samples[:6], "demo", select_modalities("demo", "acc_phone"), base / "sensor.zarr", settings,
                show_progress=False)
    return TinyDemo(root, base / "demo.zarr", base / "sensor.zarr")


@pytest.fixture(scope="session")
def tiny_utd(tmp_path_factory) -> TinyUTD:
    from pipeline.datasets import build_index
    from pipeline.extract import ExtractSettings, run_extract
    from pipeline.modalities import select_modalities

    base = tmp_path_factory.mktemp("tiny_utd")
    root = write_utd_mhad(base / "utd", subjects=(1, 2, 3))  # 3 actions x 4 trials, a8_s1_t4 absent: 35
    run_extract(build_index("utd_mhad", root).samples, "utd_mhad", select_modalities("utd_mhad", "skeleton,inertial"),
                base / "utd.zarr", ExtractSettings(**TinyUTD.extract), show_progress=False)
    return TinyUTD(root, base / "utd.zarr")
