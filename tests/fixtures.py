"""Builders of small raw datasets laid out exactly like the real releases, quirks included.

Other tests may use them (``from tests.fixtures import write_utd_mhad, ...``). Every builder returns
the dataset root. Values are small random arrays: the layouts and file formats are what matter.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.io

MMACT_SENSORS = ("acc_phone", "acc_watch", "gyro", "orientation")
IMAGE_SIZE = 32  # the tiny demo's frame size


@dataclass
class TinyDemo:
    """The `tiny_demo` fixture (conftest.py): a small demo dataset (4 subjects x 2 sessions x 6 activities,
    12 frames of 32 px) and its caches, extracted with random ResNet-50 weights once per test session."""
    root: Path  # raw demo dataset
    cache: Path  # its feature cache
    sensor_cache: Path  # acc_phone only, the first 6 samples of subject 1

    def config(self, out: Path | None = None, **overrides):
        """A small, fast training config on this data (cross_session: every subject in train and test)."""
        from mumu.config import resolve_config

        settings = dict(dataset="demo", data_root=str(self.root), cache=str(self.cache), protocol="cross_session",
                        modalities="rgb_cam1,acc_phone,gyro", max_epochs=2, batch_size=8, num_workers=0,
                        accelerator="cpu", embed_dim=16, max_steps_visual=4, max_steps_sensor=6, lr=3e-3,
                        val_fraction=0.2, extract={"image_size": IMAGE_SIZE, "weights": "random"},
                        out=str(out) if out else None)
        settings.update(overrides)
        return resolve_config(None, **settings)


@dataclass
class TinyUTD:
    """The `tiny_utd` fixture (conftest.py): three subjects of `write_utd_mhad`'s default layout (35 samples), skeleton
    and inertial extracted at one sensor step per window."""
    root: Path
    cache: Path
    extract: ClassVar[dict] = {"sensor_window": 1, "sensor_stride": 1, "sensor_rate_hz": 50, "weights": "random"}

    def config(self, out: Path, **overrides):
        """A small LOSO training config on this data (3 folds)."""
        from mumu.config import resolve_config

        settings = dict(dataset="utd_mhad", cache=str(self.cache), protocol="loso", modalities="skeleton,inertial",
                        max_epochs=2, batch_size=8, num_workers=0, accelerator="cpu", embed_dim=16, max_steps_sensor=8,
                        extract=self.extract, out=str(out))
        return resolve_config(None, **{**settings, **overrides})


def tiny_mp4(path: Path, frames: int = 8, size: int = 16, fps: int = 15, seed: int = 0) -> Path:
    """A real H.264 MP4 of random frames."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def tiny_avi(path: Path, frames: int = 4, size: int = 16) -> Path:
    """A real AVI (MPEG-4 part 2), like UTD-MHAD's ``_color.avi``."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = np.full((size, size, 3), 10 * i, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def mmact_csv(path: Path, rows: int = 20, rate: float = 50.0, seed: int = 0) -> Path:
    """Headerless ``timestamp,x,y,z``; whole-second stamps lack the fraction, as in the release."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t0 = datetime(2018, 10, 16, 13, 39, 51, 960000)
    lines = []
    for i in range(rows):
        stamp = t0 + timedelta(seconds=i / rate)
        text = stamp.strftime("%Y%m%d_%H:%M:%S") + (f".{stamp.microsecond // 1000:03d}" if stamp.microsecond else "")
        x, y, z = rng.normal(size=3)
        lines.append(f"{text},{x:.4f},{y:.4f},{z:.4f}\n")
    path.write_text("".join(lines))
    return path


def write_mmact(root: Path) -> Path:
    """A trimmed-release MMAct root: ``Video_trimmed/subjectN/camN/sceneN/sessionN/<action>.mp4`` and
    ``Sensor_trimmed/<sensor>_clip/subjectN/sceneN/sessionN/<action>.csv``.

    Subjects 1-2, sessions 1-2; scene 1: carrying_light, walking, using_phone; scene 3 (desk):
    using_phone, talking_on_phone, using_pc; cameras 1 and 3. Quirks and faults:
    - subject 1 / scene 1 / session 1 stores carrying_light as ``Carrying_light`` (every file);
    - scene 3's using_phone / talking_on_phone must become the ``*_desk`` classes;
    - subject 2 / scene 1 / session 2 / walking: gyro CSV is empty (0 bytes), cam3 video missing;
    - subject 2 / scene 3 / session 1 / using_pc: orientation CSV missing, cam1 video is not an MP4;
    - non-data files: a README, a ``.DS_Store`` and a ``.txt`` beside the clips.
    """
    video = tiny_mp4(root / "_template.mp4")
    template = video.read_bytes()
    video.unlink()
    actions = {1: ("carrying_light", "walking", "using_phone"), 3: ("using_phone", "talking_on_phone", "using_pc")}
    for subject in (1, 2):
        for scene, names in actions.items():
            for session in (1, 2):
                for action in names:
                    stem = "Carrying_light" if (subject, scene, session, action) == (1, 1, 1, "carrying_light") else action
                    for cam in (1, 3):
                        path = root / f"Video_trimmed/subject{subject}/cam{cam}/scene{scene}/session{session}/{stem}.mp4"
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(template)
                    for i, sensor in enumerate(MMACT_SENSORS):
                        mmact_csv(root / f"Sensor_trimmed/{sensor}_clip/subject{subject}/scene{scene}/session{session}/{stem}.csv",
                                  rate=100.0 if sensor.startswith("acc") else 50.0, seed=i)
    (root / "Sensor_trimmed/gyro_clip/subject2/scene1/session2/walking.csv").write_bytes(b"")
    (root / "Video_trimmed/subject2/cam3/scene1/session2/walking.mp4").unlink()
    (root / "Sensor_trimmed/orientation_clip/subject2/scene3/session1/using_pc.csv").unlink()
    (root / "Video_trimmed/subject2/cam1/scene3/session1/using_pc.mp4").write_bytes(b"<html>not a video</html>")
    (root / "README.md").write_text("MMAct trimmed release\n")
    (root / "Video_trimmed/subject1/.DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "Sensor_trimmed/acc_phone_clip/subject1/scene1/session1/notes.txt").write_text("x\n")
    return root


def write_utd_mhad(root: Path, actions=(1, 8, 27), subjects=(1, 2), trials=(1, 2, 3, 4),
                   absent=("a8_s1_t4",), rgb: bool = False) -> Path:
    """``Inertial/ Skeleton/ Depth/ [RGB/]`` with ``a{A}_s{S}_t{T}_<modality>.mat`` (MATLAB v5, one
    variable each; depth compressed), ``Skeleton/Skeleton_joint_order.txt``, and the ``absent``
    sequences missing from every modality, as in the real release."""
    rng = np.random.default_rng(0)
    for folder in ("Inertial", "Skeleton", "Depth") + (("RGB",) if rgb else ()):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "Skeleton/Skeleton_joint_order.txt").write_text("1. head\n2. shoulder_center\n")
    for a in actions:
        for s in subjects:
            for t in trials:
                name = f"a{a}_s{s}_t{t}"
                if name in absent:
                    continue
                frames = int(rng.integers(8, 12))
                scipy.io.savemat(root / f"Inertial/{name}_inertial.mat", {"d_iner": rng.normal(size=(3 * frames, 6))})
                scipy.io.savemat(root / f"Skeleton/{name}_skeleton.mat", {"d_skel": rng.normal(size=(20, 3, frames))})
                scipy.io.savemat(root / f"Depth/{name}_depth.mat",
                                 {"d_depth": rng.integers(0, 3000, size=(24, 32, frames)).astype(np.uint16)},
                                 do_compression=True)
                if rgb:
                    tiny_avi(root / f"RGB/{name}_color.avi")
    return root


UCSD_CHANNELS = {"mocap": 60, "emg": 8, "imu": 10}


def ucsd_csv(path: Path, channels: int, rows: int = 10, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.column_stack([np.arange(rows) / 50.0, np.random.default_rng(seed).normal(size=(rows, channels))])
    header = "time," + ",".join(f"c{i}" for i in range(channels))
    np.savetxt(path, data, delimiter=",", header=header, comments="", fmt="%.5f")
    return path


def write_ucsd_mit(root: Path, subjects=(1, 2, 3), activities=("attach", "walk", "palmar_grasp"), trials=(1, 2)) -> Path:
    """mumu's UCSD-MIT layout: ``subject{S}/<activity>/trial{T}/{mocap,emg,imu}.csv`` with a header."""
    for s in subjects:
        for activity in activities:
            for t in trials:
                for i, (modality, channels) in enumerate(UCSD_CHANNELS.items()):
                    ucsd_csv(root / f"subject{s}/{activity}/trial{t}/{modality}.csv", channels, seed=i)
    return root
