"""Per-sample target weights for MuMu's fusion (train.fusion_targets).

With `fusion_kl > 0` a loss term pulls MuMu's SM-Fusion and GM-Fusion weights toward target weights: equal
ones by default, or per training sample from a CSV (`docs/results/held_out_modalities.py` writes one) with
columns `fold` (the split's name: fold_s3 for LOSO's fold testing subject 3, or the protocol's name), `sample_id`,
and `p_<modality>` for every modality of the model: how much that modality alone is to be trusted on the
sample, in [0, 1] (e.g. the probability a model that never trained on the sample's subject gives the true label
with that modality alone). A sample's target weight of modality m is proportional to p_m + TARGET_FLOOR, over
the modalities present, so no modality's target is 0 (the KL stays finite) and equal p's mean equal weights.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from pipeline.errors import MumuError
from pipeline.index import Sample

TARGET_FLOOR = 0.1


def read_fusion_targets(path: str | Path, splits: dict[str, list[Sample]], modalities: list[str]
                        ) -> dict[str, dict[str, list[float]]]:
    """{split: {sample_id: target weights (unnormalised, in `modalities` order)}} for every training sample of
    every split (`splits`: split name -> its training samples), from one read of the CSV. A missing file,
    column or sample, a duplicate row, or a value outside [0, 1], is a MumuError that names the file and the
    problem."""
    path = Path(path)
    if not path.is_file():
        raise MumuError(f"fusion targets file {path} does not exist")
    columns = ["fold", "sample_id", *(f"p_{m}" for m in modalities)]
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise MumuError(f"fusion targets file {path} lacks column(s) {', '.join(missing)} "
                            f"(it needs {', '.join(columns)})")
        targets: dict[str, dict[str, list[float]]] = {split: {} for split in splits}
        for line, row in enumerate(reader, start=2):
            split = row["fold"]
            if split not in targets:
                continue
            given = [row[f"p_{m}"] or "" for m in modalities]  # None: the row is short of fields
            try:
                values = [float(v) for v in given]
            except ValueError:
                values = [math.nan]
            if not all(0 <= v <= 1 for v in values):
                raise MumuError(f"fusion targets file {path}, line {line}: p values must be numbers in [0, 1], "
                                f"got {', '.join(map(repr, given))}")
            if row["sample_id"] in targets[split]:
                raise MumuError(f"fusion targets file {path}, line {line}: a second row for sample "
                                f"{row['sample_id']} in split {split}")
            targets[split][row["sample_id"]] = [v + TARGET_FLOOR for v in values]
    for split, samples in splits.items():
        lacking = [s.sample_id for s in samples if s.sample_id not in targets[split]]
        if lacking:
            raise MumuError(f"fusion targets file {path} has no row for {len(lacking)} of the {len(samples)} "
                            f"training samples of split {split} (first: {lacking[0]}); was it written for this "
                            "protocol?")
    return {split: {s.sample_id: targets[split][s.sample_id] for s in samples} for split, samples in splits.items()}
