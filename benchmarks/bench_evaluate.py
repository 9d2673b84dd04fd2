"""Evaluation benchmark: prints measured figures, asserts nothing.

`cli.py evaluate` runs each fold's model over its test set under four conditions (clean, a random group
corrupted, the visual group, the non-visual group). In one run, on one finished training run's first fold:
1. the four conditions one after another, each reading the test set from the cache (`infer` per condition:
   how evaluate read before 2026-11-30);
2. the four conditions from one read of the test set (`infer_conditions`, what evaluate does);
3. their ratio, and whether the two give the same predictions and embeddings (they must: each condition
   draws its noise from its own generator in the same order).

    python benchmarks/bench_evaluate.py RUN_DIR            # e.g. runs/ls2-kl1h4-vnorm-mumu-dsi-odd_even-seed0
    python benchmarks/bench_evaluate.py RUN_DIR --repeats 3

A run without one (RUN_DIR left out) gets a one-epoch MuMu run on a small demo dataset under --work; cached
features there are small, so the saving shows best on a run with depth features (2048 per step).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mumu.evaluate import CONDITIONS, infer, infer_conditions  # noqa: E402
from mumu.rundir import load_run, run_splits  # noqa: E402


def demo_run(work: Path) -> Path:
    """A one-epoch MuMu run on a demo dataset with its cache (reused when it exists)."""
    from mumu.config import resolve_config
    from mumu.train import train_once
    from pipeline.datasets import build_index
    from pipeline.demo import write_demo_dataset
    from pipeline.extract import ExtractSettings, run_extract
    from pipeline.modalities import dataset_modalities

    run_dir = work / "run"
    if (run_dir / "metrics.json").is_file():
        return run_dir
    root = write_demo_dataset(work / "demo", n_subjects=4, n_sessions=2, n_frames=24, frame_size=64)
    cache = work / "demo.zarr"
    run_extract(build_index("demo", root).samples, "demo", dataset_modalities("demo"), cache,
                ExtractSettings(image_size=64, weights="random"), show_progress=True)
    config = resolve_config(None, dataset="demo", data_root=str(root), cache=str(cache), out=str(run_dir),
                            max_epochs=1, protocol="cross_subject", extract={"image_size": 64, "weights": "random"})
    train_once(config, progress=False)
    return run_dir


def timed(fn, repeats: int) -> tuple[float, object]:
    """Best wall time over `repeats` calls (the least disturbed by other work on the machine), and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", type=Path, help="a finished training run (default: a demo run)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mumu-bench-evaluate"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)

    run_dir = args.run_dir or demo_run(args.work)
    run = load_run(run_dir, run_splits(run_dir)[0])
    n = len(run.samples("test"))
    per_condition, separate = timed(lambda: {name: infer(run, corrupt) for name, corrupt in CONDITIONS.items()},
                                    args.repeats)
    one_read, together = timed(lambda: infer_conditions(run, CONDITIONS), args.repeats)
    same = all(np.array_equal(separate[c].preds, together[c].preds)
               and np.array_equal(separate[c].fused, together[c].fused) for c in CONDITIONS)
    print(f"run: {run_dir} (first fold: {n} test samples; modalities {', '.join(s.name for s in run.data.specs)})")
    print(f"  four conditions, a read of the test set each: {per_condition:6.2f} s")
    print(f"  four conditions, one read of the test set:    {one_read:6.2f} s")
    print(f"  speed-up: {per_condition / one_read:.2f}x; same predictions and embeddings: {same}")


if __name__ == "__main__":
    main()
