"""Training with PyTorch Lightning: `python cli.py train`, `train_once(config)` and `load_run(run_dir)`.

One run = one config (mumu/config.py) trained on every split the protocol defines (one split for
cross_subject / cross_session / odd_even, one per held-out subject for loso):

    RUN_DIR/config.yaml                 resolved settings
    RUN_DIR/checkpoints/best.ckpt       the tested epoch, by `train.select` (+ last.ckpt, to resume)
    RUN_DIR/inputs.json                 hashes of the code and the data the run began with
    RUN_DIR/input_problems/<id>.json    raw training only: a sample's unusable inputs, {modality: reason}; one
                                        with none usable is left out of training and testing (and warned of)
    RUN_DIR/input_report.json           samples left out (none of the chosen modalities), files indexing skipped
    RUN_DIR/split.json                  the sample ids of train / val / test
    RUN_DIR/metrics.json                test macro-F1, top-1 accuracy, group accuracy, per-class F1
    RUN_DIR/predictions.csv             one row per test sample (that has a usable input)
    RUN_DIR/logs/metrics.csv, RUN_DIR/tensorboard/, RUN_DIR/dvclive/   training curves
With several splits (loso) each split gets a subdirectory RUN_DIR/<split>/ with the files above, and
RUN_DIR/metrics.json holds the mean ± std and per-fold values, RUN_DIR/predictions.csv all folds.

The model, its loss and optimiser: `mumu.module.MumuModule`; bf16 mixed precision on GPU.
Reproducibility: the shuffling and the sequence sampling are seeded by (seed, epoch), dropout by
(seed, epoch, batch), and on CPU Lightning's deterministic mode is on, so the same seed gives the
same metrics whatever the number of DataLoader workers, and a run that was killed and resumed from
last.ckpt gives the same metrics as one that was not.
Interrupt-safe: rerunning the same command resumes an unfinished split from its last.ckpt and
skips splits whose metrics.json already exists. RUN_DIR/inputs.json records the code and the data a run
began with; `--restart-if-changed` (the DVC stage's) starts a run afresh when its settings, code or data
differ from those, and otherwise resumes it.
"""
from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import logging
import math
import os
import random
import shutil
import signal
import threading
import warnings
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import click
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_only

from mumu.adapt import by_subject, predict_by_subject
from mumu.config import SELECTIONS, TrainConfig, load_config, resolve_config, save_config
from mumu.ddp import mark_launcher
from mumu.data import MumuDataModule
from mumu.fusion import GM_GATES, GM_MERGES
from mumu.fusion_targets import read_fusion_targets
from mumu.metrics import headline, summarize_folds
from mumu.model import ARCHS, FUSION_INITS, FUSION_NORMS, MODALITY_DROPOUT_AS, MODALITY_DROPOUT_MODES
from mumu.module import MumuModule
from mumu.rundata import RunData, SampleSplit, prepare_data, split_samples
from mumu.rundir import layers_match, module_from, read_checkpoint, read_split, read_trained
from pipeline.codebase import REPO_ROOT, imported_sources
from pipeline.datasets.base import skipped_lines
from pipeline.errors import MumuError
from pipeline.files import read_json, replaced_whole, write_json
from pipeline.index import Sample
from pipeline.modalities import DATASET_MODALITIES
from pipeline.params import DEFAULT_PARAMS
from pipeline.splits import PROTOCOLS

# train.select -> (logged metric, mode) of the checkpoint that is tested; None: the last epoch's
SELECTION_METRICS = {"macro_f1": ("val/macro_f1", "max"), "nll": ("val/nll", "min"), "last": (None, "min")}
NORM_SAMPLES = 256  # training samples that estimate the input standardisation

# Lightning's lines that say nothing about the run, once per fold: an advert, a note on its own internals, and a
# deprecation inside Lightning's code (pinned versions; not ours to mend)
LIGHTNING_CHATTER = ("litlogger", "litmodels", "to estimate number of stepping batches")
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
    lambda record: not any(text in record.getMessage() for text in LIGHTNING_CHATTER))
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


# --------------------------------------------------------------------------------------------------
# Running


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict  # test metrics; for several folds: mean, *_std, and "folds"
    folds: dict[str, dict]  # split name -> that split's test metrics


def train_once(cfg: TrainConfig, *, resume: str | None = None, overwrite: bool = False,
               restart_if_changed: bool = False, callbacks: list[pl.Callback] | None = None,
               progress: bool = True, offers_overwrite: bool = True) -> RunResult:
    """Train and test `cfg` on every split of its protocol, writing the run directory.

    resume: a checkpoint path to continue from (default: RUN_DIR[/split]/checkpoints/last.ckpt when
    it exists and was made with the same settings). overwrite: start afresh, deleting RUN_DIR.
    restart_if_changed: start afresh (deleting RUN_DIR) when RUN_DIR holds a run begun with other settings,
    code or data (`run_inputs`); a run begun with the same ones resumes. Without it, other settings are an
    error and other code or data a warning.
    callbacks: extra Lightning callbacks (e.g. for studies).
    offers_overwrite: the caller has an --overwrite option (the studies do not), which the refusal of a RUN_DIR
    holding other settings then suggests.
    """
    run_dir = cfg.run_dir
    # on a resume the CSV logger warns that the earlier log "will be deleted": _trainer_options moves it aside
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    if cfg.accelerator == "cpu" or not torch.cuda.is_available():
        # cpu_threads (default 1): more threads help an idle machine a little (bench_train.py prints by how
        # much), but runs side by side on few cores contend with their spinning OpenMP threads.
        torch.set_num_threads(cfg.cpu_threads)
        _warn_if_more_processes_than_cores(cfg)
    if _is_rank_zero():  # the DDP workers Lightning starts from here end with this process (cli.py)
        mark_launcher()
    if resume is not None and not Path(resume).is_file():
        raise MumuError(f"--resume {resume}: no such checkpoint")
    if resume is not None and restart_if_changed:
        raise MumuError("--resume and --restart-if-changed contradict each other (one continues a run, the other "
                        "may start it afresh); choose one")
    if resume is not None and overwrite:
        raise MumuError("--resume and --overwrite contradict each other (--overwrite deletes RUN_DIR, its checkpoints "
                        "included, before training); choose one")
    if restart_if_changed and cfg.num_nodes > 1:  # every node's ranks start at once: none may delete under another
        raise MumuError("--restart-if-changed is for runs on one machine; on several nodes resume by rerunning the "
                        "same command, or start afresh with another --out")
    _check_trainer_settings(cfg)
    other_settings = not overwrite and _holds_other_settings(run_dir, cfg)  # what --overwrite deletes does not count
    if other_settings and not restart_if_changed:
        _refuse_other_settings(run_dir, explicit_resume=resume is not None, can_overwrite=offers_overwrite)
    data = prepare_data(cfg)
    if _is_rank_zero():
        _warn_of_input_problems(data, run_dir)
    splits = split_samples(data)
    if _is_rank_zero():
        _warn_if_the_average_outlasts_training(cfg, splits)
    modalities = [spec.name for spec in data.specs]  # the model's modality order
    fusion_targets = read_fusion_targets(cfg.fusion_targets, {split.name: split.train for split in splits},
                                         modalities) if cfg.fusion_targets else {}  # checked before any split trains
    several = len(splits) > 1
    if several and resume is not None:  # refused before anything is written
        raise MumuError(f"--resume PATH is ambiguous with {len(splits)} splits; rerun without it and every "
                        f"unfinished split resumes from its own last.ckpt")
    with _run_lock(run_dir):  # from here on RUN_DIR is deleted and written: one process at a time
        if _is_rank_zero():  # the other ranks start after it
            _begin_run(cfg, data, overwrite, restart_if_changed, other_settings)
        if cfg.source == "raw":
            data = replace(data, problems_dir=run_dir / INPUT_PROBLEMS)
        fold_metrics: dict[str, dict] = {}
        for number, split in enumerate(splits, 1):
            fold_dir = run_dir / split.name if several else run_dir
            if several and _is_rank_zero():
                save_config(cfg, fold_dir / "config.yaml")
            fold_metrics[split.name] = train_split(data, split, fold_dir, resume, callbacks or [], progress,
                                                   fusion_targets.get(split.name))
            if several and progress and _is_rank_zero():  # a LOSO run's folds look alike in Lightning's output
                tested = fold_metrics[split.name]
                click.echo(f"{split.name} ({number} of {len(splits)}): test macro-F1 {100 * tested['macro_f1']:.1f} %, "
                           f"accuracy {100 * tested['accuracy']:.1f} % ({tested['n_samples']} samples)")
        if _is_rank_zero():
            _warn_of_raw_problems(data, run_dir)
        return _finish_run(run_dir, fold_metrics)


def _begin_run(cfg: TrainConfig, data: RunData, overwrite: bool, restart_if_changed: bool,
               other_settings: bool) -> None:
    """Rank zero, holding the run lock, once the inputs are known to serve: empty RUN_DIR for --overwrite, or for
    --restart-if-changed when its settings, code or data changed since it began (else warn of other code or data),
    and write what the run begins with: config.yaml, inputs.json (kept on a resume), input_report.json."""
    run_dir = cfg.run_dir
    if overwrite or (run_dir / CLEARING).exists():  # the latter: a clear that was stopped part way
        _clear_run_dir(run_dir)
    inputs = run_inputs(data)
    changed = (["settings"] if other_settings else []) + _inputs_changed(run_dir, inputs)
    if changed and restart_if_changed:
        click.echo(f"{run_dir}: its {' and '.join(changed)} changed since it began; starting it afresh", err=True)
        _clear_run_dir(run_dir)
    elif set(changed) & {"code", "data"} and (run_dir / INPUTS).is_file():
        click.echo(f"warning: {run_dir}: its {' and '.join(c for c in changed if c != 'settings')} changed since it "
                   f"began; its finished splits are kept and the others resume (--overwrite or "
                   f"--restart-if-changed starts afresh)", err=True)
    begins = not (run_dir / "config.yaml").is_file()  # a run from before inputs.json gets none: unknown
    if not begins and not (run_dir / "metrics.json").is_file():
        _warn_if_the_step_changes(load_config(run_dir / "config.yaml"), cfg)
    save_config(cfg, run_dir / "config.yaml")
    if begins:  # what the run began with; a resume keeps it
        write_json(run_dir / INPUTS, inputs)
    if data.left_out or data.skipped_files:
        write_json(run_dir / INPUT_REPORT, {"left_out": data.left_out, "skipped_files": data.skipped_files})
    else:  # a resumed run whose data was mended since
        (run_dir / INPUT_REPORT).unlink(missing_ok=True)


def _warn_if_the_step_changes(last: TrainConfig, cfg: TrainConfig) -> None:
    """Devices and nodes are settings of the machine, not of the run, but each training process takes batch_size
    samples a step: an unfinished run continued on another number of processes trains the rest with another
    batch and fewer or more steps per epoch than before (`last`: the settings it was last trained with)."""
    before, now = (c.num_nodes * _processes_per_node(c) for c in (last, cfg))
    if before != now:
        click.echo(f"warning: {cfg.run_dir} was last trained at world size {before} (DDP processes) and continues "
                   f"at {now}: a step takes {now * cfg.batch_size} samples now, not {before * cfg.batch_size}, so its "
                   f"epochs (or folds) are not all trained alike; --overwrite trains the whole run on one setting",
                   err=True)


def _warn_if_the_average_outlasts_training(cfg: TrainConfig, splits: list[SampleSplit]) -> None:
    """The weight average (ema_decay) forgets a step's weights at decay**(steps since): in a run much shorter than
    its horizon, ~1 / (1 - decay) steps, the tested average is still mostly the first steps' weights (a one-epoch
    run of the UTD recipe tests at chance)."""
    if cfg.ema_decay <= 0:
        return
    processes = cfg.num_nodes * _processes_per_node(cfg)  # DDP: each process steps through its share of an epoch
    steps = cfg.max_epochs * math.ceil(min(len(split.train) for split in splits) / processes / cfg.batch_size)
    first_steps_share = cfg.ema_decay ** steps  # the weight left on the average's starting point
    if first_steps_share > 0.1:
        click.echo(f"warning: ema_decay {cfg.ema_decay} averages the weights over ~{1 / (1 - cfg.ema_decay):.0f} "
                   f"optimiser steps, but this run takes {steps}: its first steps' weights still make up "
                   f"{first_steps_share:.0%} of the average it tests; train longer or lower ema_decay", err=True)


RUN_LOCK = ".lock"  # RUN_DIR's lock: one training process per run directory
CLEARING = ".clearing"  # RUN_DIR is being emptied: whatever is left of it is no run's


@contextmanager
def _run_lock(run_dir: Path) -> Iterator[None]:
    """Held by rank zero while it deletes and writes RUN_DIR (flock: released by the kernel even after SIGKILL).
    A second `train` into the same RUN_DIR is refused, instead of resuming from checkpoints being written."""
    if not _is_rank_zero():
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = os.open(run_dir / RUN_LOCK, os.O_RDONLY | os.O_CREAT)  # read-only is enough (DVC may link it so)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MumuError(f"{run_dir} is being trained by another process; wait for it to finish, or train "
                            f"into another --out") from None
        yield
    finally:
        os.close(lock)


def _clear_run_dir(run_dir: Path) -> None:
    """Delete what RUN_DIR holds but its lock, which this process holds; MumuError, deleting nothing, for a folder
    that is not a run (every run writes its config.yaml first) but holds files: --out may name a wrong folder.
    Stopped part way, the clear leaves its marker, and the next training into RUN_DIR finishes it: the splits left
    must not pass for a run's (without config.yaml, they would be resumed as the new settings' finished splits)."""
    marker = run_dir / CLEARING
    entries = [e for e in run_dir.iterdir() if e.name not in (RUN_LOCK, CLEARING)] if run_dir.is_dir() else []
    if entries and not (run_dir / "config.yaml").is_file() and not marker.exists():
        raise MumuError(f"{run_dir} is not a mumu run (no config.yaml) and holds {len(entries)} other entries, e.g. "
                        f"{sorted(e.name for e in entries)[0]}; --overwrite deletes runs only: choose another --out")
    if not entries:
        marker.unlink(missing_ok=True)
        return
    marker.touch()
    for entry in sorted(entries, key=lambda e: e.name == "config.yaml"):  # config.yaml last: it marks a run
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    marker.unlink()


def _warn_of_input_problems(data: RunData, run_dir: Path) -> None:
    """A cache with unfinished parts, samples left out and files skipped are said before training starts (the
    latter two also kept in RUN_DIR/input_report.json)."""
    from pipeline.cache import incomplete_parts_notes
    # before a split comes out short or empty for want of those samples
    for note in incomplete_parts_notes(data.cfg.cache_path) if data.cfg.source == "cache" else []:
        click.echo(f"warning: {note}", err=True)
    report = run_dir / INPUT_REPORT
    if data.left_out:
        shown = ", ".join(f"{i} ({why})" for i, why in sorted(data.left_out.items())[:5])
        more = f" and {len(data.left_out) - 5} more" if len(data.left_out) > 5 else ""
        click.echo(f"warning: {len(data.left_out)} samples have none of the chosen modalities and are left out of "
                   f"every split: {shown}{more} (all in {report})", err=True)
    if data.skipped_files:
        click.echo(f"warning: indexing {data.cfg.data_root} skipped {len(data.skipped_files)} files (unreadable or "
                   f"malformed; their samples train without that modality):", err=True)
        click.echo("\n".join(skipped_lines(data.skipped_files, report)), err=True)


def _warn_of_raw_problems(data: RunData, run_dir: Path) -> None:
    """Raw training: the samples whose files failed to load (RawDataset records each), and those of them left with
    no usable input of the chosen modalities, which the batches left out (PadCollate) as a cache's are left out."""
    recorded = sorted((run_dir / INPUT_PROBLEMS).glob("*.json"))
    if not recorded:
        return
    chosen = {spec.stored_as for spec in data.specs}
    samples = {sample.sample_id: sample for sample in data.samples}

    def nothing_usable(record: Path) -> bool:  # each chosen modality failed to load, or has no file at all
        failed = set(json.loads(record.read_text()))
        absent = set(samples[record.stem].missing()) if record.stem in samples else set()
        return chosen <= failed | absent

    left_out = [record.stem for record in recorded if nothing_usable(record)]
    click.echo(f"warning: {len(recorded)} samples had unusable raw inputs (as extract would record them), each listed "
               f"in {run_dir / INPUT_PROBLEMS}/<sample_id>.json; those with another usable input trained and tested "
               f"without them", err=True)
    if left_out:
        click.echo(f"warning: {len(left_out)} of them had no usable input of the chosen modalities and were left out "
                   f"of training and testing: {', '.join(left_out[:5])}{' ...' if len(left_out) > 5 else ''}",
                   err=True)


def _finish_run(run_dir: Path, fold_metrics: dict[str, dict]) -> RunResult:
    """Several splits: their mean ± std into RUN_DIR/metrics.json and their predictions merged."""
    if len(fold_metrics) == 1:
        return RunResult(run_dir, next(iter(fold_metrics.values())), fold_metrics)
    metrics = summarize_folds(fold_metrics)
    if _is_rank_zero():
        _merge_predictions(run_dir, list(fold_metrics))
        # last: its presence marks the whole run as finished (evaluate and the studies read it so)
        write_json(run_dir / "metrics.json", {**metrics, "f1": "macro-F1 over each fold's whole test set"})
    return RunResult(run_dir, metrics, fold_metrics)


# what `retest` may change: settings of the test alone, not of the trained weights. select: only "last", since a
# run keeps the checkpoints of its selected epoch and of its last one
TEST_SETTINGS = ("adapt_bn", "select")


def retest(run_dir: str | Path, out: str | Path, progress: bool = True, **test_settings: Any) -> RunResult:
    """Test a finished training run's selected checkpoints again with other test-time settings (adapt_bn), or its
    last epoch's (select="last": what training with `select: last` would have tested), writing OUT in a training
    run's layout (config.yaml, inputs.json, [fold_*/]metrics.json, predictions.csv; each split's
    checkpoints/best.ckpt a link to the tested checkpoint of RUN_DIR). A split already tested in OUT is skipped,
    so a killed retest resumes."""
    run_dir, out = Path(run_dir), Path(out)
    unknown = set(test_settings) - set(TEST_SETTINGS)
    if unknown:
        raise MumuError(f"retest changes only {', '.join(TEST_SETTINGS)}, not {', '.join(sorted(unknown))}")
    if out.resolve() == run_dir.resolve():
        raise MumuError(f"--out {out} is the run itself; retest writes a new run directory beside it")
    trained = load_config(run_dir / "config.yaml")
    if test_settings.get("select") not in (None, "last", trained.select):
        raise MumuError(f"{run_dir} kept only the epoch its rule ({trained.select}) selected and its last epoch; "
                        f"selecting by {test_settings['select']} needs training again with --select "
                        f"{test_settings['select']}")
    cfg = trained.replace(out=str(out), **{k: v for k, v in test_settings.items() if v is not None})
    if _holds_other_settings(out, cfg):
        _refuse_other_settings(out, explicit_resume=False, can_overwrite=False)  # retest has no --overwrite
    data = prepare_data(cfg)
    splits = split_samples(data)
    several = len(splits) > 1
    sources = {split.name: (run_dir / split.name, out / split.name) if several else (run_dir, out) for split in splits}
    for source, fold_dir in sources.values():  # checked before OUT is written: a refused retest leaves nothing
        if not (fold_dir / "metrics.json").is_file():
            _check_retestable(source, cfg)
    if _is_rank_zero():
        save_config(cfg, out / "config.yaml")
        if (run_dir / INPUTS).is_file():  # the code and data the tested weights were trained with
            with replaced_whole(out / INPUTS) as tmp:
                shutil.copyfile(run_dir / INPUTS, tmp)
    fold_metrics: dict[str, dict] = {}
    for split in splits:
        fold_metrics[split.name] = _retest_split(data, split, *sources[split.name], progress)
    return _finish_run(out, fold_metrics)


def _tested_checkpoint(source: Path, cfg: TrainConfig) -> Path:
    return source / "checkpoints" / ("last.ckpt" if cfg.select == "last" else "best.ckpt")


def _check_retestable(source: Path, cfg: TrainConfig) -> None:
    if not (source / "metrics.json").is_file():
        raise MumuError(f"{source} has not finished training (no metrics.json); finish it with `cli.py train` first")
    if not (tested := _tested_checkpoint(source, cfg)).is_file():
        raise MumuError(f"{tested}: no such checkpoint; train the run again (--overwrite)")


@torch.no_grad()
def _adapted_validation(module: MumuModule, data: RunData, samples: list[Sample]) -> dict[str, float]:
    """Activity NLL (no label smoothing) and top-1 over `samples`, each subject's with its own BatchNorm
    statistics: the validation subjects' evidence for adapting, as adapted_val_nll and adapted_val_accuracy."""
    module.eval()
    nll, correct, count = 0.0, 0, 0
    for batch, out in predict_by_subject(module, (list(data.loader(s)) for s in by_subject(samples)), adapt=True):
        logits = out.logits.float()
        nll += F.cross_entropy(logits, batch["label"], reduction="sum").item()
        correct += (logits.argmax(-1) == batch["label"]).sum().item()
        count += len(batch["label"])
    return {"adapted_val_nll": nll / count, "adapted_val_accuracy": correct / count}


def _retest_split(data: RunData, split: SampleSplit, source: Path, fold_dir: Path, progress: bool) -> dict:
    if (fold_dir / "metrics.json").is_file():  # tested before: no repeated work
        return read_json(fold_dir / "metrics.json", "delete it, and rerunning retest tests this split again")
    tested = read_split(source)["test"]
    if sorted(tested) != sorted(s.sample_id for s in split.test):
        raise MumuError(f"{source}: its test samples differ from the split the cache gives now; was the cache "
                        f"rebuilt since training?")
    tested_ckpt = _tested_checkpoint(source, data.cfg)
    state = read_trained(tested_ckpt)
    module = module_from(state, tested_ckpt)
    if data.cfg.select == "last":
        selection = {"selected_by": "last epoch", "selected_epoch": state["epoch"], "selected_val_score": None}
    else:
        trained_metrics = read_json(source / "metrics.json", "train the run again (--overwrite)")
        selection = {k: trained_metrics.get(k) for k in ("selected_by", "selected_epoch", "selected_val_score")}
    if _is_rank_zero():
        fold_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / "split.json", fold_dir / "split.json")
        save_config(data.cfg, fold_dir / "config.yaml")
        (fold_dir / "checkpoints").mkdir(exist_ok=True)
        link = fold_dir / "checkpoints" / "best.ckpt"  # what `evaluate` and `load_run` read: the tested one
        if not link.exists():
            link.symlink_to(tested_ckpt.resolve())
    trainer = pl.Trainer(**_trainer_options(data.cfg, fold_dir, progress, resuming=False))
    return _test_split(trainer, module, data, split, fold_dir, selection)


def _check_trainer_settings(cfg: TrainConfig) -> None:
    """Lightning's accelerator, devices, strategy and nodes, checked by building a Trainer with them before a run
    directory is deleted or written: a bad one is a MumuError naming the settings, not a Lightning exception after
    --overwrite has already cost the old run."""
    disabled = logging.root.manager.disable
    logging.disable(logging.INFO)  # its "GPU available" lines come once, from the real Trainer
    try:
        pl.Trainer(accelerator=cfg.accelerator, devices=_lightning_devices(cfg.devices), num_nodes=cfg.num_nodes,
                   strategy=cfg.strategy, logger=False, enable_checkpointing=False)
    except Exception as e:  # noqa: BLE001 - Lightning raises MisconfigurationException, ValueError, TypeError
        raise MumuError(f"train.accelerator {cfg.accelerator!r}, devices {cfg.devices!r}, strategy {cfg.strategy!r}, "
                        f"num_nodes {cfg.num_nodes}: Lightning refuses them ({e})") from None
    finally:
        logging.disable(disabled)


def _lightning_devices(devices: str) -> int | list[int] | str:
    """TrainConfig.devices as Lightning takes it: "auto", a count (2), or device ids ("0,1" -> [0, 1])."""
    if devices == "auto":
        return devices
    return [int(d) for d in devices.split(",") if d] if "," in devices else int(devices)


def _processes_per_node(cfg: TrainConfig) -> int:
    """Training processes each machine starts (its --devices; "auto" counts as one)."""
    devices = _lightning_devices(cfg.devices)
    return len(devices) if isinstance(devices, list) else devices if isinstance(devices, int) else 1


def _warn_if_more_processes_than_cores(cfg: TrainConfig) -> None:
    processes = _processes_per_node(cfg)
    cores = os.cpu_count() or 1
    if processes > cores and _is_rank_zero():
        click.echo(f"warning: --devices {cfg.devices} starts {processes} training processes on this machine's "
                   f"{cores} CPU cores; they share them, so each step is slower than with --devices {cores}",
                   err=True)


def _is_rank_zero() -> bool:
    """True in the process that writes files: rank 0 (Lightning sets the rank env vars for DDP children)."""
    return rank_zero_only.rank == 0


INPUTS = "inputs.json"
INPUT_PROBLEMS = "input_problems"  # raw training: one {modality: reason} file per sample with an unusable input
INPUT_REPORT = "input_report.json"  # samples left out for lacking the chosen modalities; files indexing skipped


def training_code() -> list[Path]:
    """The source files training can run, with the dataset adapters (loaded by name) and the label tables it
    reads: what `run_inputs` hashes, and what dvc.yaml's train stage must depend on (tested)."""
    adapters = (REPO_ROOT / "pipeline" / "datasets").glob("*.py")
    tables = (REPO_ROOT / "pipeline" / "tables").glob("*.csv")
    return sorted({*imported_sources("mumu.train"), *adapters, *tables})


def run_inputs(data: RunData) -> dict[str, str]:
    """What a run learns from besides its settings, each as a short hash: "code", `training_code()`; "data", the
    feature cache's build (fingerprint, creation time) and every part's samples and source-file contents, or for
    raw training each source file's size and mtime; with train.fusion_targets or train.activity_table, also that
    file's contents."""
    code = hashlib.sha256()
    for path in training_code():
        code.update(f"{path.relative_to(REPO_ROOT)}\0".encode() + path.read_bytes())
    if data.cfg.source == "cache":
        from pipeline.cache import FeatureCache
        cache = FeatureCache(data.cfg.cache_path)
        # a source stamp is [path, size, mtime_ns, digest]: its size and digest say what the features came from,
        # so a dataset moved or copied (new paths and mtimes, extract keeps its parts) is the same data
        parts = {name: [[{k: v for k, v in sample.items() if k != "paths"} for sample in attrs["samples"]],
                        attrs["unusable"],
                        {sid: {m: stamp and [stamp[1], *stamp[3:]] for m, stamp in stamps.items()}
                         for sid, stamps in attrs["sources"].items()}]
                 for name, attrs in cache.parts.items()}
        record = [cache.fingerprint, cache.provenance.get("created"), parts]
    else:
        record = [[s.sample_id, s.subject, s.activity_id,
                   {m: p and _size_and_mtime(p) for m, p in sorted(s.paths.items())}] for s in data.samples]
    # files named by the settings that the run learns from, besides the cache: the fusion weights' targets, and a
    # table of the user's own (its groups are the auxiliary task's labels; the shipped tables count as code)
    for learned_from in (data.cfg.fusion_targets, data.cfg.activity_table):
        if learned_from:
            record.append(hashlib.sha256(Path(learned_from).read_bytes()).hexdigest())
    data_hash = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode())
    return {"code": code.hexdigest()[:16], "data": data_hash.hexdigest()[:16]}


def _size_and_mtime(path: str) -> list[int] | None:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _holds_other_settings(run_dir: Path, cfg: TrainConfig) -> bool:
    """Whether RUN_DIR holds a run begun with other model settings than `cfg`'s."""
    existing = run_dir / "config.yaml"
    return existing.is_file() and load_config(existing).model_settings() != cfg.model_settings()


def _inputs_changed(run_dir: Path, inputs: dict[str, str]) -> list[str]:
    """Which of "code", "data" (`run_inputs`) differ from those the run RUN_DIR holds began with (none when RUN_DIR
    holds no run). A run from before inputs.json was recorded counts as begun with other code and data."""
    if not (run_dir / "config.yaml").is_file():
        return []
    recorded = run_dir / INPUTS
    began = read_json(recorded, "delete it: the run then counts as begun with other code and data (as a run from "
                                "before inputs.json does)") if recorded.is_file() else {}
    return [what for what in ("code", "data") if began.get(what) != inputs[what]]


def _refuse_other_settings(run_dir: Path, explicit_resume: bool, can_overwrite: bool = True) -> None:
    """Stop a run into RUN_DIR, which holds one with other settings, unless it continues an unfinished run from a
    checkpoint the user chose."""
    if explicit_resume and not (run_dir / "metrics.json").is_file():
        return  # continuing an unfinished run from a chosen checkpoint under new settings: the user's call
    cure = "use another --out, or --overwrite to replace it" if can_overwrite else "use another --out"
    raise MumuError(f"{run_dir} holds a {'finished ' if explicit_resume else ''}run with different settings (see "
                    f"{run_dir / 'config.yaml'}); {cure}")


def train_split(data: RunData, split: SampleSplit, fold_dir: Path, resume: str | None = None,
                callbacks: Sequence[pl.Callback] = (), progress: bool = True,
                fusion_targets: dict[str, list[float]] | None = None) -> dict:
    """Train on one split (any train / val / test samples, e.g. nested folds) into fold_dir, select the epoch on
    its validation samples and test it; returns the test metrics. A finished fold_dir is read back, an
    unfinished one resumes from its last.ckpt. `train_once` runs it for each split of the protocol."""
    metrics_path = fold_dir / "metrics.json"
    if metrics_path.is_file():  # finished before: no repeated work
        return read_json(metrics_path, "delete it, and rerunning the command tests this split again from its "
                                       "checkpoints")
    cfg = data.cfg
    if _is_rank_zero():
        write_json(fold_dir / "split.json", {part: [s.sample_id for s in getattr(split, part)]
                                              for part in ("train", "val", "test")})
    last = fold_dir / "checkpoints" / "last.ckpt"
    ckpt_path = resume or (str(last) if last.is_file() else None)

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = MumuModule(cfg.to_dict(), [s.to_dict() for s in data.specs], data.activity_names, data.group_names,
                        raw_visual=cfg.source == "raw")
    if fusion_targets is not None:
        module.set_fusion_targets(fusion_targets)
    if ckpt_path is None:  # a resumed run restores the statistics from its checkpoint
        norm_samples = random.Random(cfg.seed).sample(split.train, min(NORM_SAMPLES, len(split.train)))
        module.fit_input_norm(data.loader(norm_samples))
    val_subjects = by_subject(split.val) if cfg.validate_adapted else None
    if val_subjects is not None:
        module.validate_adapted_to(val_subjects, data.loader)
    datamodule = MumuDataModule(data.make_dataset, data.collate(), split.train, split.val, split.test,
                                cfg.batch_size, cfg.seed, cfg.num_workers, val_groups=val_subjects,
                                subject_batches=cfg.subject_batches)
    monitor, mode = SELECTION_METRICS[cfg.select]
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=fold_dir / "checkpoints", filename="best", monitor=monitor,
                                              mode=mode, enable_version_counter=False, auto_insert_metric_name=False)
    # Lightning's save_last follows only the epochs that improve `monitor`; this one writes every epoch, so a
    # killed run resumes from its last finished epoch instead of redoing every epoch since the best one
    # (monitoring the step, which always grows, also keeps its state apart from `checkpoint`'s when that has none)
    last = pl.callbacks.ModelCheckpoint(dirpath=fold_dir / "checkpoints", filename="last", monitor="step", mode="max",
                                        enable_version_counter=False, auto_insert_metric_name=False)
    if cfg.ema_decay > 0:  # Lightning swaps the average in for validation and saves it as the checkpoint's weights
        callbacks = [pl.callbacks.EMAWeightAveraging(decay=cfg.ema_decay), *callbacks]
    trainer = pl.Trainer(**_trainer_options(cfg, fold_dir, progress, resuming=ckpt_path is not None),
                         callbacks=[checkpoint, last, *callbacks])
    if ckpt_path:
        _check_resumable(ckpt_path, module)
    _interruptible(trainer, "fit", module, datamodule=datamodule, ckpt_path=ckpt_path)
    # loaded by hand: with ckpt_path, the EMA callback would restore the raw weights. By its place, not by the
    # callback's best_model_path: a run moved between a kill and its resume restores the old place's path.
    best = torch.load(fold_dir / "checkpoints" / "best.ckpt", map_location=module.device, weights_only=False)
    module.load_state_dict(best["state_dict"])
    score = best["callbacks"][checkpoint.state_key]["best_model_score"] if monitor else None
    selection = {"selected_by": monitor or "last epoch", "selected_epoch": best["epoch"],
                 "selected_val_score": None if score is None else float(score)}
    return _test_split(trainer, module, data, split, fold_dir, selection)


class _CtrlC(pl.Callback):
    """Notes whether the exception Lightning shuts down on was Ctrl-C (see `_interruptible`)."""
    pressed = False

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        self.pressed = isinstance(exception, KeyboardInterrupt)


def _interruptible(trainer: pl.Trainer, method: str, *args: Any, **kwargs: Any) -> Any:
    """trainer.fit / test. Lightning turns Ctrl-C into sys.exit(1) after its own shutdown, with Ctrl-C ignored
    from then on; it is raised as KeyboardInterrupt again, which cli.py reports as an interruption (exit 130, and
    how to resume), and Ctrl-C works again in this process."""
    ctrl_c = next((c for c in trainer.callbacks if isinstance(c, _CtrlC)), None)
    if ctrl_c is None:
        ctrl_c = _CtrlC()
        trainer.callbacks.append(ctrl_c)
    try:
        return getattr(trainer, method)(*args, **kwargs)
    except SystemExit:
        if ctrl_c.pressed:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt from None
        raise


def _test_split(trainer: pl.Trainer, module: MumuModule, data: RunData, split: SampleSplit, fold_dir: Path,
                selection: dict) -> dict:
    """Test `module` on the split's test samples (each subject adapted to on its own with adapt_bn) and
    write fold_dir/predictions.csv, then fold_dir/metrics.json, the marker of a finished split."""
    cfg = data.cfg
    subjects = by_subject(split.test) if cfg.adapt_bn else None
    if subjects is not None:
        module.adapt_to_test_subjects(subjects, data.loader)
    datamodule = MumuDataModule(data.make_dataset, data.collate(), split.train, split.val, split.test,
                                cfg.batch_size, cfg.seed, cfg.num_workers, test_groups=subjects)
    _interruptible(trainer, "test", module, datamodule=datamodule, verbose=False)
    results = module.test_results
    if results["metrics"]["n_samples"] == 0:  # every one left out (mumu.data.PadCollate); no metrics.json then
        raise MumuError(f"split {split.name}: no test sample has a usable input of the chosen modalities; their raw "
                        f"files failed to load (see {data.problems_dir})")
    if cfg.adapt_bn:  # the evidence for adapting, on the validation subjects: compare with selected_val_score
        selection = {**selection, **_adapted_validation(module, data, split.val)}
    metrics = {**results["metrics"], "f1": "macro-F1 over the whole test set", "split": split.name,
               "world_size": trainer.world_size, **selection, "adapt_bn": cfg.adapt_bn,
               "activities": data.activity_names}
    if _is_rank_zero():
        subject_of = {s.sample_id: s.subject for s in split.test}
        _write_predictions(fold_dir / "predictions.csv", results["predictions"], subject_of, data, split.name)
        write_json(fold_dir / "metrics.json", metrics)  # last: its presence marks the split as finished
    return metrics


def _check_resumable(ckpt_path: str, module: MumuModule) -> None:
    """A checkpoint cut short by a kill, or one of a model whose layers this version no longer builds, is
    reported as such, not as a pickle or state-dict traceback."""
    state = read_checkpoint(ckpt_path, "cannot resume from", "use --overwrite to start afresh")
    if not layers_match(state.get("state_dict", {}), module):  # --resume may name another run's checkpoint
        raise MumuError(f"{ckpt_path} holds a model whose layers differ from this run's (another run's checkpoint: "
                        "other modalities, dataset or model settings; or one trained by an earlier version of "
                        "mumu); resume from this run's own checkpoint, or train again with --overwrite")


def _trainer_options(cfg: TrainConfig, fold_dir: Path, progress: bool, resuming: bool) -> dict:
    from dvclive.lightning import DVCLiveLogger
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    gpu = torch.cuda.is_available() and cfg.accelerator in ("auto", "gpu", "cuda")
    csv_file = fold_dir / "logs" / "metrics.csv"
    if resuming and csv_file.is_file() and _is_rank_zero():  # CSVLogger would delete the epochs logged so far
        csv_file.rename(csv_file.with_name(f"metrics-until-resume-{len(list(csv_file.parent.glob('metrics*.csv')))}.csv"))
    live_dir = fold_dir / "dvclive"
    if resuming:
        _drop_torn_files(live_dir)
    loggers = [
        CSVLogger(fold_dir, name="logs", version=""),
        TensorBoardLogger(fold_dir, name="tensorboard", version="", default_hp_metric=False),
        DVCLiveLogger(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None, resume=resuming),
    ]
    return dict(
        max_epochs=cfg.max_epochs, accelerator=cfg.accelerator, devices=_lightning_devices(cfg.devices),
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy, precision="bf16-mixed" if gpu else "32-true",
        deterministic=True if not gpu else "warn", logger=loggers, default_root_dir=fold_dir,
        use_distributed_sampler=False,  # EpochSampler shards by rank itself (and evaluates every sample once)
        num_sanity_val_steps=0, enable_model_summary=False, enable_progress_bar=progress, log_every_n_steps=1,
        plugins=[_CheckpointsRenamedIntoPlace()],
    )


class _CheckpointsRenamedIntoPlace(TorchCheckpointIO):
    """Lightning stages a checkpoint in $TMPDIR and moves it into place: a copy, not one rename, where $TMPDIR is
    another file system (a tmpfs, a node's local disk), so a kill could tear last.ckpt and cost the run, and a
    kill mid-write left the temporary in $TMPDIR. Here it is written beside its place and renamed."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("checkpoints are written whole to a local path; storage_options are not supported")
        with replaced_whole(path) as tmp:
            torch.save(checkpoint, tmp)


def _drop_torn_files(live_dir: Path) -> None:
    """DVCLive rewrites its metrics.json and params.yaml in place each epoch, so a kill mid-write can leave one
    torn, and DVCLive's resume parses both. A torn one is removed: DVCLive's summary and step count then
    restart, while its per-epoch plots and the CSV and TensorBoard logs keep the epochs before the kill."""
    for name, parse in (("metrics.json", json.loads), ("params.yaml", yaml.safe_load)):
        path = live_dir / name
        try:
            if path.is_file() and not isinstance(parse(path.read_text()), dict):  # empty: None, not a mapping
                raise ValueError(f"{path} holds no mapping")
        except (ValueError, yaml.YAMLError):
            click.echo(f"warning: {path} was cut short by the interruption; removed, so training can resume", err=True)
            path.unlink()


def _prediction_columns(activity_names: list[str]) -> list[str]:
    return (["sample_id", "subject", "fold", "label", "pred", "label_name", "pred_name", "group", "group_pred"]
            + [f"p:{name}" for name in activity_names])


def _write_predictions(path: Path, predictions: list[dict], subjects: dict[str, int], data: RunData,
                       fold: str) -> None:
    names = data.activity_names
    with replaced_whole(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(_prediction_columns(names))
        for p in predictions:
            writer.writerow([p["sample_id"], subjects[p["sample_id"]], fold, p["label"], p["pred"], names[p["label"]],
                             names[p["pred"]], p["group"], "" if p["group_pred"] is None else p["group_pred"]]
                            + [f"{v:.6f}" for v in p["probs"]])


def _merge_predictions(run_dir: Path, folds: list[str]) -> None:
    with replaced_whole(run_dir / "predictions.csv") as tmp, open(tmp, "w", newline="") as out:
        for i, fold in enumerate(folds):
            lines = (run_dir / fold / "predictions.csv").read_text().splitlines(keepends=True)
            out.writelines(lines if i == 0 else lines[1:])


# --------------------------------------------------------------------------------------------------
# Command line


def _show_defaults(command: click.Command) -> click.Command:
    """Each training option's help says where a value left out comes from: the params file, else TrainConfig."""
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default not in (None, MISSING)}
    for option in command.params:
        if option.name in defaults:
            default = defaults[option.name]
            option.show_default = f"params, else {str(default).lower() if isinstance(default, bool) else default}"
    return command


@_show_defaults
@click.command("train")
@click.option("--params", default=DEFAULT_PARAMS, show_default=True,
              help="Options left out come from this file (its top level and train: block, `base:` chains "
                   "resolved; none: no file), else the defaults shown below; its extract: block must match the "
                   "cache's settings. RUN_DIR/config.yaml records every value used.")
@click.option("--dataset", help=" | ".join(sorted(DATASET_MODALITIES)))
@click.option("--data-root", help="Raw dataset root (for --from-raw).")
@click.option("--cache", help="Feature cache  [default: params train.cache, else cache/<dataset>.zarr]")
@click.option("--from-cache/--from-raw", "from_cache", default=None,
              help="Train from the feature cache (default) or decode/window the raw data on the fly.")
@click.option("--model", type=click.Choice(ARCHS), help="MuMu or a Table 7 baseline.")
@click.option("--modalities", help="Comma-separated subset of the dataset's modalities, or all. A sensor's parts "
                                    "count as modalities of their own: UTD-MHAD's inertial_acc, inertial_gyro.")
@click.option("--activity-table", type=click.Path(dir_okay=False),
              help="Activity table (CSV) whose groups the auxiliary task learns "
                   "[default: pipeline/tables/<dataset>.csv].")
@click.option("--protocol", help="; ".join(f"{name}: {' | '.join(protocols)}" for name, protocols in PROTOCOLS.items()))
@click.option("--seed", type=int, help="Seed of initialisation, sampling and augmentation (same seed, same run).")
@click.option("--max-epochs", type=click.IntRange(1), help="Epochs of training (every fold).")
@click.option("--batch-size", type=click.IntRange(1), help="Samples per training batch.")
@click.option("--lr", type=float, help="AdamW learning rate.")
@click.option("--weight-decay", type=click.FloatRange(0), help="AdamW weight decay.")
@click.option("--warmup", type=float, help="Fraction of the steps warming up to --lr (one cycle); 0 = cosine from --lr.")
@click.option("--label-smoothing", type=float, help="Label smoothing of the activity loss.")
@click.option("--embed-dim", type=click.IntRange(1), help="Size D of every unimodal and fused feature.")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), help="Dropout in the encoders and heads.")
@click.option("--lstm-layers", type=int, help="LSTM layers per modality encoder; 0 = none.")
@click.option("--beta-aux", type=float, help="Weight of the activity-group loss L_aux (MuMu).")
@click.option("--gm-heads", type=int, help="GM-Fusion attention heads (MuMu); 1 = eq. (7).")
@click.option("--gm-gate", type=click.Choice(GM_GATES),
              help="GM-Fusion weights (MuMu): softmax over modalities, or one sigmoid gate per modality.")
@click.option("--gm-merge", type=click.Choice(GM_MERGES),
              help="GM-Fusion output (MuMu): sum of the weighted values (eq. 7), or their concatenation.")
@click.option("--fusion-init", type=click.Choice(FUSION_INITS),
              help="Init of MuMu's GM-Fusion projections and W_f: torch's default, or xavier (keeps the scale).")
@click.option("--fusion-norm", type=click.Choice(FUSION_NORMS),
              help="MuMu's fused features as eqs. 2 and 7 (convex), or times the number of present modalities "
                   "(count; the scaled X_aux is also GM-Fusion's query).")
@click.option("--fusion-kl", type=float,
              help="MuMu: weight of KL(fusion weights || equal weights, or --fusion-targets) in the loss; "
                   "0 = the paper's loss.")
@click.option("--fusion-targets", type=click.Path(dir_okay=False),
              help="MuMu with --fusion-kl: CSV of per-sample target fusion weights (fold, sample_id, p_<modality>; "
                   "mumu/fusion_targets.py) that the term pulls toward in training, instead of equal weights.")
@click.option("--unimodal-aux", type=click.FloatRange(0),
              help="Weight of the activity loss of a linear classifier on each modality's own feature (mean over "
                   "the modalities present); 0 = the paper's loss.")
@click.option("--mixup", type=click.FloatRange(0),
              help="Training: mix each batch with a shuffled copy of itself, inputs and losses alike, with a weight "
                   "drawn from Beta(alpha, alpha) (mixup); 0 = none.")
@click.option("--motion/--no-motion", default=None,
              help="Sequence sensor encoder: add the step-to-step differences of the input as channels.")
@click.option("--visual-norm/--no-visual-norm", default=None,
              help="LayerNorm over each visual step's features (video, depth) before the encoder's projection.")
@click.option("--modality-dropout", type=float,
              help="Training: chance that a multimodal sample loses modalities (how many: --modality-dropout-mode).")
@click.option("--modality-dropout-mode", type=click.Choice(MODALITY_DROPOUT_MODES),
              help="What such a sample loses: one modality, or 1 to n-1 of its n (each stream also seen alone).")
@click.option("--modality-dropout-as", type=click.Choice(MODALITY_DROPOUT_AS),
              help="How a lost modality looks: missing (masked out of the fusion), or present with its inputs "
                   "zeroed (zeros) or set to the training mean (mean), as the noise study's drop / mean modes.")
@click.option("--max-steps-visual", type=int, help="Segments per visual modality (sampled/padded).")
@click.option("--max-steps-sensor", type=int, help="Windows per sensor modality (sampled/padded).")
@click.option("--val-fraction", type=float, help="Share of the training subjects held out to select the epoch (at least one; cross_session: of the samples).")
@click.option("--select", type=click.Choice(SELECTIONS),
              help="Tested checkpoint: best validation macro-F1, lowest validation NLL, or the last epoch.")
@click.option("--ema-decay", type=float, help="> 0: validate, select and test a moving average of the weights.")
@click.option("--adapt-bn/--no-adapt-bn", default=None,
              help="Test: re-estimate BatchNorm statistics on each test subject's inputs (AdaBN; no labels used).")
@click.option("--validate-adapted/--no-validate-adapted", default=None,
              help="Validation (so --select): each validation subject with BatchNorm statistics of its own inputs, "
                   "as --adapt-bn tests.")
@click.option("--subject-batches/--no-subject-batches", default=None,
              help="Training: every batch holds one subject's samples (per-subject BatchNorm statistics).")
@click.option("--num-workers", type=int, help="DataLoader worker processes (spawned).")
@click.option("--accelerator", help="Lightning accelerator: auto | cpu | gpu.")
@click.option("--devices", help="Lightning devices, e.g. 1, 2 or 0,1.")
@click.option("--num-nodes", type=click.IntRange(1), help="Lightning DDP: machines taking part (each runs this command).")
@click.option("--strategy", help="Lightning strategy, e.g. ddp.")
@click.option("--out", help="Run directory (default runs/<dataset>-<model>-<protocol>-seed<N>).")
@click.option("--resume", is_flag=False, flag_value="last", default=None,
              help="Resume from a checkpoint PATH; `--resume` alone requires a last.ckpt in RUN_DIR (or in a "
                   "fold's folder of it). "
                   "(An unfinished run with the same settings resumes automatically anyway.)")
@click.option("--overwrite", is_flag=True, help="Delete RUN_DIR (a run folder only) and start afresh.")
@click.option("--restart-if-changed", is_flag=True,
              help="Start afresh when RUN_DIR holds a run begun with other settings, code (the files training can "
                   "run) or data (the cache's contents); otherwise resume it. For pipelines (dvc.yaml), where a "
                   "change must retrain and an interruption resume. One machine only.")
def train_command(params: str, from_cache: bool | None, resume: str | None, overwrite: bool,
                  restart_if_changed: bool, **options: Any) -> None:
    """Train MuMu or a baseline on a protocol's splits and test it.

    Writes RUN_DIR/config.yaml, checkpoints/best.ckpt (the epoch chosen by --select), metrics.json and
    predictions.csv, and prints test macro-F1 and top-1 accuracy.
    """
    if from_cache is not None:
        options["source"] = "cache" if from_cache else "raw"
    cfg = resolve_config(params, **options)
    if resume == "last":
        last = sorted(cfg.run_dir.glob("**/checkpoints/last.ckpt"))
        if not last:
            raise MumuError(f"--resume: no checkpoint under {cfg.run_dir}/**/checkpoints/last.ckpt to resume from")
        resume = None  # the automatic resume picks each split's last.ckpt
    result = train_once(cfg, resume=resume, overwrite=overwrite, restart_if_changed=restart_if_changed)
    if _is_rank_zero():
        _print_summary(result)


@click.command("retest")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, help="New run directory for the retested results.")
@click.option("--adapt-bn/--no-adapt-bn", default=None,
              help="Re-estimate BatchNorm statistics on each test subject's inputs (AdaBN; no labels used).")
@click.option("--select", type=click.Choice(["last"]), default=None,
              help="Test the last epoch's weights instead of the epoch the run selected on validation "
                   "(what training with `select: last` would have tested).")
def retest_command(run_dir: str, out: str, adapt_bn: bool | None, select: str | None) -> None:
    """Test a finished training run again with other test-time settings, without retraining.

    Reads RUN_DIR's config and selected (or, with --select last, last) checkpoints and writes OUT like a
    training run (config.yaml, metrics.json, predictions.csv; checkpoints/best.ckpt links to the tested one),
    so `cli.py evaluate OUT` and the result scripts read it as they read RUN_DIR.
    """
    result = retest(run_dir, out, adapt_bn=adapt_bn, select=select)
    if _is_rank_zero():
        _print_summary(result)


def _print_summary(result: RunResult) -> None:
    if len(result.folds) > 1:
        for name, m in result.folds.items():
            click.echo(f"  {name}: macro-F1 {100 * m['macro_f1']:.2f} %, accuracy {100 * m['accuracy']:.2f} %")
    click.echo(f"outputs: {result.run_dir}/ (config.yaml, metrics.json, predictions.csv, checkpoints/)")
    click.echo(f"test {headline(result.metrics)}")
