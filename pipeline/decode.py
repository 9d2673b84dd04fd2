"""Visual inputs -> uint8 frames: videos with decord, UTD-MHAD depth maps from .mat files.

Sampling is "window 1, stride N": frames 0, N, 2N, ... each become one segment. Frames are
resized to a square ``image_size`` inside the decoder (decord's ffmpeg filter graph), so only
small RGB frames are ever copied.

decord can hang for good (a `get_batch` deadlock that holds the GIL when a container
over-reports its frame count, dmlc/decord#373) or leak memory, so `DecodeWorker` runs decoding
in a separate Python process that we can kill after a timeout and recycle after some videos.
When decord fails or times out, the video is decoded once more with PyAV, which reads frames
sequentially and therefore cannot be fooled by a wrong frame count.

Run as ``python -m pipeline.decode`` the module is that worker: it reads pickled requests on
stdin and answers on stdout (a plain subprocess, so it also works inside daemonic dask workers).
"""
from __future__ import annotations

import os
import pickle
import re
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.errors import MumuError

STARTUP_TIMEOUT_S = 300.0  # a decode worker that has not imported its decoders by then is not starting


class DecodeError(Exception):
    """A visual input that cannot be decoded; the message is the reason recorded in the cache."""


class RetryableDecodeError(DecodeError):
    """Decoding ran out of time or its process was killed: maybe the file, maybe a busy machine or the OOM killer.
    Recorded like any failure, and the next extract tries the file again."""


# ---------------------------------------------------------------------------------------------
# decoding in this process


def sampled_indices(n_frames: int, stride: int) -> list[int]:
    """Window 1, stride N: the first frame of every stride-long step."""
    return list(range(0, n_frames, stride))


def decode_video_decord(path: str, stride: int, image_size: int) -> np.ndarray:
    """(S, image_size, image_size, 3) uint8. Raises DecodeError."""
    import decord

    try:
        # fault_tol: past 10 % corrupt frames decord raises (and PyAV takes over) instead of silently repeating frames
        reader = decord.VideoReader(str(path), width=image_size, height=image_size, num_threads=1, fault_tol=0.1)
    except Exception as e:  # decord raises its own DECORDError and plain RuntimeErrors
        raise DecodeError(f"decord cannot open the video ({_first_line(e)})") from None
    n_frames = len(reader)
    if n_frames <= 0:
        raise DecodeError("the video has no frames")
    indices = sampled_indices(n_frames, stride)
    try:
        # One call with sorted indices is decord's fast path (sequential decode within a GOP).
        frames = reader.get_batch(indices).asnumpy()
    except Exception as e:
        raise DecodeError(f"decord failed reading {len(indices)} frames of {n_frames} ({_first_line(e)})") from None
    finally:
        reader = None  # `del` on a reader can segfault (dmlc/decord#323); dropping the reference is safe
    return np.ascontiguousarray(frames, dtype=np.uint8)


def decode_video_pyav(path: str, stride: int, image_size: int) -> np.ndarray:
    """Sequential PyAV decode of every stride-th frame; the fallback. (S, H, W, 3) uint8."""
    import av

    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DecodeError("the file has no video stream")
            for i, frame in enumerate(container.decode(container.streams.video[0])):
                if i % stride == 0:
                    frames.append(frame.to_ndarray(width=image_size, height=image_size, format="rgb24"))
    except DecodeError:
        raise
    except Exception as e:  # av.error.* for corrupt containers or streams
        if not frames:
            raise DecodeError(f"PyAV cannot decode the video ({_first_line(e)})") from None
        # A truncated file: keep the frames before the damage.
    if not frames:
        raise DecodeError("the video has no decodable frames")
    return np.stack(frames).astype(np.uint8, copy=False)


def load_depth_frames(path: str, stride: int, image_size: int) -> np.ndarray:
    """UTD-MHAD ``d_depth`` (240, 320, T) uint16 millimetres -> (S, H, W, 3) uint8 images.

    Scaling rule: divide by the largest depth value of the sampled frames (every ``stride``-th; 0 = no reading
    stays black, and so does a non-finite value), so each sequence uses the full 0-255 range; the grey image is
    replicated to 3 channels for ResNet-50. A frame's grey levels can therefore differ slightly between strides;
    every recorded depth cache (docs/results.md) was made this way.
    """
    import scipy.io
    import torch
    import torch.nn.functional as F

    try:
        depth = scipy.io.loadmat(str(path))["d_depth"]
    except Exception as e:
        raise DecodeError(f"cannot read d_depth from the .mat file ({_first_line(e)})") from None
    if depth.ndim != 3 or depth.shape[2] == 0:
        raise DecodeError(f"d_depth has shape {depth.shape}, expected (H, W, T) with T > 0")
    depth = depth[:, :, ::stride].astype(np.float32)  # (H, W, S)
    finite = np.isfinite(depth)  # the release is uint16; a float copy may hold NaN, which would spoil the peak
    if not finite.any():
        raise DecodeError("d_depth has no finite value")
    depth = np.where(finite, depth, 0.0)  # a non-finite reading counts as no reading
    peak = float(depth.max())
    scaled = depth / peak if peak > 0 else depth
    images = torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))[:, None]  # (S, 1, H, W)
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    grey = (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # (S, H, W)
    return np.repeat(grey[..., None], 3, axis=-1)


def decode_visual(path: str, kind: str, stride: int, image_size: int) -> tuple[np.ndarray, str]:
    """Frames of one visual input in this process: ((S, H, W, 3) uint8, decoder used).

    No timeout here; `DecodeWorker` adds it. Raises DecodeError with the reason.
    """
    if not Path(path).exists():
        raise DecodeError("file not found")
    if kind == "depth":
        return load_depth_frames(path, stride, image_size), "mat"
    try:
        return decode_video_decord(path, stride, image_size), "decord"
    except DecodeError as first:
        try:
            return decode_video_pyav(path, stride, image_size), "pyav"
        except DecodeError as second:
            raise DecodeError(f"{first}; {second}") from None


def _first_line(e: BaseException) -> str:
    # decord prefixes its messages with "[hh:mm:ss] /src/file.cc:NN: "; drop it so reasons are reproducible
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+?:\d+: ", "", str(e)).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


# ---------------------------------------------------------------------------------------------
# the killable worker process


def _write_message(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)
    stream.flush()


def _read_message(fd: int, deadline: float) -> tuple:
    size = struct.unpack("<Q", _read_exactly(fd, 8, deadline))[0]
    return pickle.loads(_read_exactly(fd, size, deadline))


def _read_exactly(fd: int, n: int, deadline: float) -> bytes:
    chunks, remaining = [], n
    while remaining:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _serve() -> None:
    """Worker loop: one (path, kind, stride, image_size) request in, one result out, until EOF."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints from libraries must not corrupt the result stream
    # Ctrl-C reaches the whole process group; the parent decides (it closes the pipe or kills this process).
    # Dying here would read as a crash on the file being decoded, recorded as that sample's failure.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(5)  # where cores are scarce, decoding ahead yields to the backbone it feeds
    import decord  # noqa: F401  (imported before the first request, while the parent is still setting up)
    _write_message(out, ("ready", None, None))  # request deadlines start from here, not from the spawn
    while True:
        header = inp.read(8)
        if len(header) < 8:
            return  # the parent closed the pipe (or died): stop
        path, kind, stride, image_size, decoder = pickle.loads(inp.read(struct.unpack("<Q", header)[0]))
        try:
            if decoder == "pyav":
                result = ("ok", decode_video_pyav(path, stride, image_size), "pyav")
            else:
                frames, used = decode_visual(path, kind, stride, image_size)
                result = ("ok", frames, used)
        except DecodeError as e:
            result = ("error", str(e), None)
        except Exception as e:  # anything else is still a property of this input, not of the run
            result = ("error", f"unexpected decoder error ({_first_line(e)})", None)
        _write_message(out, result)


class DecodeWorker:
    """One decode subprocess. ``decode(...)`` returns frames or raises DecodeError; a request that
    takes longer than ``timeout_s`` kills the process (the next request starts a fresh one)."""

    def __init__(self, timeout_s: float = 120.0, recycle_after: int = 200):
        self.timeout_s = timeout_s
        self.recycle_after = recycle_after  # decord leaks per reader (dmlc/decord#1, #280)
        self._proc: subprocess.Popen | None = None
        self._served = 0
        self._ready = False  # the process has imported its decoders and said so

    def decode(self, path: str, kind: str, stride: int, image_size: int) -> np.ndarray:
        """(S, image_size, image_size, 3) uint8."""
        try:
            return self._request(path, kind, stride, image_size, "auto")
        except TimeoutError:
            if kind == "depth":
                raise RetryableDecodeError(f"decoding took longer than {self.timeout_s:g} s; killed") from None
        try:  # decord hung: one more try with the sequential decoder
            return self._request(path, kind, stride, image_size, "pyav")
        except TimeoutError:
            raise RetryableDecodeError(f"decoding took longer than {self.timeout_s:g} s with decord and PyAV; "
                                       "killed") from None

    def start(self) -> None:
        """Start (or recycle) the process now, so its start-up overlaps other work."""
        if self._proc is None or self._proc.poll() is not None or self._served >= self.recycle_after:
            self.close()
            self._start()

    def _request(self, path, kind, stride, image_size, decoder) -> np.ndarray:
        self.start()
        fd = self._proc.stdout.fileno()
        if not self._ready:  # a busy machine may take seconds to start Python: not the file's time
            try:
                _read_message(fd, time.monotonic() + STARTUP_TIMEOUT_S)
            except (TimeoutError, EOFError):
                self.close()
                raise MumuError(f"the decode worker process did not start within {STARTUP_TIMEOUT_S:.0f} s "
                                f"(python -m pipeline.decode); rerun to finish") from None
            self._ready = True
        _write_message(self._proc.stdin, (str(path), kind, int(stride), int(image_size), decoder))
        try:
            status, payload, _ = _read_message(fd, time.monotonic() + self.timeout_s)
        except TimeoutError:
            self.close()
            raise
        except EOFError:
            try:
                stopped_by = -self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # its output closed, the process hangs on: a crash all the same
                stopped_by = None
            self.close()
            if stopped_by in (signal.SIGTERM, signal.SIGHUP):  # the run is ending (SIGINT is ignored), not this file
                raise MumuError(f"the decoder process was stopped (signal {stopped_by}) while decoding {path}; "
                                f"rerun to finish") from None
            if stopped_by == signal.SIGKILL:  # the OOM killer, or a person: not surely this file
                raise RetryableDecodeError("the decoder process was killed (SIGKILL) while decoding this file") \
                    from None
            raise DecodeError("the decoder process crashed on this file") from None  # e.g. a segfault in ffmpeg
        self._served += 1
        if status == "error":
            raise DecodeError(payload)
        return payload

    def _start(self) -> None:
        repo_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo_root, os.environ.get("PYTHONPATH", "")]),
                   OMP_NUM_THREADS="1")
        self._proc = subprocess.Popen([sys.executable, "-m", "pipeline.decode"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=env, cwd=repo_root)
        self._served = 0
        self._ready = False

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
            self._proc = None

    def __enter__(self) -> DecodeWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


if __name__ == "__main__":
    _serve()
