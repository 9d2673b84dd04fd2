"""`extract`: sample index -> feature cache (visual: decode -> frozen ResNet-50; sensors: windows).

Work is split into **parts**: fixed runs of ``part_size`` samples in index order. A part is the unit
of scheduling, of writing (one writer, staged then renamed, see pipeline/cache.py) and of resuming:
a rerun skips every part already in the cache whose samples and source files are unchanged (the same
path, size and mtime, or else the same bytes: a copied or moved dataset is not extracted again), and
redoes the others. Frames of one part go through the backbone in the same
batches whichever process runs it, so a dask run, a single-process run and a resumed run give
identical bytes.

Two ways to run parts:
- ``--workers 0``: in this process. Decoding runs in `DecodeWorker` subprocesses fed by threads,
  ahead of the backbone, so decoding overlaps inference.
- ``--workers N`` (default from params.yaml) or ``--scheduler tcp://HOST:PORT``: one dask task per
  part on a LocalCluster of N spawned worker processes or on an existing cluster. Each worker
  loads the backbone once; on CUDA the tasks ask for the dask resource ``GPU=1``.

For training's "from raw" path: `load_raw_sample` (uint8 frames and sensor windows of one sample,
exactly what extraction feeds the backbone / stores) and `pipeline.backbone.Backbone`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import click
import numpy as np

from pipeline import cache as cache_store
from pipeline.codebase import REPO_ROOT
from pipeline.datasets.base import skipped_lines
from pipeline.decode import DecodeError, DecodeWorker, RetryableDecodeError, decode_visual
from pipeline.errors import MumuError
from pipeline.files import write_json
from pipeline.index import Sample, index_report_path, read_index
from pipeline.modalities import DATASET_MODALITIES, FEATURE_DIM, ModalitySpec, select_modalities, stored_modalities
from pipeline.params import DEFAULT_PARAMS, read_params
from pipeline.sensors import SensorError, align_streams, cut_windows, grid_steps, read_sensor

if TYPE_CHECKING:  # torch and torchvision load only where frames are encoded
    from dask.distributed import Client

    from pipeline.backbone import Backbone

# Bump when the numbers extraction produces change for the same inputs and settings.
# extract-2 (2026-11-30): a broken sensor file is refused on its own instead of shortening the sample's other streams.
# extract-3 (2026-12-02): MMAct orientation interpolated the short way round; a clocked span within a thousandth
# of a step of whole steps counts as whole (UTD-MHAD's numbers are unchanged).
# extract-4 (2026-12-02): streams sampled faster than the grid are low-pass filtered before interpolation (MMAct's
# 100 Hz accelerometers, UCSD-MIT); MMAct timestamps read as UTC, not the machine's zone (UTD-MHAD unchanged).
# extract-5 (2026-12-02): the sensor time base is set by all of a sample's sensor streams, also when only some are
# extracted (a cache of some sensors then matches training from raw files); caches of all sensors are unchanged.
CODE_VERSION = "extract-5"
SCHEDULER_TIMEOUT_S = 60  # how long `--scheduler ADDRESS` waits for a dask scheduler to answer


@dataclass(frozen=True)
class ExtractSettings:
    image_size: int = 112  # frames resized (in the decoder) to image_size x image_size
    frame_stride: int = 3  # visual: window 1, stride N
    sensor_window: int = 5  # sensors: W time steps per window ...
    sensor_stride: int = 5  # ... every sensor_stride steps
    sensor_rate_hz: float = 50.0  # common time base of a sample's sensor streams
    weights: str = "random"  # imagenet | random | PATH
    batch_size: int = 32
    part_size: int = 32  # samples per part (unit of work, writing and resuming)
    decode_timeout_s: float = 120.0  # per visual input; longer -> decoder killed, input recorded as failed

    def __post_init__(self) -> None:  # values from a params file never pass click's range checks
        for name in ("image_size", "frame_stride", "sensor_window", "sensor_stride", "batch_size", "part_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise MumuError(f"extract.{name} must be a whole number >= 1, got {getattr(self, name)!r}")
        for name in ("sensor_rate_hz", "decode_timeout_s"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) <= 0:
                raise MumuError(f"extract.{name} must be a number > 0, got {getattr(self, name)!r}")


def params_defaults(params_path: str | Path = DEFAULT_PARAMS) -> dict:
    """The ``extract:`` block plus top-level dataset/data_root/modalities and ``train.cache`` (as ``cache``: where
    the file's training reads the cache, so extract writes it there) from params.yaml (`base` resolved)."""
    params = read_params(params_path)  # the default file may be absent, and `none` reads nothing
    top = {k: params[k] for k in ("dataset", "data_root", "modalities") if k in params}
    cache = (params.get("train") or {}).get("cache")
    return {**top, **({"cache": cache} if cache else {}), **(params.get("extract") or {})}


# ---------------------------------------------------------------------------------------------
# one sample, raw


@dataclass
class RawSample:
    sample: Sample
    inputs: dict[str, np.ndarray | None]  # visual (S, H, W, 3) uint8 | sensor (S, W, C) float32 | None
    problems: dict[str, str] = field(default_factory=dict)  # modality -> why it is None (files that failed)
    missing_fraction: dict[str, float] = field(default_factory=dict)  # sensor -> share of absent samples
    retry: bool = False  # a problem may be the run's, not the file's (RetryableDecodeError): try again next run


def load_raw_sample(sample: Sample, modalities: list[ModalitySpec], settings: ExtractSettings,
                    decoder: DecodeWorker | None = None) -> RawSample:
    """Decode and window one sample exactly as extraction does.

    Visual modalities -> uint8 (S, image_size, image_size, 3), every ``frame_stride``-th frame;
    sensor modalities -> float32 (S, sensor_window, J*A) on the common time base: the interval all of the
    sample's sensor streams cover, every sensor of the dataset read for it whichever of them ``modalities``
    holds, so that a modality's steps do not depend on which others are extracted or trained on. A modality
    with no file in the index is None; one whose file cannot be used is None with a reason in ``problems``.
    ``decoder`` (a `DecodeWorker`) adds the kill-on-timeout guard; without it, decoding runs in this process.
    """
    inputs: dict[str, np.ndarray | None] = {}
    problems: dict[str, str] = {}
    retry = False
    for spec in modalities:
        path = sample.paths.get(spec.name)
        if not spec.visual or not path:
            continue
        try:
            if decoder is not None:
                inputs[spec.name] = decoder.decode(path, spec.kind, settings.frame_stride, settings.image_size)
            else:
                inputs[spec.name] = decode_visual(path, spec.kind, settings.frame_stride, settings.image_size)[0]
        except DecodeError as e:
            problems[spec.name] = f"{path}: {e}"
            retry = retry or isinstance(e, RetryableDecodeError)
    streams, missing_fraction = {}, {}
    one_window_s = (settings.sensor_window - 1) / settings.sensor_rate_hz  # the shortest span that gives a window
    for spec in DATASET_MODALITIES[sample.dataset]:
        path = sample.paths.get(spec.name)
        if spec.visual or not path:
            continue
        try:
            stream = read_sensor(sample.dataset, spec.name, path, spec.channels, spec.rate_hz)
            missing_fraction[spec.name] = round(float(stream.missing_fraction), 6)
            span = float(stream.times[-1] - stream.times[0]) if stream.times is not None else None
            if span is not None and grid_steps(span, settings.sensor_rate_hz) < settings.sensor_window:
                # it would cut every stream to less than a window
                raise SensorError(f"the file covers {span:.3f} s, less than one window ({one_window_s:.3f} s)")
            streams[spec.name] = stream
        except SensorError as e:
            problems[spec.name] = f"{path}: {e}"
    try:
        aligned = align_streams(streams, settings.sensor_rate_hz)  # {name: (T, C)}
    except SensorError as e:
        problems.update({name: f"{sample.paths[name]}: {e}" for name in streams})
        aligned = {}
    for name, series in aligned.items():
        try:
            inputs[name] = cut_windows(series, settings.sensor_window, settings.sensor_stride)  # (S, W, C)
        except SensorError as e:
            problems[name] = f"{sample.paths[name]}: {e} in the time all of the sample's streams cover"
    wanted = {spec.name for spec in modalities}  # the other sensors served the time base only
    problems = {name: why for name, why in problems.items() if name in wanted}
    missing_fraction = {name: f for name, f in missing_fraction.items() if name in wanted and name not in problems}
    return RawSample(sample, {spec.name: inputs.get(spec.name) for spec in modalities}, problems, missing_fraction,
                     retry)


class DecodePool:
    """Loads samples (`load_raw_sample`) in ``n`` threads, each driving a `DecodeWorker` subprocess
    (started at once); `stream` yields them in order, keeping ``lookahead`` samples in flight."""

    def __init__(self, modalities: list[ModalitySpec], settings: ExtractSettings, n: int):
        self.modalities, self.settings = modalities, settings
        self._executor = ThreadPoolExecutor(max_workers=n, thread_name_prefix="decode")
        self._workers = [DecodeWorker(settings.decode_timeout_s) for _ in range(n)]
        self._idle: queue.SimpleQueue[DecodeWorker] = queue.SimpleQueue()
        for worker in self._workers:
            worker.start()
            self._idle.put(worker)

    def _load(self, sample: Sample) -> RawSample:
        worker = self._idle.get()  # n threads, n workers: never waits
        try:
            return load_raw_sample(sample, self.modalities, self.settings, worker)
        finally:
            self._idle.put(worker)

    def stream(self, samples: Iterable[Sample], lookahead: int) -> Iterator[RawSample]:
        """Submits the first ``lookahead`` samples now; the iterator returns them in order."""
        pending = iter(samples)
        in_flight = deque(self._executor.submit(self._load, s) for _, s in zip(range(lookahead), pending))

        def results() -> Iterator[RawSample]:
            while in_flight:
                raw = in_flight.popleft().result()
                following = next(pending, None)
                if following is not None:
                    in_flight.append(self._executor.submit(self._load, following))
                yield raw

        return results()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        for worker in self._workers:
            worker.close()

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# one part: raw samples -> features -> zarr


def source_stamps(sample: Sample, modalities: list[ModalitySpec], digest: bool = True) -> dict[str, list | None]:
    """{modality: [path, size, mtime_ns, content digest] or None}: what a rerun compares to decide a part is
    stale. digest=False leaves the digest out (None): the cheap look a rerun takes first."""
    stamps = {}
    for spec in modalities:
        path = sample.paths.get(spec.name)
        try:
            if not path:
                stamps[spec.name] = None
                continue
            st = os.stat(path)
            stamps[spec.name] = [path, st.st_size, st.st_mtime_ns, file_digest(path) if digest else None]
        except OSError:
            stamps[spec.name] = [path, None, None, None]
    return stamps


def file_digest(path: str) -> str:
    """BLAKE2b-128 of the file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _same_source(stored: list | None, now: list | None) -> bool:
    """Is a source file unchanged since it was extracted? The same path, size and mtime; or, when a copy, a
    re-download or a move to another data root gave it a new mtime or path, the same bytes (caches written
    before digests were recorded have none, and such a file counts as changed)."""
    if stored is None or now is None:
        return stored is None and now is None
    if stored[:3] == now[:3]:
        return True
    digest = stored[3] if len(stored) > 3 else None
    if digest is None or stored[1] != now[1]:
        return False
    try:
        return file_digest(now[0]) == digest
    except OSError:  # unreadable now: redo it, and extraction records why
        return False


class _BatchedBackbone:
    """Feeds frames to the backbone in fixed batches as they arrive; the batches are the same as
    for the part's frames concatenated, so the result does not depend on arrival timing."""

    def __init__(self, backbone):
        self.backbone = backbone
        self.waiting: list[np.ndarray] = []
        self.features: list[np.ndarray] = []

    def add(self, frames: np.ndarray) -> None:  # (N, H, W, 3) uint8
        self.waiting.append(frames)
        waiting = sum(len(f) for f in self.waiting)
        full = waiting - waiting % self.backbone.batch_size
        if full:
            frames = np.concatenate(self.waiting)
            self.features.append(self.backbone(frames[:full]))
            self.waiting = [frames[full:]]

    def finish(self) -> np.ndarray:  # (N_total, 2048) float32
        if self.waiting:
            self.features.append(self.backbone(np.concatenate(self.waiting)))
            self.waiting = []
        return np.concatenate(self.features) if self.features else np.zeros((0, FEATURE_DIM), np.float32)


def extract_part(name: str, raws: Iterable[RawSample], modalities: list[ModalitySpec], backbone: Backbone,
                 cache_path: str | Path) -> dict:
    """Compute and write one part; returns {samples, frames} for the progress bar."""
    batched = _BatchedBackbone(backbone)
    samples, inputs, failures, unusable, missing, retry = [], [], {}, [], {}, []
    for raw in raws:
        samples.append(raw.sample)
        for spec in modalities:
            if spec.visual and raw.inputs[spec.name] is not None:
                batched.add(raw.inputs[spec.name])
                raw.inputs[spec.name] = len(raw.inputs[spec.name])  # keep the count, not the frames
        inputs.append(raw.inputs)
        sid = raw.sample.sample_id
        if raw.problems:
            failures[sid] = "; ".join(f"{m}: {why}" for m, why in raw.problems.items())
        if raw.retry:
            retry.append(sid)
        if all(v is None for v in raw.inputs.values()):
            unusable.append(sid)
            failures.setdefault(sid, "no modality present in the index")
        if raw.missing_fraction:
            missing[sid] = raw.missing_fraction
    features = batched.finish()  # (all visual frames of the part, 2048)
    arrays: dict[str, list[np.ndarray | None]] = {spec.name: [] for spec in modalities}
    cursor = 0
    for sample_inputs in inputs:  # same order as fed to the backbone
        for spec in modalities:
            value = sample_inputs[spec.name]  # visual: number of frames; sensor: (S, W, C) windows
            if spec.visual and value is not None:
                value, cursor = features[cursor:cursor + value], cursor + value
            arrays[spec.name].append(value)
    frames = int(sum(len(a) for spec in modalities if spec.visual for a in arrays[spec.name] if a is not None))
    attrs = {"sources": {s.sample_id: source_stamps(s, modalities) for s in samples}, "failures": failures,
             "unusable": unusable, "sensor_missing_fraction": missing, "frames": frames, "retry": retry}
    if any(spec.visual for spec in modalities):  # a sensor-only cache has no frame features to describe
        attrs["frame_features"] = backbone.arithmetic
    cache_store.write_part(cache_path, name, modalities, samples, arrays, attrs)
    return {"samples": len(samples), "frames": frames}


# ---------------------------------------------------------------------------------------------
# planning and running


Parts = list[tuple[str, list[Sample]]]  # (part name, its samples) for each part to extract
Progress = Callable[[int, int], None]  # called with the samples and the frames finished since its last call


def plan_parts(samples: list[Sample], part_size: int) -> Parts:
    return [(cache_store.part_name(i // part_size), samples[i:i + part_size]) for i in range(0, len(samples), part_size)]


def pending_parts(cache_path: Path, plan: Parts, modalities: list[ModalitySpec]) -> tuple[Parts, list[str]]:
    """(parts of the plan to compute, the existing ones among them: stale, their samples or sources changed,
    their array files damaged, or a sample's decoding to retry).
    A part whose sources only have a new mtime or path (same bytes) is kept, and its stamps are brought up to
    date."""
    done = cache_store.read_part_attrs(cache_path)
    todo, stale = [], []
    for name, samples in plan:
        attrs = done.get(name)
        if (attrs is not None and [s["sample_id"] for s in attrs["samples"]] == [s.sample_id for s in samples]
                and not attrs.get("retry") and not cache_store.damaged_files(cache_path, name, attrs)):
            now = {s.sample_id: source_stamps(s, modalities, digest=False) for s in samples}
            pairs = {(sid, m): (attrs["sources"].get(sid, {}).get(m), stamp)  # (stored, current) per source file
                     for sid, stamps in now.items() for m, stamp in stamps.items()}
            if all(_same_source(stored, stamp) for stored, stamp in pairs.values()):
                if any(stored and stored[:3] != stamp[:3] for stored, stamp in pairs.values()):
                    # same bytes, new paths or mtimes: the stored digests still hold, so no file is hashed again
                    for (sid, m), (stored, stamp) in pairs.items():
                        if stamp is not None:
                            now[sid][m] = [*stamp[:3], stored[3] if len(stored) > 3 else None]
                    cache_store.update_part_attrs(cache_path, name, {
                        "sources": now, "samples": [dataclasses.asdict(s) for s in samples]})
                continue
        if attrs is not None:
            stale.append(name)
        todo.append((name, samples))
    return todo, stale


def weights_kind(weights: str) -> str:
    """How a cache's fingerprint names its backbone weights: imagenet, random, or "file" (a state_dict path,
    identified by its hash)."""
    return weights if weights in ("imagenet", "random") else "file"


def fingerprint(dataset: str, modalities: list[ModalitySpec], settings: ExtractSettings, weights_hash: str) -> dict:
    weights = weights_kind(settings.weights)
    return {
        "dataset": dataset, "modalities": [m.name for m in modalities], "backbone": "resnet50",
        "weights": weights, "weights_hash": weights_hash, "feature_dim": FEATURE_DIM, "feature_dtype": "float16",
        "image_size": settings.image_size, "frame_stride": settings.frame_stride, "frame_window": 1,
        "sensor_window": settings.sensor_window, "sensor_stride": settings.sensor_stride,
        "sensor_rate_hz": float(settings.sensor_rate_hz),
        "sensor_rates_hz": {m.name: m.rate_hz for m in modalities if not m.visual},
        "code_version": CODE_VERSION,
    }


def provenance(index_path: str | None, settings: ExtractSettings) -> dict:
    import decord
    import torch
    import torchvision
    import zarr

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_commit": commit, "index": index_path,
            "weights_source": settings.weights, "host": platform.node(), "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "decord": decord.__version__,
            "zarr": zarr.__version__, "numpy": np.__version__}


def in_process_decoders() -> int:
    """Decode processes of an in-process extract (`--workers 0`): every core but the backbone's."""
    return max(1, (os.cpu_count() or 1) - 1)


def _run_in_process(todo: Parts, modalities: list[ModalitySpec], settings: ExtractSettings, cache_path: Path,
                    device: str, decoders: int, progress: Progress) -> list[dict]:
    from pipeline.backbone import Backbone

    results = []
    with DecodePool(modalities, settings, decoders) as pool:
        # Keep a part plus a little decoding ahead of the backbone, across part boundaries.
        stream = pool.stream((s for _, samples in todo for s in samples), settings.part_size + 2 * decoders)
        backbone = Backbone(settings.weights, device, settings.batch_size)  # while the first samples decode
        for name, samples in todo:
            results.append(extract_part(name, _counted((next(stream) for _ in samples), progress), modalities,
                                        backbone, cache_path))
            progress(0, results[-1]["frames"])
    return results


def _counted(raws: Iterator[RawSample], progress: Progress) -> Iterator[RawSample]:
    """`raws`, each counted as done once the part asks for the next: the bar moves by sample, not by part."""
    for raw in raws:
        yield raw
        progress(1, 0)


_WORKER_STATE: dict = {}  # per dask worker process: the backbone and decode pool, built once
# A worker started with several threads runs one part at a time: its tasks share one backbone and one decode
# pool, which would otherwise be built twice, or closed under a concurrent task of another extract.
_WORKER_LOCK = threading.Lock()


def _dask_part_task(name: str, samples: list[Sample], modalities: list[ModalitySpec], settings: ExtractSettings,
                    cache_path: str, device: str, weights_hash: str, torch_threads: int) -> dict:
    from pipeline.backbone import Backbone

    key = (settings, tuple(modalities), device, torch_threads, weights_hash)  # a worker may serve several extracts
    with _WORKER_LOCK:
        if _WORKER_STATE.get("key") != key:
            import torch

            # CPU results depend (in the last bits) on the intra-op thread count: use the client's.
            torch.set_num_threads(torch_threads)
            if "pool" in _WORKER_STATE:
                _WORKER_STATE["pool"].close()
            _WORKER_STATE.update(key=key, backbone=Backbone(settings.weights, device, settings.batch_size),
                                 pool=DecodePool(modalities, settings, 1))
        backbone = _WORKER_STATE["backbone"]
        if backbone.weights_hash != weights_hash:
            raise MumuError(f"worker loaded different weights for {settings.weights!r} "
                            f"(hash {backbone.weights_hash}, expected {weights_hash})")
        raws = _WORKER_STATE["pool"].stream(samples, lookahead=2)
        return extract_part(name, raws, modalities, backbone, cache_path)


@contextmanager
def _workers_leave_ctrl_c_to_this_process() -> Iterator[None]:
    """Processes started inside inherit an ignored SIGINT: Ctrl-C reaches the whole process group, this process
    closes the cluster, and the workers no longer each print a KeyboardInterrupt traceback."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_dask(todo: Parts, modalities: list[ModalitySpec], settings: ExtractSettings, cache_path: Path, device: str,
              workers: int, scheduler: str | None, weights_hash: str, progress: Progress) -> list[dict]:
    import dask
    from dask.distributed import Client, LocalCluster, as_completed

    import torch

    gpu = device.startswith("cuda")
    if scheduler:
        try:
            client, cluster = Client(scheduler, timeout=f"{SCHEDULER_TIMEOUT_S}s"), None
        except ValueError as e:  # no port, an unknown scheme
            raise MumuError(f"--scheduler {scheduler}: not a dask scheduler address ({e}); e.g. tcp://HOST:8786") \
                from None
        except OSError as e:  # distributed retries until the timeout, then says only "Timed out ..."
            raise MumuError(f"--scheduler {scheduler}: no dask scheduler answered within {SCHEDULER_TIMEOUT_S} s "
                            f"({e}); is it running, and is the address reachable from here?") from None
        try:
            _check_workers_can_run(client, scheduler, gpu)
        except MumuError:
            client.close()
            raise
    else:
        with dask.config.set({"distributed.worker.multiprocessing-method": "spawn",
                              "distributed.worker.daemon": False}), _workers_leave_ctrl_c_to_this_process():
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", resources={"GPU": 1} if gpu else None,
                                   silence_logs=logging.ERROR)
        client = Client(cluster)
    results, quietened = [], {}
    try:
        where = str(cache_path.absolute())  # a worker would resolve a relative path in its own working directory
        futures = [client.submit(_dask_part_task, name, samples, modalities, settings, where, device, weights_hash,
                                 torch.get_num_threads(), key=f"mumu-extract-{name}-{os.getpid()}", pure=False,
                                 resources={"GPU": 1} if gpu else None)
                   for name, samples in todo]
        for future in as_completed(futures):
            results.append(future.result())
            progress(results[-1]["samples"], results[-1]["frames"])
    except KeyboardInterrupt:
        # After Ctrl-C, closing the cluster can race in dask's event loop and log a traceback (seen once: a
        # NameError from distributed.utils, under load); the resume hint the command prints is all there is to say.
        for name in ("distributed", "tornado", "asyncio"):
            quietened[name] = logging.getLogger(name).level
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        for name, level in quietened.items():
            logging.getLogger(name).setLevel(level)
    return results


def _check_workers_can_run(client: "Client", scheduler: str, gpu: bool) -> None:
    """MumuError when no worker of the cluster could take a task: dask would leave it waiting forever."""
    try:
        client.wait_for_workers(1, timeout=SCHEDULER_TIMEOUT_S)
    except TimeoutError:
        raise MumuError(f"--scheduler {scheduler}: the cluster has no worker after {SCHEDULER_TIMEOUT_S} s; start "
                        f"one with `dask worker {scheduler}`") from None
    if gpu and not any(w.get("resources", {}).get("GPU", 0) >= 1 for w in client.scheduler_info()["workers"].values()):
        raise MumuError(f"--scheduler {scheduler}: --device cuda gives each task one GPU resource, and no worker "
                        f"declares one; start GPU workers with `dask worker {scheduler} --resources GPU=1`, or "
                        "extract with --device cpu")


def resolve_device(device: str, here: bool = True) -> str:
    """``auto`` -> cuda when available, else cpu; MumuError for anything but cpu, cuda or cuda:N, and (``here``: the
    backbone runs on this machine, not on a --scheduler's workers) for a GPU this machine lacks. Checked before the
    cache is touched, so a mistyped device never costs the cache it would rebuild."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise MumuError(f"--device {device}: not a device; use cpu, cuda, cuda:N or auto")
    if parsed.type == "cuda" and here:
        if not torch.cuda.is_available():
            raise MumuError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise MumuError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_sources_exist(samples: list[Sample], modalities: list[ModalitySpec], index_path: str | None) -> None:
    """MumuError when not one of the samples' files (of ``modalities``) exists: the dataset moved or is not mounted,
    and extracting would replace every part with failures. Some files missing stay per-sample failures."""
    paths = [p for s in samples for m in modalities if (p := s.paths.get(m.name))]
    where = index_path or "the index"
    if not paths:
        raise MumuError(f"{where}: no sample has a file of {', '.join(m.name for m in modalities)}")
    if not any(os.path.exists(p) for p in paths):  # stops at the first file found: cheap on a good index
        raise MumuError(f"{where}: none of its {len(paths)} source files exists, the first: {paths[0]}; has the "
                        "dataset moved or is it not mounted? Run `python cli.py index` for where it is now")


def run_extract(samples: list[Sample], dataset: str, modalities: list[ModalitySpec], cache_path: str | Path,
                settings: ExtractSettings, device: str = "cpu", workers: int = 0, scheduler: str | None = None,
                overwrite: bool = False, index_path: str | None = None, show_progress: bool = True,
                rebuild_if_changed: bool = False, whole_index: bool = True) -> dict:
    """Extract ``samples`` into the cache (only parts not already complete).

    device: cpu | cuda | cuda:N | auto (see `resolve_device`).
    whole_index: ``samples`` is the whole index, so parts beyond its plan (left by a longer index) are removed:
    their samples left the index or moved into earlier parts. False (``--limit``) keeps them.

    Returns {done, parts, skipped_parts, frames, seconds} for this run and {failures, unusable} for all
    of ``samples``.
    """
    from tqdm import tqdm

    from pipeline.backbone import hash_weights

    modalities = stored_modalities(dataset, modalities)  # a part (UTD-MHAD's inertial_acc) is its modality's steps
    device = resolve_device(device, here=not scheduler)  # both checks before the cache is created, emptied or rebuilt
    if not scheduler:  # a scheduler's workers may see the data where this machine does not
        check_sources_exist(samples, modalities, index_path)
    cache_path = Path(cache_path)
    weights_hash = hash_weights(settings.weights)
    started = time.monotonic()
    with cache_store.CacheLock(cache_path) as lock:
        header = {"dataset": dataset, "modalities": [m.to_dict() for m in modalities],
                  "fingerprint": fingerprint(dataset, modalities, settings, weights_hash),
                  "provenance": provenance(index_path, settings)}
        cache_store.prepare_cache(cache_path, header, overwrite, rebuild_if_changed, lock)
        cache_store.clear_staging(cache_path)
        plan = plan_parts(samples, settings.part_size)
        cache_store.write_plan(cache_path, [name for name, _ in plan])
        todo, stale = pending_parts(cache_path, plan, modalities)
        if whole_index:
            stale += sorted(set(cache_store.read_part_attrs(cache_path)) - {name for name, _ in plan})
        if stale:  # never under a reader: a training run reading the cache would see parts vanish
            lock.exclude_readers()
            for name in stale:
                cache_store.remove_part(cache_path, name)
        total = sum(len(s) for _, s in todo)
        bar = tqdm(total=total, unit="sample", desc="extract", disable=not show_progress or not total,
                   dynamic_ncols=True)
        frames_done = [0]

        def progress(samples: int, frames: int) -> None:
            if frames:  # drawn with the bar's next update: a refresh per sample would flood a log
                frames_done[0] += frames
                bar.set_postfix_str(f"{frames_done[0] / max(bar.format_dict['elapsed'], 1e-9):.1f} frames/s",
                                    refresh=False)
            bar.update(samples)

        try:
            if not todo:
                results = []
            elif workers == 0 and not scheduler:
                results = _run_in_process(todo, modalities, settings, cache_path, device, in_process_decoders(),
                                          progress)
            else:
                results = _run_dask(todo, modalities, settings, cache_path, device, workers, scheduler,
                                    weights_hash, progress)
        finally:
            bar.close()
    # Report the failures of every sample in the plan, including those of parts done by earlier runs.
    planned = {name for name, _ in plan}
    finished = {n: a for n, a in cache_store.read_part_attrs(cache_path).items() if n in planned}
    failures = {sid: why for attrs in finished.values() for sid, why in attrs["failures"].items()}
    return {"done": sum(r["samples"] for r in results), "parts": len(todo), "skipped_parts": len(plan) - len(todo),
            "frames": sum(r["frames"] for r in results), "seconds": time.monotonic() - started,
            "failures": failures, "unusable": [sid for attrs in finished.values() for sid in attrs["unusable"]]}


# ---------------------------------------------------------------------------------------------
# CLI


def _load_samples(dataset: str, data_root: Path, index: Path | None) -> tuple[list[Sample], dict | None]:
    """The samples, and the report of their indexing: files skipped as unreadable or malformed (their samples
    keep the modality as missing). Read from beside --index (None when that has no report), or made here by
    indexing --data-root (never strict: --strict only concerns the modalities extracted, see `extract_command`)."""
    if index is not None:
        samples, report_path = read_index(index), index_report_path(index)
        report = json.loads(report_path.read_text()) if report_path.is_file() else None
    else:
        from pipeline.datasets import build_index

        result = build_index(dataset, data_root)
        samples, report = result.samples, result.report(None)
    wrong = {s.dataset for s in samples} - {dataset}
    if wrong:
        raise MumuError(f"the index holds samples of {', '.join(sorted(wrong))}, not {dataset!r}")
    return samples, report


# An option left out takes its value from --params (see `params_defaults`), else from here.
BUILT_IN = {"dataset": "demo", "modalities": "all", "workers": 2, **dataclasses.asdict(ExtractSettings())}
_PARAMS_KEY = {"sensor_rate": "sensor_rate_hz", "decode_timeout": "decode_timeout_s"}  # option -> params key


def _from_params(key: str, **options: object) -> dict:
    """click.option keywords for a setting that params can give: no click default (None = left out), and help
    that says where the value then comes from."""
    return dict(default=None, show_default=f"params, else {BUILT_IN[_PARAMS_KEY.get(key, key)]}", **options)


@click.command("extract")
@click.option("--params", default=DEFAULT_PARAMS, show_default=True,
              help="Options left out come from this file (its dataset, data_root, modalities and extract: block; "
                   "none: no file), else the built-in values shown below.")
@click.option("--dataset", **_from_params("dataset", help=" | ".join(sorted(DATASET_MODALITIES))))
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="Raw dataset root, to build the index when --index is not given  "
                   "[default: params data_root for its dataset, else data/<dataset>]")
@click.option("--index", "index_path", type=click.Path(path_type=Path), default=None,
              help="Sample index CSV from `cli.py index` (default: build it from --data-root).")
@click.option("--cache", "cache_path", type=click.Path(path_type=Path), default=None,
              help="Output zarr store  [default: params train.cache for its dataset (where that file's training "
                   "reads), else cache/<dataset>.zarr]")
@click.option("--modalities", **_from_params("modalities", help="Comma-separated subset of the dataset's modalities, "
                                            "or all; a sensor's part (UTD-MHAD's inertial_acc) extracts its modality."))
@click.option("--weights", **_from_params("weights", help="imagenet | random | PATH to a ResNet-50 state_dict."))
@click.option("--device", default="auto", show_default=True, help="cpu | cuda | cuda:N | auto (cuda when available).")
@click.option("--batch-size", **_from_params("batch_size", type=click.IntRange(1), help="Frames per backbone batch."))
@click.option("--workers", **_from_params("workers", type=click.IntRange(0),
                                          help="dask worker processes on a local cluster; 0 = run in this process."))
@click.option("--scheduler", default=None, help="tcp://HOST:PORT of an existing dask scheduler (instead of a local cluster).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N samples of the index (a quick try).")
@click.option("--strict", is_flag=True,
              help="Exit non-zero when any sample had a failure or a file of a modality extracted was skipped "
                   "when indexing.")
@click.option("--overwrite", is_flag=True, help="Delete an existing cache at --cache and rebuild it.")
@click.option("--rebuild-if-changed", is_flag=True,
              help="Rebuild an existing cache only when it was built with other settings (dvc.yaml uses this).")
@click.option("--image-size", **_from_params("image_size", type=click.IntRange(16),
                                             help="Frames are resized to this square size inside the decoder."))
@click.option("--frame-stride", **_from_params("frame_stride", type=click.IntRange(1),
                                               help="Visual sampling: window 1, every N-th frame."))
@click.option("--sensor-window", **_from_params("sensor_window", type=click.IntRange(1), help="Time steps per sensor window."))
@click.option("--sensor-stride", **_from_params("sensor_stride", type=click.IntRange(1),
                                                help="Time steps between sensor window starts."))
@click.option("--sensor-rate", **_from_params("sensor_rate", type=click.FloatRange(0, min_open=True),
                                              help="Common time base (Hz) for a sample's sensor streams."))
@click.option("--part-size", **_from_params("part_size", type=click.IntRange(1),
                                            help="Samples per part: the unit of work, writing and resume."))
@click.option("--decode-timeout", **_from_params("decode_timeout", type=click.FloatRange(0, min_open=True),
                                                 help="Seconds before a hung decoder is killed and the input recorded as failed."))
def extract_command(params: str, data_root: Path | None, index_path: Path | None, cache_path: Path | None,
                    device: str, scheduler: str | None, limit: int | None, strict: bool, overwrite: bool,
                    rebuild_if_changed: bool, **options: object) -> None:
    """Turn a sample index into a feature cache: frames -> frozen ResNet-50 (float16, 2048-d),
    sensors -> windows. Resumable: rerun after an interruption to finish; a complete cache is skipped."""
    from_file = params_defaults(params)
    value = {}  # params key -> the option given, else the file's value, else the built-in one
    for option, given in options.items():
        key = _PARAMS_KEY.get(option, option)
        value[key] = given if given is not None else from_file.get(key, BUILT_IN[key])
    dataset, workers = value["dataset"], value["workers"]
    if not isinstance(workers, int) or workers < 0:  # the params file's value: click checks --workers itself
        raise MumuError(f"{params}: extract.workers must be 0 (this process) or more, got {workers!r}")
    specs = stored_modalities(dataset, select_modalities(dataset, value["modalities"]))  # a part: its modality
    for_dataset = from_file if dataset == from_file.get("dataset") else {}  # the file's paths are its dataset's
    data_root = data_root or Path(for_dataset.get("data_root") or Path("data") / dataset)
    samples, index_report = _load_samples(dataset, data_root, index_path)
    skipped = index_report["skipped_files"] if index_report else []
    # where the skipped files are listed: beside --index, else in the cache (written below)
    cache_path = cache_path or Path(for_dataset.get("cache") or Path("cache") / f"{dataset}.zarr")
    report_path = index_report_path(index_path) if index_path else cache_path / "index_report.json"
    if skipped:
        _report_skipped(skipped, report_path, specs, strict)
    if limit is not None:
        samples = samples[:limit]
    settings = ExtractSettings(**{field.name: value[field.name] for field in dataclasses.fields(ExtractSettings)})
    summary = run_extract(samples, dataset, specs, cache_path, settings, device, workers, scheduler, overwrite,
                          str(index_path) if index_path else None, rebuild_if_changed=rebuild_if_changed,
                          whole_index=limit is None)
    if index_path is None:  # the cache exists now; its own indexing's report goes into it
        write_json(report_path, index_report)
    _report_extraction(summary, cache_path, specs, len(samples), strict)


def _report_skipped(skipped: list[dict], report_path: Path, specs: list[ModalitySpec], strict: bool) -> None:
    """The files indexing skipped; under --strict, an error if any is of a modality extracted."""
    click.echo(f"{len(skipped)} files were skipped when indexing (unreadable or malformed; their samples keep "
               f"the modality as missing):")
    click.echo("\n".join(skipped_lines(skipped, report_path)))
    # --strict is about the modalities extracted (a file of unknown modality, from an older report, counts)
    relevant = [s for s in skipped if s.get("modality") in {spec.name for spec in specs} | {None}]
    if strict and relevant:
        raise MumuError(f"{len(relevant)} files of the modalities extracted were skipped when indexing, the first "
                        f"{relevant[0]['path']}: {relevant[0]['reason']} (--strict; all in {report_path})")


def _report_extraction(summary: dict, cache_path: Path, specs: list[ModalitySpec], n_samples: int,
                       strict: bool) -> None:
    """What was extracted and the samples with failures; an error when no sample is usable, or (--strict) any
    failed."""
    rate = summary["frames"] / summary["seconds"] if summary["seconds"] else 0.0
    frames = f", {summary['frames']} frames" if any(spec.visual for spec in specs) else ""
    speed = f" ({rate:.1f} frames/s)" if frames else ""
    click.echo(f"{cache_path}: extracted {summary['done']} samples in {summary['parts']} parts "
               f"({summary['skipped_parts']} parts already complete){frames} in {summary['seconds']:.1f} s{speed}")
    failures = summary["failures"]
    if failures:
        click.echo(f"{len(failures)} samples with failures ({len(summary['unusable'])} without any usable modality):")
        for sample_id, reason in sorted(failures.items())[:20]:
            click.echo(f"  {sample_id}: {reason}")
        if len(failures) > 20:
            click.echo(f"  ... and {len(failures) - 20} more (`python cli.py cache-info {cache_path}`)")
    if len(summary["unusable"]) == n_samples:  # the cache holds nothing to train on: not a success
        raise MumuError(f"{cache_path}: not one of the {n_samples} samples has a usable modality; the failures "
                        f"are listed by `python cli.py cache-info {cache_path}`")
    if strict and failures:
        raise MumuError(f"{len(failures)} samples had failures (--strict)")
