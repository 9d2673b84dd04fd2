"""MMAct trimmed release (and the demo, which is written in the same layout).

Files are recognised by the end of their path, so any parent folders are accepted: the real
release's ``trimmed/video/...``, ``Video_trimmed/...``, ``cross_view/trainval/...`` and
``trimmed/sensors/...``, ``Sensor_trimmed/...``, or the demo's ``video/`` and ``sensors/``:

    .../subject{N}/cam{C}/scene{S}/session{K}/<action>.mp4          -> modality rgb_cam{C}
    .../<sensor>_clip/subject{N}/scene{S}/session{K}/<action>.csv   -> modality <sensor>

One sample per (subject, scene, session, action), with up to 4 camera views and 4 sensors. Stems are
lower-cased (the release has ``Carrying_light``), and scene 3's ``using_phone`` /
``talking_on_phone`` become the ``*_desk`` classes: 35 stems -> 37 classes. When the same clip is
found twice (two copies of the release under one root), the first in sorted path order is kept and
the other is recorded as a skipped duplicate.
"""
from __future__ import annotations

import re
from pathlib import Path

from pipeline.datasets.base import Recorder, SampleSet, check_mmact_csv, check_video, walk_files
from pipeline.index import Sample
from pipeline.tables import ActivityTable

# Both match the last five components of a path.
_VIDEO = re.compile(r"subject(\d+)/cam(\d+)/scene(\d+)/session(\d+)/([^/]+)\.mp4", re.IGNORECASE)
_SENSOR = re.compile(r"([a-z_]+)_clip/subject(\d+)/scene(\d+)/session(\d+)/([^/]+)\.csv", re.IGNORECASE)
DESK_SCENE = 3
_DESK_STEMS = ("using_phone", "talking_on_phone")


def file_label(stem: str, scene: int) -> str:
    """The activity label of a clip: lower-cased stem, with scene 3's phone actions remapped."""
    label = stem.lower()
    return f"{label}_desk" if scene == DESK_SCENE and label in _DESK_STEMS else label


def scan(root: Path, dataset: str, table: ActivityTable, modalities: list[str], record: Recorder) -> list[Sample]:
    samples = SampleSet(dataset, modalities, record)
    for path in walk_files(root):
        tail = "/".join(path.parts[-5:])
        if video := _VIDEO.fullmatch(tail):
            subject, cam, scene, session = (int(g) for g in video.groups()[:4])
            modality, stem, view = f"rgb_cam{cam}", video.group(5), f"cam{cam}"
        elif sensor := _SENSOR.fullmatch(tail):
            subject, scene, session = (int(g) for g in sensor.groups()[1:4])
            modality, stem, view = sensor.group(1).lower(), sensor.group(5), None
        else:
            record.unknown(path)
            continue
        if modality not in modalities:  # e.g. cam3 in the two-view demo, or an unknown sensor folder
            record.unknown(path)
            continue
        label = file_label(stem, scene)
        activity = table.by_label(label)
        if activity is None:
            record.skip(path, f"action {label!r} (scene {scene}) is not in the activity table {table.path}", modality)
            continue
        problem = check_video(path) if view else check_mmact_csv(path)
        if problem:
            record.skip(path, problem, modality)
            continue
        samples.add((subject, scene, session, activity.activity_id), path, modality, activity,
                    f"subject{subject}_scene{scene}_session{session}_{activity.activity}", view=view,
                    subject=subject, scene=scene, session=session)
    return samples.sorted()
