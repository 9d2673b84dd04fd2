"""ASO significance between the models of committed result files (the paper's Table 7 test).

    python docs/results/significance.py aso_si_loso mumu_si_loso b1_si_loso b2_si_loso b3_si_loso

Reads each docs/results/NAME.json written by summarise.py, takes its per-(fold, seed) top-1 accuracies
as the model's score distribution, runs `mumu.significance.pairwise_aso` on every ordered pair, and
writes docs/results/OUT.json (eps_min table, the test's definition, the scores' sizes) and prints it.
This is what `cli.py study ablation` reports, on runs that were trained one by one.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent
sys.path.insert(0, str(OUT.parents[1]))

from mumu.significance import TEST_NAME, pairwise_aso, significantly_better  # noqa: E402


def scores_of(name: str) -> list[float]:
    runs = json.loads((OUT / f"{name}.json").read_text())["runs"]
    return [acc for run in runs.values() for acc in run["accuracy"].values()]


def main(out: str, names: list[str]) -> None:
    scores = {name: scores_of(name) for name in names}
    eps = pairwise_aso(scores)
    summary = {"test": TEST_NAME, "score": "top-1 accuracy per (fold, seed)",
               "n": {k: len(v) for k, v in scores.items()}, "eps_min": eps,
               "significantly_better_than": significantly_better(eps)}
    (OUT / f"{out}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(TEST_NAME)
    print("| eps_min(A, B) | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for a in names:
        print(f"| {a} | " + " | ".join("–" if a == b else f"{eps[a][b]:.2f}" for b in names) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
