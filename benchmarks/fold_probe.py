"""Research script: train on a few LOSO folds and print the validation NLL, optionally with an ablation
of the fusion that the product has no option for. Kept as the record of the sixth search's probes
(docs/results.md); the product's own path is `cli.py train`.

    python benchmarks/fold_probe.py --folds s2 --out /tmp/probe-b2 model=b2
    python benchmarks/fold_probe.py --folds s1,s5 --ablation b2_mean --out /tmp/probe-b2mean model=b2
    python benchmarks/fold_probe.py --folds s1,s5 --out /tmp/probe-count beta_aux=0.1 gm_heads=4 fusion_norm=count

Each fold is the product's training (`mumu.train.train_once`, params/utd_mhad.yaml plus the KEY=VALUE
overrides) with the split list cut to the chosen folds: 1.7 min per fold on one CPU thread. The
validation NLL comes from the validation subject only, so it may guide choices; the test accuracy is
printed for the record. Seed 0 reruns bit-identically. Give every probe its own --out: the ablation
is not part of the saved settings, so a finished run with the same settings in DIR would be reused.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import mumu.train as train  # noqa: E402
from mumu.config import resolve_config  # noqa: E402
from mumu.model import ConcatBaseline, ModelOutput, MuMu  # noqa: E402


def b2_reads(merge: str):
    """B2 whose head reads the sum (or the mean over present modalities) of the unimodal features,
    in the first slot of its input, instead of their concatenation."""
    def fuse(self: ConcatBaseline, xu: Tensor, present: Tensor, fusion_target: Tensor | None = None) -> ModelOutput:
        merged = xu.sum(1)  # (B, D); missing modalities are zeros
        if merge == "mean":
            merged = merged / present.sum(1, keepdim=True).to(xu.dtype)
        fused = self.hidden(torch.cat([merged, torch.zeros_like(xu[:, 1:].flatten(1))], 1))
        return ModelOutput(self.out(fused), None, xu, fused)
    return fuse


def mumu_head_reads(which: str):
    """MuMu whose target head reads X_aux alone (no GM-Fusion, no W_f), or W_f[X_c; 0] (no X_aux)."""
    def fuse(self: MuMu, xu: Tensor, present: Tensor, fusion_target: Tensor | None = None) -> ModelOutput:
        x_aux, alpha = self.sm_fusion(xu, present)
        x_c, gm = self.gm_fusion(x_aux, xu, present)
        x_f = x_aux if which == "x_aux" else self.merge(torch.cat([x_c, torch.zeros_like(x_aux)], 1))
        return ModelOutput(self.head(x_f), self.aux_head(x_aux), xu, x_f, {"sm": alpha, "gm": gm.mean(1)})
    return fuse


def mumu_uniform(fusions: tuple[str, ...]):
    """MuMu whose GM- (and SM-) Fusion scores are frozen at 0: uniform weights over present modalities."""
    build = MuMu.__init__

    def init(self: MuMu, *args, **kwargs) -> None:
        build(self, *args, **kwargs)
        frozen = {"gm": self.gm_fusion.q.weight, "sm": self.sm_fusion.score.weight}
        for name in fusions:
            torch.nn.init.zeros_(frozen[name])
            frozen[name].requires_grad_(False)
    return init


ABLATIONS = {
    "none": lambda: None,
    "b2_sum": lambda: setattr(ConcatBaseline, "fuse", b2_reads("sum")),
    "b2_mean": lambda: setattr(ConcatBaseline, "fuse", b2_reads("mean")),
    "mumu_head_reads_x_aux": lambda: setattr(MuMu, "fuse", mumu_head_reads("x_aux")),
    "mumu_head_without_x_aux": lambda: setattr(MuMu, "fuse", mumu_head_reads("x_c")),
    "mumu_uniform_gm": lambda: setattr(MuMu, "__init__", mumu_uniform(("gm",))),
    "mumu_uniform_gm_sm": lambda: setattr(MuMu, "__init__", mumu_uniform(("gm", "sm"))),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", required=True, help="comma-separated LOSO folds, e.g. s1,s5")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--ablation", choices=sorted(ABLATIONS), default="none")
    parser.add_argument("--params", default=str(REPO / "params" / "utd_mhad.yaml"))
    parser.add_argument("overrides", nargs="*", help="train settings as KEY=VALUE (seed=0 model=b2 ...)")
    args = parser.parse_args()
    keep = {f"fold_{fold}" for fold in args.folds.split(",")}
    all_splits = train.split_samples
    train.split_samples = lambda data: [split for split in all_splits(data) if split.name in keep]
    ABLATIONS[args.ablation]()
    overrides = {}
    for item in args.overrides:
        key, value = item.split("=", 1)
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    cfg = resolve_config(args.params, out=args.out, **overrides)
    train.train_once(cfg, progress=False)
    for fold in sorted(keep):
        fold_dir = cfg.run_dir / fold if len(keep) > 1 else cfg.run_dir
        with open(fold_dir / "dvclive" / "plots" / "metrics" / "val" / "nll.tsv") as f:
            nll = [float(row["nll"]) for row in csv.DictReader(f, delimiter="\t")]
        accuracy = json.loads((fold_dir / "metrics.json").read_text())["accuracy"]
        best = min(range(len(nll)), key=nll.__getitem__)
        print(f"{fold}: validation NLL after 15 epochs {nll[14]:.3f}, lowest {nll[best]:.3f} (epoch {best}, 0-based); "
              f"test top-1 {100 * accuracy:.1f} %")


if __name__ == "__main__":
    main()
