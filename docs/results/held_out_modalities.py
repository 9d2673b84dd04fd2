"""How well each modality alone does on subjects a model has not trained on, for every training sample of
every LOSO fold: the per-sample targets of `train.fusion_targets` (twenty-second search).

    python docs/results/held_out_modalities.py PARAMS OUT_DIR FOLD [FOLD ...]

For the outer LOSO fold that tests subject s and validates on v, the six training subjects (in cyclic order
after v) form three pairs of neighbours. For each pair an inner model (PARAMS, its seed) trains on the other
four subjects, its epoch is selected on v, as the outer fold's own model is (the test subject s is never read),
and then, with its BatchNorm statistics adapted to each held-out subject as in testing, it predicts every
sample of the pair with each modality alone (the other at length 0, as modality dropout trains it).
Writes OUT_DIR/<fold>.csv: fold, sample_id, subject, label, and per modality its alone-probability of
the true label (p_<modality>) and its alone-prediction (pred_<modality>). Inner runs live in
OUT_DIR/runs/<fold>/<pair> and resume when killed; a fold whose CSV exists is skipped.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import torch
from pytorch_lightning.utilities import move_data_to_device

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mumu.adapt import by_subject, load_batchnorm_state, subject_batchnorm_state  # noqa: E402
from mumu.config import resolve_config, save_config  # noqa: E402
from mumu.module import MumuModule  # noqa: E402
from mumu.rundata import RunData, SampleSplit, prepare_data, split_samples  # noqa: E402
from mumu.rundir import load_module  # noqa: E402
from mumu.train import train_split  # noqa: E402
from pipeline.files import replaced_whole  # noqa: E402
from pipeline.index import Sample  # noqa: E402


def inner_splits(outer: SampleSplit) -> list[SampleSplit]:
    """Three inner splits: each holds out two neighbouring training subjects, validates on the outer one."""
    val_subject = outer.val[0].subject
    subjects = sorted({s.subject for s in outer.train})
    ordered = [s for s in subjects if s > val_subject] + [s for s in subjects if s < val_subject]
    pairs = [ordered[i:i + 2] for i in range(0, len(ordered), 2)]
    return [SampleSplit(f"held_s{'_s'.join(map(str, pair))}",
                        [s for s in outer.train if s.subject not in pair], outer.val,
                        [s for s in outer.train if s.subject in pair]) for pair in pairs]


@torch.no_grad()
def alone_rows(module: MumuModule, data: RunData, samples: list[Sample], fold: str) -> list[dict]:
    """Each sample predicted with each modality alone, after adapting BatchNorm to its subject."""
    module.eval()
    modalities = module.model.modalities
    rows = []
    for mine in by_subject(samples):
        subject = mine[0].subject
        load_batchnorm_state(module, subject_batchnorm_state(module, data.loader(mine)))
        for batch in data.loader(mine):
            batch = move_data_to_device(batch, module.device)
            alone = {}
            for kept in modalities:
                lengths = {m: (n if m == kept else torch.zeros_like(n)) for m, n in batch["lengths"].items()}
                alone[kept] = module({**batch, "lengths": lengths}).logits.float().softmax(-1)  # (B, K)
            for i, (sample_id, label) in enumerate(zip(batch["sample_id"], batch["label"].tolist())):
                row = {"fold": fold, "sample_id": sample_id, "subject": subject, "label": label}
                for m in modalities:
                    row[f"p_{m}"] = round(float(alone[m][i, label]), 5)
                    row[f"pred_{m}"] = int(alone[m][i].argmax())
                rows.append(row)
    return rows


def main(params: str, out_dir: str, folds: list[str]) -> None:
    torch.set_num_threads(1)
    cfg = resolve_config(params)
    if cfg.protocol != "loso":
        raise SystemExit(f"{params}: protocol {cfg.protocol}; this script nests inside LOSO folds")
    data = prepare_data(cfg)
    out = Path(out_dir)
    for outer in split_samples(data):
        if outer.name not in folds or (out / f"{outer.name}.csv").is_file():
            continue
        rows = []
        for inner in inner_splits(outer):
            fold_dir = out / "runs" / outer.name / inner.name
            fold_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, fold_dir / "config.yaml")
            train_split(data, inner, fold_dir, progress=False)
            module = load_module(fold_dir / "checkpoints" / "best.ckpt")
            rows += alone_rows(module, data, inner.test, outer.name)
        with replaced_whole(out / f"{outer.name}.csv") as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))  # whole or not at all: a kill leaves no CSV
            writer.writeheader()
            writer.writerows(rows)
        print(f"{outer.name}: {len(rows)} samples", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
