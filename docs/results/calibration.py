"""How sure each model is, right and wrong: why test NLL and top-1 can rank models differently.

    python docs/results/calibration.py OUT NAME=RUN_GLOB [NAME=RUN_GLOB ...]

Each NAME=RUN_GLOB is one model: a label and a quoted glob of its `cli.py train` run directories (one per
seed). Pools the test predictions of every finished fold (predictions.csv, which holds every class's
probability) and reports per model: top-1, NLL, the mean probability of the predicted class on correct
predictions and on errors, the true class's probability on errors, how often an error has the true class
second, and the expected calibration error (15 equal-width confidence bins). Writes docs/results/OUT.json
and OUT.png (a reliability diagram: accuracy against confidence per bin, one line per model).
"""
from __future__ import annotations

from glob import glob
from pathlib import Path

import numpy as np

from summarise import fold_metrics, predictions  # the finished folds' files, as the other tables read them
from summarise import run_with_variants, write_json

RESULTS = Path(__file__).resolve().parent
BINS = np.linspace(0.0, 1.0, 16)


def pooled_probabilities(pattern: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(N, K) class probabilities and (N,) labels over every finished fold of every run; the run count."""
    runs = sorted(glob(pattern))
    rows = [row for run in runs for row in predictions(Path(run), list(fold_metrics(Path(run))))]
    if not rows:
        raise SystemExit(f"no test predictions under {pattern}")
    columns = [c for c in rows[0] if c.startswith("p:")]
    return (np.array([[float(r[c]) for c in columns] for r in rows]), np.array([int(r["label"]) for r in rows]),
            len(runs))


def reliability(confidence: np.ndarray, correct: np.ndarray) -> list[dict]:
    """Per non-empty confidence bin: its range, share of predictions, mean confidence and accuracy."""
    bins = np.clip(np.digitize(confidence, BINS) - 1, 0, len(BINS) - 2)
    return [{"low": float(BINS[b]), "high": float(BINS[b + 1]), "share": float((bins == b).mean()),
             "confidence": float(confidence[bins == b].mean()), "accuracy": float(correct[bins == b].mean())}
            for b in range(len(BINS) - 1) if (bins == b).any()]


def calibration(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    predicted = probabilities.argmax(1)
    correct = predicted == labels
    p_true = probabilities[np.arange(len(labels)), labels]
    confidence = probabilities.max(1)
    rank_of_true = (probabilities > p_true[:, None]).sum(1)  # 0 = predicted
    bins = reliability(confidence, correct)
    return {
        "predictions": int(len(labels)), "errors": int((~correct).sum()),
        "top1": float(correct.mean()), "nll": float(-np.log(np.clip(p_true, 1e-12, None)).mean()),
        "confidence_when_right": float(confidence[correct].mean()),
        "confidence_when_wrong": float(confidence[~correct].mean()) if (~correct).any() else None,
        "p_true_when_wrong": float(p_true[~correct].mean()) if (~correct).any() else None,
        "true_class_second_when_wrong": float((rank_of_true[~correct] == 1).mean()) if (~correct).any() else None,
        "ece": float(sum(b["share"] * abs(b["accuracy"] - b["confidence"]) for b in bins)),
        "bins": bins,
    }


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="calibrated")
    for name, r in results.items():
        ax.plot([b["confidence"] for b in r["bins"]], [b["accuracy"] for b in r["bins"]], marker="o",
                label=f"{name} (ECE {100 * r['ece']:.1f})")
    ax.set(xlabel="confidence (probability of the predicted class)", ylabel="accuracy in the bin",
           title="Reliability on the test subjects (pooled)", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(out: str, variants: dict[str, str]) -> None:
    results = {}
    print("| model | runs | predictions | top-1 % | NLL | confidence right / wrong | p(true) when wrong | "
          "true class 2nd when wrong | ECE % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, pattern in variants.items():
        probabilities, labels, n_runs = pooled_probabilities(pattern)
        r = results[name] = {"runs": pattern, "run_count": n_runs} | calibration(probabilities, labels)
        print(f"| {name} | {n_runs} | {r['predictions']} | {100 * r['top1']:.2f} | {r['nll']:.3f} | "
              f"{r['confidence_when_right']:.3f} / {r['confidence_when_wrong']:.3f} | {r['p_true_when_wrong']:.3f} | "
              f"{100 * r['true_class_second_when_wrong']:.0f} % | {100 * r['ece']:.1f} |")
    write_json(out, results)
    plot(results, RESULTS / f"{out}.png")
    print(f"-> {RESULTS / out}.json, {RESULTS / out}.png")


if __name__ == "__main__":
    run_with_variants(main, __doc__)
