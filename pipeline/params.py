"""Reading a params file: YAML settings, optionally written as changes to another params file.

A file that starts with `base: other.yaml` (a path relative to that file) holds only what differs from
`other.yaml`: mappings are merged key by key at every depth, anything else (numbers, strings, lists)
replaces the base's value. So a variant of a recipe is a few lines, and a change to the recipe reaches it.

The top level holds the settings several commands (and dvc.yaml) share, and one block per command. Every
file of a chain is checked against that layout here: its demo: block (dvc.yaml passes it to `cli.py demo-data`)
for names and whole numbers, its extract: block (read by `extract`, which builds a cache with it, and by `train`,
which checks the cache against it) for names, types and ranges. A misspelt key is an error naming the file, not a
setting silently left at its default. The train: and evaluate: blocks are checked by their commands
(mumu.config, mumu.evaluate).
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import yaml

from pipeline.errors import MumuError

if TYPE_CHECKING:
    from pipeline.extract import ExtractSettings

DEFAULT_PARAMS = "params.yaml"  # what every command reads unless told otherwise
SHARED = ("dataset", "data_root", "protocol", "modalities")  # top-level settings, read by several commands
BLOCKS = ("demo", "extract", "train", "evaluate")  # each command's own settings (demo: dvc.yaml's demo_data)
DEMO_KEYS = ("seed", "subjects", "sessions", "frames", "frame_size")  # whole numbers for `cli.py demo-data`
_TYPE_NAMES = {int: "a whole number", float: "a number", bool: "true or false", str: "a string", dict: "a mapping",
               type(None): "null"}


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
    _check_layout(path, params)
    base = params.pop("base", None)
    if base is None:
        return params
    if not isinstance(base, str):
        raise MumuError(f"{path}: `base` is the path of another params file, got {base!r}")
    base_path = path.parent / base
    if not base_path.is_file():
        raise MumuError(f"{path}: its base {base!r} ({base_path}) does not exist")
    return merge_settings(_read(base_path, (*chain, path.resolve())), params)


def _check_layout(path: Path, params: dict[str, Any]) -> None:
    reject_unknown(params, ("base", *SHARED, *BLOCKS), f"{path}: unknown top-level key(s)",
                   "; each command's own settings go in its block")
    for block in BLOCKS:
        if not isinstance(params.get(block) or {}, dict):
            raise MumuError(f"{path}: {block}: must be a block of settings (key: value lines), not {params[block]!r}")
    demo = params.get("demo") or {}
    reject_unknown(demo, DEMO_KEYS, f"{path}: unknown demo: setting(s)")
    for key, value in demo.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise MumuError(f"{path}: demo.{key} must be a whole number, got {value!r}")
    extract = params.get("extract") or {}
    reject_unknown(extract, _extract_keys(), f"{path}: unknown extract: setting(s)")
    extract_settings({k: v for k, v in extract.items() if k != "workers"}, str(path))


def _extract_keys() -> set[str]:
    from pipeline.extract import ExtractSettings  # here, not at the top: pipeline.extract imports this module
    return {f.name for f in dataclasses.fields(ExtractSettings)} | {"workers"}  # workers: how, not what, to extract


def extract_settings(values: dict[str, Any], origin: str) -> "ExtractSettings":
    """ExtractSettings from `values` (known keys), or a MumuError naming `origin` and the bad key."""
    from pipeline.extract import ExtractSettings
    values = check_types(values, ExtractSettings, origin, "extract.")
    try:
        return ExtractSettings(**values)
    except MumuError as e:  # its own range checks name the key
        raise MumuError(f"{origin}: {e.message}") from None


def reject_unknown(keys: Iterable[str], known: Iterable[str], problem: str, hint: str = "") -> None:
    """A MumuError "`problem` KEY (did you mean K?)" for keys not in `known`, which it lists unless every
    unknown key has a close match."""
    known = sorted(known)
    unknown = sorted(set(keys) - set(known))
    if not unknown:
        return
    matches = {key: difflib.get_close_matches(key, known, 1) for key in unknown}
    named = ", ".join(f"{key} (did you mean {m[0]}?)" if m else key for key, m in matches.items())
    listed = "" if all(matches.values()) else f"; known: {', '.join(known)}{hint}"
    raise MumuError(f"{problem} {named}{listed}")


def check_types(values: dict[str, Any], settings: type, origin: str, prefix: str = "") -> dict[str, Any]:
    """`values` with each value of the type that its field of the dataclass `settings` declares: an int field takes
    8, not 8.5 or true; a float field takes 8 or 8.5, and "1e-4", which YAML reads as text, as 0.0001; `X | None`
    also null. Else a MumuError "ORIGIN: PREFIXKEY must be ..."."""
    hints = typing.get_type_hints(settings)
    checked = dict(values)
    for key, value in values.items():
        allowed = typing.get_args(hints[key]) or (hints[key],)
        if float in allowed and isinstance(value, str) and _is_exponent_number(value):
            checked[key] = value = float(value)
        if isinstance(value, bool):  # a bool is an int to Python, not to a settings file
            fits = bool in allowed
        else:
            fits = isinstance(value, allowed) or (float in allowed and isinstance(value, int))
        if not fits:
            kinds = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in allowed)
            raise MumuError(f"{origin}: {prefix}{key} must be {kinds}, got {value!r}")
    return checked


def _is_exponent_number(text: str) -> bool:
    """1e-4, 3E5, -2.5e-3: numbers YAML 1.1 reads as strings (it wants a dot and a sign: 1.0e-4)."""
    try:
        float(text)
    except ValueError:
        return False
    return "e" in text.lower() and text.strip().lower() not in ("inf", "-inf", "+inf")
