"""Collect finished training runs into the small files committed beside docs/results.md.

    python docs/results/summarise.py NAME RUN_DIR [RUN_DIR ...]

Each RUN_DIR is a `cli.py train` output (one seed; LOSO runs have fold_s<N>/ folders). Reads every
fold's metrics.json and the run's predictions.csv, and writes into docs/results/:
- NAME.json: per run and fold top-1 accuracy, macro-F1 and test NLL (and, for runs tested with --adapt-bn, the
  validation subject's adapted top-1), each run's top-1 per test subject, mean +- std over folds of each run,
  and over all (fold, seed) pairs; clean vs noisy metrics where `cli.py evaluate RUN_DIR` has run (RUN_DIR/eval;
  RUN_DIR/eval-mean for `--noise mean --out RUN_DIR/eval-mean`, RUN_DIR/eval-shift25 and eval-shift50 for
  `--noise shift --noise-level 0.25 / 0.5`), per run and averaged over the runs;
  per-class and per-subject accuracy over the pooled test predictions;
  the most frequent confusions;
- NAME_confusion.png: the pooled confusion matrix (rows = true activity, row-normalised).
Folds still running are listed as missing, never counted.
"""
from __future__ import annotations

import csv
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent


def fold_metrics(run_dir: Path) -> dict[str, dict]:
    """{fold name: its metrics.json} for the finished folds (a single-split run is one fold)."""
    folds = sorted(run_dir.glob("fold_*/metrics.json"), key=lambda p: int(p.parent.name.split("_s")[-1]))
    if not folds and (run_dir / "metrics.json").is_file():
        folds = [run_dir / "metrics.json"]
    return {p.parent.name if p.parent != run_dir else "all": json.loads(p.read_text()) for p in folds}


def unadapted_run(run_dir: Path, fold: str):
    """`mumu.rundir.load_run` for the probes that predict the test set in one pass, without test-time adaptation:
    a run tested with adapt_bn is refused, since their numbers would not be the ones it reported."""
    from mumu.rundir import load_run

    run = load_run(run_dir, fold=fold)
    if run.config.adapt_bn:
        raise SystemExit(f"{run_dir} was tested with adapt_bn (each subject's BatchNorm statistics); this probe "
                         "predicts without adaptation, so it reads runs trained without --adapt-bn only")
    return run


def predictions(run_dir: Path, finished: list[str]) -> list[dict]:
    """Test predictions of the finished folds (a LOSO run's merged file appears only at its end)."""
    files = [run_dir / f / "predictions.csv" for f in finished if f != "all"] or [run_dir / "predictions.csv"]
    rows = []
    for f in files:
        if f.is_file():
            with open(f, newline="") as handle:
                rows += list(csv.DictReader(handle))
    return rows


# key in NAME.json: folder of `cli.py evaluate` output (drop, mean, shift 0.25 and 0.5; docs/results/headline.sh)
EVAL_DIRS = {"noise": "eval", "noise_mean": "eval-mean", "noise_shift25": "eval-shift25", "noise_shift50": "eval-shift50"}


def noise_metrics(run_dir: Path, eval_dir: str = "eval") -> dict | None:
    """Clean vs noisy top-1 / macro-F1 from `cli.py evaluate RUN_DIR` (RUN_DIR/EVAL_DIR/metrics.json), if run."""
    path = run_dir / eval_dir / "metrics.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    parts = {"clean": m} | {k: m[k] for k in ("noisy", "noisy_visual", "noisy_non_visual") if k in m}
    return {"noise": m.get("noise")} | {k: {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"]} for k, v in parts.items()}


def noise_over_runs(per_run: list[dict | None]) -> dict:
    """Mean top-1 per condition over the runs that were evaluated (all in the same noise mode)."""
    done = [m for m in per_run if m]
    if not done:
        return {}
    conditions = [k for k in done[0] if k != "noise"]
    return {"noise": done[0]["noise"], "runs": len(done),
            **{c: mean_std([m[c]["accuracy"] for m in done if c in m]) for c in conditions}}


def mean_std(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)} if values else {}


def write_json(name: str, results: dict) -> Path:
    """docs/results/NAME.json, folders made as needed: the file each probe script writes."""
    path = OUT / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path


def run_with_variants(main, usage: str) -> None:
    """`main(OUT, {NAME: RUN_GLOB, ...})` from the command line's OUT NAME=RUN_GLOB ..., or exit with the usage."""
    if len(sys.argv) < 3 or any("=" not in v for v in sys.argv[2:]):
        raise SystemExit(usage)
    main(sys.argv[1], dict(v.partition("=")[::2] for v in sys.argv[2:]))


def main(name: str, run_dirs: list[str]) -> None:
    runs, all_acc, all_f1, all_nll, rows = {}, [], [], [], []
    for run in map(Path, run_dirs):
        folds = fold_metrics(run)
        missing = sorted(p.parent.name for p in run.glob("fold_*/split.json") if p.parent.name not in folds)
        if missing:  # started, not finished: never counted
            print(f"{run}: {', '.join(missing)} still training, left out", file=sys.stderr)
        acc = {f: m["accuracy"] for f, m in folds.items()}
        f1 = {f: m["macro_f1"] for f, m in folds.items()}
        nll = {f: m["nll"] for f, m in folds.items() if "nll" in m}  # runs from before test NLL was logged lack it
        # the validation subject's top-1 under AdaBN (runs tested with --adapt-bn since the eleventh search)
        val_acc = {f: m["adapted_val_accuracy"] for f, m in folds.items() if "adapted_val_accuracy" in m}
        run_rows = predictions(run, list(folds))
        by_subject = defaultdict(list)
        for r in run_rows:
            by_subject[int(r["subject"])].append(r["label"] == r["pred"])
        runs[str(run)] = {"accuracy": acc, "macro_f1": f1, "nll": nll, "adapted_val_accuracy": val_acc,
                          "per_subject_accuracy": {s: float(np.mean(v)) for s, v in sorted(by_subject.items())},
                          **({"missing": missing} if missing else {}),
                          "accuracy_over_folds": mean_std(list(acc.values())),
                          "macro_f1_over_folds": mean_std(list(f1.values())),
                          **{key: noise_metrics(run, folder) for key, folder in EVAL_DIRS.items()}}
        all_acc += acc.values()
        all_f1 += f1.values()
        all_nll += nll.values()
        rows += run_rows
    per_class, per_subject, confusions = defaultdict(list), defaultdict(list), Counter()
    names: dict[int, str] = {}
    for r in rows:
        label, pred = int(r["label"]), int(r["pred"])
        names[label] = r["label_name"]
        per_class[r["label_name"]].append(label == pred)
        per_subject[int(r["subject"])].append(label == pred)
        if label != pred:
            confusions[f"{r['label_name']} -> {r['pred_name']}"] += 1
    summary = {
        "name": name,
        "runs": runs,
        "accuracy_over_folds_and_seeds": mean_std(all_acc),
        "macro_f1_over_folds_and_seeds": mean_std(all_f1),
        "test_nll_over_folds_and_seeds": mean_std(all_nll),
        "pooled_test_predictions": len(rows),
        "per_class_accuracy": {c: round(float(np.mean(v)), 4) for c, v in sorted(per_class.items())},
        "per_subject_accuracy": {s: round(float(np.mean(v)), 4) for s, v in sorted(per_subject.items())},
        "top_confusions": confusions.most_common(15),
        **{f"{key}_over_runs": noise_over_runs([r[key] for r in runs.values()]) for key in EVAL_DIRS},
    }
    (OUT / name).parent.mkdir(parents=True, exist_ok=True)  # NAME may name a new subfolder
    (OUT / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    if rows:
        plot_confusion(rows, [names[i] for i in sorted(names)], OUT / f"{name}_confusion.png", name)
    acc = summary["accuracy_over_folds_and_seeds"]
    nll = summary["test_nll_over_folds_and_seeds"]
    print(f"{name}: top-1 {100 * acc.get('mean', float('nan')):.2f} +- {100 * acc.get('std', float('nan')):.2f} % "
          f"over {acc.get('n', 0)} (fold, seed) pairs, test NLL {nll.get('mean', float('nan')):.3f}; "
          f"{len(rows)} pooled predictions -> {OUT / name}.json")


def plot_confusion(rows: list[dict], labels: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(labels)
    matrix = np.zeros((k, k))
    for r in rows:
        matrix[int(r["label"]), int(r["pred"])] += 1
    normalised = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(9, 8))
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for i, j in zip(*np.nonzero(matrix)):
        if i != j:  # off-diagonal counts: where the errors are
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7, color="crimson")
    ax.set_xticks(range(k), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(k), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: pooled test predictions (n={len(rows)}), red = error counts", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
