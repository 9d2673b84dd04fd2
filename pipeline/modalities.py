"""What each dataset's modalities are, and how the pipeline treats them.

`kind` decides the path through extraction:
- ``video``: decoded with decord, frames (window 1, stride extract.frame_stride: 3) through the frozen
  ResNet-50 -> (S, 2048)
- ``depth``: depth maps scaled to images, 3 channels, same backbone -> (S, 2048)
- ``sensor``: time series on a common time base, cut into windows -> (S, W, J*A)

`joints` x `attributes` is the co-occurrence encoder's view of one time step (J, A):
skeleton (20 joints, xyz) is (20, 3); a 3-axis accelerometer is (1, 3).

A sensor whose joints are separate devices in one file (UTD-MHAD's inertial file: accelerometer and gyroscope)
names them in `parts`. Training may then treat each as a modality of its own, `<modality>_<part>` (e.g.
`inertial_acc`), as the paper treats MMAct's phone and watch sensors: a part is read from its modality's cached
steps (its joint's channels), so it needs no extraction of its own.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from pipeline.errors import MumuError

Kind = Literal["video", "depth", "sensor"]
FEATURE_DIM = 2048  # a visual step: one ResNet-50 global-average-pooled feature vector


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    kind: Kind
    joints: int = 1  # J (sensor only)
    attributes: int = 1  # A (sensor only)
    rate_hz: float | None = None  # nominal sampling rate, None = read from the file
    parts: tuple[str, ...] = ()  # sensor only: one name per joint, where each joint is a device of its own
    part_of: str | None = None  # a part: the modality whose stored steps hold it, at joint `joint`
    joint: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(self.parts))  # a list when read back from JSON

    @property
    def stored_as(self) -> str:
        """The modality whose files and cached steps hold this one's values."""
        return self.part_of or self.name

    def to_dict(self) -> dict:
        """For cache headers and checkpoints. `parts` never (only the dataset table's specs are split), a part's
        fields only where set: a file of a run without parts reads as before, also with versions older than them."""
        values = {k: v for k, v in asdict(self).items() if k != "parts"}
        return {k: v for k, v in values.items() if k not in ("part_of", "joint") or v}

    def part_specs(self) -> list[ModalitySpec]:
        """Each of `parts` as a modality of its own (one joint, the same attributes and rate)."""
        return [ModalitySpec(f"{self.name}_{part}", self.kind, 1, self.attributes, self.rate_hz, part_of=self.name,
                             joint=j) for j, part in enumerate(self.parts)]

    def steps_of(self, stored: np.ndarray) -> np.ndarray:
        """This modality's steps from its stored_as modality's: (S, W, J*A), joint-major, -> a part's (S, W, A)."""
        if self.part_of is None:
            return stored
        return stored[..., self.joint * self.attributes:(self.joint + 1) * self.attributes]

    @property
    def visual(self) -> bool:
        return self.kind in ("video", "depth")

    @property
    def channels(self) -> int:
        return self.joints * self.attributes


_MMACT_SENSORS = [
    ModalitySpec("acc_phone", "sensor", 1, 3, 100.0),
    ModalitySpec("acc_watch", "sensor", 1, 3, 100.0),
    ModalitySpec("gyro", "sensor", 1, 3, 50.0),
    ModalitySpec("orientation", "sensor", 1, 3, 50.0),
]

DATASET_MODALITIES: dict[str, list[ModalitySpec]] = {
    "mmact": [ModalitySpec(f"rgb_cam{i}", "video") for i in (1, 2, 3, 4)] + _MMACT_SENSORS,
    # The demo is written in the MMAct layout with two camera views.
    "demo": [ModalitySpec(f"rgb_cam{i}", "video") for i in (1, 2)] + _MMACT_SENSORS,
    "utd_mhad": [
        ModalitySpec("rgb", "video"),
        ModalitySpec("depth", "depth"),
        ModalitySpec("skeleton", "sensor", 20, 3, None),
        ModalitySpec("inertial", "sensor", 2, 3, 50.0, parts=("acc", "gyro")),  # (acc, gyro) x xyz
    ],
    "ucsd_mit": [
        ModalitySpec("mocap", "sensor", 20, 3, 100.0),
        ModalitySpec("emg", "sensor", 8, 1, 200.0),
        ModalitySpec("imu", "sensor", 10, 1, 50.0),
    ],
}


# Sensor-kind modalities that a camera measures (skeletons from a depth camera, optical motion capture): the noise
# study puts them in the visual group with video and depth (mumu/noise.py). A new camera-derived sensor goes here.
CAMERA_SENSORS = {"skeleton", "mocap"}


def dataset_modalities(dataset: str) -> list[ModalitySpec]:
    try:
        return DATASET_MODALITIES[dataset]
    except KeyError:
        raise MumuError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASET_MODALITIES)}") from None


def select_modalities(dataset: str, names: str | list[str] | None) -> list[ModalitySpec]:
    """Parse ``"a,b,c"`` (or a list) against the dataset's modalities and their parts; None/"all" means all of
    the modalities (not their parts, which would repeat them)."""
    specs = dataset_modalities(dataset)
    if names is None or names == "all" or names == []:
        return specs
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    parts = [part for spec in specs for part in spec.part_specs()]
    by_name = {s.name: s for s in specs + parts}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise MumuError(f"dataset {dataset!r} has no modality {', '.join(unknown)}; it has "
                        f"{', '.join(s.name for s in specs)}"
                        + (f" (and the parts {', '.join(p.name for p in parts)})" if parts else ""))
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise MumuError(f"modalities {', '.join(names)}: {', '.join(doubled)} chosen more than once")
    chosen = [by_name[n] for n in names]
    overlapping = [f"{s.name} (a part of {s.part_of})" for s in chosen if s.part_of in names]
    if overlapping:
        raise MumuError(f"modalities {', '.join(names)}: {', '.join(overlapping)} chosen with the modality that holds "
                        f"it; choose a modality or its parts")
    return chosen


def stored_modalities(dataset: str, specs: list[ModalitySpec]) -> list[ModalitySpec]:
    """The modalities whose files and cached steps hold `specs` (a part's is its modality), each once, in order."""
    by_name = {s.name: s for s in dataset_modalities(dataset)}
    return list({s.stored_as: by_name[s.stored_as] for s in specs}.values())
