"""`cli.py study noise|modalities|ablation`: the paper's Tables 6, 5 and 7 as commands.

Each study trains a set of runs with `mumu.train.train_once` (settings from params.yaml, the study
changing only what it varies), writes OUT/table.md and OUT/results.json, and prints the table.
Runs live in OUT/runs/<name>; rerunning a study reuses every run that already finished, so an
interrupted study resumes. `--quick` shrinks the work to a few minutes on the demo data.
F1 is always macro-F1 over a test set; with several folds (LOSO), a run's score is the mean over its folds.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click
import numpy as np
from tqdm import tqdm

from mumu.noise_modes import LEVEL_HELP, NOISE_HELP, NOISE_MODES
from mumu.significance import TEST_NAME, pairwise_aso, significantly_better
from pipeline.errors import MumuError
from pipeline.files import write_text
from pipeline.modalities import select_modalities
from pipeline.params import DEFAULT_PARAMS

if TYPE_CHECKING:  # torch loads only when a study runs, not for --help
    from mumu.config import TrainConfig

MODELS = ("b1", "b2", "b3", "mumu")
MODEL_NAMES = {"b1": "B1 non-attention", "b2": "B2 unimodal attention (Keyless)",
               "b3": "B3 uni + multimodal attention (HAMLET-like)", "mumu": "MuMu"}
# --quick: short, small training runs (on top of params.yaml)
QUICK = {"max_epochs": 3, "embed_dim": 32}
QUICK_SEEDS = 2
# fewer seeds per model: no significance verdict in the ablation table (with 2 scores a model ASO calls
# [4.8, 12.2] significantly better than [4.8, 4.8], eps_min 0.35)
MIN_SEEDS_TESTED = 3


def pct(values: list[float] | float) -> str:
    """"76.3" for one value, "76.3 ± 0.4" (population std) for several."""
    values = np.atleast_1d(np.asarray(values, dtype=float)) * 100
    return f"{values[0]:.1f}" if len(values) == 1 else f"{values.mean():.1f} ± {values.std():.1f}"


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class Study:
    """Shared machinery: resolve each run's config, train it (or reuse it), write the outputs."""

    def __init__(self, name: str, params: str, out: Path | None, quick: bool, overrides: dict[str, Any]):
        from mumu.config import resolve_config

        self.name = name
        self.out = Path(out) if out else Path("runs") / f"study-{name}"
        self.quick = quick
        overrides = {**(QUICK if quick else {}), **{k: v for k, v in overrides.items() if v is not None}}
        self.base = resolve_config(params, **overrides)  # TrainConfig shared by every run of the study

    def config(self, run_name: str, **changes: Any) -> TrainConfig:
        """The base config with `changes`, training into OUT/runs/<run_name>. B1 keeps one LSTM layer where
        the settings have none (the UTD recipe): its pooling is the last LSTM state, which defines it."""
        cfg = self.base.replace(out=str(self.out / "runs" / run_name), **changes)
        return cfg.replace(lstm_layers=1) if cfg.model == "b1" and cfg.lstm_layers == 0 else cfg

    def train(self, runs: dict[str, Any]) -> dict[str, Any]:
        """Train every {run name: config} (finished ones are reused). Returns {run name: RunResult}."""
        from mumu.train import train_once

        results = {}
        bar = tqdm(runs.items(), desc=f"study {self.name}", unit="run")
        for run_name, cfg in bar:
            bar.set_postfix_str(run_name)
            results[run_name] = train_once(cfg, progress=False, offers_overwrite=False)
        return results

    def write(self, title: str, headers: list[str], rows: list[list[Any]], results: dict, notes: list[str]) -> str:
        table = markdown_table(headers, rows)
        settings = {k: v for k, v in self.base.to_dict().items() if k not in ("out",)}
        if self.quick:
            used = ", ".join(f"{k} {getattr(self.base, k)}" for k in QUICK)  # an option given beside --quick wins
            notes = [f"**Quick mode** (`--quick`: {used}, fewer runs): a check that the study runs end to end, "
                     "not results; so short a training may stay at chance (on the demo, 4.8 % macro-F1: one class "
                     "predicted for every sample).", *notes]
        text = "\n\n".join([f"# {title}", table, *notes]) + "\n"
        write_text(self.out / "table.md", text)
        payload = {"study": self.name, "quick": self.quick, "settings": settings, "f1": "macro-F1", **results}
        write_text(self.out / "results.json", json.dumps(payload, indent=2, default=str) + "\n")
        return text

    def finish(self, text: str) -> None:
        click.echo("\n" + text)
        click.echo(f"outputs: {self.out}/table.md, {self.out}/results.json, runs in {self.out}/runs/")


def run_noise_study(study: Study, models: list[str], noise: str, level: float, seed: int,
                    adapt_by_condition: bool = True) -> str:
    """Table 6: each model on clean input, with the visual group and with the non-visual group corrupted,
    and with one of the two picked per sample (p = 0.5). adapt_by_condition: as `cli.py evaluate`'s."""
    from mumu.evaluate import CONDITIONS, headline_metrics, infer_folds
    from mumu.noise import check_noise, split_groups

    check_noise(noise, level)  # before any training
    trained = study.train({m: study.config(m, model=m) for m in models})
    results, rows = {}, []
    for model in tqdm(models, desc="noisy test passes", unit="model"):
        per_fold, _ = infer_folds(trained[model].run_dir, noise, level, seed, adapt_by_condition)
        results[model] = {}
        for condition in CONDITIONS:  # a run's score, as in training's metrics.json: the mean over its folds
            folds = [headline_metrics(fold[condition].labels, fold[condition].preds) for fold in per_fold]
            results[model][condition] = {"macro_f1": float(np.mean([f["macro_f1"] for f in folds])),
                                         "accuracy": float(np.mean([f["accuracy"] for f in folds])),
                                         "n_samples": sum(f["n_samples"] for f in folds)}
        r = results[model]
        rows.append([MODEL_NAMES[model]] + [pct(r[c]["macro_f1"]) for c in CONDITIONS])
    groups = split_groups(select_modalities(study.base.dataset, study.base.modalities))
    notes = [f"F1: macro-F1 (%) on the test set ({study.base.dataset}, {study.base.protocol}; with several folds, "
             "the mean over folds of each fold's macro-F1, as in the other studies). "
             f"Noise: `{noise}` at level {level:g} on the raw (cached) features of the corrupted group "
             f"(see mumu/noise.py). Visual group: {', '.join(groups['visual']) or 'none'}; "
             f"non-visual group: {', '.join(groups['non_visual']) or 'none'}. "
             "'Random group' picks visual or non-visual per test sample with p = 0.5, as in the paper; "
             "the other two columns corrupt that group in every test sample."]
    if study.base.adapt_bn:  # the adaptation moves the noisy columns a lot (UTD-MHAD MuMu: 66.7 against 87.4 %)
        notes.append("Test-time BatchNorm adaptation (adapt_bn): each test subject's statistics re-estimated "
                     + ("per pattern of silent streams (evaluate.adapt_by_condition)" if adapt_by_condition else
                        "over all its samples (evaluate.adapt_by_condition false)") + ".")
    return study.write(f"Noise robustness (Table 6), {study.base.dataset}",
                       ["model", "clean", "noisy, random group", "noisy visual", "noisy non-visual"], rows,
                       {"noise": {"mode": noise, "level": level, "seed": seed, "adapt_by_condition": adapt_by_condition,
                                  "groups": groups}, "results": results}, notes)


# The paper's Table 5 (UTD-MHAD, top-1 accuracy %): its three modality combinations, for Keyless (B2), HAMLET (~B3)
# and MuMu, keyed by the sorted modality names
PAPER_TABLE_5 = {"utd_mhad": {("rgb", "skeleton"): {"b2": 90.20, "b3": 95.12, "mumu": 96.10},
                              ("inertial", "rgb", "skeleton"): {"b2": 92.67, "b3": 91.16, "mumu": 97.44},
                              ("depth", "inertial", "rgb", "skeleton"): {"b2": 83.87, "b3": 90.09, "mumu": 97.60}}}


def modality_combinations(names: list[str], groups: dict[str, list[str]], quick: bool) -> list[list[str]]:
    """The modality study's combinations: every non-empty subset for up to 4 modalities (on UTD-MHAD a superset of
    Table 5's three); otherwise each single modality, the visual group, the non-visual group and all. Quick: the
    two groups and all."""
    if quick:
        combos = [groups["visual"], groups["non_visual"], names]
    elif len(names) <= 4:
        combos = [list(c) for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]
    else:
        combos = [[n] for n in names] + [groups["visual"], groups["non_visual"], names]
    unique = []
    for combo in combos:
        if combo and combo not in unique:
            unique.append(combo)
    return unique


def run_modalities_study(study: Study, model: str) -> str:
    """Table 5: one model trained and tested on each modality combination."""
    from mumu.noise import split_groups

    specs = select_modalities(study.base.dataset, study.base.modalities)
    combos = modality_combinations([s.name for s in specs], split_groups(specs), study.quick)
    runs = {"+".join(c): study.config(f"{model}-{'+'.join(c)}", model=model, modalities=",".join(c)) for c in combos}
    trained = study.train(runs)
    paper = PAPER_TABLE_5.get(study.base.dataset, {})
    paper_accuracy = {name: paper.get(tuple(sorted(name.split("+"))), {}).get(model) for name in trained}
    rows = [[name.replace("+", ", "), pct(r.metrics["macro_f1"]), pct(r.metrics["accuracy"]),
             "–" if paper_accuracy[name] is None else f"{paper_accuracy[name]:.2f}"] for name, r in trained.items()]
    results = {name: {"modalities": name.split("+"), "macro_f1": r.metrics["macro_f1"],
                      "accuracy": r.metrics["accuracy"], "paper_accuracy": paper_accuracy[name]}
               for name, r in trained.items()}
    notes = [f"Model {MODEL_NAMES[model]}; macro-F1 and top-1 accuracy (%) on the test set "
             f"({study.base.dataset}, {study.base.protocol}; with several folds, the mean over folds of each "
             "fold's macro-F1); one training run per combination. Last column: the paper's top-1 for this model "
             "where its Table 5 has the combination (UTD-MHAD: R+S, R+S+P, R+D+S+P; Keyless for B2, HAMLET for B3)."]
    return study.write(f"Modality combinations (Table 5), {study.base.dataset}",
                       ["modalities", "macro-F1", "accuracy", "paper's Table 5 top-1"], rows,
                       {"model": model, "results": results}, notes)


def run_ablation_study(study: Study, models: list[str], seeds: list[int]) -> str:
    """Table 7: each model over several seeds, mean ± std, ASO significance between every pair."""
    runs = {f"{m}-seed{s}": study.config(f"{m}-seed{s}", model=m, seed=s) for m in models for s in seeds}
    trained = study.train(runs)
    scores = {m: [trained[f"{m}-seed{s}"].metrics["macro_f1"] for s in seeds] for m in models}
    accuracy = {m: [trained[f"{m}-seed{s}"].metrics["accuracy"] for s in seeds] for m in models}
    eps_min = pairwise_aso(scores)
    better = significantly_better(eps_min)
    tested = len(seeds) >= MIN_SEEDS_TESTED
    rows = [[MODEL_NAMES[m], pct(scores[m]), pct(accuracy[m]),
             (", ".join(b.upper() if b != "mumu" else "MuMu" for b in better[m]) or "none") if tested
             else f"not tested (< {MIN_SEEDS_TESTED} seeds)"] for m in models]
    notes = [f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); mean ± std (population) of macro-F1 and "
             f"top-1 accuracy (%) on the test set ({study.base.dataset}, {study.base.protocol}; with several folds, a "
             "seed's score is the mean over folds of each fold's macro-F1).",
             f"Significance: {TEST_NAME}, on the per-seed macro-F1 scores, no correction for multiple "
             "comparisons. eps_min for every ordered pair is in results.json."
             + (f" Not tested with fewer than {MIN_SEEDS_TESTED} seeds per model: there the bound calls ties "
                "significant." if not tested else "")
             + (" With fewer than 5 seeds per model, read the verdicts as indicative." if tested and len(seeds) < 5
                else "")]
    results = {"seeds": seeds, "macro_f1": scores, "accuracy": accuracy,
               "significance": {"test": TEST_NAME, "eps_min": eps_min,
                                "significantly_better_than": better if tested else None}}
    return study.write(f"Ablation (Table 7), {study.base.dataset}",
                       ["model", "macro-F1", "accuracy", "significantly better than"], rows, results, notes)


# --------------------------------------------------------------------------------------------------
# Command line


def _models(value: str) -> list[str]:
    models = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise MumuError(f"--models: unknown model {', '.join(unknown) or '(none)'}; choose from {', '.join(MODELS)}")
    return models


def common_options(f: Callable) -> Callable:
    options = [
        click.option("--params", default=DEFAULT_PARAMS, show_default=True,
                     help="Base settings come from this file; none: no file."),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                     help="Output folder (default runs/study-<name>)."),
        click.option("--quick", is_flag=True,
                     help="A quick try on the --params dataset (under a minute per study on the demo): "
                     + ", ".join(f"{k}={v}" for k, v in QUICK.items()) + ", fewer runs."),
        click.option("--max-epochs", type=click.IntRange(1), help="Override train.max_epochs for every run."),
        click.option("--cache", help="Feature cache  [default: params train.cache, else cache/<dataset>.zarr]"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.group("study")
def study_command() -> None:
    """The paper's studies: noise robustness (Table 6), modality combinations (Table 5), ablation (Table 7).

    Each writes OUT/table.md and OUT/results.json and prints the table; finished runs are reused.
    """


@study_command.command("noise")
@common_options
@click.option("--models", default=",".join(MODELS), show_default=True, help="Models to compare.")
@click.option("--noise", type=click.Choice(NOISE_MODES),
              help=NOISE_HELP + "  [default: params evaluate.noise, else drop]")
@click.option("--noise-level", type=click.FloatRange(0, 1),
              help=LEVEL_HELP + "  [default: params evaluate.noise_level, else 1]")
@click.option("--seed", type=int, help="Seed of the noise draws.  [default: params evaluate.seed, else 0]")
def noise_command(params: str, out: Path | None, quick: bool, max_epochs: int | None, cache: str | None, models: str,
                  noise: str | None, noise_level: float | None, seed: int | None) -> None:
    """Noise robustness (Table 6): clean vs noisy visual vs noisy non-visual input, for each model."""
    from mumu.evaluate import evaluate_settings

    settings = evaluate_settings(params, noise=noise, noise_level=noise_level, seed=seed)  # as `evaluate` reads them
    study = Study("noise", params, out, quick, {"max_epochs": max_epochs, "cache": cache})
    study.finish(run_noise_study(study, _models(models), settings["noise"], settings["noise_level"], settings["seed"],
                                 settings["adapt_by_condition"]))


@study_command.command("modalities")
@common_options
@click.option("--model", type=click.Choice(MODELS), default="mumu", show_default=True,
              help="The model trained on each combination.")
def modalities_command(params: str, out: Path | None, quick: bool, max_epochs: int | None, cache: str | None,
                       model: str) -> None:
    """Modality combinations (Table 5): one model trained and tested on each combination."""
    study = Study("modalities", params, out, quick, {"max_epochs": max_epochs, "cache": cache})
    study.finish(run_modalities_study(study, model))


@study_command.command("ablation")
@common_options
@click.option("--models", default=",".join(MODELS), show_default=True, help="Models to compare.")
@click.option("--seeds", type=click.IntRange(2), help=f"Number of seeds (default 5; --quick: {QUICK_SEEDS}).")
def ablation_command(params: str, out: Path | None, quick: bool, max_epochs: int | None, cache: str | None,
                     models: str, seeds: int | None) -> None:
    """Ablation (Table 7): B1, B2, B3 and MuMu over N seeds, mean ± std, ASO significance per pair."""
    study = Study("ablation", params, out, quick, {"max_epochs": max_epochs, "cache": cache})
    n = seeds or (QUICK_SEEDS if quick else 5)
    study.finish(run_ablation_study(study, _models(models), list(range(n))))
