"""Reading a params file: YAML settings, optionally written as changes to another params file.

A file that starts with `base: other.yaml` (a path relative to that file) holds only what differs from
`other.yaml`: mappings are merged key by key at every depth, anything else (numbers, strings, lists)
replaces the base's value. So a variant of a recipe is a few lines, and a change to the recipe reaches it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import MumuError


DEFAULT_PARAMS = "params.yaml"  # what every command reads unless told otherwise


def read_params(path: str | Path) -> dict[str, Any]:
    """The settings of `path`, with its `base` chain resolved (the `base` key itself is not returned).

    The default params.yaml may be absent, and `none` reads no file (every setting then comes from the command
    line and the defaults); any other file a user names must exist, so that a mistyped --params is an error,
    not a silent run with default settings."""
    if str(path) == "none" or (str(path) == DEFAULT_PARAMS and not Path(path).is_file()):
        return {}
    return _read(Path(path), ())


def merge_settings(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` applied: nested mappings merge, other values replace."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in chain:
        loop = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise MumuError(f"{path}: the `base` chain of params files loops ({loop})")
    if not path.is_file():
        raise MumuError(f"{path}: params file not found")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise MumuError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(params, dict):
        raise MumuError(f"{path}: a params file holds a mapping of settings, not a {type(params).__name__}")
    base = params.pop("base", None)
    if base is None:
        return params
    if not isinstance(base, str):
        raise MumuError(f"{path}: `base` is the path of another params file, got {base!r}")
    base_path = path.parent / base
    if not base_path.is_file():
        raise MumuError(f"{path}: its base {base!r} ({base_path}) does not exist")
    return merge_settings(_read(base_path, (*chain, path.resolve())), params)
