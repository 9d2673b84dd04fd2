"""The feature cache: a zarr v3 store written by `extract`, read by training (format: docs/cache-format.md).

Layout::

    CACHE/zarr.json                       root group; attrs["mumu_cache"] = format, fingerprint,
                                          provenance, dataset, modalities
    CACHE/parts/part-000007/zarr.json     one group per part (a fixed run of samples in index order);
                                          attrs: samples, sources, failures, retry, unusable, frames,
                                          frame_features, sensor_missing_fraction, files
    CACHE/parts/part-000007/<m>/values    visual (N, 2048) float16 | sensor (N, W, C) float32
    CACHE/parts/part-000007/<m>/offsets   (n_samples + 1,) int64: sample i is values[off[i]:off[i+1]]
    CACHE/plan.json                       the parts the latest extract set out to write (unfinished: warned)
    CACHE/.staging/, CACHE/.lock          work in progress, the writer lock (not part of the data)
    CACHE/.readers                        readers' shared lock: parts are never deleted under a reader

A part is written by one process into ``.staging`` and renamed into ``parts/`` when complete,
so a part is either absent or whole (one writer per shard; a kill leaves only staging debris). A folder in
``parts/`` without its zarr.json was therefore damaged after the fact: readers leave it out and say so, and the
next extract redoes it. A part also lists its array files with their sizes (``files``): zarr reads a missing
chunk as zeros, so a file lost or cut short after the fact (a partial copy) is found by that list instead.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np

from pipeline.errors import MumuError
from pipeline.files import write_text
from pipeline.index import Sample
from pipeline.modalities import FEATURE_DIM, ModalitySpec

FORMAT_VERSION = 1
ATTRS_KEY = "mumu_cache"
PARTS = "parts"
PLAN = "plan.json"
STAGING = ".staging"
LOCK = ".lock"
READERS = ".readers"
TARGET_CHUNK_BYTES = 1 << 19  # 512 KiB uncompressed: a few samples per chunk, cheap random reads


# ---------------------------------------------------------------------------------------------
# writing (used by pipeline.extract)


class CacheLock:
    """Exclusive writer lock on a cache (flock: released by the kernel even after SIGKILL). Adding parts
    needs nothing more; a writer about to delete or replace data calls `exclude_readers` first."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = None
        self._readers = None

    def __enter__(self) -> CacheLock:
        # Refuse a folder that is not a cache before the lock file is added to it. A cache being rebuilt has
        # its .lock already (and may lack its zarr.json for a moment): the flock below refuses that one.
        if not (self.path / LOCK).exists() and not _no_cache_yet(self.path):
            _read_header(self.path, check_format=False)
        self.path.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path / LOCK, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise MumuError(f"{self.path} is being written by another extract process; wait for it to finish") from None
        return self

    def exclude_readers(self) -> None:
        """Refuse, changing nothing, while any process reads the cache (`FeatureCache` holds a shared lock on
        CACHE/.readers), and keep new readers out until this writer ends."""
        if self._readers is not None:
            return
        readers = open(self.path / READERS, "a+")
        try:
            fcntl.flock(readers, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            readers.close()
            raise MumuError(f"{self.path}: this extract would redo or delete parts, but another process is reading "
                            "the cache (a training or evaluation run); no part was redone or deleted. Run extract "
                            "again when it has finished, or extract into another --cache") from None
        self._readers = readers

    def __exit__(self, *exc) -> None:
        for handle in (self._readers, self._file):
            if handle is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()


def _hold_read_lock(path: Path):
    """A shared lock on CACHE/.readers, held while the returned file stays open (None: a cache written before
    the readers' lock existed has no such file, and is read without it until its next extract)."""
    try:
        handle = open(path / READERS, "r")  # read-only: readers never create a file in the cache
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise MumuError(f"{path} is being rebuilt by extract (parts are being redone or deleted); run again when "
                        "it has finished") from None
    return handle


def prepare_cache(path: str | Path, header: dict, overwrite: bool, rebuild_if_changed: bool = False,
                  lock: CacheLock | None = None) -> None:
    """Create the root group, or check that an existing cache was built with the same fingerprint.

    ``header`` = {dataset, modalities, fingerprint, provenance}. Call while holding `CacheLock` (``lock``:
    a rebuild first excludes readers through it).
    ``rebuild_if_changed``: rebuild a cache whose fingerprint differs instead of refusing (for
    pipelines such as dvc.yaml, where a settings change must rebuild and an interruption resume).
    """
    import zarr

    path = Path(path)
    contents = _contents(path)
    # A non-empty folder that is not a mumu cache raises here: nothing is ever deleted from it.
    existing = None if _no_cache_yet(path) else _read_header(path, check_format=False)
    if existing is not None and not overwrite:
        old = {**existing.get("fingerprint", {}), "format": existing.get("format")}
        new = {**header["fingerprint"], "format": FORMAT_VERSION}
        differences = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
        if differences and not rebuild_if_changed:
            listed = "; ".join(f"{k}: cache has {was!r}, now {now!r}" for k, (was, now) in differences.items())
            raise MumuError(f"{path} was built with different settings ({listed}); "
                            f"use another --cache or --overwrite to rebuild it")
        if not differences:
            zarr.open_group(str(path), mode="a", zarr_format=3).require_group(PARTS)  # a kill may have beaten it
            (path / READERS).touch()  # a cache from before the readers' lock gets one
            return
    if contents and lock is not None:
        lock.exclude_readers()
    # Rebuild everything but the locks, the header last: a kill mid-way leaves a cache the rerun rebuilds again.
    for entry in sorted(contents, key=lambda entry: entry.name == "zarr.json"):
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    # The header goes into zarr.json in one write, so a kill never leaves a cache without one.
    root = zarr.create_group(str(path), zarr_format=3, attributes={ATTRS_KEY: {"format": FORMAT_VERSION, **header}})
    root.create_group(PARTS)
    (path / READERS).touch()  # created with the cache, so that readers never add a file to it


def part_name(index: int) -> str:
    return f"part-{index:06d}"


def _part_folders(path: str | Path) -> list[Path]:
    parts_dir = Path(path) / PARTS
    return sorted(parts_dir.glob("part-*")) if parts_dir.is_dir() else []


def read_part_attrs(path: str | Path) -> dict[str, dict]:
    """{part name: attrs} of the complete parts in the cache; MumuError naming a part whose zarr.json is damaged."""
    found = {}
    for entry in _part_folders(path):
        meta = entry / "zarr.json"
        if meta.is_file():
            with _reading_part(entry, "zarr.json"):
                found[entry.name] = json.loads(meta.read_text())["attributes"]
    return found


def incomplete_parts(path: str | Path) -> list[str]:
    """Part folders without their zarr.json: never complete (parts are renamed into place whole), so readers
    leave them out; the next extract replaces them. Staging debris of a killed run is not counted."""
    return [entry.name for entry in _part_folders(path) if not (entry / "zarr.json").is_file()]


def write_plan(path: str | Path, part_names: list[str]) -> None:
    """Record the parts an extract sets out to write, so that readers can tell an unfinished cache."""
    write_text(Path(path) / PLAN, json.dumps({"parts": part_names}))


def unwritten_parts(path: str | Path) -> list[str]:
    """The parts the latest extract planned that are not in ``parts/`` (it was stopped, or is still running)."""
    plan = Path(path) / PLAN
    if not plan.is_file():  # a cache from before the plan was kept
        return []
    written = {entry.name for entry in _part_folders(path)}
    return [name for name in json.loads(plan.read_text())["parts"] if name not in written]


def incomplete_parts_notes(path: str | Path) -> list[str]:
    """What readers warn the user of about `incomplete_parts` and `unwritten_parts` ([] when there are none)."""
    notes = []
    if names := incomplete_parts(path):
        notes.append(f"{Path(path) / PARTS}: {len(names)} part folder(s) without their zarr.json, so not complete "
                     f"and left out: {', '.join(names)}; rerun the same `cli.py extract` to redo them")
    if names := unwritten_parts(path):
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        notes.append(f"{path}: extraction has not finished: {len(names)} planned part(s) are not written ({shown}); "
                     "rerun the same `cli.py extract` (or let the running one end) to complete the cache")
    return notes


@contextlib.contextmanager
def _reading_part(part_dir: Path, what: str) -> Iterator[None]:
    """Whatever json, zarr or the codec raises on a damaged part, the cure is the same: one line saying it."""
    try:
        yield
    except Exception as e:  # noqa: BLE001
        raise MumuError(f"{part_dir}: {what} cannot be read ({_described(e)}); the part is damaged: delete that "
                        "folder and rerun the same `cli.py extract` to redo it") from None


def _described(error: Exception) -> str:
    """An error in one line: its type and the first line of its message."""
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"


def damaged_files(path: str | Path, name: str, attrs: dict) -> list[str]:
    """What is wrong with the array files a complete part lists (missing, another size); [] when nothing is, or
    for a part written before the list was kept."""
    part_dir = Path(path) / PARTS / name
    problems = []
    for relative, size in attrs.get("files", {}).items():
        stored = part_dir / relative
        found = stored.stat().st_size if stored.is_file() else None
        if found is None:
            problems.append(f"{relative} is missing")
        elif found != size:
            problems.append(f"{relative} has {found} bytes, {size} when written")
    return problems


def remove_part(path: str | Path, name: str) -> None:
    shutil.rmtree(Path(path) / PARTS / name, ignore_errors=True)


def update_part_attrs(path: str | Path, name: str, changes: dict) -> None:
    """Replace some attributes of a complete part; its metadata file is swapped in one rename (kill-safe)."""
    meta = Path(path) / PARTS / name / "zarr.json"
    document = json.loads(meta.read_text())
    document["attributes"] = {**document["attributes"], **changes}
    write_text(meta, json.dumps(document), shared=True)  # two extract workers may update one part


def write_part(path: str | Path, name: str, modalities: list[ModalitySpec], samples: list[Sample],
               arrays: dict[str, list[np.ndarray | None]], attrs: dict) -> bool:
    """Write one part: ``arrays[m][i]`` is sample i's visual (S, 2048) or sensor (S, W, C) array, or None.

    Written into staging, then renamed into place. Returns False when another process finished the
    same part first (its copy is kept; ours is dropped).
    """
    import zarr

    path = Path(path)
    staging = path / STAGING / f"{name}-{uuid.uuid4().hex[:8]}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(str(staging), mode="w", zarr_format=3)
    group.attrs.update({**attrs, "samples": [dataclasses.asdict(s) for s in samples]})
    for spec in modalities:
        per_sample = arrays[spec.name]
        trailing = (FEATURE_DIM,) if spec.visual else None
        present = [a for a in per_sample if a is not None]
        if trailing is None:
            trailing = present[0].shape[1:] if present else (1, spec.channels)
        dtype = np.float16 if spec.visual else np.float32
        lengths = [0 if a is None else len(a) for a in per_sample]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # (n + 1,)
        values = (np.concatenate(present).astype(dtype) if present
                  else np.zeros((0, *trailing), dtype))  # (N, 2048) | (N, W, C)
        row_bytes = int(np.prod(trailing)) * np.dtype(dtype).itemsize
        chunk_rows = max(1, TARGET_CHUNK_BYTES // row_bytes)
        shard_rows = max(chunk_rows, -(-len(values) // chunk_rows) * chunk_rows)  # one shard per part
        stored = group.create_array(f"{spec.name}/values", shape=values.shape, dtype=dtype,
                                    chunks=(chunk_rows, *trailing), shards=(shard_rows, *trailing))
        if len(values):
            stored[:] = values
        group.create_array(f"{spec.name}/offsets", shape=offsets.shape, dtype=np.int64, chunks=offsets.shape)[:] = offsets
    group.attrs["files"] = {str(f.relative_to(staging)): f.stat().st_size for f in sorted(staging.rglob("*"))
                            if f.is_file() and f != staging / "zarr.json"}  # (the part's own zarr.json holds this)
    target = path / PARTS / name
    try:
        os.rename(staging, target)  # atomic: readers and reruns see the part whole or not at all
    except OSError:
        if not (target / "zarr.json").is_file():
            raise
        shutil.rmtree(staging, ignore_errors=True)
        return False
    return True


def clear_staging(path: str | Path) -> None:
    """Drop what no reader sees: leftovers of killed writers and incomplete part folders (a part folder must be
    absent before its part can be renamed into place). Only call while holding `CacheLock`."""
    shutil.rmtree(Path(path) / STAGING, ignore_errors=True)
    for name in incomplete_parts(path):
        remove_part(path, name)


def _contents(path: Path) -> list[Path]:
    """What a folder holds besides the locks ([] for anything that is not a folder)."""
    return [e for e in path.iterdir() if e.name not in (LOCK, READERS)] if path.is_dir() else []


def _no_cache_yet(path: Path) -> bool:
    """Nothing there, an empty folder (locks aside), or what a rebuild killed before this code deleted the header
    last left (our lock and our folders, no header): a place to extract a new cache into."""
    if not path.exists() or (path.is_dir() and not _contents(path)):
        return True
    ours = {PARTS, STAGING, PLAN, "index_report.json"}
    return (path / LOCK).is_file() and not (path / "zarr.json").exists() and {e.name for e in _contents(path)} <= ours


def _read_header(path: Path, check_format: bool = True) -> dict:
    meta = path / "zarr.json"
    if not meta.is_file():
        raise MumuError(f"{path} is not a mumu feature cache (a cache is a folder with a zarr.json)")
    try:
        document = json.loads(meta.read_text())
    except (OSError, ValueError) as e:  # ValueError: invalid JSON or UTF-8
        raise MumuError(f"{meta} cannot be read ({_described(e)}): {path} is not a mumu feature cache, or one "
                        "whose header is damaged (delete that one and rerun `cli.py extract`)") from None
    try:
        attrs = document["attributes"][ATTRS_KEY]
    except (KeyError, TypeError):
        raise MumuError(f"{path} is not a mumu feature cache (no {ATTRS_KEY} attributes in zarr.json)") from None
    if check_format and attrs.get("format") != FORMAT_VERSION:
        raise MumuError(f"{path}: cache format {attrs.get('format')}, this code reads format {FORMAT_VERSION}; "
                        f"rebuild it with `extract --overwrite`")
    return attrs


# ---------------------------------------------------------------------------------------------
# reading


class FeatureCache:
    """Read side, used by training (contract in docs/architecture.md).

    ``read(sample_id)`` -> {modality: visual (S, 2048) float16 | sensor (S, W, C) float32 | None}.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if _no_cache_yet(self.path):  # anything else that is not a cache is named so by _read_header
            raise MumuError(f"{self.path}: no feature cache here; run `python cli.py extract --cache {self.path}`")
        self._read_lock = _hold_read_lock(self.path)  # released when this object is garbage-collected
        header = _read_header(self.path)
        self.dataset: str = header["dataset"]
        self.fingerprint: dict = header["fingerprint"]
        self.provenance: dict = header["provenance"]
        self.modalities = [ModalitySpec(**m) for m in header["modalities"]]
        self.failures: dict[str, str] = {}
        self.parts: dict[str, dict] = read_part_attrs(self.path)
        self.samples: list[Sample] = []
        self._where: dict[str, tuple[str, int]] = {}  # sample_id -> (part, position in part)
        for name, attrs in self.parts.items():
            if problems := damaged_files(self.path, name, attrs):
                raise MumuError(f"{self.path / PARTS / name}: {'; '.join(problems)}: the part is damaged; rerun the "
                                "same `cli.py extract` to redo it")
            self.failures.update(attrs["failures"])
            for position, fields in enumerate(attrs["samples"]):
                if fields["sample_id"] in attrs["unusable"]:
                    continue  # every modality failed: nothing to read
                if fields["sample_id"] in self._where:
                    first = self._where[fields["sample_id"]][0]
                    raise MumuError(f"{self.path}: sample {fields['sample_id']!r} is in both {first} and {name}; rerun "
                                    "`cli.py extract` on its whole index (without --limit) to drop the parts an "
                                    "earlier, longer index left")
                self.samples.append(Sample(**fields))
                self._where[fields["sample_id"]] = (name, position)
        self._arrays: dict[tuple[str, str], tuple[np.ndarray, object]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _modality(self, part: str, modality: str) -> tuple[np.ndarray, object]:
        """(offsets, lazy values) of one modality of one part; MumuError naming the array that cannot be read."""
        key = (part, modality)
        if key not in self._arrays:
            import zarr

            part_dir = self.path / PARTS / part
            with _reading_part(part_dir, f"{modality}/offsets"):
                offsets = zarr.open_array(str(part_dir / modality / "offsets"), mode="r")[:]
            with _reading_part(part_dir, f"{modality}/values"):
                values = zarr.open_array(str(part_dir / modality / "values"), mode="r")
            self._arrays[key] = (offsets, values)
        return self._arrays[key]

    def read(self, sample_id: str) -> dict[str, np.ndarray | None]:
        try:
            part, position = self._where[sample_id]
        except KeyError:
            reason = self.failures.get(sample_id)
            raise MumuError(f"{self.path}: sample {sample_id!r} is not in the cache"
                            + (f" (extraction failed: {reason})" if reason else "")) from None
        out = {}
        for spec in self.modalities:
            offsets, values = self._modality(part, spec.name)
            with _reading_part(self.path / PARTS / part, f"{spec.name} of {sample_id!r}"):
                start, stop = int(offsets[position]), int(offsets[position + 1])
                out[spec.name] = values[start:stop] if stop > start else None
        return out

    def lacking(self, names: list[str]) -> list[str]:
        """The samples (ids) that hold not one step of any of the modalities `names`, e.g. because extraction
        recorded those files as failed: a model given only those modalities has nothing to read for them.
        Extraction records every input it could not use, so only samples with a recorded failure or without a
        file of one of `names` can lack them: only their offsets are read (a full scan cost ~100 ms a call)."""
        lacking = []
        for sample in self.samples:
            if sample.sample_id not in self.failures and all(sample.paths.get(name) for name in names):
                continue
            part, position = self._where[sample.sample_id]
            steps = 0
            for name in names:
                offsets, _ = self._modality(part, name)
                steps += int(offsets[position + 1] - offsets[position])
            if not steps:
                lacking.append(sample.sample_id)
        return lacking

    def stored_bytes(self) -> dict[str, int]:
        """On-disk bytes per modality, over all parts."""
        sizes = {}
        for spec in self.modalities:
            files = (f for part in self.parts for f in (self.path / PARTS / part / spec.name).rglob("*") if f.is_file())
            sizes[spec.name] = sum(f.stat().st_size for f in files)
        return sizes


# ---------------------------------------------------------------------------------------------
# cache-info


@click.command("cache-info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--failures", "show_failures", type=click.IntRange(0), default=10, show_default=True, help="How many failures to list.")
def cache_info_command(path: Path, show_failures: int) -> None:
    """Summarise the feature cache at PATH: samples, modalities, segments, bytes, failures, provenance."""
    cache = FeatureCache(path)
    click.echo(f"{path}: {cache.dataset}, {len(cache)} samples in {len(cache.parts)} parts, "
               f"{len(cache.failures)} with failures")
    for note in incomplete_parts_notes(path):
        click.echo(f"warning: {note}")
    sizes = cache.stored_bytes()
    for spec in cache.modalities:
        present, steps = 0, 0
        for part in cache.parts:
            offsets, _ = cache._modality(part, spec.name)
            lengths = np.diff(offsets)
            present, steps = present + int((lengths > 0).sum()), steps + int(lengths.sum())
        unit = "segments" if spec.visual else "windows"
        click.echo(f"  {spec.name:<12} {spec.kind:<6} {present:>6} samples  {steps:>8} {unit}  "
                   f"{sizes[spec.name] / 2**20:8.2f} MiB")
    gaps = [(sensor, fraction) for attrs in cache.parts.values()
            for fractions in attrs.get("sensor_missing_fraction", {}).values()
            for sensor, fraction in fractions.items() if fraction > 0]
    if gaps:  # bridged by interpolation, so not failures, but a user should know the data had holes
        per_sensor = {name: [f for s, f in gaps if s == name] for name in sorted({s for s, _ in gaps})}
        click.echo("missing values bridged by interpolation: " + ", ".join(
            f"{name} in {len(f)} samples (up to {100 * max(f):.0f} %)" for name, f in per_sensor.items()))
    if any(spec.visual for spec in cache.modalities):
        computed = Counter(attrs.get("frame_features", "not recorded") for attrs in cache.parts.values())
        click.echo("frame features computed in: " + ", ".join(f"{how} ({n} parts)" for how, n in sorted(computed.items())))
    for sample_id, reason in list(cache.failures.items())[:show_failures]:
        click.echo(f"  failed {sample_id}: {reason}")
    if len(cache.failures) > show_failures:
        click.echo(f"  ... {len(cache.failures) - show_failures} more failures")
    click.echo("fingerprint: " + json.dumps(cache.fingerprint, sort_keys=True))
    click.echo("provenance: " + json.dumps(cache.provenance, sort_keys=True))
