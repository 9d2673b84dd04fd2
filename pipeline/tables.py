"""Activity tables: each dataset's activity names, integer ids and activity groups.

They are plain CSV files in ``pipeline/tables/<dataset>.csv`` so that a person can edit them (some
group mappings are inferred, see docs/datasets.md); editing a table changes the groups without
touching code. Columns:

    activity_id  0..K-1, the class index used by training
    activity     class name
    group_id     0..G-1, the auxiliary-task index
    group        group name (one name per group_id)
    file_label   the label as the adapter reads it from the dataset (UTD-MHAD ``a1``; MMAct the
                 lower-cased file stem, with scene 3's phone stems already remapped to ``*_desk``)
    inferred     ``yes`` when the group assignment is an inference, else ``no``
    note         free text: where the mapping comes from
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pipeline.errors import MumuError

TABLES_DIR = Path(__file__).resolve().parent / "tables"
COLUMNS = ["activity_id", "activity", "group_id", "group", "file_label", "inferred", "note"]


@dataclass(frozen=True)
class Activity:
    activity_id: int
    activity: str
    group_id: int
    group: str
    file_label: str
    inferred: bool
    note: str


@dataclass(frozen=True)
class ActivityTable:
    path: Path
    activities: tuple[Activity, ...]  # ordered by activity_id

    def by_label(self, file_label: str) -> Activity | None:
        return self._by_label.get(file_label)

    @cached_property
    def _by_label(self) -> dict[str, Activity]:
        return {a.file_label: a for a in self.activities}

    @property
    def activity_names(self) -> list[str]:
        return [a.activity for a in self.activities]

    @property
    def group_names(self) -> list[str]:
        """Group names ordered by group_id."""
        return [name for _, name in sorted({(a.group_id, a.group) for a in self.activities})]


def read_csv_rows(path: Path, required: list[str], kind: str, hint: str = "") -> tuple[list[str], list[tuple[int, dict]]]:
    """The columns and (line number, row) pairs of a person-editable CSV (a label table, a sample
    index), after checking that it exists and has the `required` columns; errors name the file."""
    if not path.is_file():
        raise MumuError(f"{kind} {path} does not exist{hint}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        missing = [c for c in required if c not in columns]
        if missing:
            raise MumuError(f"{path}: not {'an' if kind[0] in 'aeiou' else 'a'} {kind} (missing columns {', '.join(missing)})")
        rows = list(enumerate(reader, start=2))
    for line, row in rows:  # DictReader pads a short row with None and keeps a long row's extras under None
        if None in row or None in row.values():
            cells = sum(row[c] is not None for c in columns) + len(row.get(None, []))
            raise MumuError(f"{path}:{line}: {cells} cells where the header has {len(columns)}")
    return columns, rows


def table_path(dataset: str) -> Path:
    return TABLES_DIR / f"{dataset}.csv"


def load_table(dataset: str, path: str | Path | None = None) -> ActivityTable:
    """Read and check ``path`` (default: the shipped table of ``dataset``)."""
    path = Path(path) if path is not None else table_path(dataset)
    _, rows = read_csv_rows(path, COLUMNS, "activity table")
    activities = []
    for line, row in rows:
        try:
            activity_id, group_id = int(row["activity_id"]), int(row["group_id"])
        except ValueError:
            raise MumuError(f"{path}:{line}: activity_id and group_id must be integers") from None
        if row["inferred"].strip().lower() not in ("yes", "no"):
            raise MumuError(f"{path}:{line}: inferred must be yes or no, got {row['inferred']!r}")
        activities.append(Activity(
            activity_id, row["activity"].strip(), group_id, row["group"].strip(),
            row["file_label"].strip(), row["inferred"].strip().lower() == "yes", row["note"] or "",
        ))
    _check(path, activities)
    return ActivityTable(path, tuple(sorted(activities, key=lambda a: a.activity_id)))


def _check(path: Path, activities: list[Activity]) -> None:
    """Ids must be 0..K-1 and 0..G-1 (they index logits), names and labels unique, groups consistent."""
    if not activities:
        raise MumuError(f"{path}: the activity table is empty")
    ids = sorted(a.activity_id for a in activities)
    if ids != list(range(len(ids))):
        raise MumuError(f"{path}: activity_id must be 0..{len(ids) - 1}, each once; got {ids}")
    for column in ("activity", "file_label"):
        values = [getattr(a, column) for a in activities]
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated or "" in values:
            raise MumuError(f"{path}: column {column} must be non-empty and unique (repeated: {', '.join(repeated)})")
    group_of_id: dict[int, str] = {}
    for a in activities:
        if group_of_id.setdefault(a.group_id, a.group) != a.group:
            raise MumuError(f"{path}: group_id {a.group_id} is named both {group_of_id[a.group_id]!r} and {a.group!r}")
    names = list(group_of_id.values())
    if len(set(names)) != len(names):
        raise MumuError(f"{path}: one group name has several group_ids")
    if sorted(group_of_id) != list(range(len(group_of_id))):
        raise MumuError(f"{path}: group_id must be 0..{len(group_of_id) - 1}; got {sorted(group_of_id)}")
