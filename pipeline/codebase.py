"""Which of this repository's source files a command can run: the import closure of a module.

Used to record the code a training run began with (mumu/train.py's inputs.json) and, in the tests, to check
that dvc.yaml lists every such file as a dependency of its stage, so that DVC reruns the stage whenever that
code changes.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mumu", "pipeline")


def imported_sources(module: str) -> list[Path]:
    """The files of `module` and of every mumu / pipeline module it imports, directly or through others, at the
    top of a file or inside a function (a lazy import is code the command may run), package __init__s included."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen[name] = path
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        todo += parents + [n for n in _imports(path, package) if n.split(".")[0] in PACKAGES]
    return sorted(set(seen.values()))


def _module_file(name: str) -> Path | None:
    base = REPO_ROOT.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None  # a name imported from a module (a function, a class), not a module


def _imports(path: Path, package: str) -> list[str]:
    """Module names `path` imports; for `from X import y` both X and X.y (y may be a submodule)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package, one level up per extra dot
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return names
