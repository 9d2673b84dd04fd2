"""A judge between trained variants that does not reward confidence: validation NLL after a temperature.

    python docs/results/temperature.py OUT NAME=RUN_GLOB [NAME=RUN_GLOB ...]

Each NAME=RUN_GLOB is one variant: a label and a quoted glob of its LOSO `cli.py train` run directories (one
per seed), tested with `adapt_bn`. For every fold it predicts the validation subject as the test step does
(BatchNorm statistics of that subject's own inputs), then scales the logits by the one temperature that
minimises that subject's NLL (a grid of 121 values from 0.1 to 10) and records the NLL before and after. A
model that is right but too flat or too sharp loses nothing after the temperature, so the scaled NLL ranks
how well the true class is ranked, not how sure the model is (docs/results/searches.md, "Sixteenth search"). Reads
only the validation subjects: it is a selection criterion. Prints a Markdown row per variant, sorted by the
scaled NLL, and writes docs/results/OUT.json.
"""
from __future__ import annotations

import sys
from glob import glob
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent
sys.path.insert(0, str(RESULTS.parents[1]))

from mumu.adapt import by_subject, predict_by_subject  # noqa: E402
from mumu.rundir import finished_folds, load_run  # noqa: E402
from summarise import run_with_variants, write_json  # noqa: E402

TEMPERATURES = torch.logspace(-1, 1, 121)  # 0.1 .. 10


@torch.no_grad()
def validation_logits(run_dir: str, fold: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) logits and (N,) labels of the fold's validation subject, adapted to it as in the test."""
    run = load_run(run_dir, fold)
    subjects = (list(run.data.loader(samples)) for samples in by_subject(run.samples("val")))
    pairs = list(predict_by_subject(run.module, subjects, adapt=run.config.adapt_bn))
    return torch.cat([out.logits.float() for _, out in pairs]), torch.cat([batch["label"] for batch, _ in pairs])


def scaled_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, float]:
    """(NLL at temperature 1, the lowest NLL over the grid, the temperature that gives it)."""
    nll = torch.stack([torch.nn.functional.cross_entropy(logits / t, labels) for t in TEMPERATURES])
    best = int(nll.argmin())
    plain = float(torch.nn.functional.cross_entropy(logits, labels))
    return plain, float(nll[best]), float(TEMPERATURES[best])


def variant_scores(pattern: str) -> dict:
    folds = []
    for run_dir in sorted(glob(pattern)):
        for fold in finished_folds(run_dir):  # never a fold still training
            logits, labels = validation_logits(run_dir, fold)
            plain, scaled, temperature = scaled_nll(logits, labels)
            folds.append({"run": run_dir, "fold": fold, "nll": plain, "scaled_nll": scaled,
                          "temperature": temperature, "top1": float((logits.argmax(1) == labels).float().mean())})
    if not folds:
        raise SystemExit(f"no finished runs under {pattern}")
    mean = {key: float(np.mean([f[key] for f in folds])) for key in ("nll", "scaled_nll", "temperature", "top1")}
    return {"pattern": pattern, "folds": folds, "mean": mean}


def main(out: str, variants: dict[str, str]) -> None:
    results = {name: variant_scores(pattern) for name, pattern in variants.items()}
    print("| variant | folds | validation top-1 % | validation NLL | NLL after temperature | temperature |")
    print("|---|---|---|---|---|---|")
    for name, r in sorted(results.items(), key=lambda item: item[1]["mean"]["scaled_nll"]):
        m = r["mean"]
        print(f"| {name} | {len(r['folds'])} | {100 * m['top1']:.2f} | {m['nll']:.3f} | {m['scaled_nll']:.3f} | "
              f"{m['temperature']:.2f} |")
    write_json(out, results)
    print(f"-> {RESULTS / out}.json")


if __name__ == "__main__":
    run_with_variants(main, __doc__)
