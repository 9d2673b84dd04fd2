"""Sensor parsing, the common time base and windows, on hand-made CSVs and on real UTD-MHAD files."""
from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest
import scipy.io

from pipeline.sensors import (SensorError, align_streams, cut_windows, read_mmact_csv, read_sensor,
                              read_time_csv, read_utd_inertial, read_utd_skeleton)


def write_mmact_csv(path, start: datetime, rate_hz: float, values: np.ndarray) -> None:
    """Headerless ``timestamp,x,y,z``; whole seconds without a fraction, like the release."""
    lines = []
    for i, row in enumerate(values):
        stamp = start + timedelta(milliseconds=round(1000 * i / rate_hz))
        text = stamp.strftime("%Y%m%d_%H:%M:%S") + (f".{stamp.microsecond // 1000:03d}" if stamp.microsecond else "")
        lines.append(",".join([text] + [f"{v:.4f}" for v in row]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


T0 = datetime(2018, 10, 16, 13, 39, 52)


def test_mmact_csv_is_sorted_deduplicated_and_counts_missing_rows(tmp_path):
    values = np.arange(30, dtype=np.float32).reshape(10, 3)
    write_mmact_csv(tmp_path / "a.csv", T0, 100, values)
    lines = (tmp_path / "a.csv").read_text().splitlines()
    # shuffle, duplicate row 3, drop row 5 (a gap), add a garbage row
    shuffled = [lines[i] for i in (9, 0, 3, 2, 1, 3, 4, 6, 7, 8)] + ["not,a,row"]
    (tmp_path / "b.csv").write_text("\n".join(shuffled) + "\n")
    stream = read_mmact_csv(tmp_path / "b.csv", rate_hz=100)
    np.testing.assert_allclose(np.diff(stream.times), [0.01] * 4 + [0.02] + [0.01] * 3, atol=1e-4)
    np.testing.assert_array_equal(stream.values[:, 0], [0, 3, 6, 9, 12, 18, 21, 24, 27])
    assert stream.missing_fraction == pytest.approx(0.1)  # 0.09 s at 100 Hz: 10 expected, 9 valid
    # a second row at a time already read, with other values, is dropped (the first kept); without a rate, an
    # unparseable row counts as missing
    stamp = lines[1].split(",")[0]
    (tmp_path / "c.csv").write_text("\n".join([lines[0], lines[1], f"{stamp},99,99,99", lines[2], "not,a,row"]) + "\n")
    stream = read_mmact_csv(tmp_path / "c.csv", rate_hz=None)
    assert stream.values[:, 0].tolist() == [0, 3, 6]
    assert stream.missing_fraction == pytest.approx(0.25)  # 3 usable of 4 distinct rows


def test_empty_csv_and_missing_file_are_errors_with_reasons(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SensorError, match="empty CSV"):
        read_mmact_csv(tmp_path / "empty.csv", 50)
    with pytest.raises(SensorError, match="file not found"):
        read_sensor("mmact", "gyro", tmp_path / "nope.csv", 3, 50)


def test_streams_with_clocks_are_cut_to_their_overlap_and_resampled(tmp_path):
    t = np.arange(200) / 100  # 2 s at 100 Hz, x = time in seconds
    write_mmact_csv(tmp_path / "acc.csv", T0, 100, np.stack([t, t, t], 1))
    t50 = np.arange(50) / 50  # 1 s at 50 Hz starting 0.5 s later, x = time since T0
    write_mmact_csv(tmp_path / "gyro.csv", T0 + timedelta(seconds=0.5), 50, np.stack([t50 + 0.5] * 3, 1))
    streams = {"acc": read_mmact_csv(tmp_path / "acc.csv", 100), "gyro": read_mmact_csv(tmp_path / "gyro.csv", 50)}
    aligned = align_streams(streams, rate_hz=50)
    assert aligned["acc"].shape == aligned["gyro"].shape == (50, 3)  # overlap 0.5 .. 1.48 s at 50 Hz
    # Both streams encode absolute time, so on one time base they agree sample by sample.
    np.testing.assert_allclose(aligned["acc"], aligned["gyro"], atol=1e-3)
    np.testing.assert_allclose(aligned["acc"][0], 0.5, atol=1e-3)


def test_a_clips_step_count_does_not_depend_on_its_absolute_start_time(tmp_path):
    """Same 0.98 s clip at 100 Hz (99 rows), started at 200 different milliseconds: 50 steps at 50 Hz each."""
    counts = set()
    for ms in range(0, 1000, 5):
        write_mmact_csv(tmp_path / "acc.csv", T0 + timedelta(milliseconds=ms), 100, np.zeros((99, 3)))
        counts.add(len(align_streams({"acc": read_mmact_csv(tmp_path / "acc.csv", 100)}, rate_hz=50)["acc"]))
    assert counts == {50}


def test_orientation_angles_are_interpolated_the_short_way_round(tmp_path):
    azimuth = np.array([350.0, 358.0, 6.0, 14.0])  # turning through north, 8 degrees per 20 ms
    roll = np.array([-170.0, -178.0, 174.0, 166.0])  # the same through +-180
    write_mmact_csv(tmp_path / "o.csv", T0, 50, np.stack([azimuth, np.zeros(4), roll], 1))
    stream = read_sensor("mmact", "orientation", tmp_path / "o.csv", 3, 50)
    aligned = align_streams({"orientation": stream}, rate_hz=100)["orientation"]
    np.testing.assert_allclose(aligned[:, 0], [350, 354, 358, 2, 6, 10, 14], atol=1e-3)
    np.testing.assert_allclose(aligned[:, 2], [-170, -174, -178, 178, 174, 170, 166], atol=1e-3)
    write_mmact_csv(tmp_path / "acc.csv", T0, 50, np.stack([azimuth] * 3, 1))  # not angles: a plain line
    acc = align_streams({"acc": read_sensor("mmact", "acc_phone", tmp_path / "acc.csv", 3, 50)}, rate_hz=100)["acc"]
    assert acc[3, 0] == pytest.approx(182.0)


def test_nan_values_are_bridged_and_all_nan_is_an_error(tmp_path):
    values = np.arange(30, dtype=np.float32).reshape(10, 3)
    values[4, 1] = np.nan
    write_mmact_csv(tmp_path / "a.csv", T0, 50, values)
    stream = read_mmact_csv(tmp_path / "a.csv", 50)
    assert stream.missing_fraction == pytest.approx(0.1)
    aligned = align_streams({"a": stream}, 50)["a"]
    assert aligned[4, 1] == pytest.approx(13.0)  # linear between 10 and 16
    write_mmact_csv(tmp_path / "n.csv", T0, 50, np.full((5, 3), np.nan))
    with pytest.raises(SensorError, match="no finite value"):
        align_streams({"n": read_mmact_csv(tmp_path / "n.csv", 50)}, 50)


def test_windows_of_five_with_stride_five():
    series = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
    windows = cut_windows(series, 5, 5)
    assert windows.shape == (4, 5, 2)  # 20 of 23 steps; the remainder is dropped
    np.testing.assert_array_equal(windows[2], series[10:15])
    assert cut_windows(series, 5, 2).shape == (10, 5, 2)
    with pytest.raises(SensorError, match="shorter than one window"):
        cut_windows(series[:4], 5, 5)


def test_ucsd_mit_csv_layout(tmp_path):
    rows = ["time,emg1,emg2"] + [f"{i / 200:.3f},{i},{-i}" for i in (3, 1, 2, 0)]
    (tmp_path / "emg.csv").write_text("\n".join(rows) + "\n")
    stream = read_time_csv(tmp_path / "emg.csv", channels=2, rate_hz=200)
    np.testing.assert_array_equal(stream.values[:, 0], [0, 1, 2, 3])
    with pytest.raises(SensorError, match="expected 3"):
        read_time_csv(tmp_path / "emg.csv", channels=3, rate_hz=200)


def test_a_stray_quote_spoils_its_row_only_and_a_zero_filled_tail_is_a_reason_not_a_crash(tmp_path):
    write_mmact_csv(tmp_path / "acc.csv", T0, 100, np.ones((40, 3)))
    lines = (tmp_path / "acc.csv").read_text().splitlines()
    lines[25] += ',"'  # csv's quoting would read every later row into this one field
    (tmp_path / "acc.csv").write_text("\n".join(lines) + "\n")
    stream = read_sensor("mmact", "acc", tmp_path / "acc.csv", 3, 100)
    assert len(stream.values) == 40 and stream.missing_fraction == pytest.approx(1 / 40)
    with open(tmp_path / "acc.csv", "ab") as f:
        f.write(bytes(300_000))  # what a crash can leave at the end of a file being written
    with pytest.raises(SensorError, match=r"unreadable file \(field larger than field limit"):
        read_sensor("mmact", "acc", tmp_path / "acc.csv", 3, 100)
    scipy.io.savemat(tmp_path / "a1_s1_t1_inertial.mat", {"d_iner": np.array([np.ones(3), np.ones(5)], dtype=object)})
    with pytest.raises(SensorError, match="d_iner has shape|unreadable file"):
        read_sensor("utd_mhad", "inertial", tmp_path / "a1_s1_t1_inertial.mat", 6, 50)


def test_a_row_with_text_or_undecodable_bytes_is_a_missing_row_not_a_failed_file(tmp_path):
    rows = [b"time,emg1,emg2"] + [f"{i / 200:.3f},{i},{-i}".encode() for i in range(8)]
    rows[3], rows[5] = b"0.010,n/a,-2", b"0.020,4,-4\xff"  # samples 2 and 4: text, and a byte that is not UTF-8
    (tmp_path / "emg.csv").write_bytes(b"\n".join(rows) + b"\n")
    stream = read_sensor("ucsd_mit", "emg", tmp_path / "emg.csv", 2, 200)
    assert len(stream.values) == 8 and stream.missing_fraction == pytest.approx(2 / 8)
    np.testing.assert_array_equal(stream.values[[0, 1, 3, 5], 0], [0, 1, 3, 5])
    write_mmact_csv(tmp_path / "acc.csv", T0, 100, np.ones((8, 3)))
    lines = (tmp_path / "acc.csv").read_bytes().splitlines()
    lines[4] = lines[4][:-1] + b"\xff"
    (tmp_path / "acc.csv").write_bytes(b"\n".join(lines) + b"\n")
    stream = read_sensor("mmact", "acc", tmp_path / "acc.csv", 3, 100)
    assert len(stream.values) == 8 and stream.missing_fraction == pytest.approx(1 / 8)


def test_utd_mhad_inertial_and_skeleton_files_like_the_release_on_one_time_base(tmp_path):
    """The real-copy checks below, on .mat files written like the release (so they run without the data)."""
    rng = np.random.default_rng(0)
    raw_iner, raw_skel = rng.normal(size=(100, 6)), rng.normal(size=(20, 3, 38))  # 2 s at 50 Hz; ~19 fps
    scipy.io.savemat(tmp_path / "a1_s1_t1_inertial.mat", {"d_iner": raw_iner})
    scipy.io.savemat(tmp_path / "a1_s1_t1_skeleton.mat", {"d_skel": raw_skel})
    inertial = read_sensor("utd_mhad", "inertial", tmp_path / "a1_s1_t1_inertial.mat", 6, 50)
    skeleton = read_sensor("utd_mhad", "skeleton", tmp_path / "a1_s1_t1_skeleton.mat", 60, None)
    np.testing.assert_allclose(inertial.values, raw_iner, rtol=1e-6)
    np.testing.assert_allclose(skeleton.values[7].reshape(20, 3), raw_skel[:, :, 7], rtol=1e-6)  # joint-major
    aligned = align_streams({"inertial": inertial, "skeleton": skeleton}, rate_hz=50)
    assert aligned["inertial"].shape == (100, 6) and aligned["skeleton"].shape == (100, 60)  # the inertial clock
    np.testing.assert_allclose(aligned["skeleton"][[0, -1]], skeleton.values[[0, -1]], rtol=1e-6)  # stretched over it
    assert len(align_streams({"skeleton": skeleton}, rate_hz=50)["skeleton"]) == int(37 / 19 * 50) + 1  # alone: ~19 Hz
    scipy.io.savemat(tmp_path / "bad_skeleton.mat", {"d_skel": raw_skel[:, :2]})
    with pytest.raises(SensorError, match=r"d_skel has shape \(20, 2, 38\), expected \(20, 3, T\)"):
        read_sensor("utd_mhad", "skeleton", tmp_path / "bad_skeleton.mat", 60, None)


def test_real_utd_mhad_inertial_and_skeleton_on_one_time_base(utd_root):
    inertial = read_utd_inertial(utd_root / "Inertial" / "a1_s1_t1_inertial.mat")
    skeleton = read_utd_skeleton(utd_root / "Skeleton" / "a1_s1_t1_skeleton.mat")
    assert inertial.values.shape == (160, 6) and skeleton.values.shape == (48, 60)
    raw_skel = scipy.io.loadmat(utd_root / "Skeleton" / "a1_s1_t1_skeleton.mat")["d_skel"]  # (20, 3, T)
    np.testing.assert_allclose(skeleton.values[7].reshape(20, 3), raw_skel[:, :, 7], rtol=1e-6)
    aligned = align_streams({"inertial": inertial, "skeleton": skeleton}, rate_hz=50)
    # Normalised time: the skeleton is stretched over the inertial clip (160 samples at 50 Hz).
    assert aligned["inertial"].shape == (160, 6) and aligned["skeleton"].shape == (160, 60)
    np.testing.assert_allclose(aligned["inertial"], inertial.values, rtol=1e-6)
    np.testing.assert_allclose(aligned["skeleton"][0], skeleton.values[0], rtol=1e-6)
    np.testing.assert_allclose(aligned["skeleton"][-1], skeleton.values[-1], rtol=1e-6)
    windows = cut_windows(aligned["skeleton"], 5, 5)
    assert windows.shape == (32, 5, 60) and np.isfinite(windows).all()
    # Without the inertial stream the skeleton's effective ~19 Hz sets the clip length.
    alone = align_streams({"skeleton": skeleton}, rate_hz=50)["skeleton"]
    assert len(alone) == int(47 / 19 * 50) + 1


def test_real_utd_mhad_length_ratio_varies_but_windows_follow_the_inertial_clock(utd_root):
    for sid in ("a27_s8_t3", "a8_s1_t3"):  # (255, 6) / (20, 3, 95) and (175, 6) / (20, 3, 67)
        streams = {"inertial": read_sensor("utd_mhad", "inertial", utd_root / "Inertial" / f"{sid}_inertial.mat", 6, 50),
                   "skeleton": read_sensor("utd_mhad", "skeleton", utd_root / "Skeleton" / f"{sid}_skeleton.mat", 60, None)}
        aligned = align_streams(streams, 50)
        n = len(streams["inertial"].values)
        assert {k: v.shape[0] for k, v in aligned.items()} == {"inertial": n, "skeleton": n}
        assert cut_windows(aligned["inertial"], 5, 5).shape == (n // 5, 5, 6)


def test_a_stream_faster_than_the_grid_folds_no_fast_content_into_it(tmp_path):
    """MMAct's accelerometers run at 100 Hz, the grid at 50: a 30 Hz vibration must not come out as a 20 Hz
    movement of full amplitude (it did), while a 5 Hz movement keeps its shape."""
    t = np.arange(1000) / 100.0  # 10 s at 100 Hz
    for tone_hz, kept in ((5.0, (0.95, 1.05)), (30.0, (0.0, 0.06))):
        wave = np.sin(2 * np.pi * tone_hz * t)
        write_mmact_csv(tmp_path / "acc.csv", T0, 100, np.stack([wave] * 3, 1))
        aligned = align_streams({"acc": read_sensor("mmact", "acc_phone", tmp_path / "acc.csv", 3, 100)}, 50)["acc"]
        middle = aligned[50:-50, 0]  # away from the ends, where a filter has less to go on
        amplitude = np.sqrt(2) * middle.std()
        assert kept[0] <= amplitude <= kept[1], (tone_hz, amplitude)
    write_mmact_csv(tmp_path / "gyro.csv", T0, 50, np.stack([np.sin(2 * np.pi * 5 * t[:500])] * 3, 1))
    gyro = read_sensor("mmact", "gyro", tmp_path / "gyro.csv", 3, 50)  # at the grid's rate: untouched
    np.testing.assert_allclose(align_streams({"gyro": gyro}, 50)["gyro"], gyro.values, atol=1e-4)


def test_mmact_clock_times_do_not_depend_on_the_machines_time_zone(tmp_path, monkeypatch):
    """A clip recorded across a daylight-saving change of the machine's zone (Berlin, 2018-10-28 03:00) read as
    local time had an hour's jump between two readings 0.1 s apart."""
    import time

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        before_jump = datetime(2018, 10, 28, 2, 59, 59, 900000)
        write_mmact_csv(tmp_path / "a.csv", before_jump, 10, np.zeros((3, 3)))
        stream = read_mmact_csv(tmp_path / "a.csv", 10)
        np.testing.assert_allclose(np.diff(stream.times), [0.1, 0.1], atol=1e-6)
    finally:
        monkeypatch.undo()
        time.tzset()
