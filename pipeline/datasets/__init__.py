"""Dataset adapters: a raw dataset folder -> a sample index (see docs/datasets.md for the layouts).

    result = build_index("utd_mhad", "../shared/data/utd_mhad")
    result.samples   # list[Sample], one per sample, missing modalities as None paths
    result.skipped   # bad files, each with the reason (under strict=True the first one raises)
    result.unknown   # files that are not part of the layout (ignored, counted)
"""
from __future__ import annotations

from importlib import import_module
from pathlib import Path

from pipeline.datasets.base import IndexResult, Recorder, Skipped
from pipeline.errors import MumuError
from pipeline.modalities import dataset_modalities
from pipeline.tables import load_table

# dataset -> adapter module (the demo is written in MMAct's layout)
ADAPTERS = {"mmact": "mmact", "demo": "mmact", "utd_mhad": "utd_mhad", "ucsd_mit": "ucsd_mit"}

__all__ = ["ADAPTERS", "IndexResult", "Skipped", "build_index"]


def build_index(dataset: str, data_root: str | Path, strict: bool = False, table: str | Path | None = None) -> IndexResult:
    """Scan ``data_root`` with the dataset's adapter and label the samples from its activity table.

    ``table`` overrides the shipped ``pipeline/tables/<dataset>.csv``. Raises MumuError when the
    root does not exist or holds no sample, and (``strict``) at the first unreadable file.
    """
    modalities = [m.name for m in dataset_modalities(dataset)]  # MumuError for an unknown dataset
    root = Path(data_root)
    if not root.is_dir():
        raise MumuError(f"data root {root} is not a folder (dataset {dataset})")
    labels = load_table(dataset, table)
    result = IndexResult(dataset, root.resolve(), labels, modalities)
    adapter = import_module(f"pipeline.datasets.{ADAPTERS[dataset]}")
    result.samples = adapter.scan(root, dataset, labels, modalities, Recorder(result, strict))
    if not result.samples:
        first_bad = f"; the first: {result.skipped[0].path}: {result.skipped[0].reason}" if result.skipped else ""
        raise MumuError(
            f"no {dataset} samples found under {root} ({len(result.unknown)} unrecognised files, "
            f"{len(result.skipped)} bad files{first_bad}); see docs/datasets.md for the expected layout"
        )
    return result
