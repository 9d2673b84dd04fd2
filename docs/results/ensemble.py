"""Seed ensemble of finished runs: average their test probabilities per sample, then score per fold.

    python docs/results/ensemble.py NAME RUN_DIR [RUN_DIR ...]

Every RUN_DIR is a `cli.py train` output on the same protocol (same folds and test samples; only the
seed differs). Reads each run's predictions.csv (the `p:<activity>` columns are the softmax), averages
them per sample, and writes docs/results/NAME.json: top-1 accuracy per fold of the ensemble, its mean
± std over folds, and the mean single-run accuracy on the same samples for comparison. An ensemble is
a different model (N times the training and inference cost), so it is reported beside the single-run
numbers, never instead of them.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from summarise import OUT, mean_std, predictions  # this folder's scripts: the same reader and summary


def read_run(run_dir: Path) -> dict[str, tuple[str, int, np.ndarray]]:
    """sample_id -> (fold, label, probabilities) from RUN_DIR/predictions.csv."""
    rows = predictions(run_dir, ["all"])
    if not rows:
        sys.exit(f"{run_dir / 'predictions.csv'} does not exist: has the run finished?")
    prob_columns = [k for k in rows[0] if k.startswith("p:")]
    return {r["sample_id"]: (r["fold"], int(r["label"]), np.array([float(r[k]) for k in prob_columns]))
            for r in rows}


def main(name: str, run_dirs: list[Path]) -> None:
    runs = [read_run(d) for d in run_dirs]
    ids = sorted(runs[0])
    if any(sorted(run) != ids for run in runs[1:]):
        sys.exit("the runs do not have the same test samples: not the same protocol?")
    folds: dict[str, dict[str, list[bool]]] = {}
    for sample_id in ids:
        fold, label, _ = runs[0][sample_id]
        mean_probs = np.mean([run[sample_id][2] for run in runs], axis=0)
        scores = folds.setdefault(fold, {"ensemble": [], "single": []})
        scores["ensemble"].append(bool(mean_probs.argmax() == label))
        scores["single"].extend(bool(run[sample_id][2].argmax() == label) for run in runs)
    per_fold = {fold: float(np.mean(s["ensemble"])) for fold, s in sorted(folds.items())}
    single = {fold: float(np.mean(s["single"])) for fold, s in sorted(folds.items())}
    summary = {"runs": [str(d) for d in run_dirs], "accuracy_per_fold": per_fold,
               "accuracy_over_folds": mean_std(list(per_fold.values())),
               "single_run_accuracy_over_folds": float(np.mean(list(single.values())))}
    (OUT / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{name}: ensemble of {len(runs)} runs, top-1 {100 * summary['accuracy_over_folds']['mean']:.2f} "
          f"± {100 * summary['accuracy_over_folds']['std']:.2f} % over {len(per_fold)} folds "
          f"(single runs {100 * summary['single_run_accuracy_over_folds']:.2f} %)")
    print("per fold: " + ", ".join(f"{f} {100 * a:.1f}" for f, a in per_fold.items()))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], [Path(d) for d in sys.argv[2:]])
