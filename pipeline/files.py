"""Files written whole or not at all: a reader, or a rerun after a kill, never sees half of one."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.errors import MumuError


def temporary(path: Path) -> Path:
    """The temporary beside `path` that `replaced_whole(path)` writes: a kill mid-write leaves it, the next write of
    `path` reuses it."""
    return path.with_name(f".{path.name}.tmp")


@contextmanager
def replaced_whole(path: str | Path, shared: bool = False) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write; on success it replaces `path` in one rename, on an
    error it is removed and `path` keeps its old content. shared: several processes may write `path` at once,
    so each gets a temporary of its own (the last rename wins) instead of the one fixed name a rerun reuses."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file where a folder of the path should be
        raise MumuError(f"cannot write {path}: a file stands where a folder of that path should be") from None
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp") if shared else temporary(path)
    try:
        yield tmp
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename == str(tmp):  # name the file the user asked for, not our temporary
            raise MumuError(f"cannot write {path}: {e.strerror}") from None
        raise
    tmp.replace(path)


def write_text(path: str | Path, text: str, shared: bool = False) -> None:
    with replaced_whole(path, shared) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any, shared: bool = False) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n", shared)


def read_json(path: str | Path, cure: str) -> Any:
    """The JSON in `path`, or a MumuError naming the file, why it cannot be read, and `cure` (what to do)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MumuError(f"{path}: cannot be read ({e}); {cure}") from None
