"""Sensor streams: parse each dataset's files, put one sample's streams on a common time base,
cut them into windows.

A parsed stream is `SensorStream(values (T, C), times (T,) seconds or None, rate_hz)`.

Common time base (`align_streams`), the documented rule:
1. Streams with a clock (MMAct CSV timestamps, UCSD-MIT ``time`` column, UTD-MHAD inertial at its
   trusted 50 Hz) are cut to the interval all of them cover (the intersection).
2. Streams without a trustworthy clock (UTD-MHAD skeleton: nominally 30 fps, but measured
   ~19 fps against the 50 Hz inertial) are placed by **normalised time**: their first sample at
   the start of that interval, their last at its end (both cover the same action). If no stream
   has a clock, the interval is ``(T - 1) / rate_hz`` long from the stream's nominal rate.
3. Every stream is linearly interpolated onto one grid at ``rate_hz`` (params.yaml
   ``extract.sensor_rate_hz``) over that interval; MMAct's orientation angles (degrees) the short way round
   (358 -> 2 passes 0, not 180). A stream sampled faster than the grid (MMAct's 100 Hz accelerometers,
   UCSD-MIT's 200 Hz EMG, at the default 50 Hz) is first low-pass filtered below the grid's Nyquist
   frequency (`ANTI_ALIAS_CUTOFF`), so that faster content does not fold back into the grid's band (a 30 Hz
   tone read at 50 Hz would show as a 20 Hz one).

Missing values: rows that fail to parse and NaN/inf values are dropped per channel before interpolation
(so gaps are bridged linearly, however long: a sensor that samples more slowly than nominal is sparse,
not broken; each stream's share of absent samples is recorded as its `missing_fraction`); a channel
without a single finite value becomes zeros; a stream with no finite value at all, more than half of its
rows missing or unreadable (`MAX_UNREADABLE_FRACTION`), an empty file or one shorter than a window is an
error (`SensorError`) that the extractor records against that stream's file and treats as a missing
modality. A clocked stream whose file covers less than one window is refused before the interval is set,
so that it cannot shorten the others.
Windows (`cut_windows`): non-overlapping by default, window 5 / stride 5, trailing remainder dropped.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfiltfilt

# UTD-MHAD skeleton rate, used only when the sample has no inertial stream to stretch it over:
# the median inertial/skeleton length ratio over the release's sequences is 2.63 at 50 Hz -> ~19 Hz.
UTD_SKELETON_EFFECTIVE_HZ = 19.0
UTD_INERTIAL_HZ = 50.0
MMACT_TIME_FORMAT = "%Y%m%d_%H:%M:%S.%f"
# A stream with more of its rows unreadable or NaN than this is refused rather than mostly interpolated.
MAX_UNREADABLE_FRACTION = 0.5
# A stream sampled more than 10 % faster than the grid is low-pass filtered at this share of the grid's rate
# (4th-order Butterworth, run forward and back: 0.91 of the amplitude kept at 0.3 x rate, 0.04 at 0.6 x rate).
ANTI_ALIAS_CUTOFF = 0.4


class SensorError(Exception):
    """A sensor input that cannot be used; the message is the reason recorded in the cache."""


@dataclass
class SensorStream:
    values: np.ndarray  # (T, C) float32, NaN = missing
    times: np.ndarray | None  # (T,) seconds, increasing; None = place by normalised time
    rate_hz: float | None = None  # nominal rate (used when no stream of the sample has a clock)
    missing_fraction: float = 0.0  # share of expected samples absent or non-finite
    # angles in degrees (MMAct orientation), interpolated the short way round: each channel's range starts here
    angle_lows: tuple[float, ...] | None = None


# ---------------------------------------------------------------------------------------------
# parsers


def parse_mmact_time(text: str) -> float:
    """An MMAct timestamp (20181016_13:39:52.123, or whole seconds without the fraction) in seconds; ValueError
    when it is not one."""
    text = text.strip()
    if "." not in text:  # whole seconds are written without a fraction
        text += ".0"
    # read as UTC, whatever the machine's time zone: local time would put a daylight-saving jump inside a clip
    return datetime.strptime(text, MMACT_TIME_FORMAT).replace(tzinfo=timezone.utc).timestamp()


def read_mmact_csv(path: str | Path, rate_hz: float | None, channels: int = 3) -> SensorStream:
    """MMAct sensor CSV: no header, ``timestamp,x,y,z`` with timestamps like ``20181016_13:39:52.123``.

    Rows are sorted by time and duplicate timestamps dropped (first kept); a row whose timestamp does not parse
    counts as missing, and one whose values do not (text, too few or too many columns) keeps its time with
    missing values, so that the stream still spans the time its file covers. ``missing_fraction`` compares the
    rows with every value valid with ``duration * rate_hz + 1``.
    """
    times, rows, bad_rows = [], [], 0
    with open(path, newline="", encoding="utf-8", errors="replace") as f:  # a bad byte spoils its row only
        for record in csv.reader(f, quoting=csv.QUOTE_NONE):  # a stray quote must not swallow the rows after it
            if not record or not "".join(record).strip():
                continue
            try:
                t = parse_mmact_time(record[0])
            except ValueError:
                bad_rows += 1
                continue
            times.append(t)
            rows.append(_parse_values(record[1:], channels))
    if not rows:
        raise SensorError("empty CSV" if bad_rows == 0 else f"no parseable row in the CSV ({bad_rows} bad rows)")
    times = np.asarray(times, np.float64)
    order = np.argsort(times, kind="stable")
    times, values = times[order], np.asarray(rows, np.float32)[order]
    keep = np.concatenate([[True], np.diff(times) > 0])  # drop duplicated timestamps
    times, values = times[keep], values[keep]
    valid = int(np.isfinite(values).all(axis=1).sum())
    expected = len(times) + bad_rows
    if rate_hz and len(times) > 1:
        expected = max(expected, int(round((times[-1] - times[0]) * rate_hz)) + 1)
    return SensorStream(values, times, rate_hz, 1.0 - valid / expected)


def _parse_values(fields: list[str], channels: int) -> list[float]:
    """One row's values; all missing (NaN) when the row has another number of them or one is not a number."""
    try:
        values = [float(v) if v.strip() else np.nan for v in fields]
    except ValueError:
        return [np.nan] * channels
    return values if len(values) == channels else [np.nan] * channels


def _load_mat_variable(path: str | Path, name: str) -> np.ndarray:
    import scipy.io

    try:
        return np.asarray(scipy.io.loadmat(str(path))[name])
    except KeyError:
        raise SensorError(f"the .mat file has no variable {name!r}") from None
    except Exception as e:
        raise SensorError(f"cannot read the .mat file ({type(e).__name__}: {e})") from None


def read_utd_inertial(path: str | Path) -> SensorStream:
    """UTD-MHAD ``d_iner`` (T, 6): acc xyz (g), gyro xyz (deg/s) at 50 Hz -> values (T, 6)."""
    data = _load_mat_variable(path, "d_iner")
    if data.ndim != 2 or data.shape[1] != 6:
        raise SensorError(f"d_iner has shape {data.shape}, expected (T, 6)")
    times = np.arange(len(data)) / UTD_INERTIAL_HZ
    return SensorStream(data.astype(np.float32), times, UTD_INERTIAL_HZ, _nonfinite_fraction(data))


def read_utd_skeleton(path: str | Path) -> SensorStream:
    """UTD-MHAD ``d_skel`` (20, 3, T) metres -> values (T, 60), joint-major (joint0 xyz, joint1 xyz, ...).

    No clock: the Kinect rate does not match its nominal 30 fps, so it is aligned by normalised time.
    """
    data = _load_mat_variable(path, "d_skel")
    if data.ndim != 3 or data.shape[:2] != (20, 3):
        raise SensorError(f"d_skel has shape {data.shape}, expected (20, 3, T)")
    values = data.transpose(2, 0, 1).reshape(data.shape[2], 60)  # (T, 20, 3) -> (T, 60)
    return SensorStream(values.astype(np.float32), None, UTD_SKELETON_EFFECTIVE_HZ, _nonfinite_fraction(values))


def read_time_csv(path: str | Path, channels: int, rate_hz: float | None) -> SensorStream:
    """UCSD-MIT layout: CSV with a header row, a ``time`` column in seconds, then ``channels`` value
    columns in the modality's (joint, attribute) order (mocap 20x3, emg 8, imu 10).

    A row without a numeric time is dropped; one whose values do not parse keeps its time with missing values
    (as in `read_mmact_csv`)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:  # a bad byte spoils its row only
        rows = [r for r in csv.reader(f, quoting=csv.QUOTE_NONE) if r and "".join(r).strip()]
    if len(rows) < 2:
        raise SensorError("empty CSV")
    header, body = [h.strip().lower() for h in rows[0]], rows[1:]
    if "time" not in header:
        raise SensorError(f"no 'time' column in the header ({', '.join(header[:5])}...)")
    t_col = header.index("time")
    value_cols = [i for i in range(len(header)) if i != t_col]
    if len(value_cols) != channels:
        raise SensorError(f"{len(value_cols)} value columns, expected {channels}")
    table = []
    for r in body:
        try:
            t = float(r[t_col])
        except (ValueError, IndexError):
            continue
        table.append([t] + _parse_values([r[i] if i < len(r) else "" for i in value_cols], channels))
    table = np.array(table, np.float64).reshape(-1, 1 + channels)
    table = table[np.isfinite(table[:, 0])]
    if not len(table):
        raise SensorError("no row with a time stamp")
    table = table[np.argsort(table[:, 0], kind="stable")]
    table = table[np.concatenate([[True], np.diff(table[:, 0]) > 0])]
    values = table[:, 1:].astype(np.float32)
    return SensorStream(values, table[:, 0], rate_hz, _nonfinite_fraction(values))


def _nonfinite_fraction(values: np.ndarray) -> float:
    return float(1.0 - np.isfinite(values).all(axis=1).mean()) if len(values) else 1.0


def read_sensor(dataset: str, modality: str, path: str | Path, channels: int, rate_hz: float | None) -> SensorStream:
    """Parse one sensor file of ``dataset``; raises SensorError with the reason."""
    path = Path(path)
    if not path.is_file():
        raise SensorError("file not found")
    if dataset not in ("mmact", "demo", "utd_mhad", "ucsd_mit"):
        raise SensorError(f"no sensor parser for dataset {dataset!r}")
    try:
        if dataset in ("mmact", "demo"):
            stream = read_mmact_csv(path, rate_hz, channels)
        elif dataset == "utd_mhad":
            stream = read_utd_skeleton(path) if modality == "skeleton" else read_utd_inertial(path)
        else:
            stream = read_time_csv(path, channels, rate_hz)
    except SensorError:
        raise
    except Exception as e:  # noqa: BLE001  anything else a damaged file makes the parsers raise is still the file's
        raise SensorError(f"unreadable file ({(str(e).splitlines() or [type(e).__name__])[0]})") from None
    if stream.values.shape[1] != channels:
        raise SensorError(f"{stream.values.shape[1]} channels, expected {channels}")
    if dataset in ("mmact", "demo") and modality == "orientation":  # Android: azimuth [0, 360), pitch and roll
        stream.angle_lows = (0.0, -180.0, -180.0)
    # refused here, so that the sample's other streams are aligned without it
    if not np.isfinite(stream.values).any():
        raise SensorError("the stream has no finite value")
    # Judged on the file's own rows, not on samples expected at the nominal rate: a sensor that samples more
    # slowly than nominal (real MMAct rates are partly estimated) is sparse, not broken.
    unreadable = 1.0 - float(np.isfinite(stream.values).all(axis=1).mean())
    if unreadable > MAX_UNREADABLE_FRACTION:
        raise SensorError(f"{100 * unreadable:.0f} % of the file's rows have missing or unreadable values (more "
                          f"than {100 * MAX_UNREADABLE_FRACTION:.0f} % would be bridged by interpolation)")
    return stream


# ---------------------------------------------------------------------------------------------
# common time base and windows


# Clock times carry float error (an absolute epoch time in float64 resolves ~2e-7 s), so a span within a
# thousandth of a step of a whole number of steps counts as that whole number.
STEP_TOLERANCE = 1e-3


def grid_steps(span_s: float, rate_hz: float) -> int:
    """Points of a grid at ``rate_hz`` in a span of ``span_s`` seconds, both ends included."""
    return int(np.floor(span_s * rate_hz + STEP_TOLERANCE)) + 1


def align_streams(streams: dict[str, SensorStream], rate_hz: float) -> dict[str, np.ndarray]:
    """One sample's streams -> {name: (T, C) float32} on one grid at ``rate_hz`` (rule in the module doc)."""
    if not streams:
        return {}
    clocked = [s for s in streams.values() if s.times is not None and len(s.times) > 0]
    if clocked:
        start = max(float(s.times[0]) for s in clocked)
        end = min(float(s.times[-1]) for s in clocked)
        if end < start:
            raise SensorError("the sensor streams do not overlap in time")
    else:
        start, end = 0.0, max((len(s.values) - 1) / (s.rate_hz or rate_hz) for s in streams.values())
    grid = start + np.arange(grid_steps(end - start, rate_hz)) / rate_hz  # (T,)
    aligned = {}
    for name, stream in streams.items():
        if stream.times is not None:
            times = stream.times
        else:  # normalised time: first sample at start, last at end
            times = np.linspace(start, end, len(stream.values)) if len(stream.values) > 1 else np.array([start])
        aligned[name] = _interpolate(times, stream.values, grid, stream.angle_lows, rate_hz)
    return aligned


def _interpolate(times: np.ndarray, values: np.ndarray, grid: np.ndarray,
                 angle_lows: tuple[float, ...] | None = None, rate_hz: float | None = None) -> np.ndarray:
    """Per-channel linear interpolation over finite samples: (T_in, C) -> (T_grid, C), each channel first
    band-limited to the grid's ``rate_hz`` where it is sampled faster (`_band_limited`).

    angle_lows: the channels are degrees that wrap (an azimuth from 358 to 2 passes 0, not 180): unwrapped before,
    and after wrapped into [low, low + 360) per channel."""
    if not np.isfinite(values).any():
        raise SensorError("the stream has no finite value")
    out = np.zeros((len(grid), values.shape[1]), np.float32)
    for c in range(values.shape[1]):
        ok = np.isfinite(values[:, c])
        if ok.any():
            channel = values[ok, c] if angle_lows is None else np.unwrap(values[ok, c], period=360.0)
            if rate_hz is not None:
                channel = _band_limited(times[ok], channel, rate_hz)
            out[:, c] = np.interp(grid, times[ok], channel)
            if angle_lows is not None:  # values already in range stay bit for bit as they were
                low, value = angle_lows[c], out[:, c]
                out[:, c] = np.where((value < low) | (value >= low + 360.0), np.mod(value - low, 360.0) + low, value)
    return out


def _band_limited(times: np.ndarray, channel: np.ndarray, rate_hz: float) -> np.ndarray:
    """``channel`` low-pass filtered at ``ANTI_ALIAS_CUTOFF * rate_hz`` when its median sample rate is more than
    10 % above ``rate_hz``; else as it is. Zero-phase, so the filtered stream keeps its timing."""
    if len(channel) < 3:
        return channel
    step = float(np.median(np.diff(times)))
    if not step > 0 or 1.0 / step <= 1.1 * rate_hz:
        return channel
    sampled_hz = 1.0 / step
    sos = butter(4, ANTI_ALIAS_CUTOFF * rate_hz, fs=sampled_hz, output="sos")
    return sosfiltfilt(sos, channel, padlen=min(3 * (2 * len(sos) + 1), len(channel) - 1))


def cut_windows(series: np.ndarray, window: int, stride: int) -> np.ndarray:
    """(T, C) -> (S, window, C), S = (T - window) // stride + 1; the remainder is dropped."""
    n = (len(series) - window) // stride + 1 if len(series) >= window else 0
    if n == 0:
        raise SensorError(f"{len(series)} time steps, shorter than one window of {window}")
    starts = np.arange(n) * stride
    return series[starts[:, None] + np.arange(window)[None, :]].astype(np.float32)  # (S, W, C)
