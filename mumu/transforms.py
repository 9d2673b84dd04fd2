"""Sensor-window transforms, applied by the data module to one sample as it is loaded: a skeleton
body frame (always) and augmentation (training only).

One sample's sensor input is ``{name: (S, W, C) float32}`` (C = J * A, joint-major: joint 0 xyz,
joint 1 xyz, ...). Visual modalities (S, 2048) and missing ones (None) pass through untouched.
Configured from params.yaml ``train.transforms`` (see `SensorTransform.from_params`):
1. skeleton body frame (deterministic, per sample): every time step is centred on ``centre_joint``
   and the sample is divided by its mean ``scale_joints`` distance (e.g. hip -> shoulder centre),
   so subjects of different height and position look alike;
2. augmentation (training only, drawn from the loader's per-(seed, epoch, sample) generator, so a
   resumed run sees the same draws): a random rotation of the skeleton about the vertical axis, a
   random amplitude scale per modality, and Gaussian jitter whose std is a fraction of the sample's
   own per-channel std (so one setting suits metres, g and deg/s alike).
Per-channel standardisation with training statistics comes after this, in the trainer
(`mumu.module.MumuModule.fit_input_norm`), so it sees body-frame skeletons.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.errors import MumuError
from pipeline.modalities import ModalitySpec

Windows = dict[str, "np.ndarray | torch.Tensor | None"]


@dataclass(frozen=True)
class SkeletonFrame:
    """Which modality is a skeleton and which joints (0-based) define its body frame."""

    modality: str
    centre_joint: int
    scale_joints: tuple[int, int] | None = None  # None = centre only, no scaling
    attributes: int = 3  # xyz


@dataclass(frozen=True)
class Augment:
    rotate_deg: float = 0.0  # skeleton: uniform rotation in [-r, r] degrees about the vertical (y) axis
    scale: float = 0.0  # every sensor modality: amplitude times uniform [1 - s, 1 + s]
    jitter: float = 0.0  # Gaussian noise std, as a fraction of the sample's per-channel std

    @property
    def active(self) -> bool:
        return bool(self.rotate_deg or self.scale or self.jitter)


def skeleton_to_body_frame(windows: np.ndarray, frame: SkeletonFrame) -> np.ndarray:
    """(S, W, J*A) -> (S, W, J*A): centred on the centre joint at every step, scaled by the mean
    distance between the two scale joints over the given windows."""
    s, w, c = windows.shape
    joints = windows.reshape(s, w, c // frame.attributes, frame.attributes)  # (S, W, J, A)
    joints = joints - joints[:, :, frame.centre_joint : frame.centre_joint + 1]
    if frame.scale_joints is not None:
        a, b = frame.scale_joints
        length = float(np.linalg.norm(joints[:, :, a] - joints[:, :, b], axis=-1).mean())
        joints = joints / max(length, 1e-6)  # a degenerate skeleton keeps its (tiny) scale
    return joints.reshape(s, w, c).astype(np.float32)


def rotate_vertical(windows: np.ndarray, degrees: float) -> np.ndarray:
    """(S, W, J*3) xyz joints rotated by `degrees` about the y (vertical) axis."""
    theta = np.deg2rad(degrees)
    cos, sin = np.cos(theta), np.sin(theta)
    rotation = np.array([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]], np.float32)
    shape = windows.shape
    joints = windows.reshape(-1, 3) @ rotation.T
    return joints.reshape(shape).astype(np.float32)


@dataclass(frozen=True)
class SensorTransform:
    """Callable on one sample: ``transform(x, rng)``; rng None = evaluation (no augmentation)."""

    skeleton: SkeletonFrame | None = None
    augment: Augment = field(default_factory=Augment)

    @classmethod
    def from_params(cls, params: dict | None) -> "SensorTransform":
        """From params.yaml ``train.transforms``, e.g.
        ``{skeleton: {modality: skeleton, centre_joint: 3, scale_joints: [1, 3]},
        augment: {rotate_deg: 15, scale: 0.15, jitter: 0.05}}``; None or {} = identity."""
        params = dict(params or {})
        try:
            unknown = set(params) - {"skeleton", "augment"}
            if unknown:
                raise KeyError(f"unknown key(s) {', '.join(sorted(unknown))}")
            frame = None
            if params.get("skeleton"):
                skeleton = params["skeleton"]
                scale = skeleton.get("scale_joints")
                frame = SkeletonFrame(skeleton["modality"], int(skeleton["centre_joint"]),
                                      tuple(int(j) for j in scale) if scale else None)
            augment = Augment(**(params.get("augment") or {}))
            if augment.rotate_deg and frame is None:  # it rotates the skeleton the frame names: nothing without it
                raise ValueError("augment.rotate_deg rotates the skeleton that a skeleton: block names; there is none")
            return cls(frame, augment)
        except (KeyError, TypeError, ValueError) as e:
            raise MumuError(f"train.transforms: {type(e).__name__}: {e} (keys: skeleton {{modality, centre_joint, "
                            "scale_joints}, augment {rotate_deg, scale, jitter})") from None

    def check_against(self, specs: list[ModalitySpec], dataset: str) -> None:
        """MumuError unless the skeleton frame names one of the dataset's xyz-joint modalities, and joints it has."""
        if self.skeleton is None:
            return
        frame, by_name = self.skeleton, {s.name: s for s in specs}
        spec = by_name.get(frame.modality)
        if spec is None or spec.visual or spec.attributes != frame.attributes:
            xyz = [s.name for s in specs if not s.visual and s.attributes == frame.attributes]
            raise MumuError(f"train.transforms.skeleton.modality: {dataset} has no skeleton modality "
                            f"{frame.modality!r} (xyz-joint modalities: {', '.join(xyz) or 'none'})")
        for joint in (frame.centre_joint, *(frame.scale_joints or ())):
            if not 0 <= joint < spec.joints:
                raise MumuError(f"train.transforms.skeleton: joint {joint} is not one of {frame.modality}'s "
                                f"{spec.joints} joints (0-based, 0..{spec.joints - 1})")

    @property
    def identity(self) -> bool:
        return self.skeleton is None and not self.augment.active

    def __call__(self, x: Windows, rng: np.random.Generator | None = None) -> Windows:
        if self.identity:
            return x
        out = {}
        for name, values in x.items():
            if values is None or values.ndim != 3:  # missing, or visual (S, 2048): untouched
                out[name] = values
                continue
            array = np.asarray(values, dtype=np.float32)
            if self.skeleton is not None and name == self.skeleton.modality:
                array = skeleton_to_body_frame(array, self.skeleton)
            if rng is not None:
                array = self._augment(name, array, rng)
            out[name] = _like(values, array)
        return out

    def _augment(self, name: str, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        aug = self.augment
        if aug.rotate_deg and self.skeleton is not None and name == self.skeleton.modality:
            values = rotate_vertical(values, rng.uniform(-aug.rotate_deg, aug.rotate_deg))
        if aug.scale:
            values = values * np.float32(rng.uniform(1 - aug.scale, 1 + aug.scale))
        if aug.jitter:
            std = values.reshape(-1, values.shape[-1]).std(axis=0)  # (C,) this sample's spread
            values = values + (rng.normal(0.0, 1.0, values.shape) * aug.jitter * std).astype(np.float32)
        return values.astype(np.float32)


def _like(original, values: np.ndarray):
    """Return `values` in the container type (numpy or torch) of `original`."""
    if isinstance(original, torch.Tensor):
        return torch.from_numpy(values)
    return values
