"""Test-time entropy minimisation (TENT; Wang et al., ICLR 2021) on top of AdaBN, per subject.

    python docs/results/entropy_adaptation.py OUT NAME=RUN_GLOB [NAME=RUN_GLOB ...]

Each NAME=RUN_GLOB is one model: a label and a quoted glob of its LOSO `cli.py train` run directories (one per
seed), trained with `adapt_bn`. For every fold and for both the validation subject and the test subject, it
predicts the subject as the test step does (AdaBN: BatchNorm statistics of the subject's own inputs), then
adapts a copy of the model to that subject alone: the BatchNorm layers' scales and shifts (nothing else) take
PASSES passes of Adam (lr LR) over the subject's batches, minimising the mean entropy of the activity
prediction; the statistics stay AdaBN's. Labels are read only to score. Like AdaBN it is transductive (a
prediction depends on the same subject's other inputs) and is given to every model alike.

Writes docs/results/OUT.json and prints, per model and PASSES, validation and test top-1 and NLL with AdaBN
alone and with entropy minimisation on top.
"""
from __future__ import annotations

import copy
import sys
from glob import glob
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent
sys.path.insert(0, str(RESULTS.parents[1]))

from mumu.adapt import adapted_batchnorm, by_subject, load_batchnorm_state, batchnorm_state  # noqa: E402
from mumu.rundir import finished_folds, load_run  # noqa: E402
from summarise import run_with_variants, write_json  # noqa: E402

LR = 1e-3
PASSES = (1, 10)


def _scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return {"top1": float((logits.argmax(1) == labels).float().mean()),
            "nll": float(F.cross_entropy(logits, labels)), "n": len(labels)}


def _logits(module: torch.nn.Module, batches: list[dict]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([module(batch).logits.float() for batch in batches])


def adapted_logits(module: torch.nn.Module, batches: list[dict], passes: int) -> torch.Tensor:
    """(N, K) logits of one subject after AdaBN and `passes` passes of entropy minimisation on its batches."""
    model = copy.deepcopy(module)
    model.eval()
    with adapted_batchnorm(model, batches):
        adabn = batchnorm_state(model)
    load_batchnorm_state(model, adabn)  # the subject's statistics, kept fixed while the affine parameters move
    affine = [p for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
              for p in (m.weight, m.bias) if p is not None]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in affine:
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(affine, lr=LR)
    for _ in range(passes):
        for batch in batches:
            probs = model(batch).logits.float().softmax(-1)
            entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()
            optimiser.zero_grad()
            entropy.backward()
            optimiser.step()
    return _logits(model, batches)


def subject_scores(run_dir: str, fold: str) -> dict:
    run = load_run(run_dir, fold)
    result = {}
    for part in ("val", "test"):
        for samples in by_subject(run.samples(part)):
            batches = list(run.data.loader(samples))
            labels = torch.cat([b["label"] for b in batches])
            with adapted_batchnorm(run.module, batches):
                scores = {"adabn": _scores(_logits(run.module, batches), labels)}
            for passes in PASSES:
                scores[f"tent{passes}"] = _scores(adapted_logits(run.module, batches, passes), labels)
            result.setdefault(part, []).append(scores)
    return result


def model_scores(pattern: str) -> dict:
    folds = [{"run": run_dir, "fold": fold, **subject_scores(run_dir, fold)}
             for run_dir in sorted(glob(pattern)) for fold in finished_folds(run_dir)]
    if not folds:
        raise SystemExit(f"no finished runs under {pattern}")
    mean = {}
    for part in ("val", "test"):
        for method in ("adabn", *(f"tent{p}" for p in PASSES)):
            rows = [s[method] for f in folds for s in f[part]]
            mean[f"{part}/{method}"] = {k: float(np.mean([r[k] for r in rows])) for k in ("top1", "nll")}
    return {"pattern": pattern, "folds": folds, "mean": mean}


def main(out: str, models: dict[str, str]) -> None:
    torch.manual_seed(0)
    results = {name: model_scores(pattern) for name, pattern in models.items()}
    print("| model | method | validation top-1 % | validation NLL | test top-1 % | test NLL |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        for method in ("adabn", *(f"tent{p}" for p in PASSES)):
            v, t = r["mean"][f"val/{method}"], r["mean"][f"test/{method}"]
            print(f"| {name} | {method} | {100 * v['top1']:.2f} | {v['nll']:.3f} | {100 * t['top1']:.2f} | "
                  f"{t['nll']:.3f} |")
    write_json(out, results)
    print(f"-> {RESULTS / out}.json")


if __name__ == "__main__":
    run_with_variants(main, __doc__)
