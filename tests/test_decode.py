"""Decoding: frame sampling, resize in the decoder, bad files, the kill-on-timeout worker, depth maps."""
from __future__ import annotations

import os
import time

import av
import numpy as np
import pytest

from pipeline.decode import (DecodeError, DecodeWorker, decode_visual, decode_video_decord, decode_video_pyav,
                             load_depth_frames)


def write_mp4(path, n_frames: int = 10, size: tuple[int, int] = (64, 48), seed: int = 0,
              faststart: bool = False) -> np.ndarray:
    """A small H.264 clip whose frames differ (brightness ramp + a moving square); returns the frames.
    faststart: the index (moov) before the frames, as streaming encoders write it."""
    rng = np.random.default_rng(seed)
    width, height = size
    frames = np.zeros((n_frames, height, width, 3), np.uint8)
    for i in range(n_frames):
        frames[i] = 20 + (200 * i) // max(1, n_frames - 1)
        x = (i * 5) % (width - 12)
        frames[i, 10:22, x:x + 12] = rng.integers(0, 255, 3, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return frames


def test_every_third_frame_resized_in_the_decoder(tmp_path):
    source = write_mp4(tmp_path / "clip.mp4", n_frames=10)
    frames, decoder = decode_visual(str(tmp_path / "clip.mp4"), "video", stride=3, image_size=32)
    assert decoder == "decord"
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8  # frames 0, 3, 6, 9
    # The brightness ramp identifies which source frames came back (lossy codec: compare means).
    expected = source[[0, 3, 6, 9]].reshape(4, -1).mean(axis=1)
    assert np.abs(frames.reshape(4, -1).mean(axis=1) - expected).max() < 12
    # The fallback decoder agrees on which frames are sampled.
    fallback = decode_video_pyav(str(tmp_path / "clip.mp4"), 3, 32)
    assert fallback.shape == frames.shape
    assert np.abs(fallback.astype(int) - frames.astype(int)).mean() < 8


@pytest.mark.parametrize("content, reason", [
    (b"", "cannot"),
    (b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(2000), "cannot"),
], ids=["empty", "mp4-header-then-garbage"])  # stable ids: pytest-xdist workers must collect the same tests
def test_corrupt_or_empty_video_is_a_decode_error(tmp_path, content, reason):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(DecodeError, match=reason):
        decode_visual(str(path), "video", 3, 32)


def test_a_truncated_video_keeps_the_frames_before_the_damage(tmp_path):
    """A recording cut off halfway (a full disk, a killed camera): with its index first, the frames before the
    cut come back; with its index at the end (lost with the tail), a clear reason, not a hang or a crash."""
    source = write_mp4(tmp_path / "clip.mp4", n_frames=30, size=(64, 64), faststart=True)
    data = (tmp_path / "clip.mp4").read_bytes()
    frames_start = data.find(b"mdat")
    assert 0 < data.find(b"moov") < frames_start  # the index comes first
    (tmp_path / "cut.mp4").write_bytes(data[: frames_start + (len(data) - frames_start) // 2])
    with DecodeWorker(timeout_s=60) as worker:
        frames = worker.decode(str(tmp_path / "cut.mp4"), "video", 3, 32)
        assert 1 <= len(frames) < 10 and frames.shape[1:] == (32, 32, 3)  # 10 sampled frames in the whole clip
        expected = source[::3][: len(frames)].reshape(len(frames), -1).mean(axis=1)
        assert np.abs(frames.reshape(len(frames), -1).mean(axis=1) - expected).max() < 12  # the first ones
        write_mp4(tmp_path / "end.mp4", n_frames=30, size=(64, 64))
        data = (tmp_path / "end.mp4").read_bytes()
        (tmp_path / "cut_end.mp4").write_bytes(data[: len(data) // 2])
        with pytest.raises(DecodeError, match="cannot") as failure:
            worker.decode(str(tmp_path / "cut_end.mp4"), "video", 3, 32)
        assert "longer than" not in str(failure.value) and "crashed" not in str(failure.value)


def test_missing_file_is_an_error():  # its caller (extract's load_raw_sample) names the file
    with pytest.raises(DecodeError, match="file not found"):
        decode_visual("/nonexistent/x.mp4", "video", 3, 32)


def test_worker_kills_a_hanging_decode_and_keeps_working(tmp_path):
    # Opening a FIFO with no writer blocks forever inside ffmpeg: a real hang, like dmlc/decord#373.
    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)
    write_mp4(tmp_path / "ok.mp4", n_frames=6)
    with DecodeWorker(timeout_s=10) as worker:  # generous: a good decode on a busy machine stays far below it
        with pytest.raises(DecodeError, match="longer than 10 s"):  # killed by the timeout, not left hanging
            worker.decode(str(fifo), "video", 3, 32)
        assert worker.decode(str(tmp_path / "ok.mp4"), "video", 3, 32).shape == (2, 32, 32, 3)
        # Same frames as decoding in this process.
        np.testing.assert_array_equal(worker.decode(str(tmp_path / "ok.mp4"), "video", 3, 32),
                                      decode_visual(str(tmp_path / "ok.mp4"), "video", 3, 32)[0])


def test_an_interrupted_run_is_never_recorded_as_a_file_the_decoder_crashed_on(tmp_path):
    """Ctrl-C reaches the decoder with the rest of the process group: it used to die of it, and extraction
    recorded the file being decoded as a failure in a part it then saved as complete. The decoder now ignores
    SIGINT, and one stopped by SIGTERM is the run ending (an error that saves no part), not a bad file."""
    import signal
    import threading

    fifo = tmp_path / "hang.mp4"  # a decode that blocks until the test has signalled the decoder
    os.mkfifo(fifo)
    with DecodeWorker(timeout_s=4) as worker:
        worker.start()
        errors = []
        decoding = threading.Thread(target=lambda: errors.append(_raised(worker.decode, str(fifo), "video", 3, 32)))
        decoding.start()
        time.sleep(2)
        os.kill(worker._proc.pid, signal.SIGINT)  # the decoder only: not other children of this process
        decoding.join()
        assert isinstance(errors[0], DecodeError) and "longer than 4 s" in str(errors[0])  # outlived Ctrl-C

        decoding = threading.Thread(target=lambda: errors.append(_raised(worker.decode, str(fifo), "video", 3, 32)))
        decoding.start()
        time.sleep(2)
        os.kill(worker._proc.pid, signal.SIGTERM)
        decoding.join()
        assert not isinstance(errors[1], DecodeError) and "was stopped (signal 15)" in str(errors[1])


def _raised(function, *args) -> BaseException | None:
    try:
        function(*args)
    except BaseException as e:  # noqa: BLE001 - the test inspects it
        return e
    return None


def test_a_slow_starting_worker_does_not_eat_into_the_decode_timeout(tmp_path, monkeypatch):
    # On a busy machine starting Python and importing decord can take longer than a decode is allowed:
    # the timeout must count the decode only. A sitecustomize that sleeps 15 s stands in for the busy machine.
    slow = tmp_path / "slow_start"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text("import time\ntime.sleep(15)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(slow), os.environ.get("PYTHONPATH")])))
    write_mp4(tmp_path / "ok.mp4", n_frames=6)
    with DecodeWorker(timeout_s=10) as worker:
        assert worker.decode(str(tmp_path / "ok.mp4"), "video", 3, 32).shape == (2, 32, 32, 3)


def test_real_utd_mhad_depth_becomes_three_channel_images(utd_root):
    path = utd_root / "Depth" / "a1_s1_t1_depth.mat"  # (240, 320, 48) uint16, max 3201 mm
    frames = load_depth_frames(str(path), stride=3, image_size=64)
    assert frames.shape == (16, 64, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[..., 0], frames[..., 2])
    assert frames.max() > 200 and frames.min() == 0  # scaled by the sequence maximum; no reading stays 0
    assert len(load_depth_frames(str(utd_root / "Depth" / "a27_s8_t3_depth.mat"), 3, 32)) == 32  # T = 95


def test_utd_mhad_depth_maps_become_three_channel_images(tmp_path):
    """The same checks as on the real copy, on .mat files written like the release (runs without the data)."""
    import scipy.io

    depth = np.zeros((24, 32, 10), np.uint16)  # (H, W, T) millimetres; 0 = no reading
    depth[4:20, 8:24] = (1000 + 100 * np.arange(10)).astype(np.uint16)  # a body moving away, frame by frame
    scipy.io.savemat(tmp_path / "a1_s1_t1_depth.mat", {"d_depth": depth}, do_compression=True)
    frames = load_depth_frames(str(tmp_path / "a1_s1_t1_depth.mat"), stride=3, image_size=16)
    assert frames.shape == (4, 16, 16, 3) and frames.dtype == np.uint8  # frames 0, 3, 6, 9
    np.testing.assert_array_equal(frames[..., 0], frames[..., 2])
    assert frames[-1].max() == 255 and frames[:, 0, 0].max() == 0  # scaled by the sequence maximum; no reading: 0
    centre = frames[:, 8, 8, 0].astype(int)
    np.testing.assert_allclose(centre, np.round(255 * (1000 + 300 * np.arange(4)) / 1900), atol=1)
    spoiled = depth.astype(np.float64)
    spoiled[0, 0, 3] = np.nan  # a float copy with one NaN outside the body: it reads as no reading
    scipy.io.savemat(tmp_path / "nan_depth.mat", {"d_depth": spoiled})
    np.testing.assert_array_equal(load_depth_frames(str(tmp_path / "nan_depth.mat"), 3, 16), frames)
    scipy.io.savemat(tmp_path / "all_nan_depth.mat", {"d_depth": np.full((24, 32, 4), np.nan)})
    with pytest.raises(DecodeError, match="d_depth has no finite value"):
        load_depth_frames(str(tmp_path / "all_nan_depth.mat"), 3, 16)
    scipy.io.savemat(tmp_path / "empty_depth.mat", {"d_depth": np.zeros((24, 32, 0), np.uint16)})
    with pytest.raises(DecodeError, match=r"d_depth has shape \(24, 32, 0\)"):
        load_depth_frames(str(tmp_path / "empty_depth.mat"), 3, 16)


def test_the_fallback_decoder_keeps_the_channel_order(tmp_path):
    path = tmp_path / "red.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[..., 0] = 220  # red
        frame[..., 2] = 30
        for _ in range(6):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    for frames in (decode_video_pyav(str(path), 3, 32), decode_video_decord(str(path), 3, 32)):
        red, blue = frames[..., 0].mean(), frames[..., 2].mean()
        assert red > 180 and blue < 70, (red, blue)
