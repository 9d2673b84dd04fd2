"""Sensor transforms: what a user relies on — body-frame invariances, augmentation only in training
and reproducible, other modalities untouched, clear errors for bad settings."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mumu.data import StepDataset
from mumu.transforms import SensorTransform, SkeletonFrame, rotate_vertical, skeleton_to_body_frame
from pipeline.errors import MumuError

HIP, SHOULDER_CENTER = 3, 1
FRAME = {"modality": "skeleton", "centre_joint": HIP, "scale_joints": [SHOULDER_CENTER, HIP]}
AUGMENT = {"rotate_deg": 15, "scale": 0.1, "jitter": 0.05}


def skeleton_windows(rng: np.random.Generator, s: int = 6, w: int = 5) -> np.ndarray:
    """(S, W, 60): 20 joints around a body 2.8 m from the camera."""
    joints = rng.normal(0, 0.3, (s, w, 20, 3)) + np.array([0.1, 0.2, 2.8])
    return joints.reshape(s, w, 60).astype(np.float32)


def sample(rng: np.random.Generator) -> dict:
    inertial = rng.normal(0, 1, (7, 5, 6)) * [1, 1, 1, 90, 90, 90]  # acc in g, gyro in deg/s
    return {"skeleton": skeleton_windows(rng), "inertial": inertial.astype(np.float32),
            "depth": rng.normal(0, 1, (4, 2048)).astype(np.float16), "missing": None}


def test_body_frame_ignores_where_the_subject_stands_and_how_tall_they_are():
    x = skeleton_windows(np.random.default_rng(0))
    moved = (x.reshape(6, 5, 20, 3) * 1.3 + np.array([0.5, -0.2, 0.4])).reshape(6, 5, 60).astype(np.float32)
    frame = SkeletonFrame("skeleton", HIP, (SHOULDER_CENTER, HIP))
    a, b = skeleton_to_body_frame(x, frame), skeleton_to_body_frame(moved, frame)
    np.testing.assert_allclose(a, b, atol=1e-5)
    joints = a.reshape(6, 5, 20, 3)
    np.testing.assert_allclose(joints[:, :, HIP], 0.0, atol=1e-6)  # centred on the hip at every step
    torso = np.linalg.norm(joints[:, :, SHOULDER_CENTER] - joints[:, :, HIP], axis=-1).mean()
    assert torso == pytest.approx(1.0, rel=1e-5)  # the unit of length is the mean torso


def test_centre_only_keeps_metres():
    x = skeleton_windows(np.random.default_rng(1))
    out = SensorTransform.from_params({"skeleton": {"modality": "skeleton", "centre_joint": HIP}})({"skeleton": x})
    joints, raw = out["skeleton"].reshape(6, 5, 20, 3), x.reshape(6, 5, 20, 3)
    np.testing.assert_allclose(joints[:, :, 0] - joints[:, :, 7], raw[:, :, 0] - raw[:, :, 7], atol=1e-5)
    np.testing.assert_allclose(joints[:, :, HIP], 0.0, atol=1e-6)  # every frame centred on the hip


def test_rotation_keeps_distances_and_the_vertical():
    x = skeleton_windows(np.random.default_rng(1))
    r = rotate_vertical(x, 30.0).reshape(-1, 20, 3)
    j = x.reshape(-1, 20, 3)
    np.testing.assert_allclose(np.linalg.norm(r[:, 0] - r[:, 5], axis=-1), np.linalg.norm(j[:, 0] - j[:, 5], axis=-1),
                               rtol=1e-5)
    np.testing.assert_allclose(r[..., 1], j[..., 1], atol=1e-6)  # y untouched
    assert not np.allclose(r[..., 0], j[..., 0])


def test_visual_and_missing_modalities_pass_through():
    x = sample(np.random.default_rng(3))
    out = SensorTransform.from_params({"skeleton": FRAME, "augment": AUGMENT})(x, np.random.default_rng(0))
    assert out["missing"] is None
    np.testing.assert_array_equal(out["depth"], x["depth"])


def test_augmentation_only_in_training_and_reproducible():
    x = sample(np.random.default_rng(4))
    transform = SensorTransform.from_params({"skeleton": FRAME, "augment": AUGMENT})
    evaluation = [transform(x)["skeleton"] for _ in range(2)]
    np.testing.assert_array_equal(*evaluation)  # rng None: deterministic, no augmentation
    np.testing.assert_allclose(evaluation[0], skeleton_to_body_frame(x["skeleton"], SkeletonFrame("skeleton", HIP, (1, 3))))
    a = transform(x, np.random.default_rng(7))
    b = transform(x, np.random.default_rng(7))
    c = transform(x, np.random.default_rng(8))
    for name in ("skeleton", "inertial"):
        np.testing.assert_array_equal(a[name], b[name])
        assert not np.allclose(a[name], c[name])
    assert not np.allclose(a["skeleton"], evaluation[0])


def test_jitter_follows_each_channel_scale():
    x = sample(np.random.default_rng(5))
    out = SensorTransform.from_params({"augment": {"jitter": 0.1}})(x, np.random.default_rng(0))
    noise = (out["inertial"] - x["inertial"]).reshape(-1, 6).std(0)
    spread = x["inertial"].reshape(-1, 6).std(0)
    np.testing.assert_allclose(noise / spread, 0.1, rtol=0.35)  # gyro gets deg/s-sized noise, acc g-sized


def test_torch_in_torch_out():
    x = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in sample(np.random.default_rng(5)).items()}
    out = SensorTransform.from_params({"skeleton": FRAME})(x)
    assert isinstance(out["skeleton"], torch.Tensor) and out["skeleton"].dtype == torch.float32
    assert out["skeleton"].shape == x["skeleton"].shape


def test_identity_when_nothing_is_configured():
    x = sample(np.random.default_rng(9))
    assert SensorTransform.from_params(None)(x, np.random.default_rng(0)) is x
    assert SensorTransform.from_params({})(x) is x


def test_bad_settings_are_clear_errors():
    with pytest.raises(MumuError, match="centre_joint"):
        SensorTransform.from_params({"skeleton": {"modality": "skeleton"}})
    with pytest.raises(MumuError, match="rotation"):
        SensorTransform.from_params({"augment": {"rotation": 5}})
    with pytest.raises(MumuError, match="unknown key"):
        SensorTransform.from_params({"normalise": True})
    with pytest.raises(MumuError, match="rotate_deg rotates the skeleton that a skeleton: block names"):
        SensorTransform.from_params({"augment": {"rotate_deg": 45}})  # was accepted, and rotated nothing


def test_the_data_module_applies_the_transform_per_epoch_and_sample():
    """StepDataset (mumu/data.py) runs the transform on every item: evaluation items are in the body
    frame and identical every time; training items are augmented, reproducibly per (epoch, sample)."""
    from pipeline.index import Sample
    from pipeline.modalities import select_modalities

    x = sample(np.random.default_rng(10))

    class Fixed(StepDataset):
        def load(self, s, choose):
            return {"skeleton": torch.from_numpy(x["skeleton"][choose("skeleton", 6)])}

    # two samples loading the same skeleton: each must get its own augmentation
    samples = [Sample(f"a1_s1_t{t}", "utd_mhad", 1, "swipe_left", 0, "hand_gesture", 0) for t in (1, 2)]
    specs = select_modalities("utd_mhad", "skeleton")
    transform = SensorTransform.from_params({"skeleton": FRAME, "augment": AUGMENT})
    evaluation = Fixed(samples, specs, {"skeleton": 6}, train=False, seed=0, transform=transform)
    training = Fixed(samples, specs, {"skeleton": 6}, train=True, seed=0, transform=transform)
    body = skeleton_to_body_frame(x["skeleton"], SkeletonFrame("skeleton", HIP, (SHOULDER_CENTER, HIP)))
    np.testing.assert_allclose(evaluation[0]["x"]["skeleton"].numpy(), body, atol=1e-6)
    np.testing.assert_array_equal(training[(0, 3)]["x"]["skeleton"], training[(0, 3)]["x"]["skeleton"])
    assert not np.allclose(training[(0, 3)]["x"]["skeleton"], training[(0, 4)]["x"]["skeleton"])
    assert not np.allclose(training[(0, 3)]["x"]["skeleton"], training[(1, 3)]["x"]["skeleton"])
    assert not np.allclose(training[(0, 3)]["x"]["skeleton"].numpy(), body)
