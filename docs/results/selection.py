"""What the validation subjects would choose among trained variants, and what that choice scores on test.

    python docs/results/selection.py OUT NAME=RUN_GLOB [NAME=RUN_GLOB ...]

Each NAME=RUN_GLOB is one variant: a label and a quoted glob of its `cli.py train` LOSO run directories
(one per seed), e.g. 'b2=runs/utd_mhad-b2-loso-seed*'. For every finished fold it reads metrics.json:
the validation NLL of the tested epoch (the recipe's `select: nll`), test top-1 and test NLL. Runs tested
with `--adapt-bn` (e.g. `cli.py retest RUN --adapt-bn --out runs/adabn/RUN`) are ranked by the validation
NLL under the same adaptation (`adapted_val_nll`), and their validation top-1 under it is shown too
(`adapted_val_accuracy`, recorded since the eleventh search); adapted and unadapted variants are not mixed.
Prints a Markdown row per variant, sorted by validation NLL (the validation columns are the only ones model
selection may read), and writes docs/results/OUT.json (per variant: the means over its folds, and each run's own
under "per_run").
"""
from __future__ import annotations

import json
import sys
from glob import glob
from pathlib import Path

import numpy as np

from summarise import fold_metrics  # the finished folds' metrics.json, as the other tables read them

RESULTS = Path(__file__).resolve().parent


def variant_scores(pattern: str) -> dict:
    runs = sorted(run for run in glob(pattern) if Path(run).is_dir())  # not the runs' logs beside them
    by_run = {run: list(fold_metrics(Path(run)).values()) for run in runs}
    folds = [metrics for run_folds in by_run.values() for metrics in run_folds]
    if not folds:
        raise SystemExit(f"no finished LOSO folds match {pattern!r}")
    rules = {m["selected_by"] for m in folds}
    if rules != {"val/nll"}:
        raise SystemExit(f"{pattern}: folds selected by {sorted(rules)}; validation NLL is comparable only "
                         "between runs that select on it")
    adapted = {"adapted_val_nll" in m for m in folds}
    if len(adapted) > 1:
        raise SystemExit(f"{pattern}: some folds were tested with --adapt-bn and some without")
    val_nll = "adapted_val_nll" if adapted == {True} else "selected_val_score"
    return {"runs": runs, "folds": len(folds), "adapt_bn": adapted == {True}, **means(folds, val_nll),
            "per_run": {run: means(run_folds, val_nll) for run, run_folds in by_run.items() if run_folds}}


def means(folds: list[dict], val_nll: str) -> dict:
    """The folds' mean validation NLL and top-1 (the columns selection may read), test top-1 and NLL."""
    val_top1 = [m.get("adapted_val_accuracy") for m in folds]
    return {"val_nll": round(float(np.mean([m[val_nll] for m in folds])), 3),
            "val_top1": round(100 * float(np.mean(val_top1)), 2) if None not in val_top1 else None,
            "test_top1": round(100 * float(np.mean([m["accuracy"] for m in folds])), 2),
            "test_nll": round(float(np.mean([m["nll"] for m in folds])), 3)}


def main(out: str, variants: list[str]) -> None:
    results = {}
    for variant in variants:
        name, sep, pattern = variant.partition("=")
        if not sep:
            raise SystemExit(f"expected NAME=RUN_GLOB, got {variant!r}")
        results[name] = variant_scores(pattern)
    if len({r["adapt_bn"] for r in results.values()}) > 1:
        raise SystemExit("some variants were tested with --adapt-bn and some without; rank them separately")
    ranked = sorted(results.items(), key=lambda item: item[1]["val_nll"])
    (RESULTS / f"{out}.json").write_text(json.dumps(dict(ranked), indent=1) + "\n")
    print("| variant | seeds | (fold, seed) pairs | validation NLL of the tested epochs | validation top-1 % | "
          "test top-1 % | test NLL |")
    print("|---|---|---|---|---|---|---|")
    for name, r in ranked:
        val_top1 = "-" if r["val_top1"] is None else f"{r['val_top1']:.2f}"
        print(f"| {name} | {len(r['runs'])} | {r['folds']} | {r['val_nll']:.3f} | {val_top1} | {r['test_top1']:.2f} "
              f"| {r['test_nll']:.3f} |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
