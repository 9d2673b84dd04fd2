"""Does MuMu's auxiliary (activity-group) head help its activity prediction at test time? A probe, not a model.

    python docs/results/group_prior.py OUT RUN_DIR [RUN_DIR ...]

For every fold of every MuMu run (a `cli.py train` output), scores the validation and the test subject with
log p(activity) + lam * log p(group of the activity), renormalised, for lam in LAMS (lam 0 = MuMu as trained),
each subject with its own BatchNorm statistics when the run was tested with adapt_bn. The fold's lam is
the one with the lowest validation NLL: the test subject never chooses it. Writes docs/results/OUT.json
(per run: test top-1 at lam 0 and at the chosen lam, and every lam's pooled test top-1) and prints a
Markdown row per run.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent
sys.path.insert(0, str(RESULTS.parents[1]))

from mumu.adapt import by_subject, predict_by_subject  # noqa: E402
from mumu.rundir import finished_folds, load_run  # noqa: E402
from summarise import write_json  # noqa: E402

LAMS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


@torch.no_grad()
def outputs(run, part: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Activity log-probs (N, K), group log-probs (N, G) and labels (N,) of one fold's `part`."""
    activity, group, labels = [], [], []
    samples = run.samples(part)
    subjects = (list(run.data.loader(s)) for s in (by_subject(samples) if run.config.adapt_bn else [samples]))
    for batch, out in predict_by_subject(run.module, subjects, run.config.adapt_bn):
        activity.append(F.log_softmax(out.logits.float(), -1))
        group.append(F.log_softmax(out.group_logits.float(), -1))
        labels.append(batch["label"])
    return torch.cat(activity), torch.cat(group), torch.cat(labels)


def with_group_prior(activity: torch.Tensor, group: torch.Tensor, group_of: torch.Tensor, lam: float) -> torch.Tensor:
    return F.log_softmax(activity + lam * group[:, group_of], -1)  # (N, K)


def main(out: str, run_dirs: list[str]) -> None:
    torch.set_num_threads(1)
    results = {}
    print("| run | test top-1 %, lam 0 | test top-1 %, lam chosen on validation | lams chosen |")
    print("|---|---|---|---|")
    for run_dir in map(Path, run_dirs):
        correct = {lam: 0 for lam in LAMS}
        chosen_correct, count, chosen = 0, 0, {}
        for fold in finished_folds(run_dir):
            run = load_run(run_dir, fold=fold)
            if run.config.model != "mumu":
                raise SystemExit(f"{run_dir}: a {run.config.model} run; only MuMu has a group head")
            group_of = torch.zeros(len(run.data.activity_names), dtype=torch.long).scatter_(
                0, torch.tensor([s.activity_id for s in run.data.samples]),
                torch.tensor([s.group_id for s in run.data.samples]))
            val, test = outputs(run, "val"), outputs(run, "test")
            val_nll = {lam: F.nll_loss(with_group_prior(*val[:2], group_of, lam), val[2]).item() for lam in LAMS}
            chosen[fold] = min(LAMS, key=val_nll.get)
            for lam in LAMS:
                hits = int((with_group_prior(*test[:2], group_of, lam).argmax(-1) == test[2]).sum())
                correct[lam] += hits
                chosen_correct += hits if lam == chosen[fold] else 0
            count += len(test[2])
        row = {"test_top1_lam0": round(100 * correct[0.0] / count, 2),
               "test_top1_chosen": round(100 * chosen_correct / count, 2),
               "chosen_lam": chosen, "test_top1_by_lam": {str(lam): round(100 * c / count, 2) for lam, c in correct.items()},
               "test_samples": count}
        results[str(run_dir)] = row
        print(f"| {run_dir.name} | {row['test_top1_lam0']:.2f} | {row['test_top1_chosen']:.2f} | "
              f"{', '.join(f'{lam:g}' for lam in chosen.values())} |", flush=True)
    write_json(out, results)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
