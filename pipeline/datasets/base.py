"""What every adapter shares: the result type, the skip-or-raise rule, and cheap file checks.

The checks read a few bytes per file (a header, a first row), never whole files, so indexing the
full MMAct release stays quick; decoding problems the checks cannot see surface in extraction.
"""
from __future__ import annotations

import os
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pipeline.errors import MumuError
from pipeline.index import Sample
from pipeline.sensors import parse_mmact_time
from pipeline.tables import Activity, ActivityTable


@dataclass
class Skipped:
    path: str
    reason: str
    modality: str | None = None  # the file's modality: `extract --strict` fails only on those it extracts


@dataclass
class IndexResult:
    dataset: str
    data_root: Path
    table: ActivityTable  # the labels used
    modalities: list[str]  # the dataset's modalities, in index column order
    samples: list[Sample] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)  # bad files: path + reason
    unknown: list[str] = field(default_factory=list)  # files that are not part of the layout

    def counts(self) -> dict:
        """The numbers the summary prints and the JSON report stores (table order, zeros included)."""
        activities, groups = Counter(s.activity for s in self.samples), Counter(s.group for s in self.samples)
        return {
            "samples": len(self.samples),
            "per_activity": {name: activities[name] for name in self.table.activity_names},
            "per_group": {name: groups[name] for name in self.table.group_names},
            "per_subject": {str(k): v for k, v in sorted(Counter(s.subject for s in self.samples).items())},
            "missing": {m: sum(1 for s in self.samples if not s.paths.get(m)) for m in self.modalities},
            "skipped": len(self.skipped),
            "unknown_files": len(self.unknown),
        }

    def report(self, index: str | None) -> dict:
        """The JSON report of this indexing: `cli.py index` writes it beside the index, `cli.py extract` (when it
        indexes the data root itself) into the cache."""
        return {"dataset": self.dataset, "data_root": str(self.data_root), "table": str(self.table.path),
                "index": index, **self.counts(),
                "skipped_files": [{"path": s.path, "reason": s.reason, "modality": s.modality} for s in self.skipped],
                "unknown_file_list": self.unknown}


def skipped_lines(skipped: list[dict], report: str | Path, shown: int = 20) -> list[str]:
    """The printed list of a report's skipped files: "  PATH: reason", the first `shown` of them."""
    lines = [f"  {s['path']}: {s['reason']}" for s in skipped[:shown]]
    if len(skipped) > shown:
        lines.append(f"  ... and {len(skipped) - shown} more (see {report})")
    return lines


class Recorder:
    """Collects skipped files; under ``strict`` the first one stops the run instead."""

    def __init__(self, result: IndexResult, strict: bool):
        self.result, self.strict = result, strict

    def skip(self, path: Path, reason: str, modality: str | None = None) -> None:
        if self.strict:
            raise MumuError(f"{path}: {reason}")
        self.result.skipped.append(Skipped(str(path), reason, modality))

    def unknown(self, path: Path) -> None:
        self.result.unknown.append(str(path))


class SampleSet:
    """Samples assembled file by file: the first file of a key creates the sample, each further file
    fills in its modality; a second file for the same modality is recorded as a duplicate."""

    def __init__(self, dataset: str, modalities: list[str], record: Recorder):
        self.dataset, self.modalities, self.record = dataset, modalities, record
        self.by_key: dict[tuple, Sample] = {}

    def add(self, key: tuple, path: Path, modality: str, activity: Activity, sample_id: str,
            view: str | None = None, **fields: Any) -> None:
        sample = self.by_key.get(key)
        if sample is None:
            sample = self.by_key[key] = Sample(
                sample_id=sample_id, dataset=self.dataset, activity=activity.activity,
                activity_id=activity.activity_id, group=activity.group, group_id=activity.group_id,
                paths={m: None for m in self.modalities}, **fields,
            )
        if sample.paths[modality]:
            self.record.skip(path, f"duplicate {modality} file for {sample.sample_id} (kept {sample.paths[modality]})",
                             modality)
            return
        sample.paths[modality] = str(path.resolve())
        if view:
            sample.views = sorted(sample.views + [view])

    def sorted(self) -> list[Sample]:
        """Samples in key order (adapters put subject first)."""
        return [self.by_key[k] for k in sorted(self.by_key)]


def walk_files(root: Path) -> Iterable[Path]:
    """Every file under ``root``, sorted (so indexes and tie-breaks are reproducible), with a progress
    bar on a terminal: the full MMAct release has ~70k files to check."""
    from tqdm import tqdm

    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        found.extend(Path(folder) / name for name in sorted(files))
    return tqdm(found, desc=f"checking {root}", unit="file", disable=None, leave=False)


# ----------------------------------------------------------------------------- file checks
# Each returns None when the file looks usable, else a short description of the problem.

def check_nonempty(path: Path) -> str | None:
    try:
        return "empty file" if path.stat().st_size == 0 else None
    except OSError as e:
        return f"unreadable ({e.strerror})"


_MP4_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp"}


def check_video(path: Path) -> str | None:
    """MP4/MOV: the first box has a known type; AVI: a RIFF header."""
    problem = check_nonempty(path)
    if problem:
        return problem
    head = _read_head(path, 12)
    if path.suffix.lower() == ".avi":
        return None if head[:4] == b"RIFF" and head[8:12] == b"AVI " else "not an AVI file (no RIFF/AVI header)"
    if len(head) < 8 or head[4:8] not in _MP4_BOXES:
        return "not an MP4 file (no MP4 box at the start)"
    return None


def check_mat(path: Path, variable: str) -> str | None:
    """A MATLAB v5 file whose first variable is ``variable`` and whose data is not truncated.

    Reads the 128-byte header and the first data element's tag and array name (inflating only the
    first few hundred bytes of a compressed element); a v7.3 (HDF5) file is accepted by its header.
    """
    problem = check_nonempty(path)
    if problem:
        return problem
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(136)
        if len(header) < 128 or not header.startswith(b"MATLAB"):
            return "not a MATLAB file (bad 128-byte header)"
        if header.startswith(b"MATLAB 7.3"):
            return None  # HDF5-based: readable by h5py, nothing cheap to check beyond the header
        if len(header) < 136:
            return "truncated MATLAB file (no data element after the header)"
        endian = {b"IM": "<", b"MI": ">"}.get(header[126:128])
        if endian is None:
            return "not a MATLAB v5 file (bad endian indicator)"
        kind, nbytes = struct.unpack(endian + "II", header[128:136])
        if 136 + nbytes > size:
            return f"truncated MATLAB file (first element needs {136 + nbytes} bytes, file has {size})"
        body = f.read(min(nbytes, 4096))
    if kind == 15:  # miCOMPRESSED: inflate just enough for the array header
        try:
            body = zlib.decompressobj().decompress(body, 512)
        except zlib.error as e:
            return f"corrupt compressed MATLAB data ({e})"
        if len(body) < 8:
            return "corrupt compressed MATLAB data"
        kind, _ = struct.unpack(endian + "II", body[:8])
        body = body[8:]
    if kind != 14:  # miMATRIX
        return f"unexpected MATLAB element type {kind} (expected a matrix)"
    name = _mat_array_name(body, endian)
    if name is None:
        return "corrupt MATLAB array header"
    if name != variable:
        return f"MATLAB variable is {name!r}, expected {variable!r}"
    return None


def _mat_array_name(body: bytes, endian: str) -> str | None:
    """Skip the array-flags and dimensions sub-elements; return the array-name sub-element."""
    pos = 0
    try:
        for _ in range(2):  # flags, dimensions
            pos = _next_subelement(body, pos, endian)[1]
        kind_size = struct.unpack(endian + "I", body[pos:pos + 4])[0]
        if kind_size >> 16:  # small data element: size in the upper two bytes, data inline
            size = kind_size >> 16
            return body[pos + 4:pos + 4 + size].decode("ascii")
        size = struct.unpack(endian + "I", body[pos + 4:pos + 8])[0]
        return body[pos + 8:pos + 8 + size].decode("ascii")
    except (struct.error, UnicodeDecodeError):
        return None


def _next_subelement(body: bytes, pos: int, endian: str) -> tuple[bytes, int]:
    kind_size = struct.unpack(endian + "I", body[pos:pos + 4])[0]
    if kind_size >> 16:
        return body[pos + 4:pos + 8], pos + 8
    size = struct.unpack(endian + "I", body[pos + 4:pos + 8])[0]
    end = pos + 8 + size + (-size % 8)  # padded to 8 bytes
    if end > len(body):
        raise struct.error("sub-element past the end")
    return body[pos + 8:pos + 8 + size], end


def _read_head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def first_line(path: Path, max_bytes: int = 4096) -> str | None:
    """The first non-empty line (None for a file with no text), without reading the whole file."""
    with open(path, "rb") as f:
        for raw in f:
            line = raw[:max_bytes].decode("utf-8", errors="replace").strip()
            if line:
                return line
    return None


def check_mmact_csv(path: Path) -> str | None:
    """Headerless ``timestamp,x,y,z`` with MMAct's ``%Y%m%d_%H:%M:%S[.%f]`` timestamps."""
    problem = check_nonempty(path)
    if problem:
        return problem
    line = first_line(path)
    if line is None:
        return "empty CSV (no rows)"
    fields = line.split(",")
    if len(fields) != 4:
        return f"first row has {len(fields)} columns, expected 4 (timestamp,x,y,z): {line[:60]!r}"
    stamp = fields[0].strip()
    try:
        parse_mmact_time(stamp)
        [float(v) for v in fields[1:]]
    except ValueError:
        return f"first row is not timestamp,x,y,z (timestamp like 20181016_13:39:52.123): {line[:60]!r}"
    return None


def check_headed_csv(path: Path, n_columns: int) -> str | None:
    """A CSV whose header starts with ``time`` and has ``n_columns`` columns, and a numeric first row."""
    problem = check_nonempty(path)
    if problem:
        return problem
    with open(path, "rb") as f:
        header = f.readline().decode("utf-8", errors="replace").strip()
        row = f.readline().decode("utf-8", errors="replace").strip()
    columns = header.split(",")
    if columns[0].strip().lower() != "time" or len(columns) != n_columns:
        return f"header must be time + {n_columns - 1} channels ({n_columns} columns), got {len(columns)}: {header[:60]!r}"
    if not row:
        return "no data rows after the header"
    try:
        values = [float(v) for v in row.split(",")]
    except ValueError:
        return f"first data row is not numeric: {row[:60]!r}"
    if len(values) != n_columns:
        return f"first data row has {len(values)} columns, the header {n_columns}"
    return None
