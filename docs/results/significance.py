"""ASO significance between the models of committed result files (the paper's Table 7 test).

    python docs/results/significance.py aso_si_loso mumu_si_loso b1_si_loso b2_si_loso b3_si_loso

Reads each docs/results/NAME.json written by summarise.py, takes its per-(fold, seed) top-1 accuracies
as the model's score distribution, runs `mumu.significance.pairwise_aso` on every ordered pair, and
writes docs/results/OUT.json (eps_min table, the test's definition, the scores' sizes) and prints it.
This is what `cli.py study ablation` reports, on runs that were trained one by one.

ASO treats every (fold, seed) score as an independent draw, but under LOSO the folds are 8 subjects, and
a subject that suits one model does so on every seed. So the file also compares each pair per test
subject (the mean over seeds): the mean difference, on how many subjects A is ahead, and the two-sided
Wilcoxon signed-rank p-value over the subjects. Where both files hold the validation subjects' adapted top-1
(AdaBN runs), it makes the same comparison per validation subject. And it bounds how large a difference "level"
could hide: a 95 % bootstrap interval of A - B's mean top-1 over test subjects (LOSO's 8, or odd_even's 4 pooled
into one fold), drawing the subjects (the same for both models) and each model's seeds with replacement.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

OUT = Path(__file__).resolve().parent
sys.path.insert(0, str(OUT.parents[1]))

from mumu.significance import TEST_NAME, pairwise_aso, significantly_better  # noqa: E402


def runs_of(name: str) -> list[dict]:
    """The per-seed runs of docs/results/NAME.json, each with its per-fold top-1 accuracy."""
    return list(json.loads((OUT / f"{name}.json").read_text())["runs"].values())


def scores_of(runs: list[dict]) -> list[float]:
    return [acc for run in runs for acc in run["accuracy"].values()]


def subject_means(runs: list[dict], score: str = "accuracy") -> dict[str, float]:
    """Fold -> `score` averaged over the seeds: "accuracy" is the fold's test subject's top-1,
    "adapted_val_accuracy" its validation subject's (LOSO: the next subject) under AdaBN."""
    folds = sorted({fold for run in runs for fold in run.get(score, {})})
    return {fold: float(np.mean([run[score][fold] for run in runs if fold in run.get(score, {})])) for fold in folds}


def paired_by_subject(a: dict[str, float], b: dict[str, float]) -> dict:
    folds = sorted(set(a) & set(b))
    diff = np.array([a[f] - b[f] for f in folds])
    p = float(wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    return {"subjects": len(folds), "mean_difference_points": round(100 * float(diff.mean()), 2),
            "a_ahead_on": int((diff > 0).sum()), "b_ahead_on": int((diff < 0).sum()), "wilcoxon_p": round(p, 3)}


def scores_per_test_subject(run: dict) -> dict[str, float]:
    """Top-1 per test subject; files older than summarise.py's per_subject_accuracy have it per fold (LOSO: one
    test subject per fold)."""
    if "per_subject_accuracy" in run:
        return run["per_subject_accuracy"]
    return {fold.removeprefix("fold_s"): acc for fold, acc in run["accuracy"].items()}


def difference_interval(a_runs: list[dict], b_runs: list[dict], draws: int = 20000) -> dict | None:
    """A - B in points: the mean over test subjects and seeds, and its 95 % bootstrap interval (subjects resampled
    for both models alike, each model's seeds on their own: a new subject and a new seed are both unseen).
    None where the files do not share two test subjects."""
    scores = [[scores_per_test_subject(run) for run in runs] for runs in (a_runs, b_runs)]
    subjects = sorted(set.intersection(*(set(run) for runs in scores for run in runs)))
    if len(subjects) < 2:
        return None
    a, b = (np.array([[run[s] for s in subjects] for run in runs]) for runs in scores)  # (seeds, subjects)
    rng = np.random.default_rng(0)
    drawn_subjects = rng.integers(len(subjects), size=(draws, 1, len(subjects)))

    def resampled_means(scores: np.ndarray) -> np.ndarray:  # (draws,)
        seeds = scores[rng.integers(len(scores), size=(draws, len(scores)))]  # (draws, seeds, subjects)
        return np.take_along_axis(seeds, drawn_subjects, axis=2).mean(axis=(1, 2))

    low, high = np.percentile(resampled_means(a) - resampled_means(b), [2.5, 97.5])
    return {"subjects": len(subjects), "seeds": [len(a), len(b)],
            "mean_difference_points": round(100 * float(a.mean() - b.mean()), 2),
            "interval_95_points": [round(100 * float(low), 2), round(100 * float(high), 2)]}


def main(out: str, names: list[str]) -> None:
    runs = {name: runs_of(name) for name in names}
    scores = {name: scores_of(r) for name, r in runs.items()}
    eps = pairwise_aso(scores)
    subjects = {name: subject_means(r) for name, r in runs.items()}
    # one fold (odd_even: its test subjects pooled, its validation subject drawn per seed) leaves no subjects to pair
    by_subject = all(len(folds) > 1 for folds in subjects.values())
    paired = {f"{a} vs {b}": paired_by_subject(subjects[a], subjects[b])
              for i, a in enumerate(names) for b in names[i + 1:]} if by_subject else {}
    # Under LOSO every subject is once a fold's validation subject and once its test subject, so the validation
    # top-1 is a second estimate of accuracy on unseen subjects (optimistic: it also picked the epoch).
    validation = {name: subject_means(r, "adapted_val_accuracy") for name, r in runs.items()}
    paired_validation = {f"{a} vs {b}": paired_by_subject(validation[a], validation[b])
                         for i, a in enumerate(names) for b in names[i + 1:]
                         if validation[a] and validation[b]} if by_subject else {}
    summary = {"test": TEST_NAME, "score": "top-1 accuracy per (fold, seed)",
               "n": {k: len(v) for k, v in scores.items()}, "eps_min": eps,
               "significantly_better_than": significantly_better(eps),
               "per_subject": {"score": "top-1 accuracy per test subject, mean over seeds; two-sided Wilcoxon "
                                        "signed-rank test over the subjects", "pairs": paired}}
    summary["difference_interval"] = {
        "score": "top-1 per test subject and seed; A - B's mean and its 95 % bootstrap interval (subjects and each "
                 "model's seeds drawn with replacement, 20000 draws)",
        "pairs": {f"{a} vs {b}": interval for i, a in enumerate(names) for b in names[i + 1:]
                  if (interval := difference_interval(runs[a], runs[b]))}}
    if paired_validation:
        summary["per_validation_subject"] = {
            "score": "adapted validation top-1 per fold's validation subject, mean over seeds; Wilcoxon as above",
            "pairs": paired_validation}
    (OUT / f"{out}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(TEST_NAME)
    print("| eps_min(A, B) | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for a in names:
        print(f"| {a} | " + " | ".join("–" if a == b else f"{eps[a][b]:.2f}" for b in names) + " |")
    for title, pairs in (("test subject", paired), ("validation subject (AdaBN runs)", paired_validation)):
        if pairs:
            print(f"\nper {title} (mean over seeds): A - B in points, subjects where A / B is ahead, Wilcoxon p")
        for pair, r in pairs.items():
            print(f"{pair}: {r['mean_difference_points']:+.2f}, {r['a_ahead_on']} / {r['b_ahead_on']} of "
                  f"{r['subjects']}, p = {r['wilcoxon_p']:.3f}")
    print("\nA - B in points over test subjects and seeds, 95 % bootstrap interval (subjects and seeds resampled)")
    for pair, r in summary["difference_interval"]["pairs"].items():
        low, high = r["interval_95_points"]
        print(f"{pair}: {r['mean_difference_points']:+.2f} [{low:+.2f}, {high:+.2f}]")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
