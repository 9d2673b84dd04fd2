"""`cli.py evaluate RUN_DIR`: the paper's metrics and figures for a finished training run.

Runs the run's best checkpoint (every fold's, for LOSO) over its test set under four conditions (read once):
clean; with a random modality group corrupted per sample (visual or non-visual, p = 0.5, see
`mumu.noise`); with the visual group corrupted in every sample; with the non-visual group corrupted
in every sample. Writes into OUT (default RUN_DIR/eval):

    metrics.json            macro-F1 and top-1 accuracy (clean and noisy), per activity group (the mean F1 of
                            its classes present in the test set, as per_class.json has them, and the share of
                            its samples right)
    per_class.json          F1, precision, recall and support per activity
    per_subject.json        per test subject: clean macro-F1 and accuracy, accuracy under each noisy condition
    confusion.csv           actual/predicted activity names (for `dvc plots show`'s confusion template)
    plots/confusion.png     row-normalised confusion matrix
    plots/per_class_f1.png  per-class F1, coloured by activity group
    plots/per_subject.png   accuracy per test subject, clean and noisy
    plots/attention.png     SM-/GM-Fusion modality weights, clean vs noisy (paper Figs. 1 and 4)
    plots/tsne.png          t-SNE of unimodal and fused embeddings (paper Fig. 3)

F1 is macro-F1 over the whole test set (all folds pooled for LOSO; metrics.json adds the mean ± std
over folds under "fold_mean"). Attention and t-SNE show the first fold's model for LOSO, since
embeddings of different models do not share a space.
"""
from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click
import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
from tqdm import tqdm

from mumu import plots
from mumu.adapt import by_subject, predict_by_subject, split_by_condition
from mumu.noise import check_noise, corrupt_batch, split_groups
from mumu.noise_modes import LEVEL_HELP, NOISE_HELP, NOISE_MODES
from pipeline.errors import MumuError
from pipeline.files import read_json, replaced_whole, write_json
from pipeline.params import DEFAULT_PARAMS, check_types, read_params, reject_unknown

if TYPE_CHECKING:  # mumu.rundir loads Lightning: imported where a run is loaded
    from mumu.model import ModelOutput
    from mumu.rundir import LoadedRun

# the clean pass plus three noisy conditions; value: which group to corrupt ("random" = p=0.5 per sample)
CONDITIONS = {"clean": None, "noisy": "random", "noisy_visual": "visual", "noisy_non_visual": "non_visual"}
CONDITION_LABELS = {"clean": "clean input", "noisy": "noisy, random group", "noisy_visual": "noisy visual",
                    "noisy_non_visual": "noisy non-visual"}


@dataclass(frozen=True)
class EvaluateSettings:
    """The evaluate: block of a params file (and the command's options)."""
    noise: str = "drop"
    noise_level: float = 1.0
    activities: str = "auto"
    tsne_samples: int = 400
    seed: int = 0
    adapt_by_condition: bool = True

    def __post_init__(self) -> None:  # values from a params file never pass click's checks
        check_noise(self.noise, self.noise_level)
        if self.tsne_samples < 10:
            raise MumuError(f"tsne_samples must be at least 10, got {self.tsne_samples}")


DEFAULTS = dataclasses.asdict(EvaluateSettings())


@dataclass
class Inference:
    """Model outputs over one test set, one row per sample."""

    sample_ids: list[str]
    labels: np.ndarray  # (N,) activity ids
    groups: np.ndarray  # (N,) activity-group ids
    preds: np.ndarray  # (N,)
    group_preds: np.ndarray | None  # (N,) from the auxiliary head (MuMu only)
    attention: dict[str, np.ndarray]  # "sm" / "gm": (N, M) modality weights, where the model has them
    unimodal: np.ndarray  # (N, M, D)
    fused: np.ndarray  # (N, D)

    @staticmethod
    def concat(parts: list["Inference"]) -> "Inference":
        def cat(values: list[np.ndarray | None]) -> np.ndarray | None:
            return None if values[0] is None else np.concatenate(values)
        return Inference(
            [i for p in parts for i in p.sample_ids], cat([p.labels for p in parts]), cat([p.groups for p in parts]),
            cat([p.preds for p in parts]), cat([p.group_preds for p in parts]),
            {k: cat([p.attention[k] for p in parts]) for k in parts[0].attention},
            cat([p.unimodal for p in parts]), cat([p.fused for p in parts]))


def infer(run: LoadedRun, corrupt: str | None = None, noise: str = "drop", level: float = 1.0, seed: int = 0,
          adapt_by_condition: bool = True) -> Inference:
    """Run a loaded run (`mumu.rundir.load_run`) over its test set, optionally corrupting the input.

    corrupt: None (clean), "random" (visual or non-visual group per sample, p = 0.5), "visual" or
    "non_visual" (that group in every sample). A run configured with adapt_bn adapts to each test subject's
    inputs as they arrive, corrupted or not (mumu.adapt); with `adapt_by_condition`, to each subject's samples
    that share which streams are silent (`mumu.adapt.split_by_condition`), each such group on its own.
    """
    return infer_conditions(run, {"only": corrupt}, noise, level, seed, adapt_by_condition)["only"]


def infer_conditions(run: LoadedRun, conditions: dict[str, str | None], noise: str = "drop", level: float = 1.0,
                     seed: int = 0, adapt_by_condition: bool = True,
                     done: Callable[[int], None] | None = None) -> dict[str, Inference]:
    """{name: `infer(run, corrupt, ...)`} for each (name, corrupt) of `conditions`, reading the test set once:
    each subject's batches (one batch at a time without adaptation) go through every condition before the next
    are read. Each condition draws its noise from its own generator, in the order a separate pass per
    condition would draw it.
    `done(n)` is called as each n test samples have been through every condition (a progress bar's update)."""
    tested = run.samples("test")
    if not tested:
        raise MumuError(f"{run.run_dir}: the test set is empty")
    fills = {spec.name: getattr(run.module, f"mean_{spec.name}") for spec in run.data.specs}  # noise "mean"
    generators = {name: torch.Generator().manual_seed(seed) for name in conditions}
    rows = {name: _Rows() for name in conditions}

    @torch.no_grad()
    def as_features(batch: dict) -> dict:
        """A run trained from raw files has its frames turned into features first (once for every condition):
        noise corrupts features, as on a cache, not pixels (black frames are no zero features)."""
        return {**batch, "x": {k: v.cpu() for k, v in run.module.features(batch).items()}}

    def corrupted(batch: dict, name: str) -> dict:
        corrupt = conditions[name]
        if corrupt is None:
            return batch
        n = len(batch["sample_id"])
        return corrupt_batch(batch, run.data.specs, noise, level, generators[name],
                             groups=None if corrupt == "random" else [corrupt] * n, fills=fills)[0]

    adapt = run.config.adapt_bn
    if adapt:  # BatchNorm adapts to a whole subject: read one subject at a time
        units = ([as_features(batch) for batch in run.data.loader(samples)] for samples in by_subject(tested))
    else:  # predictions are per sample: one batch at a time
        units = ([as_features(batch)] for batch in run.data.loader(tested))
    for batches in units:
        for name in conditions:
            inputs = [corrupted(batch, name) for batch in batches]
            # the lists of batches adapted to together: one per pattern of silent streams, or all of them
            adapted_together = split_by_condition(inputs) if adapt and adapt_by_condition else [inputs]
            for batch, out in predict_by_subject(run.module, adapted_together, adapt):
                rows[name].add(batch, out)
        if done is not None:
            done(sum(len(batch["sample_id"]) for batch in batches))
    predicted = set(rows[next(iter(conditions))].parts["ids"])  # every condition sees the same samples
    if not predicted:  # every test sample's raw inputs failed to load
        raise MumuError(f"{run.run_dir}: no test sample has a usable input of the chosen modalities")
    left_out = sorted({s.sample_id for s in tested} - predicted)
    if left_out:  # raw inputs that failed to load (mumu.data.PadCollate), as training left them out
        if done is not None:
            done(len(left_out))
        click.echo(f"warning: {run.run_dir}: {len(left_out)} test samples have no usable input of the chosen "
                   f"modalities and are left out, as in training: {', '.join(left_out[:5])}"
                   f"{' ...' if len(left_out) > 5 else ''}", err=True)
    return {name: rows[name].inference() for name in conditions}


class _Rows:
    """Model outputs gathered batch by batch, turned into one `Inference`."""

    def __init__(self) -> None:
        self.parts: dict[str, list] = {k: [] for k in ("ids", "labels", "groups", "preds", "group_preds", "uni",
                                                        "fused")}
        self.attention: dict[str, list] = {}

    def add(self, batch: dict, out: ModelOutput) -> None:
        parts = self.parts
        parts["ids"] += list(batch["sample_id"])
        parts["labels"].append(batch["label"].numpy())
        parts["groups"].append(batch["group"].numpy())
        parts["preds"].append(out.logits.argmax(-1).numpy())
        if out.group_logits is not None:
            parts["group_preds"].append(out.group_logits.argmax(-1).numpy())
        parts["uni"].append(out.unimodal.float().numpy())  # (B, M, D)
        parts["fused"].append(out.fused.float().numpy())  # (B, D)
        for key in ("sm", "gm"):
            if key in out.attention:
                self.attention.setdefault(key, []).append(out.attention[key].float().numpy())  # (B, M)

    def inference(self) -> Inference:
        parts = self.parts
        return Inference(parts["ids"], np.concatenate(parts["labels"]), np.concatenate(parts["groups"]),
                         np.concatenate(parts["preds"]),
                         np.concatenate(parts["group_preds"]) if parts["group_preds"] else None,
                         {k: np.concatenate(v) for k, v in self.attention.items()},
                         np.concatenate(parts["uni"]), np.concatenate(parts["fused"]))


def headline_metrics(labels: np.ndarray, preds: np.ndarray, classes: np.ndarray | None = None) -> dict[str, float]:
    """Macro-F1 and top-1 accuracy. Macro-F1 averages over `classes`, by default those present in labels or
    predictions (as torchmetrics' macro F1 in training)."""
    return {"macro_f1": float(f1_score(labels, preds, labels=classes, average="macro", zero_division=0)),
            "accuracy": float(accuracy_score(labels, preds)), "n_samples": int(len(labels))}


def compute_metrics(results: dict[str, Inference], activity_names: list[str], group_names: list[str],
                    class_groups: list[int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics: clean and noisy headline numbers and per activity group, per-class rows)."""
    clean = results["clean"]
    k = len(activity_names)
    metrics: dict[str, Any] = {"f1": "macro"}  # macro-F1 over the whole test set
    metrics.update(headline_metrics(clean.labels, clean.preds))
    if clean.group_preds is not None:
        metrics["group_accuracy"] = float(accuracy_score(clean.groups, clean.group_preds))
    for condition, result in results.items():
        if condition != "clean":
            metrics[condition] = headline_metrics(result.labels, result.preds)
    precision, recall, f1, support = precision_recall_fscore_support(
        clean.labels, clean.preds, labels=range(k), zero_division=0)
    metrics["per_group"] = {}
    for g, name in enumerate(group_names):
        rows = clean.groups == g
        if rows.any():  # the mean of per_class.json's F1 over the group's classes in the test set (other groups'
            # samples predicted as one of them count against it), and the share of the group's samples right
            classes = [c for c in range(k) if class_groups[c] == g and support[c] > 0]
            metrics["per_group"][name] = {"macro_f1": float(np.mean(f1[classes])),
                                          "accuracy": float(accuracy_score(clean.labels[rows], clean.preds[rows])),
                                          "n_samples": int(rows.sum())}
    per_class = [{"activity": name, "group": group_names[class_groups[i]], "f1": float(f1[i]),
                  "precision": float(precision[i]), "recall": float(recall[i]), "support": int(support[i])}
                 for i, name in enumerate(activity_names)]
    return metrics, per_class


def subject_accuracy_key(condition: str) -> str:
    """Where a per-subject row keeps its accuracy under `condition` (clean: "accuracy", beside its macro-F1)."""
    return "accuracy" if condition == "clean" else f"{condition}_accuracy"


def per_subject_metrics(results: dict[str, Inference], subject_of: dict[str, int]) -> list[dict[str, Any]]:
    """One row per test subject: its clean macro-F1, accuracy and sample count, and its accuracy under each noisy
    condition. Each condition's subjects are read from its own rows: adaptation may put them in another order."""
    subjects = {name: np.array([subject_of[i] for i in result.sample_ids]) for name, result in results.items()}
    rows = []
    for subject in sorted(set(subjects["clean"].tolist())):
        row: dict[str, Any] = {"subject": subject}
        for name, result in results.items():
            mine = subjects[name] == subject
            scores = headline_metrics(result.labels[mine], result.preds[mine])
            row.update(scores if name == "clean" else {subject_accuracy_key(name): scores["accuracy"]})
        rows.append(row)
    return rows


def choose_activities(spec: str, activity_names: list[str], group_names: list[str], class_groups: list[int],
                      present: set[int]) -> list[int]:
    """Activities for the attention plot: a comma list of names, or "auto" = the first two test-set
    activities of each of the first two activity groups (visually similar pairs, like Fig. 1)."""
    if spec != "auto":
        names = [a.strip() for a in spec.split(",") if a.strip()]
        unknown = [a for a in names if a not in activity_names]
        if unknown:
            raise MumuError(f"evaluate activities: no activity {', '.join(unknown)}; "
                            f"known: {', '.join(activity_names)}")
        return [activity_names.index(a) for a in names]
    chosen: list[int] = []
    for g in range(len(group_names)):
        members = [i for i in range(len(activity_names)) if class_groups[i] == g and i in present]
        if members:
            chosen += members[:2]
        if len(chosen) >= 4:
            break
    return chosen[:4]


# what the model's modality weights are called in the plots: B3 puts its self-attention under "gm"
FUSION_LABELS = {"mumu": {"sm": "SM-Fusion", "gm": "GM-Fusion"}, "b3": {"gm": "self-attention"}}


def mean_weights(result: Inference, activities: list[int], model: str) -> dict[str, np.ndarray]:
    """{fusion label: (A, M)} attention weights averaged over each activity's test samples."""
    labels = FUSION_LABELS[model]
    return {labels[key]: np.stack([weights[result.labels == a].mean(axis=0) for a in activities])
            for key, weights in result.attention.items()}


def write_confusion_csv(path: Path, result: Inference, activity_names: list[str]) -> None:
    with replaced_whole(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["actual", "predicted"])
        for label, pred in zip(result.labels, result.preds):
            writer.writerow([activity_names[label], activity_names[pred]])


def finished_run_folds(run_dir: Path) -> list[str | None]:
    """The folds of a finished training run (`mumu.rundir.run_splits`), or a MumuError saying what it lacks."""
    from mumu.config import load_config
    from mumu.rundir import run_splits

    if not run_dir.exists():
        raise MumuError(f"{run_dir} does not exist; evaluate reads a training run (`python cli.py train --out DIR`)")
    if not (run_dir / "config.yaml").is_file():
        raise MumuError(f"{run_dir} is not a training run directory (no config.yaml); "
                        f"run `python cli.py train --out {run_dir}` first")
    load_config(run_dir / "config.yaml")  # another tool's config.yaml: not a run, rather than an unfinished one
    folds = run_splits(run_dir)
    missing = "no split.json" if not folds else None if (run_dir / "metrics.json").is_file() else "no metrics.json"
    if missing:  # metrics.json is written last, when every fold has finished
        raise MumuError(f"{run_dir} has not finished training ({missing}); rerun its `python cli.py train "
                        f"--out {run_dir}` to finish it, then evaluate")
    if folds != [None]:  # scoring the folds that are left would pass for the whole run
        cure = f"rerun its `python cli.py train --out {run_dir}`"
        recorded = read_json(run_dir / "metrics.json", cure)
        if not isinstance(recorded, dict):
            raise MumuError(f"{run_dir / 'metrics.json'}: cannot be read (not a JSON object); {cure}")
        trained = recorded.get("folds", {})
        lost = sorted(set(trained) - set(folds))
        if lost:
            raise MumuError(f"{run_dir}: {len(lost)} of its {len(trained)} folds have no folder with split.json "
                            f"({', '.join(lost)}); rerun its `python cli.py train --out {run_dir}` to train them "
                            "again, then evaluate")
    return folds


def infer_folds(run_dir: str | Path, noise: str = "drop", level: float = 1.0, seed: int = 0,
                adapt_by_condition: bool = True) -> tuple[list[dict[str, Inference]], LoadedRun]:
    """Every `CONDITIONS` pass for each fold's best model. Returns ([{condition: Inference}] per fold,
    the last fold's loaded run)."""
    from mumu.rundir import load_run, read_split, split_dir

    run_dir = Path(run_dir)
    folds = finished_run_folds(run_dir)
    per_fold = []
    tested = sum(len(read_split(split_dir(run_dir, fold))["test"]) for fold in folds)
    with tqdm(total=tested, desc=f"evaluate ({len(CONDITIONS)} conditions)", unit="sample") as bar:
        for fold in folds:
            bar.set_postfix_str(fold or "test")
            run = load_run(run_dir, fold)
            per_fold.append(infer_conditions(run, CONDITIONS, noise, level, seed, adapt_by_condition, bar.update))
    return per_fold, run


def evaluate_run(run_dir: str | Path, out: str | Path | None = None, noise: str = "drop", noise_level: float = 1.0,
                 activities: str = "auto", tsne_samples: int = 400, seed: int = 0,
                 adapt_by_condition: bool = True) -> tuple[dict, list[dict], list[dict], Path]:
    """Evaluate RUN_DIR into OUT (default RUN_DIR/eval). Returns (metrics, per-class rows, per-subject rows, OUT).

    adapt_by_condition: for a run tested with AdaBN (train.adapt_bn), adapt to each subject's samples grouped
    by which of their streams are silent, so that under per-sample noise the live samples are not normalised
    with statistics of zeroed ones; False adapts to each subject's samples all together.
    Clean inputs, and a group zeroed in every sample, give one group per subject: the same either way."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "eval"
    check_noise(noise, noise_level)
    if activities != "auto":  # a misspelt name stops here, not after every pass over the test set
        from mumu.config import load_config
        from pipeline.tables import load_table

        config = load_config(run_dir / "config.yaml")
        choose_activities(activities, load_table(config.dataset, config.activity_table).activity_names, [], [], set())
    folds = finished_run_folds(run_dir)  # before anything is written
    from mumu.rundir import split_dir
    if out.resolve() in {run_dir.resolve(), *(split_dir(run_dir, fold).resolve() for fold in folds)}:
        raise MumuError(f"--out {out} is the run's own folder, whose metrics.json marks its training finished; "
                        f"evaluate writes elsewhere (by default RUN_DIR/eval)")
    out.mkdir(parents=True, exist_ok=True)  # an --out that cannot be written fails here, not after inference
    (out / "metrics.json").unlink(missing_ok=True)  # written last: present only beside a complete evaluation
    per_fold, run = infer_folds(run_dir, noise, noise_level, seed, adapt_by_condition)
    folds = len(per_fold)
    results = {name: Inference.concat([f[name] for f in per_fold]) for name in CONDITIONS}

    names, group_names = run.data.activity_names, run.data.group_names
    class_groups = _class_groups(run.config.dataset, run.config.activity_table)
    metrics, per_class = compute_metrics(results, names, group_names, class_groups)
    metrics.update({"model": run.config.model, "dataset": run.config.dataset, "protocol": run.config.protocol,
                    "folds": folds, "noise": {"mode": noise, "level": noise_level},
                    "adaptation": (("subject and silent streams" if adapt_by_condition else "subject")
                                   if run.config.adapt_bn else None)})
    if folds > 1:  # LOSO papers report the mean ± std over folds; the headline numbers above pool them
        metrics["fold_mean"] = _fold_mean(per_fold)
    per_subject = per_subject_metrics(results, {s.sample_id: s.subject for s in run.data.samples})
    _write_plots(out / "plots", results, per_fold[0], run, metrics, per_class, per_subject, class_groups,
                 activities, noise, noise_level, tsne_samples, seed)
    write_confusion_csv(out / "confusion.csv", results["clean"], names)
    write_json(out / "per_class.json", {"per_class": per_class})
    write_json(out / "per_subject.json", {"per_subject": per_subject})
    write_json(out / "metrics.json", metrics)  # last: marks a complete evaluation
    return metrics, per_class, per_subject, out


def _fold_mean(per_fold: list[dict[str, Inference]]) -> dict[str, float]:
    """Mean and (population) std over folds of the clean macro-F1 and accuracy."""
    scores = [headline_metrics(f["clean"].labels, f["clean"].preds) for f in per_fold]
    summary = {}
    for name in ("macro_f1", "accuracy"):
        values = [score[name] for score in scores]
        summary.update({name: float(np.mean(values)), f"{name}_std": float(np.std(values))})
    return summary


def _write_plots(figures: Path, results: dict[str, Inference], first: dict[str, Inference], run: LoadedRun,
                 metrics: dict, per_class: list[dict], per_subject: list[dict], class_groups: list[int],
                 activities: str, noise: str, noise_level: float, tsne_samples: int, seed: int) -> None:
    """Confusion matrix, per-class F1 and per-subject accuracy over every fold's test predictions; attention
    weights and t-SNE of the first fold's model (`first`: its inference per condition), one model's view (see
    module docstring)."""
    figures.mkdir(parents=True, exist_ok=True)
    data, config, folds = run.data, run.config, metrics["folds"]
    names, group_names = data.activity_names, data.group_names
    where = f"{config.dataset}, {config.model}, {config.protocol}"
    clean = results["clean"]
    confusion = np.zeros((len(names), len(names)), dtype=int)
    np.add.at(confusion, (clean.labels, clean.preds), 1)
    plots.plot_confusion(confusion, names, figures / "confusion.png",
                         f"Confusion matrix, test set ({where}); accuracy {100 * metrics['accuracy']:.1f} %")
    f1 = np.array([row["f1"] for row in per_class])
    plots.plot_per_class_f1(f1, names, [group_names[g] for g in class_groups], figures / "per_class_f1.png",
                            f"Per-class F1, test set ({where})", metrics["macro_f1"])
    level = f"{noise} {noise_level:g}"
    plots.plot_per_subject(
        [str(row["subject"]) for row in per_subject],
        {f"{label} ({level})" if condition != "clean" else label:
         np.array([row[subject_accuracy_key(condition)] for row in per_subject])
         for condition, label in CONDITION_LABELS.items()},
        figures / "per_subject.png", f"Accuracy per test subject ({where})")
    modality_names = [s.name for s in data.specs]
    groups = split_groups(data.specs)
    one_model = where + (f"; the first fold's model and test subjects, 1 of {folds} folds" if folds > 1 else "")
    if first["clean"].attention:
        chosen = choose_activities(activities, names, group_names, class_groups, set(first["clean"].labels.tolist()))
        columns = [("clean input", "clean", []), (f"noisy visual ({level})", "noisy_visual", groups["visual"]),
                   (f"noisy non-visual ({level})", "noisy_non_visual", groups["non_visual"])]
        plots.plot_attention(
            [names[a] for a in chosen], modality_names,
            [(title, mean_weights(first[condition], chosen, config.model), corrupted)
             for title, condition, corrupted in columns],
            figures / "attention.png", f"Modality attention weights, mean over test samples ({one_model})")
    else:
        (figures / "attention.png").unlink(missing_ok=True)  # B1/B2 have no modality attention
    _plot_tsne(first["clean"], modality_names, names, figures / "tsne.png", one_model, tsne_samples, seed)


def _class_groups(dataset: str, table: str | None) -> list[int]:
    """Activity id -> group id, from the run's activity table."""
    from pipeline.tables import load_table

    return [a.group_id for a in load_table(dataset, table).activities]


def _plot_tsne(result: Inference, modality_names: list[str], activity_names: list[str], path: Path, where: str,
               max_samples: int, seed: int) -> None:
    rows = np.arange(len(result.labels))
    if len(rows) > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_samples, replace=False))
    embeddings = {name: result.unimodal[rows, m] for m, name in enumerate(modality_names)}
    embeddings["fused"] = result.fused[rows]
    plots.plot_tsne(embeddings, result.labels[rows], activity_names, path,
                    f"t-SNE of unimodal and fused embeddings, test set ({where})", seed=seed)


def _evaluate_params(params: str) -> dict[str, Any]:
    """The evaluate: block of `params`, or a MumuError naming the file and the key it cannot use."""
    values = read_params(params).get("evaluate") or {}
    reject_unknown(values, DEFAULTS, f"{params}: unknown evaluate: setting(s)")
    return check_types(values, EvaluateSettings, params, "evaluate.")


def evaluate_settings(params: str, **options: Any) -> dict[str, Any]:
    """An evaluation's settings (also the noise study's): the options given (None: not given), else the `params`
    file's evaluate: block, else the defaults; checked together, an error naming where the values came from."""
    from_file = _evaluate_params(params)
    given = {k: v for k, v in options.items() if v is not None}
    settings = {**DEFAULTS, **from_file, **given}
    try:  # the range checks, on the file's values and the options together (noise shift takes a level below 1)
        EvaluateSettings(**settings)
    except MumuError as e:
        origin = " + ".join(name for name, values in ((f"{params} (evaluate:)", from_file), ("command line", given))
                            if values)
        raise MumuError(f"{origin or 'evaluate'}: {e.message}") from None
    return settings


@click.command("evaluate")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default RUN_DIR/eval).")
@click.option("--params", default=DEFAULT_PARAMS, show_default=True,
              help="Options left out come from this file's evaluate: block (none: no file), else "
                   + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in DEFAULTS.items()) + ".")
@click.option("--noise", type=click.Choice(NOISE_MODES),
              help=NOISE_HELP)
@click.option("--noise-level", type=click.FloatRange(0, 1), help=LEVEL_HELP)
@click.option("--activities", help="Activities in the attention plot, comma-separated, or auto.")
@click.option("--tsne-samples", type=click.IntRange(10), help="At most this many test samples in the t-SNE.")
@click.option("--seed", type=int, help="Seed of the noise and the t-SNE. The noise is drawn batch by batch, so the same seed corrupts the same samples alike only under the same batch size and test-time adaptation.")
@click.option("--adapt-by-condition/--adapt-by-subject", default=None,
              help="For a run tested with --adapt-bn: adapt to each subject's samples grouped by which streams are "
                   "silent (default), or to each subject's samples all together.")
def evaluate_command(run_dir: Path, out: Path | None, params: str, **options: Any) -> None:
    """Metrics (clean and noisy input) and the paper's plots for a finished training run.

    Writes metrics.json, per_class.json, per_subject.json, confusion.csv and plots/ (confusion matrix, per-class F1,
    per-subject accuracy, attention weights clean vs noisy, t-SNE) into OUT, default RUN_DIR/eval.
    """
    metrics, per_class, per_subject, out_dir = evaluate_run(run_dir, out, **evaluate_settings(params, **options))
    click.echo(summary(metrics, per_class, per_subject, out_dir))


def summary(metrics: dict, per_class: list[dict], per_subject: list[dict], out_dir: Path) -> str:
    """The one-screen summary: where the outputs are and the headline numbers."""
    pct = lambda m: f"macro-F1 {100 * m['macro_f1']:5.1f} %, accuracy {100 * m['accuracy']:5.1f} %"  # noqa: E731
    noise = metrics["noise"]
    lines = [f"evaluated {metrics['model']} on {metrics['dataset']} ({metrics['protocol']}, "
             f"{metrics['folds']} fold(s), {metrics['n_samples']} test samples); F1 = macro-F1",
             f"  clean input          {pct(metrics)}"]
    if "group_accuracy" in metrics:
        lines[-1] += f", group accuracy {100 * metrics['group_accuracy']:.1f} %"
    if "fold_mean" in metrics:
        m = metrics["fold_mean"]
        lines.append(f"  mean ± std (population) over folds: macro-F1 {100 * m['macro_f1']:.1f} ± "
                     f"{100 * m['macro_f1_std']:.1f} %,"
                     f" accuracy {100 * m['accuracy']:.1f} ± {100 * m['accuracy_std']:.1f} %")
    how = f"({noise['mode']} {noise['level']:g}, p=0.5 per sample)"
    lines += [f"  noisy, random group  {pct(metrics['noisy'])}   {how}",
              f"  noisy visual         {pct(metrics['noisy_visual'])}",
              f"  noisy non-visual     {pct(metrics['noisy_non_visual'])}",
              "  per activity group:  " + ", ".join(f"{g} {100 * m['macro_f1']:.1f}"
                                                    for g, m in metrics["per_group"].items())]
    worst = sorted(per_class, key=lambda row: row["f1"])[:3]
    lines.append("  lowest class F1:     " + ", ".join(f"{r['activity']} {100 * r['f1']:.1f}" for r in worst))
    if len(per_subject) > 1:
        worst = sorted(per_subject, key=lambda row: row["accuracy"])[:3]
        lines.append("  lowest subject acc.: " + ", ".join(f"subject {r['subject']} {100 * r['accuracy']:.1f}"
                                                           for r in worst))
    lines.append(f"outputs: {out_dir}/metrics.json, per_class.json, per_subject.json, confusion.csv, plots/ "
                 f"({', '.join(sorted(p.name for p in (out_dir / 'plots').glob('*.png')))})")
    return "\n".join(lines)
