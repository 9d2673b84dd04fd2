"""The demo dataset: MMAct layout, real decodable H.264, deterministic, and a task that needs fusion."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from pipeline.demo import DEMO_ACTIVITIES, GROUP_LOOKS, SENSOR_RATES, write_demo_dataset
from pipeline.errors import MumuError
from pipeline.tables import load_table

SMALL = dict(n_subjects=2, n_sessions=2, n_frames=12, frame_size=32)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return write_demo_dataset(tmp_path_factory.mktemp("demo"), seed=3, **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_mmact_trimmed_with_its_quirks(demo):
    videos = sorted(p.relative_to(demo / "video").as_posix() for p in (demo / "video").rglob("*.mp4"))
    assert len(videos) == 2 * 2 * 6 * 2  # subjects x sessions x activities x views
    assert "subject1/cam1/scene1/session1/Carrying_light.mp4" in videos  # MMAct's capital C
    assert "subject2/cam2/scene3/session2/drinking.mp4" in videos  # desk activities in scene 3
    for sensor in SENSOR_RATES:
        csvs = list((demo / "sensors" / f"{sensor}_clip").rglob("*.csv"))
        assert len(csvs) == 2 * 2 * 6
    assert (demo / "sensors/gyro_clip/subject1/scene1/session1/Carrying_light.csv").is_file()


def test_sensor_csv_is_mmact_format_at_each_rate(demo):
    for sensor, rate in SENSOR_RATES.items():
        lines = (demo / f"sensors/{sensor}_clip/subject2/scene1/session1/carrying_heavy.csv").read_text().splitlines()
        assert len(lines) == round(12 / 15 * rate)  # clip duration x rate
        stamps = []
        for line in lines:
            stamp, *xyz = line.split(",")
            assert len(xyz) == 3 and all(np.isfinite(float(v)) for v in xyz)
            fmt = "%Y%m%d_%H:%M:%S.%f" if "." in stamp else "%Y%m%d_%H:%M:%S"  # whole seconds lack the fraction
            stamps.append(datetime.strptime(stamp, fmt))
        steps = np.diff([s.timestamp() for s in stamps])
        assert np.allclose(steps, 1 / rate, atol=1.5e-3)


def test_same_seed_same_bytes_other_seed_other_data(demo, tmp_path):
    again = write_demo_dataset(tmp_path / "again", seed=3, **SMALL)
    assert _files(again) == _files(demo)
    other = write_demo_dataset(tmp_path / "other", seed=4, **SMALL)
    name = "sensors/acc_watch_clip/subject2/scene1/session1/carrying_heavy.csv"
    assert (other / name).read_bytes() != (demo / name).read_bytes()


def test_videos_decode_with_decord_to_the_expected_frames(demo):
    import decord  # pinned in requirements.txt: a broken install fails here, it is not skipped
    reader = decord.VideoReader(str(demo / "video/subject2/cam2/scene1/session2/using_phone.mp4"))
    assert len(reader) == 12
    assert reader.get_batch(list(range(12))).asnumpy().shape == (12, 32, 32, 3)
    assert reader.get_avg_fps() == pytest.approx(15)


def _shape_colour(video: Path) -> np.ndarray:
    """Mean colour of the most saturated pixels: the moving shape's colour."""
    import decord

    frames = decord.VideoReader(str(video)).get_batch([0, 5, 10]).asnumpy().reshape(-1, 3).astype(float)
    saturation = frames.max(1) - frames.min(1)
    return frames[saturation > 80].mean(0)


def test_group_is_visible_on_camera(demo):
    for activity, (group, scene, _) in DEMO_ACTIVITIES.items():
        colour = _shape_colour(demo / f"video/subject2/cam1/scene{scene}/session1/{activity}.mp4")
        expected = np.array(GROUP_LOOKS[group][0], dtype=float)
        assert np.abs(colour - expected).max() < 40, (activity, colour)


def _dominant_frequency(csv: Path, rate: float) -> float:
    z = np.array([float(line.split(",")[3]) for line in csv.read_text().splitlines()])
    spectrum = np.abs(np.fft.rfft(z - z.mean(), n=4096))
    return float(np.fft.rfftfreq(4096, 1 / rate)[spectrum.argmax()])


def test_activities_inside_a_group_differ_in_the_sensors(tmp_path):
    # Longer clips so that the oscillation frequency is measurable.
    root = write_demo_dataset(tmp_path, seed=0, n_subjects=3, n_sessions=1, n_frames=60, frame_size=16)
    for subject in (1, 2, 3):
        for slow, fast in [("carrying_light", "carrying_heavy"), ("using_phone", "talking_on_phone"), ("using_pc", "drinking")]:
            scene = DEMO_ACTIVITIES[slow][1]
            folder = root / f"sensors/acc_watch_clip/subject{subject}/scene{scene}/session1"
            slow_csv = next(folder.glob(f"[{slow[0]}{slow[0].upper()}]{slow[1:]}.csv"))
            assert _dominant_frequency(folder / f"{fast}.csv", 100) > 1.5 * _dominant_frequency(slow_csv, 100)


def test_demo_table_matches_the_generator():
    table = load_table("demo")
    assert table.activity_names == list(DEMO_ACTIVITIES)
    for a in table.activities:
        assert a.group == DEMO_ACTIVITIES[a.activity][0]


def test_other_settings_on_the_same_folder_are_refused(demo):
    with pytest.raises(MumuError, match="other settings"):
        write_demo_dataset(demo, seed=3, n_subjects=3, n_sessions=2, n_frames=12, frame_size=32)


def test_a_folder_with_other_files_is_refused_and_left_as_it_was(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(MumuError, match="holds other files and no demo dataset"):
        write_demo_dataset(tmp_path, n_subjects=1, n_sessions=1, n_frames=2, frame_size=16)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_an_interrupted_run_is_finished_by_rerunning(demo, tmp_path):
    out = tmp_path / "demo"
    write_demo_dataset(out, seed=3, **SMALL)
    for victim in list(out.rglob("*.mp4"))[::3] + list(out.rglob("*.csv"))[::5]:
        victim.unlink()  # as if the run had been killed before writing these
    write_demo_dataset(out, seed=3, **SMALL)
    assert _files(out) == _files(demo)


def test_a_run_killed_while_writing_a_video_is_finished_by_rerunning(demo, tmp_path, monkeypatch):
    """A video half-written when the run is killed must not be kept as done by the rerun."""
    import av

    real, frames = av.VideoFrame.from_ndarray, []

    def killed_on_the_30th_frame(*args, **kwargs):
        frames.append(1)
        if len(frames) == 30:  # the third video, mid-way
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", killed_on_the_30th_frame)
    with pytest.raises(KeyboardInterrupt):
        write_demo_dataset(tmp_path / "demo", seed=3, **SMALL)
    monkeypatch.undo()
    write_demo_dataset(tmp_path / "demo", seed=3, **SMALL)
    assert _files(tmp_path / "demo") == _files(demo)


def test_a_run_killed_while_writing_its_settings_is_finished_by_rerunning(demo, tmp_path):
    """A kill before demo.json was in place left its temporary alone in the new folder, which the rerun took for
    another dataset's files: it refused the folder for good instead of finishing the dataset."""
    from tests.test_cli import run_cli_killed_at

    out = tmp_path / "demo"
    run_cli_killed_at("demo.json", "demo-data", "--out", str(out), "--seed", "3", "--subjects", "2", "--sessions", "2",
                      "--frames", "12", "--frame-size", "32")
    assert not (out / "demo.json").exists()
    write_demo_dataset(out, seed=3, **SMALL)
    assert _files(out) == _files(demo)  # the temporary included


def test_cli_writes_the_demo(tmp_path, repo_root):
    result = subprocess.run(
        [sys.executable, str(repo_root / "cli.py"), "demo-data", "--out", str(tmp_path / "d"), "--subjects", "1",
         "--sessions", "1", "--frames", "6", "--frame-size", "16"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "6 samples" in result.stdout
    assert len(list((tmp_path / "d" / "video").rglob("*.mp4"))) == 12
