"""A small synthetic dataset in MMAct's trimmed layout, built so that the task needs fusion.

Design (documented in docs/datasets.md):
- 6 activities in 3 groups (labels in ``pipeline/tables/demo.csv``). The **group** is visible on
  camera: each group has its own coloured shape and motion. The two activities of a group look
  **identical** on camera (their videos come from the same distribution) and differ only in the
  sensors, like the paper's carry-light vs carry-heavy.
- The sensors carry the **variant** (0 or 1) inside a group and nothing about the group: slow,
  small oscillations vs fast, large ones (acc_phone, acc_watch, gyro) and a low vs high phone pitch
  (orientation). So video alone tops out near 1/2, sensors alone near 1/3, and fusion near 1.
- Per-subject variation (speed, amplitude, sensor mounting, background, object size) and noise
  keep it from being trivial.

Layout written under ``out_dir`` (the MMAct adapter reads it as an MMAct root):
    video/subject{N}/cam{C}/scene{S}/session{K}/<activity>.mp4        H.264, ``fps`` frames/s
    sensors/<sensor>_clip/subject{N}/scene{S}/session{K}/<activity>.csv   headerless timestamp,x,y,z
MMAct quirks reproduced: subject 1 / session 1's carrying_light is stored as ``Carrying_light``
(capital C, all views and sensors), and whole-second timestamps have no fraction.

Every file depends only on (seed, subject, session, activity, view/sensor), so the output is
deterministic, and a killed run resumes by skipping files that are already complete (each file is
written to a temporary name and renamed).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from pipeline.errors import MumuError
from pipeline.files import replaced_whole, temporary, write_json, write_text
from pipeline.modalities import DATASET_MODALITIES

# activity -> (group, scene, sensor variant). Scene 3 is MMAct's desk scene.
DEMO_ACTIVITIES: dict[str, tuple[str, int, int]] = {
    "carrying_light": ("complex", 1, 0),
    "carrying_heavy": ("complex", 1, 1),
    "using_phone": ("simple", 1, 0),
    "talking_on_phone": ("simple", 1, 1),
    "using_pc": ("desk", 3, 0),
    "drinking": ("desk", 3, 1),
}
# group -> (RGB colour of the moving shape, shape, motion)
GROUP_LOOKS: dict[str, tuple[tuple[int, int, int], str, str]] = {
    "complex": ((220, 40, 40), "square", "horizontal"),
    "simple": ((40, 200, 60), "disc", "orbit"),
    "desk": ((50, 80, 230), "bar", "vertical"),
}
# sensor -> rate Hz (MMAct's)
SENSOR_RATES = {s.name: s.rate_hz for s in DATASET_MODALITIES["demo"] if not s.visual}
# variant -> (oscillation frequency Hz, amplitude scale, phone pitch in degrees)
VARIANTS = {0: (1.2, 1.0, 20.0), 1: (2.4, 2.0, 60.0)}
QUIRK_CAPITALISED = ("carrying_light", "Carrying_light")  # applied to subject 1, session 1
_T0 = datetime(2018, 10, 16, 13, 0, 0)  # recording day, local time like the real release


@dataclass(frozen=True)
class DemoConfig:
    seed: int = 0
    n_subjects: int = 6
    n_sessions: int = 2
    n_frames: int = 36
    fps: int = 15
    frame_size: int = 112
    views: tuple[str, ...] = ("cam1", "cam2")


def write_demo_dataset(
    out_dir: str | Path,
    seed: int = 0,
    n_subjects: int = 6,
    n_sessions: int = 2,
    n_frames: int = 36,
    fps: int = 15,
    frame_size: int = 112,
    views: tuple[str, ...] = ("cam1", "cam2"),
    progress: bool = False,
) -> Path:
    """Write (or finish writing) the demo dataset under ``out_dir`` and return it.

    ``out_dir/demo.json`` records the settings; rerunning with other settings on the same folder
    raises MumuError instead of mixing two datasets.
    """
    config = DemoConfig(seed, n_subjects, n_sessions, n_frames, fps, frame_size, tuple(views))
    if frame_size % 2 or frame_size < 16:
        raise MumuError(f"demo frame size must be even and >= 16, got {frame_size}")
    if n_subjects < 1 or n_sessions < 1 or n_frames < 1 or not views:
        raise MumuError("demo needs at least one subject, session, frame and view")
    out_dir, settings = Path(out_dir), Path(out_dir) / "demo.json"
    # the temporary of demo.json is ours: a run killed while writing it leaves it alone there
    if out_dir.is_dir() and any(p != temporary(settings) for p in out_dir.iterdir()) and not settings.exists():
        raise MumuError(f"{out_dir} holds other files and no demo dataset; choose an empty or new --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_or_write_settings(settings, config)

    jobs = [
        (subject, session, activity)
        for subject in range(1, n_subjects + 1)
        for session in range(1, n_sessions + 1)
        for activity in DEMO_ACTIVITIES
    ]
    if progress:
        from tqdm import tqdm

        jobs = tqdm(jobs, desc="demo samples", unit="sample")
    for subject, session, activity in jobs:
        _write_sample(out_dir, config, subject, session, activity)
    return out_dir


def _check_or_write_settings(path: Path, config: DemoConfig) -> None:
    wanted = json.loads(json.dumps(asdict(config)))  # tuples -> lists, as they come back from disk
    if path.exists():
        found = json.loads(path.read_text())
        if found != wanted:
            raise MumuError(
                f"{path.parent} already holds a demo dataset written with other settings ({found}); "
                "choose another --out or delete the folder"
            )
        return
    write_json(path, wanted)


def _file_stem(subject: int, session: int, activity: str) -> str:
    if (subject, session, activity) == (1, 1, QUIRK_CAPITALISED[0]):
        return QUIRK_CAPITALISED[1]
    return activity


def _rng(config: DemoConfig, *key: int) -> np.random.Generator:
    """An independent generator per file: output does not depend on the order files are written."""
    return np.random.default_rng(np.random.SeedSequence([config.seed, *key]))


def _write_sample(out_dir: Path, config: DemoConfig, subject: int, session: int, activity: str) -> None:
    group, scene, variant = DEMO_ACTIVITIES[activity]
    activity_index = list(DEMO_ACTIVITIES).index(activity)
    stem = _file_stem(subject, session, activity)
    where = f"subject{subject}/{{cam}}scene{scene}/session{session}/{stem}"
    for view_index, view in enumerate(config.views):
        path = out_dir / "video" / (where.format(cam=f"{view}/") + ".mp4")
        if not path.exists():
            # The video draws on (subject, session, activity, view) only for randomness; its look
            # depends on the group, never on the variant: in-group activities are indistinguishable.
            frames = render_video(group, config, subject, _rng(config, 1, subject, session, activity_index, view_index), view_index)
            _write_mp4(path, frames, config.fps)
    start = _T0 + timedelta(seconds=3600 * subject + 600 * session + 30 * activity_index)
    for sensor_index, sensor in enumerate(SENSOR_RATES):
        path = out_dir / "sensors" / f"{sensor}_clip" / (where.format(cam="") + ".csv")
        if not path.exists():
            rng = _rng(config, 2, subject, session, activity_index, sensor_index)
            values = sensor_signal(sensor, variant, config, subject, rng)  # (T, 3)
            t0 = start + timedelta(milliseconds=int(rng.integers(0, 40)))  # streams start a little apart
            _write_sensor_csv(path, t0, SENSOR_RATES[sensor], values)


# ----------------------------------------------------------------------------------- video

def render_video(group: str, config: DemoConfig, subject: int, rng: np.random.Generator, view_index: int) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 of the group's shape moving over a subject-tinted background."""
    size, T = config.frame_size, config.n_frames
    subject_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0, subject]))
    background = subject_rng.uniform(60, 130) + subject_rng.uniform(-15, 15, size=3)  # per subject
    background = background * (1.0 - 0.15 * view_index)  # the second camera sees a darker room
    radius = size * subject_rng.uniform(0.09, 0.14)  # per-subject object size
    colour, shape, motion = GROUP_LOOKS[group]
    speed = rng.uniform(0.8, 1.2)
    phase = rng.uniform(0, 2 * np.pi)
    centre = size / 2 + rng.uniform(-0.05, 0.05, size=2) * size

    t = np.arange(T) / T  # clip time in [0, 1)
    if motion == "horizontal":  # walks across the room, bobbing slightly
        x = size * (0.2 + 0.6 * ((t * speed + phase / (2 * np.pi)) % 1.0))
        y = centre[1] + 0.04 * size * np.sin(2 * np.pi * 3 * t + phase)
    elif motion == "orbit":  # small circles around a fixed spot
        x = centre[0] + 0.22 * size * np.cos(2 * np.pi * speed * t + phase)
        y = centre[1] + 0.22 * size * np.sin(2 * np.pi * speed * t + phase)
    else:  # "vertical": up and down at a desk
        x = centre[0] + 0.03 * size * np.sin(2 * np.pi * t + phase)
        y = size * (0.5 + 0.25 * np.sin(2 * np.pi * 1.5 * speed * t + phase))
    if view_index % 2 == 1:  # the second camera faces the scene from the other side
        x = size - x

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx[None] - x[:, None, None], yy[None] - y[:, None, None]  # (T, H, W)
    if shape == "square":
        mask = (np.abs(dx) < radius) & (np.abs(dy) < radius)
    elif shape == "disc":
        mask = dx**2 + dy**2 < radius**2
    else:  # bar: wide and flat
        mask = (np.abs(dx) < 1.8 * radius) & (np.abs(dy) < 0.5 * radius)
    frames = np.where(mask[..., None], np.asarray(colour, dtype=np.float32), background.astype(np.float32))
    frames += rng.normal(0, 6, size=frames.shape).astype(np.float32)  # sensor noise
    return np.clip(frames, 0, 255).astype(np.uint8)  # (T, H, W, 3)


def _write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    import av  # imported here: only the demo writer needs PyAV

    with replaced_whole(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        # One thread and fixed settings: the same frames always give the same bytes. x264's macroblock-tree
        # rate control did not (2-4 different encodings of one clip in 30 tries, on an AVX-512 machine).
        stream.codec_context.thread_count = 1
        stream.options = {"crf": "20", "preset": "veryfast", "threads": "1",
                          "x264-params": "threads=1:lookahead-threads=1:no-mbtree=1"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush


# --------------------------------------------------------------------------------- sensors

def sensor_signal(sensor: str, variant: int, config: DemoConfig, subject: int, rng: np.random.Generator) -> np.ndarray:
    """Values (T, 3) of one sensor over the clip: gravity/mounting + the variant's oscillation + noise."""
    rate = SENSOR_RATES[sensor]
    duration = config.n_frames / config.fps
    t = np.arange(int(round(duration * rate))) / rate  # (T,)
    frequency, amplitude, pitch = VARIANTS[variant]
    subject_rng = np.random.default_rng(np.random.SeedSequence([config.seed, 3, subject]))
    frequency *= subject_rng.uniform(0.85, 1.15)  # people move at their own pace ...
    amplitude *= subject_rng.uniform(0.8, 1.2)  # ... and with their own vigour
    tilt = subject_rng.normal(0, 0.15, size=3)  # how the phone sits in the pocket
    wave = np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi))  # (T,)

    if sensor in ("acc_phone", "acc_watch"):  # m/s^2: gravity + oscillation, mostly vertical
        gravity = 9.81 * (np.array([0.0, 0.0, 1.0]) + tilt)
        swing = np.array([0.3, 0.4, 1.0]) * (1.5 if sensor == "acc_watch" else 1.0)
        values = gravity + amplitude * wave[:, None] * swing + rng.normal(0, 0.3, size=(len(t), 3))
    elif sensor == "gyro":  # rad/s
        values = 0.5 * amplitude * wave[:, None] * np.array([1.0, 0.5, 0.2]) + rng.normal(0, 0.05, size=(len(t), 3))
    else:  # orientation: azimuth, pitch, roll in degrees
        pitch += subject_rng.normal(0, 8)
        azimuth = (rng.uniform(0, 360) + 5 * wave) % 360
        values = np.stack([azimuth, pitch + 3 * wave, 10 * tilt[0] + 2 * wave], axis=1)
        values += rng.normal(0, 2.0, size=values.shape)
    return values


def _write_sensor_csv(path: Path, t0: datetime, rate: float, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (x, y, z) in enumerate(values):
        stamp = t0 + timedelta(milliseconds=round(1000 * i / rate))
        text = stamp.strftime("%Y%m%d_%H:%M:%S")
        if stamp.microsecond:  # MMAct writes whole seconds without a fraction
            text += f".{stamp.microsecond // 1000:03d}"
        lines.append(f"{text},{x:.5f},{y:.5f},{z:.5f}\n")
    write_text(path, "".join(lines))
