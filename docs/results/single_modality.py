"""Which modality a fused model follows when its two modalities disagree (two-modality runs only).

    python docs/results/single_modality.py OUT RUN_DIR [RUN_DIR ...]

Every test sample of every fold goes through the fold's best checkpoint three times: with both
modalities, and with each one alone (the other given length 0, as modality dropout trains it). Among
the samples that exactly one modality gets right on its own, the script counts how often the fused
prediction is right, per modality, and (MuMu) the mean SM-Fusion / GM-Fusion weight of each modality
there. It also scores two test-time rules built from the single-modality passes alone: follow the modality
whose own prediction is more confident (higher top probability), and the product of the two predictions
(summed log-probabilities); and, among the samples exactly one modality gets right, how often the more
confident one is the right one (what a per-sample confidence weighting could at best exploit).
Writes docs/results/OUT.json and prints two Markdown rows per run group (all RUN_DIRs together).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent
sys.path.insert(0, str(RESULTS.parents[1]))

from mumu.rundir import finished_folds  # noqa: E402
from summarise import unadapted_run  # noqa: E402


def fold_rows(run_dir: Path, fold: str) -> tuple[list[str], list[dict]]:
    """One dict per test sample: label, fused and single-modality predictions, fusion weights."""
    run = unadapted_run(run_dir, fold)
    modalities = run.module.model.modalities
    if len(modalities) != 2:
        raise SystemExit(f"{run_dir}: {len(modalities)} modalities; this script compares two")
    rows = []
    with torch.no_grad():
        for batch in run.loader("test"):
            fused = run.predict(batch)
            alone = {}  # modality -> (B, K) log-probabilities with only that modality
            for dropped, kept in zip(modalities, reversed(modalities)):
                lengths = {**batch["lengths"], dropped: torch.zeros_like(batch["lengths"][dropped])}
                alone[kept] = run.predict({**batch, "lengths": lengths}).logits.float().log_softmax(-1)
            product = sum(alone.values()).argmax(-1)
            (top_a, pred_a), (top_b, pred_b) = (alone[m].max(-1) for m in modalities)
            more_confident = torch.where(top_a >= top_b, pred_a, pred_b)  # the higher top log-probability wins
            for i, label in enumerate(batch["label"].tolist()):
                row = {"label": label, "fused": int(fused.logits[i].argmax()), "product": int(product[i]),
                       "more_confident": int(more_confident[i]), **{m: int(alone[m][i].argmax()) for m in modalities}}
                for name in ("sm", "gm"):
                    if name in fused.attention:
                        row[name] = fused.attention[name][i].tolist()
                rows.append(row)
    return modalities, rows


def summarise(modalities: list[str], rows: list[dict]) -> dict:
    a, b = modalities
    right = {key: np.array([r[key] == r["label"] for r in rows])
             for key in ("fused", *modalities, "more_confident", "product")}
    summary = {"samples": len(rows), **{f"top1_{k}": round(100 * float(v.mean()), 2) for k, v in right.items()}}
    one_right = right[a] ^ right[b]
    summary["one_right_more_confident_is_right_percent"] = round(100 * float(right["more_confident"][one_right].mean()), 1)
    fused_errors = ~right["fused"]
    for m, other in zip(modalities, reversed(modalities)):
        only_m = right[m] & ~right[other]  # m alone is right, the other alone is wrong
        summary[f"only_{m}_right"] = {
            "samples": int(only_m.sum()),
            "fused_right_percent": round(100 * float(right["fused"][only_m].mean()), 1),
            "fused_errors_with_it_right": int((fused_errors & right[m]).sum()),
            **{f"mean_{name}_weight": [round(float(w), 2) for w in np.mean([r[name] for r, keep in zip(rows, only_m)
                                                                           if keep], axis=0)]
               for name in ("sm", "gm") if name in rows[0]}}
    summary["fused_errors"] = int(fused_errors.sum())
    return summary


def main(out: str, run_dirs: list[str]) -> None:
    torch.set_num_threads(1)
    rows, modalities = [], None
    for run_dir in map(Path, run_dirs):
        for fold in finished_folds(run_dir):
            modalities, fold_samples = fold_rows(run_dir, fold)
            rows += fold_samples
    summary = {"runs": run_dirs, "modalities": modalities, **summarise(modalities, rows)}
    (RESULTS / f"{out}.json").write_text(json.dumps(summary, indent=1) + "\n")
    a, b = modalities
    print(f"| runs | top-1 fused / {a} alone / {b} alone | only {a} right: n, fused right % | "
          f"only {b} right: n, fused right % | fused errors (with {a} / {b} alone right) |")
    print("|---|---|---|---|---|")
    only_a, only_b = summary[f"only_{a}_right"], summary[f"only_{b}_right"]
    print(f"| {', '.join(Path(r).name for r in run_dirs)} | {summary[f'top1_fused']:.2f} / {summary[f'top1_{a}']:.2f} / "
          f"{summary[f'top1_{b}']:.2f} | {only_a['samples']}, {only_a['fused_right_percent']:.1f} | "
          f"{only_b['samples']}, {only_b['fused_right_percent']:.1f} | {summary['fused_errors']} "
          f"({only_a['fused_errors_with_it_right']} / {only_b['fused_errors_with_it_right']}) |")
    print("\n| runs | top-1 fused | follow the more confident modality | product of the two | "
          "one modality right: the more confident is it |")
    print("|---|---|---|---|---|")
    print(f"| {', '.join(Path(r).name for r in run_dirs)} | {summary['top1_fused']:.2f} | "
          f"{summary['top1_more_confident']:.2f} | {summary['top1_product']:.2f} | "
          f"{summary['one_right_more_confident_is_right_percent']:.1f} % |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
