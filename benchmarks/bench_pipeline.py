"""Time `dvc repro` of the demo in a fresh clone, stage by stage (target: under 10 minutes on 2 CPU cores).

    python benchmarks/bench_pipeline.py [--keep DIR] [-S key=value ...]

Clones the repository's HEAD into a temporary folder, then runs each stage with
`dvc repro --single-item STAGE` in pipeline order and prints its wall time, the CPU time of its
processes, and the load average, since a shared machine's other jobs inflate wall time.
`-S dataset.key=value` edits params.yaml in the clone first (e.g. `-S train.max_epochs=5`).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = ["demo_data", "index", "extract", "train", "evaluate"]


def set_param(params: dict, assignment: str) -> None:
    key, value = assignment.split("=", 1)
    *parents, leaf = key.split(".")
    node = params
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(value)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="Clone into this folder and keep it (default: a temporary one).")
    parser.add_argument("-S", dest="params", action="append", default=[], help="params.yaml override key=value.")
    args = parser.parse_args()

    if args.keep:
        time_stages(args.keep, args.params)
    else:  # the clone (~150 MB once run) goes with the run
        with tempfile.TemporaryDirectory(prefix="mumu-bench-") as workdir:
            time_stages(Path(workdir) / "clone", args.params)


def time_stages(workdir: Path, overrides: list[str]) -> None:
    """Clone the repository into `workdir`, apply the params overrides and time each stage of `dvc repro`."""
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(workdir)], check=True)
    if overrides:
        params = yaml.safe_load((workdir / "params.yaml").read_text())
        for assignment in overrides:
            set_param(params, assignment)
        (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    print(f"fresh clone of {REPO_ROOT} at {workdir}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'stage':<10} {'wall s':>8} {'CPU s':>8} {'load':>6}")
    total_wall = total_cpu = 0.0
    for stage in STAGES:
        cpu0, t0 = children_cpu_seconds(), time.monotonic()
        result = subprocess.run(["dvc", "repro", "--single-item", stage], cwd=workdir, capture_output=True, text=True)
        wall, cpu = time.monotonic() - t0, children_cpu_seconds() - cpu0
        if result.returncode != 0:
            sys.exit(f"stage {stage} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        total_wall += wall
        total_cpu += cpu
        print(f"{stage:<10} {wall:8.1f} {cpu:8.1f} {os.getloadavg()[0]:6.1f}")
    print(f"{'total':<10} {total_wall:8.1f} {total_cpu:8.1f}   (wall {total_wall / 60:.1f} min; target < 10 min)")
    summary = [line for line in result.stdout.splitlines() if "clean input" in line or line.startswith("evaluated")]
    print("\n".join(summary))


if __name__ == "__main__":
    main()
