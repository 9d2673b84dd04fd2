"""UCSD-MIT Human Motion: the data is not public, so mumu defines its own layout (docs/datasets.md):

    <root>/subject{S}/<activity>/trial{T}/mocap.csv   time + 20 joints x (x, y, z)      ~100 Hz
                                         /emg.csv     time + emg1..emg8 (Myo sEMG)        ~200 Hz
                                         /imu.csv     time + acc xyz, gyro xyz, quat wxyz ~50 Hz

Each CSV has one header row; ``time`` is in seconds from the start of the trial. Activity folder
names match the table's ``file_label`` case-insensitively. One sample per (subject, activity, trial).
"""
from __future__ import annotations

import re
from pathlib import Path

from pipeline.datasets.base import Recorder, SampleSet, check_headed_csv, walk_files
from pipeline.index import Sample
from pipeline.modalities import dataset_modalities
from pipeline.tables import ActivityTable

_FILE = re.compile(r"subject(\d+)/([^/]+)/trial(\d+)/([a-z]+)\.csv", re.IGNORECASE)


def scan(root: Path, dataset: str, table: ActivityTable, modalities: list[str], record: Recorder) -> list[Sample]:
    channels = {m.name: m.channels for m in dataset_modalities(dataset)}
    samples = SampleSet(dataset, modalities, record)
    for path in walk_files(root):
        match = _FILE.fullmatch("/".join(path.parts[-4:]))
        modality = match.group(4).lower() if match else None
        if modality not in modalities:
            record.unknown(path)
            continue
        subject, label, trial = int(match.group(1)), match.group(2).lower(), int(match.group(3))
        activity = table.by_label(label)
        if activity is None:
            record.skip(path, f"activity folder {match.group(2)!r} is not in the activity table {table.path}", modality)
            continue
        problem = check_headed_csv(path, 1 + channels[modality])
        if problem:
            record.skip(path, problem, modality)
            continue
        samples.add((subject, activity.activity_id, trial), path, modality, activity,
                    f"subject{subject}_{activity.activity}_trial{trial}", subject=subject, trial=trial)
    return samples.sorted()
