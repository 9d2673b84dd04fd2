"""One figure comparing models from committed result files: per test subject, and clean against noisy.

    python docs/results/compare.py headline/comparison_si_loso headline/mumu_si_loso_adabn \
        headline/b1_si_loso_adabn headline/b2_si_loso_adabn headline/b3_si_loso_adabn

Reads each docs/results/NAME.json written by summarise.py and writes docs/results/OUT.png:
- left: top-1 % per test subject (LOSO folds, or odd_even's test subjects), the mean over seeds with a bar
  from the lowest to the highest seed;
- right: top-1 % clean and under the paper's noise (one group zeroed per sample; the visual group zeroed in
  every sample; the non-visual group zeroed in every sample), mean over seeds with ± one std over seeds.
Labels are the files' names up to the first "_" (mumu, b1, ...).
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent
NOISE_BARS = (("clean", "clean"), ("noisy", "random group"), ("noisy_visual", "visual zeroed"),
              ("noisy_non_visual", "non-visual zeroed"))


def per_subject_over_seeds(summary: dict) -> dict[str, np.ndarray]:
    """{test subject: the top-1 of each seed (run)}."""
    by_subject: dict[str, list[float]] = defaultdict(list)
    for run in summary["runs"].values():
        for subject, value in run.get("per_subject_accuracy", {}).items():
            by_subject[subject].append(value)
    return {s: np.array(v) * 100 for s, v in sorted(by_subject.items(), key=lambda kv: int(kv[0]))}


def main(out: str, names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = {Path(n).name.split("_")[0]: json.loads((OUT / f"{n}.json").read_text()) for n in names}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(summaries)
    by_subject = {label: per_subject_over_seeds(summary) for label, summary in summaries.items()}
    for i, (label, summary) in enumerate(summaries.items()):
        subjects = by_subject[label]
        if not subjects:
            raise SystemExit(f"{label}: no per-subject accuracies in its file; summarise it again")
        shift = (i - (len(summaries) - 1) / 2) * width  # this model's bar beside the others'
        x = np.arange(len(subjects)) + shift
        means = np.array([v.mean() for v in subjects.values()])
        spread = np.array([[m - v.min(), v.max() - m] for m, v in zip(means, subjects.values())]).T
        overall = summary["accuracy_over_folds_and_seeds"]["mean"] * 100
        left.bar(x, means, width, yerr=spread, capsize=2, label=f"{label} ({overall:.2f} %)")
        left.set_xticks(np.arange(len(subjects)), [f"s{s}" for s in subjects])
        noise = summary.get("noise_over_runs")
        if noise:
            keys = [k for k, _ in NOISE_BARS]
            values = np.array([noise[k]["mean"] for k in keys]) * 100
            errors = np.array([noise[k]["std"] for k in keys]) * 100
            right.bar(np.arange(len(keys)) + shift, values, width, yerr=errors, capsize=2, label=label)
    low = min(v.min() for subjects in by_subject.values() for v in subjects.values())
    left.set_ylim(max(0.0, low - 3), 100.5)
    left.set_ylabel("top-1 % (mean over seeds; bar: lowest to highest seed)")
    left.set_xlabel("test subject")
    right.set_xticks(np.arange(len(NOISE_BARS)), [name for _, name in NOISE_BARS], fontsize=8)
    right.set_ylim(0, 100.5)
    right.set_ylabel("top-1 % (mean ± std over seeds)")
    for axes in (left, right):
        axes.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(summaries), frameon=False)
    fig.suptitle(f"{out}: clean top-1 per test subject (left); the paper's noise, a group zeroed (right)", fontsize=10)
    fig.tight_layout()
    path = OUT / f"{out}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
