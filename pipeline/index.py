"""The sample index: one row per sample, written as CSV so a person can open it.

Columns: the fixed fields of `Sample`, then one ``path:<modality>`` column per modality of the
dataset. An empty path cell means the modality is missing for that sample.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import MumuError
from pipeline.files import replaced_whole
from pipeline.tables import read_csv_rows

FIELDS = [
    "sample_id", "dataset", "subject", "session", "scene", "trial", "views",
    "activity", "activity_id", "group", "group_id",
]
_INT_FIELDS = {"subject", "session", "scene", "trial", "activity_id", "group_id"}


@dataclass
class Sample:
    sample_id: str
    dataset: str
    subject: int
    activity: str
    activity_id: int
    group: str
    group_id: int
    session: int | None = None
    scene: int | None = None
    trial: int | None = None
    views: list[str] = field(default_factory=list)  # camera views available, e.g. ["cam1", "cam3"]
    paths: dict[str, str | None] = field(default_factory=dict)  # modality -> file, None = missing

    def missing(self) -> list[str]:
        return [m for m, p in self.paths.items() if not p]


def index_report_path(index: str | Path) -> Path:
    """Where `cli.py index` writes the report of an index (skipped files, counts): beside it, <stem>_report.json."""
    return Path(index).with_name(Path(index).stem + "_report.json")


def write_index(samples: list[Sample], path: str | Path, modalities: list[str]) -> None:
    with replaced_whole(path) as tmp, open(tmp, "w", newline="") as f:  # a reader never sees half an index
        writer = csv.writer(f)
        writer.writerow(FIELDS + [f"path:{m}" for m in modalities])
        for s in samples:
            row = [getattr(s, k) for k in FIELDS]
            row[FIELDS.index("views")] = ";".join(s.views)
            row = ["" if v is None else v for v in row]
            writer.writerow(row + [s.paths.get(m) or "" for m in modalities])


def read_index(path: str | Path) -> list[Sample]:
    path = Path(path)
    columns, rows = read_csv_rows(path, FIELDS, "sample index", hint="; run `python cli.py index` first")
    modalities = [c.split(":", 1)[1] for c in columns if c.startswith("path:")]
    if not rows:  # extracting it would leave an empty cache in place of a full one
        raise MumuError(f"{path}: the sample index holds no samples (only its header); run `python cli.py index` again")
    samples, first_line = [], {}  # sample_id -> the line it was first seen on
    for line, row in rows:
        sample_id = row["sample_id"]
        if sample_id in first_line:  # the cache keys samples by id: a second copy would make it unreadable
            raise MumuError(f"{path}: duplicate sample_id {sample_id} (lines {first_line[sample_id]} and {line})")
        first_line[sample_id] = line
        try:
            values = {k: (int(row[k]) if row[k] != "" else None) if k in _INT_FIELDS else row[k] for k in FIELDS}
        except ValueError as e:
            raise MumuError(f"{path}:{line}: malformed row ({e})") from None
        values["views"] = [v for v in values["views"].split(";") if v]
        values["paths"] = {m: (row[f"path:{m}"] or None) for m in modalities}
        samples.append(Sample(**values))
    return samples
