"""Files written whole or not at all: a reader, or a rerun after a kill, never sees half of one."""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def replaced_whole(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write; on success it replaces `path` in one rename, on an
    error it is removed and `path` keeps its old content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def write_text(path: str | Path, text: str) -> None:
    with replaced_whole(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")
