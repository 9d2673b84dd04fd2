"""Where MuMu's two fusions look, per fold: mean SM-Fusion alpha and GM-Fusion weight per modality.

    python docs/results/fusion_weights.py RUN_DIR [RUN_DIR ...]

For every fold of every MuMu run (a `cli.py train` output), runs the test split through the best
checkpoint and prints one Markdown row: test top-1, the mean SM-Fusion alpha and the mean GM-Fusion
weight of each modality. With two modalities, both fusions are convex combinations; when both put most
weight on the same modality, [X_c; X_aux] carries little of the other one.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mumu.rundir import finished_folds  # noqa: E402
from summarise import unadapted_run  # noqa: E402


def fold_weights(run_dir: Path, fold: str) -> tuple[list[str], float, torch.Tensor, torch.Tensor]:
    run = unadapted_run(run_dir, fold)
    sm, gm, correct, total = [], [], 0, 0
    with torch.no_grad():
        for batch in run.loader("test"):
            out = run.predict(batch)
            sm.append(out.attention["sm"])
            gm.append(out.attention["gm"])
            correct += int((out.logits.argmax(-1) == batch["label"]).sum())
            total += len(batch["label"])
    return run.module.model.modalities, correct / total, torch.cat(sm).mean(0), torch.cat(gm).mean(0)


def main(run_dirs: list[str]) -> None:
    torch.set_num_threads(1)
    header = False
    for run_dir in map(Path, run_dirs):
        for fold in finished_folds(run_dir):
            names, accuracy, sm, gm = fold_weights(run_dir, fold)
            if not header:
                print("| run | fold | top-1 % | " + " | ".join(f"SM alpha {n}" for n in names) + " | "
                      + " | ".join(f"GM weight {n}" for n in names) + " |")
                print("|---" * (3 + 2 * len(names)) + "|")
                header = True
            print(f"| {run_dir.name} | {fold} | {100 * accuracy:.1f} | " + " | ".join(f"{v:.2f}" for v in sm.tolist())
                  + " | " + " | ".join(f"{v:.2f}" for v in gm.tolist()) + " |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
