"""What MuMu's learned fusion weights are worth on held-out subjects: a diagnostic, not a model.

    python docs/results/uniform_fusion.py OUT RUN_DIR [RUN_DIR ...]

For every fold of every MuMu run (a `cli.py train` output), scores the validation and the test subject
twice with the fold's best checkpoint: as trained, and with SM-Fusion's and GM-Fusion's softmax
weights replaced by uniform ones over the present modalities (the scores are ignored; the temporal
attention inside the encoders is untouched). Writes docs/results/OUT.json with top-1 accuracy and NLL
per run, part and mode, and prints a Markdown row per run.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent
sys.path.insert(0, str(RESULTS.parents[1]))

import mumu.fusion as fusion  # noqa: E402
from mumu.encoders import masked_softmax  # noqa: E402
from mumu.rundir import finished_folds  # noqa: E402
from summarise import unadapted_run, write_json  # noqa: E402


def uniform_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return masked_softmax(torch.zeros_like(scores), mask, dim)


MODES = {"learned": masked_softmax, "uniform": uniform_softmax}  # how the fusions turn scores into weights


def score(run, part: str) -> dict[str, tuple[int, int, float]]:
    """mode -> (correct, samples, summed NLL) of one fold's `part`, with the learned and the uniform weights;
    each batch is loaded once and scored both ways."""
    totals = {mode: [0, 0, 0.0] for mode in MODES}
    with torch.no_grad():
        for batch in run.loader(part):
            for mode, weights in MODES.items():
                fusion.masked_softmax = weights
                try:
                    logits = run.predict(batch).logits.float()
                finally:
                    fusion.masked_softmax = masked_softmax
                total = totals[mode]
                total[0] += int((logits.argmax(-1) == batch["label"]).sum())
                total[1] += len(batch["label"])
                total[2] += float(F.cross_entropy(logits, batch["label"], reduction="sum"))
    return {mode: tuple(total) for mode, total in totals.items()}


def main(out: str, run_dirs: list[str]) -> None:
    torch.set_num_threads(1)
    results = {}
    print("| run | val top-1 %: learned / uniform | val NLL | test top-1 %: learned / uniform | test NLL |")
    print("|---|---|---|---|---|")
    for run_dir in map(Path, run_dirs):
        totals = {(part, mode): [0, 0, 0.0] for part in ("val", "test") for mode in MODES}
        for fold in finished_folds(run_dir):
            run = unadapted_run(run_dir, fold)
            if run.config.model != "mumu":
                raise SystemExit(f"{run_dir}: a {run.config.model} run; this script replaces MuMu's fusion weights")
            for part in ("val", "test"):
                for mode, fold_total in score(run, part).items():
                    totals[part, mode] = [a + b for a, b in zip(totals[part, mode], fold_total)]
        row = {f"{part}_{mode}": {"top1": round(100 * c / n, 2), "nll": round(s / n, 3), "samples": n}
               for (part, mode), (c, n, s) in totals.items()}
        results[str(run_dir)] = row
        print(f"| {run_dir.name} | " + " | ".join(
            f"{row[f'{part}_learned'][key]:.{digits}f} / {row[f'{part}_uniform'][key]:.{digits}f}"
            for part in ("val", "test") for key, digits in (("top1", 2), ("nll", 3))) + " |", flush=True)
    write_json(out, results)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
