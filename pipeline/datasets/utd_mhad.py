"""UTD-MHAD: ``Inertial/ Skeleton/ Depth/ RGB/`` with ``a{A}_s{S}_t{T}_<modality>.mat`` / ``_color.avi``.

One sample per (action, subject, trial); its files are found by name anywhere under the root, so the
four folders may also sit one level deeper. Non-data files (``Skeleton_joint_order.txt``) are unknown
files. The real release has 861 samples: 27 x 8 x 4 minus a8_s1_t4, a23_s6_t4 and a27_s8_t4.
"""
from __future__ import annotations

import re
from pathlib import Path

from pipeline.datasets.base import Recorder, SampleSet, check_mat, check_video, walk_files
from pipeline.index import Sample
from pipeline.tables import ActivityTable

_NAME = re.compile(r"a(\d+)_s(\d+)_t(\d+)_(inertial|skeleton|depth|color)\.(mat|avi)", re.IGNORECASE)
# file-name suffix -> (modality, extension, MATLAB variable or None for video)
_SUFFIXES = {
    "inertial": ("inertial", "mat", "d_iner"),
    "skeleton": ("skeleton", "mat", "d_skel"),
    "depth": ("depth", "mat", "d_depth"),
    "color": ("rgb", "avi", None),
}


def scan(root: Path, dataset: str, table: ActivityTable, modalities: list[str], record: Recorder) -> list[Sample]:
    samples = SampleSet(dataset, modalities, record)
    for path in walk_files(root):
        match = _NAME.fullmatch(path.name)
        suffix = match and _SUFFIXES[match.group(4).lower()]
        if not match or match.group(5).lower() != suffix[1] or suffix[0] not in modalities:
            record.unknown(path)
            continue
        action, subject, trial = (int(g) for g in match.groups()[:3])
        modality, _, variable = suffix
        activity = table.by_label(f"a{action}")
        if activity is None:
            record.skip(path, f"action a{action} is not in the activity table {table.path}", modality)
            continue
        problem = check_mat(path, variable) if variable else check_video(path)
        if problem:
            record.skip(path, problem, modality)
            continue
        samples.add((subject, action, trial), path, modality, activity, f"a{action}_s{subject}_t{trial}",
                    subject=subject, trial=trial)
    return samples.sorted()
