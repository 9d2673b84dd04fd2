"""What each dataset's modalities are, and how the pipeline treats them.

`kind` decides the path through extraction:
- ``video``: decoded with decord, frames (window 1, stride extract.frame_stride: 3) through the frozen
  ResNet-50 -> (S, 2048)
- ``depth``: depth maps scaled to images, 3 channels, same backbone -> (S, 2048)
- ``sensor``: time series on a common time base, cut into windows -> (S, W, J*A)

`joints` x `attributes` is the co-occurrence encoder's view of one time step (J, A):
skeleton (20 joints, xyz) is (20, 3); a 3-axis accelerometer is (1, 3).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
        ModalitySpec("inertial", "sensor", 2, 3, 50.0),  # (acc, gyro) x xyz
    ],
    "ucsd_mit": [
        ModalitySpec("mocap", "sensor", 20, 3, 100.0),
        ModalitySpec("emg", "sensor", 8, 1, 200.0),
        ModalitySpec("imu", "sensor", 10, 1, 50.0),
    ],
}


def dataset_modalities(dataset: str) -> list[ModalitySpec]:
    try:
        return DATASET_MODALITIES[dataset]
    except KeyError:
        raise MumuError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASET_MODALITIES)}") from None


def select_modalities(dataset: str, names: str | list[str] | None) -> list[ModalitySpec]:
    """Parse ``"a,b,c"`` (or a list) against the dataset's modalities; None/"all" means all of them."""
    specs = dataset_modalities(dataset)
    if names is None or names == "all" or names == []:
        return specs
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    by_name = {s.name: s for s in specs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise MumuError(f"dataset {dataset!r} has no modality {', '.join(unknown)}; it has {', '.join(by_name)}")
    return [by_name[n] for n in names]
