"""Training on the tiny demo cache: it learns, the run directory, determinism, resume, the command."""
from __future__ import annotations

import csv
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from click.testing import CliRunner

from mumu.config import load_config
from mumu.metrics import headline, summarize_folds
from mumu.rundir import finished_folds, load_run
from mumu.train import train_command, train_once
from pipeline.errors import MumuError
from pipeline.tables import table_path

ROOT = Path(__file__).resolve().parents[1]

CHANCE = 1 / 6  # six demo activities


def read_predictions(run_dir) -> list[dict]:
    with open(run_dir / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def learned_run(tiny_demo, tmp_path_factory):
    """MuMu trained on the tiny demo long enough to learn (shared by several tests). Since extract-4 (the demo's
    accelerometers low-pass filtered) seeds 0-5 score 7-10 of the 24 test samples (chance: 4); seed 3, 10 with
    macro-F1 0.34 and group accuracy 0.92, leaves the above-chance checks a margin against numeric drift."""
    cfg = tiny_demo.config(tmp_path_factory.mktemp("runs") / "learned", max_epochs=15, batch_size=4, lr=1e-2,
                             dropout=0.0, seed=3)
    return cfg, train_once(cfg, progress=False)


def test_mumu_learns_the_demo_well_above_chance(learned_run):
    cfg, result = learned_run
    assert result.metrics["accuracy"] > 2 * CHANCE, result.metrics
    assert result.metrics["macro_f1"] > 1.5 * CHANCE, result.metrics
    assert result.metrics["group_accuracy"] > 1.5 / 3, result.metrics  # three groups


def test_run_directory_holds_config_checkpoints_metrics_predictions(learned_run):
    cfg, result = learned_run
    run = cfg.run_dir
    for name in ("config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "split.json",
                 "logs/metrics.csv", "dvclive/metrics.json"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    split = json.loads((run / "split.json").read_text())
    rows = read_predictions(run)
    assert sorted(r["sample_id"] for r in rows) == sorted(split["test"])  # every test sample, once
    assert metrics["n_samples"] == len(split["test"]) and metrics["f1"].startswith("macro-F1")
    assert len(metrics["per_class_f1"]) == 6
    accuracy = sum(r["label"] == r["pred"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(metrics["accuracy"])
    assert {"subject", "label_name", "pred_name", "group", "group_pred", "p:drinking"} <= set(rows[0])


def test_inputs_are_standardised_with_statistics_of_the_training_samples_only(learned_run):
    """The per-feature mean and spread that standardise every input come from the training split: test or
    validation samples informing them would leak into the model."""
    from mumu.data import valid_steps

    loaded = load_run(learned_run[0].run_dir)

    def steps(part: str, name: str) -> torch.Tensor:  # (N, C): every valid step's channels, as the loader samples
        rows = [batch["x"][name][valid_steps(batch["x"][name], batch["lengths"][name])] for batch in loaded.loader(part)]
        values = torch.cat(rows).double()
        return values.reshape(-1, values.shape[-1])

    for spec in loaded.data.specs:  # no transforms in this config: the statistics are of the loaded inputs
        mean = getattr(loaded.module, f"mean_{spec.name}").double()
        torch.testing.assert_close(mean, steps("train", spec.name).mean(0))
        assert not torch.allclose(mean, steps("test", spec.name).mean(0)), spec.name


def test_load_run_reproduces_the_test_predictions(learned_run):
    cfg, _ = learned_run
    loaded = load_run(cfg.run_dir)
    assert not loaded.module.training
    preds = {}
    for batch in loaded.loader("test"):
        out = loaded.predict(batch)
        assert out.attention["sm"].shape == (len(batch["label"]), 3)  # SM-Fusion alpha per modality
        preds.update(zip(batch["sample_id"], out.logits.argmax(-1).tolist()))
    assert preds == {r["sample_id"]: int(r["pred"]) for r in read_predictions(cfg.run_dir)}


class EpochsRun(pl.Callback):
    """Records the epochs a training call runs (a resumed or finished run must not redo any)."""

    def __init__(self):
        self.epochs: list[int] = []

    def on_train_epoch_start(self, trainer, module):
        self.epochs.append(trainer.current_epoch)


class KillAtSecondEpoch(pl.Callback):  # dies as the second epoch starts, after epoch 0's checkpoint is written
    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 1:
            raise SystemExit("killed")


def test_a_run_moved_after_a_kill_finishes_in_its_new_place(tiny_demo, tmp_path):
    """Killed after its last epoch but before its test, then moved (a full disk, a copy to another machine): the
    rerun at the new place tests its own best checkpoint and matches an uninterrupted run."""
    class KillBeforeTest(pl.Callback):
        def on_test_start(self, trainer, module):
            raise SystemExit("killed")

    whole = train_once(tiny_demo.config(tmp_path / "whole"), progress=False)
    with pytest.raises(SystemExit):
        train_once(tiny_demo.config(tmp_path / "before"), callbacks=[KillBeforeTest()], progress=False)
    shutil.move(tmp_path / "before", tmp_path / "after")
    moved = train_once(tiny_demo.config(tmp_path / "after"), progress=False)
    assert moved.metrics["selected_epoch"] == whole.metrics["selected_epoch"]
    assert moved.metrics["selected_val_score"] == pytest.approx(whole.metrics["selected_val_score"])
    assert moved.metrics["macro_f1"] == whole.metrics["macro_f1"]


def test_analyses_see_only_folds_that_finished(learned_run, tmp_path):
    """A fold still training already has a best.ckpt (from an early epoch) but no metrics.json yet; the
    result scripts (finished_folds) must leave it out, and still load the finished one."""
    cfg, _ = learned_run
    run = tmp_path / "loso-run"
    for fold in ("fold_s1", "fold_s2"):
        shutil.copytree(cfg.run_dir, run / fold)
    shutil.copy(run / "fold_s1" / "config.yaml", run / "config.yaml")
    (run / "fold_s2" / "metrics.json").unlink()
    assert (run / "fold_s2" / "checkpoints" / "best.ckpt").is_file()
    assert finished_folds(run) == ["fold_s1"]
    assert load_run(run, fold="fold_s1").config.model == "mumu"


def test_same_seed_same_metrics_and_resume_after_a_kill_matches(tiny_demo, tmp_path):
    """Determinism (two runs, same seed) and resume: a run killed after its first epoch and rerun
    continues from last.ckpt (it does not start over) and ends with the uninterrupted metrics."""
    first = train_once(tiny_demo.config(tmp_path / "a"), progress=False)
    second = train_once(tiny_demo.config(tmp_path / "b"), progress=False)
    assert first.metrics == second.metrics
    assert read_predictions(tmp_path / "a") == read_predictions(tmp_path / "b")
    with_workers = train_once(tiny_demo.config(tmp_path / "w", num_workers=2), progress=False)
    assert with_workers.metrics == first.metrics  # spawned DataLoader workers change nothing

    with pytest.raises(SystemExit):
        train_once(tiny_demo.config(tmp_path / "c"), callbacks=[KillAtSecondEpoch()], progress=False)
    assert (tmp_path / "c/checkpoints/last.ckpt").is_file() and not (tmp_path / "c/metrics.json").exists()
    epochs = EpochsRun()
    with warnings.catch_warnings(record=True) as caught:
        resumed = train_once(tiny_demo.config(tmp_path / "c"), callbacks=[epochs], progress=False)
    assert epochs.epochs == [1]  # only the epoch that was missing
    assert list((tmp_path / "c/logs").glob("metrics-until-resume-*.csv"))  # epoch 0's log row is kept
    assert not [w for w in caught if "will be deleted" in str(w.message)]  # ... so Lightning's alarm is not shown
    assert resumed.metrics["macro_f1"] == first.metrics["macro_f1"]
    assert resumed.metrics["per_class_f1"] == first.metrics["per_class_f1"]
    assert resumed.metrics["loss"] == pytest.approx(first.metrics["loss"], rel=1e-5)
    # the tiny run may test its first epoch, so the metrics alone cannot see the resumed epoch: the final weights
    # of the resumed run, and of the run with workers, are the uninterrupted run's exactly
    final = {run: torch.load(tmp_path / run / "checkpoints/last.ckpt", map_location="cpu",
                             weights_only=False)["state_dict"] for run in ("a", "c", "w")}
    for run in ("c", "w"):
        assert final[run].keys() == final["a"].keys()
        assert all(torch.equal(final[run][k], final["a"][k]) for k in final["a"]), run

    # a finished run is not redone; other settings in the same run directory are refused
    epochs = EpochsRun()
    assert train_once(tiny_demo.config(tmp_path / "c"), callbacks=[epochs], progress=False).metrics == resumed.metrics
    assert epochs.epochs == []
    with pytest.raises(MumuError, match="different settings"):
        train_once(tiny_demo.config(tmp_path / "c", lr=0.5), progress=False)
    written = (tmp_path / "c/config.yaml").read_text()
    with pytest.raises(MumuError, match="holds a finished run with different settings"):  # nor with --resume PATH
        train_once(tiny_demo.config(tmp_path / "c", lr=0.5), resume=str(tmp_path / "c/checkpoints/last.ckpt"),
                   progress=False)
    assert (tmp_path / "c/config.yaml").read_text() == written  # the finished run's settings still describe it
    with pytest.raises(MumuError, match="--resume and --overwrite contradict each other"):  # it deleted the checkpoint
        train_once(tiny_demo.config(tmp_path / "c"), resume=str(tmp_path / "c/checkpoints/last.ckpt"), overwrite=True,
                   progress=False)
    assert (tmp_path / "c/checkpoints/last.ckpt").is_file()

    (tmp_path / "c/metrics.json").write_text("")  # torn by a power loss: the error names the file and the cure
    with pytest.raises(MumuError, match=r"c/metrics.json: cannot be read \(.*\); delete it, and rerunning"):
        train_once(tiny_demo.config(tmp_path / "c"), progress=False)


@pytest.mark.parametrize("torn, left", [("metrics.json", ""), ("params.yaml", ""),
                                        ("params.yaml", "model: mumu\nmax_ep")])  # empty, or cut mid-line
def test_a_run_killed_while_dvclive_rewrote_its_files_resumes(tiny_demo, tmp_path, torn, left, capsys):
    """DVCLive rewrites its files in place: a kill mid-write leaves one empty or cut mid-line, which its resume
    cannot parse."""
    cfg = tiny_demo.config(tmp_path / "run")
    with pytest.raises(SystemExit):
        train_once(cfg, callbacks=[KillAtSecondEpoch()], progress=False)
    live_file = cfg.run_dir / "dvclive" / torn
    assert live_file.is_file()
    live_file.write_text(left)
    resumed = train_once(cfg, progress=False)
    assert f"{live_file} was cut short by the interruption" in capsys.readouterr().err
    whole = train_once(tiny_demo.config(tmp_path / "whole"), progress=False)
    assert resumed.metrics["macro_f1"] == whole.metrics["macro_f1"]


def test_resuming_a_checkpoint_of_an_earlier_model_version_is_a_clear_error(tiny_demo, tmp_path):
    cfg = tiny_demo.config(tmp_path / "run")
    with pytest.raises(SystemExit):
        train_once(cfg, callbacks=[KillAtSecondEpoch()], progress=False)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    del state["state_dict"][next(iter(state["state_dict"]))]  # as if the layer had not existed then
    torch.save(state, last)
    with pytest.raises(MumuError, match="earlier version.*--overwrite"):
        train_once(cfg, progress=False)


def test_a_second_training_into_a_run_being_trained_is_refused(tiny_demo, tmp_path):
    """It used to resume from the checkpoints the first was still writing and move the first's training log
    aside mid-run; now it is refused, touching nothing, and the first finishes as usual."""
    cfg = tiny_demo.config(tmp_path / "run")

    class SecondTraining(pl.Callback):
        refusal = None

        def on_train_epoch_end(self, trainer, module):
            if self.refusal is None:
                try:
                    train_once(cfg, progress=False)
                except MumuError as e:
                    SecondTraining.refusal = str(e)

    train_once(cfg, callbacks=[SecondTraining()], progress=False)
    assert SecondTraining.refusal == f"{cfg.run_dir} is being trained by another process; wait for it to finish, " \
                                     f"or train into another --out"
    assert not list((cfg.run_dir / "logs").glob("metrics-until-resume-*.csv"))
    assert len([row for row in csv.DictReader(open(cfg.run_dir / "logs" / "metrics.csv")) if row["epoch"]]) > 1
    assert train_once(cfg, progress=False).metrics  # the lock went with the first; finished: nothing to redo


def test_ctrl_c_during_training_is_an_interruption_that_the_rerun_finishes(tiny_demo, tmp_path):
    """Lightning turns Ctrl-C into sys.exit(1): `train` exited 1 without cli.py's "interrupted: rerun the same
    command to resume" (exit 130). It is a KeyboardInterrupt again, and the rerun finishes the run."""
    class CtrlCAtSecondEpoch(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:
                raise KeyboardInterrupt

    import signal

    cfg = tiny_demo.config(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train_once(cfg, callbacks=[CtrlCAtSecondEpoch()], progress=False)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Lightning had left Ctrl-C ignored
    assert train_once(cfg, progress=False).metrics == train_once(tiny_demo.config(tmp_path / "whole"),
                                                                  progress=False).metrics


def test_checkpoints_are_renamed_into_place_not_staged_in_tmpdir(tiny_demo, tmp_path, monkeypatch):
    """Lightning staged each checkpoint in $TMPDIR and moved it into place: a copy where $TMPDIR is another file
    system, so a kill could leave a torn last.ckpt (and the run with it) and a stray temporary in $TMPDIR."""
    import tempfile

    def staged(*args, **kwargs):
        raise AssertionError("a checkpoint was staged in $TMPDIR")

    monkeypatch.setattr(tempfile, "mkstemp", staged)
    result = train_once(tiny_demo.config(tmp_path / "run"), progress=False)
    assert result.metrics and (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))


def test_a_killed_run_resumes_from_its_last_finished_epoch_not_its_best(tiny_demo, tmp_path):
    """With lr 0 validation never improves, so the tested epoch stays the first; a kill before the last epoch
    must still resume there, not redo every epoch since the best one."""
    class KillAtLastEpoch(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 3:
                raise SystemExit("killed")

    cfg = tiny_demo.config(tmp_path / "run", max_epochs=4, lr=0.0)
    with pytest.raises(SystemExit):
        train_once(cfg, callbacks=[KillAtLastEpoch()], progress=False)
    epochs = EpochsRun()
    train_once(cfg, callbacks=[epochs], progress=False)
    assert epochs.epochs == [3]
    assert torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=False)["epoch"] == 0


def test_a_run_continued_on_another_number_of_processes_is_warned_that_its_step_changes(tiny_demo, tmp_path,
                                                                                       monkeypatch, capsys):
    """Devices are no setting of the run, yet each DDP process takes batch_size samples a step: continuing a killed
    run on two processes trains its remaining epochs with twice the batch of its first ones."""
    import mumu.train

    cfg = tiny_demo.config(tmp_path / "run")
    with pytest.raises(SystemExit):
        train_once(cfg, callbacks=[KillAtSecondEpoch()], progress=False)

    def stop(*args, **kwargs):  # the warning comes before training; the two processes themselves are not needed
        raise SystemExit("stopped")

    monkeypatch.setattr(mumu.train, "train_split", stop)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        train_once(cfg.replace(devices="2", strategy="ddp"), progress=False)
    assert "was last trained at world size 1 (DDP processes) and continues at 2: a step takes 16 samples now, not 8" \
        in capsys.readouterr().err
    with pytest.raises(SystemExit):  # continued again on two: no change
        train_once(cfg.replace(devices="2", strategy="ddp"), progress=False)
    assert "was last trained at" not in capsys.readouterr().err


def test_weight_average_survives_a_kill(tiny_demo, tmp_path):
    """With ema_decay, a killed run resumes both the weights and their average: same test predictions."""
    whole = train_once(tiny_demo.config(tmp_path / "a", ema_decay=0.9), progress=False)
    with pytest.raises(SystemExit):
        train_once(tiny_demo.config(tmp_path / "b", ema_decay=0.9), callbacks=[KillAtSecondEpoch()], progress=False)
    resumed = train_once(tiny_demo.config(tmp_path / "b", ema_decay=0.9), progress=False)
    assert read_predictions(tmp_path / "b") == read_predictions(tmp_path / "a")
    assert resumed.metrics["loss"] == pytest.approx(whole.metrics["loss"], rel=1e-5)


def test_a_run_shorter_than_its_weight_average_says_so(tiny_demo, tmp_path, capsys):
    """A one-epoch try of the UTD recipe (ema_decay 0.99, ~100-step horizon) tested at chance without a word."""
    train_once(tiny_demo.config(tmp_path / "short", max_epochs=1, ema_decay=0.99), progress=False)
    warned = capsys.readouterr().err
    # one epoch of the tiny demo is 3 optimiser steps (batches, not samples)
    assert "ema_decay 0.99 averages the weights over ~100 optimiser steps, but this run takes 3: its first steps' " \
           "weights still make up 97% of the average" in warned, warned
    train_once(tiny_demo.config(tmp_path / "long", max_epochs=1, ema_decay=0.2), progress=False)  # 3 steps: 0.8 %
    assert "ema_decay" not in capsys.readouterr().err


def test_select_picks_the_tested_epoch(tiny_demo, tmp_path):
    """train.select decides which epoch is tested: the best validation macro-F1 (first of ties), the
    lowest validation NLL, or the last. Which epochs those are depends on float rounding (the machine), so
    seeds are tried until the three rules pick three different epochs, which tells every rule apart."""
    for seed in range(4):
        chosen, selected = {}, {}
        for select in ("macro_f1", "nll", "last"):
            out = tmp_path / f"{select}-{seed}"
            result = train_once(tiny_demo.config(out, max_epochs=6, lr=0.05, select=select, seed=seed),
                                progress=False)
            with open(out / "logs/metrics.csv") as f:
                rows = {int(r["epoch"]): r for r in csv.DictReader(f) if r["val/nll"]}
            assert sorted(rows) == list(range(6))
            f1 = {e: float(r["val/macro_f1"]) for e, r in rows.items()}
            nll = {e: float(r["val/nll"]) for e, r in rows.items()}
            chosen[select] = {"macro_f1": max(f1, key=lambda e: (f1[e], -e)), "nll": min(nll, key=nll.get),
                              "last": 5}[select]
            selected[select] = result.metrics["selected_epoch"]
        assert selected == chosen
        if len(set(chosen.values())) == 3:
            return
    pytest.fail(f"no seed made the three rules pick three different epochs (last: {chosen}); try more seeds")


def test_folds_are_summarised_as_mean_std_and_per_fold_values():
    folds = {"fold_s1": {"macro_f1": 0.5, "accuracy": 0.6, "n_samples": 10},
             "fold_s2": {"macro_f1": 0.7, "accuracy": 0.8, "n_samples": 12}}
    summary = summarize_folds(folds)
    assert summary["macro_f1"] == pytest.approx(0.6) and summary["macro_f1_std"] == pytest.approx(0.1)
    assert summary["n_samples"] == 22 and summary["folds"] == folds
    assert headline(summary) == "macro-F1 60.00 ± 10.00 %, accuracy 70.00 ± 10.00 % (n=22 test samples)"


def test_baseline_trains_without_the_group_loss(tiny_demo, tmp_path):
    result = train_once(tiny_demo.config(tmp_path / "b2", model="b2", max_epochs=1), progress=False)
    assert result.metrics["group_accuracy"] is None
    assert result.metrics["n_samples"] == len(json.loads((tmp_path / "b2/split.json").read_text())["test"])


def test_utd_recipe_options_come_from_the_config_and_reload(tiny_demo, tmp_path):
    """The options params/utd_mhad.yaml uses (sequence encoder with max-pools, no LSTM, modality dropout,
    one-cycle schedule, label smoothing)."""
    options = dict(sensor_encoder="sequence", kernel_size=5, lstm_layers=0, max_pools=2, modality_dropout=0.3,
                   warmup=0.3, label_smoothing=0.1, ema_decay=0.9, visual_norm=True)
    cfg = tiny_demo.config(tmp_path / "seq", max_epochs=1, **options)
    train_once(cfg, progress=False)
    loaded = load_run(cfg.run_dir)
    assert {k: getattr(loaded.config, k) for k in options} == options
    best = torch.load(cfg.run_dir / "checkpoints/best.ckpt", weights_only=False)
    assert any(not torch.equal(best["state_dict"][k], v) for k, v in best["current_model_state"].items()
               if v.is_floating_point())  # the checkpoint's weights are the average, not the last step's
    probs = {}  # the tested weights are the checkpoint's (the average): same probabilities from load_run
    for batch in loaded.loader("test"):
        probs.update(zip(batch["sample_id"], loaded.predict(batch).logits.softmax(-1).tolist()))
    written = {r["sample_id"]: [float(v) for k, v in r.items() if k.startswith("p:")] for r in read_predictions(cfg.run_dir)}
    assert probs.keys() == written.keys()
    assert all(p == pytest.approx(written[i], abs=2e-6) for i, p in probs.items())
    for bad, message in ((dict(sensor_encoder="lstm"), "unknown sensor_encoder 'lstm'"),
                         (dict(lstm_layers=-1), "lstm_layers must be >= 0"), (dict(warmup=1.5), "warmup is a fraction"),
                         (dict(label_smoothing=1.0), "label_smoothing must be in"), (dict(time_crop=0.5), "time_crop"),
                         (dict(max_pools=3), "max_pools must be 0, 1 or 2"),
                         (dict(modality_dropout=1.0), "modality_dropout is a probability"),
                         (dict(modality_dropout_mode="all"), "unknown modality_dropout_mode 'all'"),
                         (dict(modality_dropout_as="silent"), "unknown modality_dropout_as 'silent'"),
                         (dict(ema_decay=1.0), "ema_decay is the per-step decay"),
                         (dict(select="val_loss"), "unknown select 'val_loss'"),
                         (dict(gm_gate="relu"), "unknown gm_gate 'relu'"),
                         (dict(gm_merge="mean"), "unknown gm_merge 'mean'"),
                         (dict(fusion_init="zeros"), "unknown fusion_init 'zeros'"),
                         (dict(fusion_norm="sum"), "unknown fusion_norm 'sum'"),
                         (dict(fusion_kl=-0.1), "fusion_kl is a loss weight"),
                         (dict(fusion_kl=0.5, gm_gate="sigmoid"), "gm_gate sigmoid gives GM-Fusion no softmax"),
                         (dict(fusion_targets="t.csv"), "need model mumu and fusion_kl > 0 .*fusion_kl 0.0"),
                         (dict(fusion_targets="t.csv", fusion_kl=1.0, model="b2"), "need model mumu .*got model b2"),
                         (dict(mixup=-0.2), "mixup is the Beta distribution's alpha"),
                         (dict(mixup=0.2, fusion_targets="t.csv", fusion_kl=1.0), "use one of mixup and fusion_targets"),
                         (dict(model="b1", lstm_layers=0), "B1 .* pools the last LSTM state"),
                         (dict(sensor_encoder="window", motion=True), "motion channels need the sequence sensor")):
        with pytest.raises(MumuError, match=message):
            tiny_demo.config(tmp_path / "bad", **bad)


def test_fusion_kl_adds_its_weighted_term_to_mumus_training_loss(tiny_demo):
    from mumu.module import MumuModule
    from mumu.rundata import prepare_data

    data = prepare_data(tiny_demo.config())
    batch = next(iter(data.loader(data.samples[:4], batch_size=4)))
    losses = {}
    for fusion_kl in (0.0, 2.0):
        torch.manual_seed(0)
        module = MumuModule(tiny_demo.config(fusion_kl=fusion_kl).to_dict(), [vars(s) for s in data.specs],
                            data.activity_names, data.group_names).eval()
        with torch.no_grad():
            out = module(batch)
            losses[fusion_kl] = module.loss(out, batch)
    assert out.fusion_kl > 0
    torch.testing.assert_close(losses[2.0] - losses[0.0], 2.0 * out.fusion_kl)


def test_unimodal_aux_adds_each_present_modalitys_own_activity_loss(tiny_demo, tmp_path):
    from mumu.module import MumuModule
    from mumu.rundata import prepare_data

    cfg = tiny_demo.config(tmp_path / "run", unimodal_aux=0.5, max_epochs=1)
    data = prepare_data(cfg)
    batch = next(iter(data.loader(data.samples[:4], batch_size=4)))
    batch["lengths"]["gyro"][0] = 0  # the first sample lacks its gyroscope: no gyro classifier loss for it
    module = MumuModule(cfg.to_dict(), [vars(s) for s in data.specs], data.activity_names, data.group_names).eval()
    with torch.no_grad():
        out = module(batch)
        loss = module.loss(out, batch)
    assert out.unimodal_logits.shape == (4, 3, 6)  # (B, M, K): rgb_cam1, acc_phone, gyro
    pairs = [(b, m) for b in range(4) for m in range(3) if not (b == 0 and m == 2)]  # the 11 present
    own = torch.stack([torch.nn.functional.cross_entropy(out.unimodal_logits[b, m], batch["label"][b])
                       for b, m in pairs]).mean()
    expected = (torch.nn.functional.cross_entropy(out.logits, batch["label"])
                + cfg.beta_aux * torch.nn.functional.cross_entropy(out.group_logits, batch["group"]) + 0.5 * own)
    torch.testing.assert_close(loss, expected)
    run = train_once(cfg, progress=False)  # the heads train, are saved and load with the run
    assert load_run(cfg.run_dir).module.model.unimodal_heads is not None and run.metrics["n_samples"] > 0


def test_mixup_trains_on_blended_sample_pairs_with_blended_losses_and_resumes_exactly(tiny_demo, tmp_path):
    """train.mixup: the model sees each modality blended with a partner's as the cache stores it (a modality
    missing from either sample is missing from the blend), its training loss is weight * loss(own labels) +
    (1 - weight) * loss(partner's labels), a sample with no stream in common with its drawn partner keeps its own
    inputs, and a mixup run is repeatable, resumable and not the unmixed run."""
    from mumu.mixup import Mixup
    from mumu.module import MumuModule
    from mumu.rundata import prepare_data

    cfg = tiny_demo.config(tmp_path / "mixed", mixup=0.4, max_epochs=3)
    data = prepare_data(cfg)
    batch = next(iter(data.loader(data.samples[:4], batch_size=4)))
    batch["lengths"]["gyro"][0] = 0  # sample 0 lacks its gyroscope, so its blend with sample 1 lacks it too
    module = MumuModule(cfg.to_dict(), [vars(s) for s in data.specs], data.activity_names, data.group_names).eval()
    mixup = Mixup(0.3, torch.tensor([1, 0, 3, 2]))
    by_hand = dict(batch, x={m: 0.3 * v + 0.7 * v[[1, 0, 3, 2]] for m, v in batch["x"].items()},
                   lengths={m: n.clone() for m, n in batch["lengths"].items()})
    by_hand["lengths"]["gyro"][1] = 0
    with torch.no_grad():
        torch.testing.assert_close(module(batch, mixup).logits, module(by_hand).logits)
    module.train()  # the training step's loss: its draws repeated by hand give its blend and its dropout
    torch.manual_seed(5)
    loss = module.training_step(batch, 0)
    torch.manual_seed(5)
    drawn = Mixup.draw(batch["lengths"], 0.4)
    out = module(batch, drawn)
    partners = dict(batch, label=batch["label"][drawn.partner], group=batch["group"][drawn.partner])
    assert 0 < drawn.weight < 1 and not torch.equal(partners["label"], batch["label"])
    torch.testing.assert_close(loss, drawn.weight * module.loss(out, batch)
                               + (1 - drawn.weight) * module.loss(out, partners))

    lonely = {"rgb_cam1": torch.tensor([0, 5, 5, 5]), "acc_phone": torch.tensor([0, 5, 5, 5]),
              "gyro": torch.tensor([5, 0, 0, 0])}  # sample 0 shares no stream with any other
    for seed in range(20):
        torch.manual_seed(seed)
        partner = Mixup.draw(lonely, 0.4).partner
        assert partner[0] == 0 and 0 not in partner[1:].tolist()

    first = train_once(cfg, progress=False)
    assert train_once(cfg.replace(out=str(tmp_path / "again")), progress=False).metrics == first.metrics
    with pytest.raises(SystemExit):
        train_once(cfg.replace(out=str(tmp_path / "killed")), callbacks=[KillAtSecondEpoch()], progress=False)
    train_once(cfg.replace(out=str(tmp_path / "killed")), progress=False)
    train_once(cfg.replace(out=str(tmp_path / "unmixed"), mixup=0.0), progress=False)
    final = {run: torch.load(tmp_path / run / "checkpoints/last.ckpt", map_location="cpu",
                             weights_only=False)["state_dict"] for run in ("mixed", "killed", "unmixed")}
    assert all(torch.equal(final["killed"][k], final["mixed"][k]) for k in final["mixed"])
    assert not all(torch.equal(final["unmixed"][k], final["mixed"][k]) for k in final["mixed"])


def write_fusion_targets(path: Path, sample_ids: list[str], p: dict[str, object], fold: str = "cross_session") -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["fold", "sample_id", *(f"p_{m}" for m in p)])
        writer.writeheader()
        writer.writerows({"fold": fold, "sample_id": i, **{f"p_{m}": v for m, v in p.items()}} for i in sample_ids)
    return path


def test_fusion_targets_pull_mumus_trained_fusion_weights_toward_them(tiny_demo, tmp_path):
    """Targets that trust only the phone's accelerometer: trained with them, SM-Fusion gives it most of the
    weight on the training samples; trained toward equal weights, it does not. The file has rows for the training
    samples only: validation and testing must not look for targets."""
    from mumu.rundata import prepare_data, split_samples

    (split,) = split_samples(prepare_data(tiny_demo.config()))
    train_ids = [s.sample_id for s in split.train]
    targets = write_fusion_targets(tmp_path / "targets.csv", train_ids, {"rgb_cam1": 0, "acc_phone": 1, "gyro": 0})
    share = {}
    for name, given in (("equal", None), ("targets", str(targets))):
        cfg = tiny_demo.config(tmp_path / name, fusion_kl=10.0, fusion_targets=given, max_epochs=8, lr=3e-2)
        train_once(cfg, progress=False)
        run = load_run(cfg.run_dir)
        acc = run.module.model.modalities.index("acc_phone")
        share[name] = torch.cat([run.predict(b).attention["sm"][:, acc] for b in run.loader("train")]).mean().item()
    assert share["equal"] < 0.45 and share["targets"] > 0.6, share
    assert load_run(tmp_path / "targets").config.fusion_targets == str(targets)


def test_each_training_sample_is_pulled_toward_its_own_fusion_target(tiny_demo):
    """Targets that differ by sample: a batch's term is the model's KL to each row's own target (the test above
    gives every sample the same target, so it cannot see rows paired with the wrong targets)."""
    from mumu.module import MumuModule
    from mumu.rundata import prepare_data

    cfg = tiny_demo.config(fusion_kl=1.0, dropout=0.0)
    data = prepare_data(cfg)
    batch = next(iter(data.loader(data.samples[:6], batch_size=6)))
    targets = torch.nn.functional.one_hot(torch.arange(6) % 3, 3).float() * 0.9 + 0.05  # (B, M), one per sample
    torch.manual_seed(0)
    module = MumuModule(cfg.to_dict(), [s.to_dict() for s in data.specs], data.activity_names,
                        data.group_names).train()
    module.set_fusion_targets({i: t.tolist() for i, t in zip(batch["sample_id"], targets)})
    with torch.no_grad():
        got = module(batch).fusion_kl
        expected = module.model(module.standardise(module.features(batch)), batch["lengths"], targets).fusion_kl
    torch.testing.assert_close(got, expected)


def test_fusion_targets_files_that_cannot_serve_are_named_before_training(tiny_demo, tmp_path):
    from mumu.rundata import prepare_data

    samples = [s.sample_id for s in prepare_data(tiny_demo.config()).samples]
    full = {"rgb_cam1": 0.5, "acc_phone": 0.5, "gyro": 0.5}
    session = "cross_session"
    for name, ids, p, fold, message in (
            ("lacking.csv", samples[1:], full, session, f"no row for 1 of the .* \\(first: {samples[0]}\\)"),
            ("other_fold.csv", samples, full, "fold_s1", "no row for"),
            ("no_gyro.csv", samples, {"rgb_cam1": 0.5, "acc_phone": 0.5}, session, "lacks column\\(s\\) p_gyro"),
            ("out_of_range.csv", samples, {**full, "gyro": 1.5}, session, "line 2: p values must be numbers"),
            ("not_a_number.csv", samples, {**full, "gyro": "high"}, session, "line 2: p values must be numbers"),
            ("twice.csv", samples + samples[:1], full, session, f"a second row for sample {samples[0]}")):
        path = write_fusion_targets(tmp_path / name, ids, p, fold)
        cfg = tiny_demo.config(tmp_path / name.replace(".csv", ""), fusion_kl=1.0, fusion_targets=str(path))
        with pytest.raises(MumuError, match=f"fusion targets file {path}.*{message}"):
            train_once(cfg, progress=False)
        assert not cfg.run_dir.exists()  # refused before anything is written
    short = tmp_path / "short.csv"  # a row cut short: its gyro field is absent
    short.write_text(f"fold,sample_id,p_rgb_cam1,p_acc_phone,p_gyro\n{session},{samples[0]},0.5,0.5\n")
    with pytest.raises(MumuError, match=f"fusion targets file {short}, line 2: p values must be numbers"):
        train_once(tiny_demo.config(tmp_path / "s", fusion_kl=1.0, fusion_targets=str(short)), progress=False)
    with pytest.raises(MumuError, match="fusion targets file .*missing.csv does not exist"):
        train_once(tiny_demo.config(tmp_path / "m", fusion_kl=1.0, fusion_targets=str(tmp_path / "missing.csv")),
                   progress=False)


def test_overwrite_with_inputs_that_cannot_serve_keeps_the_old_run(tiny_demo, tmp_path):
    cfg = tiny_demo.config(tmp_path / "kept", max_epochs=1)
    train_once(cfg, progress=False)
    for bad, message in ((dict(fusion_kl=1.0, fusion_targets=str(tmp_path / "missing.csv")), "does not exist"),
                         (dict(cache=str(tmp_path / "no_cache.zarr")), "no_cache.zarr")):
        with pytest.raises(MumuError, match=message):
            train_once(tiny_demo.config(cfg.run_dir, max_epochs=1, **bad), overwrite=True, progress=False)
        assert (cfg.run_dir / "metrics.json").is_file()  # refused before the old run was deleted
    for bad in (dict(strategy="foo"), dict(accelerator="gpu") if not torch.cuda.is_available() else {}):
        if bad:
            with pytest.raises(MumuError, match=f"{next(iter(bad.values()))}.*Lightning refuses them"):
                train_once(tiny_demo.config(cfg.run_dir, max_epochs=1, **bad), overwrite=True, progress=False)
            assert (cfg.run_dir / "metrics.json").is_file()


def test_overwrite_refuses_a_folder_that_is_not_a_run_and_deletes_nothing(tiny_demo, tmp_path):
    data = tmp_path / "my_dataset"
    (data / "video").mkdir(parents=True)
    (data / "notes.txt").write_text("keep me")
    with pytest.raises(MumuError, match=f"{data} is not a mumu run .*--overwrite deletes runs only"):
        train_once(tiny_demo.config(data, max_epochs=1), overwrite=True, progress=False)
    assert (data / "notes.txt").read_text() == "keep me" and (data / "video").is_dir()


def test_samples_without_any_chosen_modality_are_left_out_and_reported(tmp_path):
    """A sample whose only chosen stream failed (here an empty gyro CSV, which indexing skips) used to crash
    training mid-epoch with a ValueError naming no sample; cache and raw training now leave it out, say so
    before training and record it, and raw training lists the file indexing skipped."""
    from pipeline.datasets import build_index
    from pipeline.demo import write_demo_dataset
    from pipeline.extract import ExtractSettings, run_extract
    from pipeline.modalities import select_modalities

    root = write_demo_dataset(tmp_path / "demo", n_subjects=3, n_sessions=1, n_frames=9, frame_size=32)
    broken = sorted((root / "sensors" / "gyro_clip").rglob("*.csv"))[0]
    broken.write_text("")
    samples = build_index("demo", root).samples
    lacking = [s.sample_id for s in samples if not s.paths.get("gyro")]
    assert len(lacking) == 1
    spoiled = next(s for s in samples if s.paths.get("gyro"))  # indexing passes its files, extraction fails them all
    for name in ("acc_phone", "gyro"):
        path = Path(spoiled.paths[name])
        path.write_text(path.read_text().splitlines()[0] + "\n" + "not,a,row\n" * 10)  # one row: not one window
    run_extract(samples, "demo", select_modalities("demo", "acc_phone,gyro"), tmp_path / "c.zarr", ExtractSettings(),
                show_progress=False)
    common = ["--params", "none", "--dataset", "demo", "--data-root", str(root), "--cache", str(tmp_path / "c.zarr"),
              "--modalities", "gyro", "--protocol", "cross_subject", "--max-epochs", "1", "--embed-dim", "8",
              "--accelerator", "cpu", "--num-workers", "0"]
    for source in ("--from-cache", "--from-raw"):
        run_dir = tmp_path / source
        result = CliRunner().invoke(train_command, [*common, source, "--out", str(run_dir)])
        assert result.exit_code == 0, result.output
        report = json.loads((run_dir / "input_report.json").read_text())
        if source == "--from-cache":  # the spoiled sample is unusable in the cache: before, left out unsaid
            assert "2 samples have none of the chosen modalities" in result.output, result.output
            assert sorted(report["left_out"]) == sorted(lacking + [spoiled.sample_id])
            assert "nothing usable in the cache" in report["left_out"][spoiled.sample_id]
        else:
            assert f"1 samples have none of the chosen modalities and are left out of every split: {lacking[0]}" \
                in result.output
            assert list(report["left_out"]) == lacking
        tested = [row["sample_id"] for row in read_predictions(run_dir)]
        assert lacking[0] not in tested and tested
        if source == "--from-raw":
            assert "skipped 1 files" in result.output and str(broken) in result.output
            assert [f["path"] for f in report["skipped_files"]] == [str(broken)]


def test_a_sensors_parts_train_and_evaluate_as_modalities_of_their_own(tmp_path):
    """UTD-MHAD's inertial file holds an accelerometer and a gyroscope: `--modalities skeleton,inertial_acc,
    inertial_gyro` extracts the inertial stream once, reads each part as its three channels (the same from the
    cache and from raw files), and trains and evaluates a model fusing three modalities."""
    import numpy as np

    from mumu.config import resolve_config
    from mumu.evaluate import evaluate_run
    from mumu.rundata import prepare_data
    from pipeline.cache import FeatureCache
    from pipeline.extract import extract_command
    from tests.fixtures import write_utd_mhad

    root = write_utd_mhad(tmp_path / "utd", actions=(1, 8), subjects=(1, 2, 3), trials=(1, 2), absent=())
    cache, parts = tmp_path / "utd.zarr", "skeleton,inertial_acc,inertial_gyro"
    extract = CliRunner().invoke(extract_command, [
        "--params", "none", "--dataset", "utd_mhad", "--data-root", str(root), "--cache", str(cache),
        "--modalities", parts, "--weights", "random", "--workers", "0", "--device", "cpu"])
    assert extract.exit_code == 0, extract.output
    assert [m.name for m in FeatureCache(cache).modalities] == ["skeleton", "inertial"]
    from pipeline.datasets import build_index
    from pipeline.extract import ExtractSettings, run_extract
    from pipeline.modalities import select_modalities
    run_extract(build_index("utd_mhad", root).samples, "utd_mhad", select_modalities("utd_mhad", "inertial_gyro"),
                tmp_path / "gyro.zarr", ExtractSettings(weights="random"), show_progress=False)  # the Python API too
    assert [m.name for m in FeatureCache(tmp_path / "gyro.zarr").modalities] == ["inertial"]

    settings = dict(dataset="utd_mhad", data_root=str(root), cache=str(cache), protocol="odd_even",
                    extract={"weights": "random"})
    whole, from_cache, from_raw = (prepare_data(resolve_config(None, **settings, modalities=modalities, source=source))
                                   for modalities, source in (("skeleton,inertial", "cache"), (parts, "cache"),
                                                              (parts, "raw")))
    assert [s.name for s in from_cache.specs] == ["skeleton", "inertial_acc", "inertial_gyro"]
    inertial = next(iter(whole.loader(whole.samples)))["x"]["inertial"]  # (B, S, W, 6): acc xyz, gyro xyz
    for data in (from_cache, from_raw):
        batch = next(iter(data.loader(data.samples)))
        np.testing.assert_allclose(batch["x"]["inertial_acc"], inertial[..., :3], rtol=1e-6)
        np.testing.assert_allclose(batch["x"]["inertial_gyro"], inertial[..., 3:], rtol=1e-6)

    run_dir = tmp_path / "run"
    trained = CliRunner().invoke(train_command, [
        "--params", "none", "--dataset", "utd_mhad", "--cache", str(cache), "--modalities", parts,
        "--protocol", "odd_even", "--max-epochs", "1", "--embed-dim", "8", "--accelerator", "cpu",
        "--num-workers", "0", "--out", str(run_dir)])
    assert trained.exit_code == 0, trained.output
    assert [s.name for s in load_run(run_dir).data.specs] == ["skeleton", "inertial_acc", "inertial_gyro"]
    metrics, _, _, out = evaluate_run(run_dir, tsne_samples=20)  # noise: the two parts form the non-visual group
    recorded = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(recorded["accuracy"]) and (out / "plots" / "attention.png").is_file()


def test_choosing_a_modality_with_its_own_part_or_an_unknown_part_is_a_clear_error():
    from pipeline.modalities import select_modalities

    with pytest.raises(MumuError, match=r"inertial_acc \(a part of inertial\) chosen with the modality that holds"):
        select_modalities("utd_mhad", "skeleton,inertial,inertial_acc")
    with pytest.raises(MumuError, match=r"no modality inertial_mag; .*\(and the parts inertial_acc, inertial_gyro\)"):
        select_modalities("utd_mhad", "inertial_mag")
    # a repeat trained, then crashed evaluate with an IndexError
    with pytest.raises(MumuError, match=r"modalities inertial_acc, skeleton, inertial_acc: inertial_acc chosen more"):
        select_modalities("utd_mhad", "inertial_acc,skeleton,inertial_acc")


def test_caches_and_runs_without_parts_record_their_modalities_as_before_parts_existed(tiny_demo, learned_run):
    """Readers older than parts build a modality from every recorded field: files that use no parts must not
    record the part fields, or those readers fail with a TypeError on this version's caches and checkpoints."""
    from pipeline.cache import ATTRS_KEY

    from pipeline.modalities import select_modalities

    header = json.loads((tiny_demo.cache / "zarr.json").read_text())["attributes"][ATTRS_KEY]
    checkpoint = torch.load(learned_run[0].run_dir / "checkpoints" / "best.ckpt", map_location="cpu",
                            weights_only=False)
    utd = [s.to_dict() for s in select_modalities("utd_mhad", "skeleton,inertial")]  # inertial has parts
    for recorded in (header["modalities"], checkpoint["hyper_parameters"]["inputs"], utd):
        assert recorded and all(set(m) == {"name", "kind", "joints", "attributes", "rate_hz"} for m in recorded)


@pytest.mark.parametrize("kind", ["zeros", "mean"])
def test_modality_dropout_keeps_a_lost_stream_present_as_the_noise_study_corrupts_it(tiny_demo, kind):
    """A lost stream stays in the fusion, every valid step zeroed or set to the training mean, as the noise
    study's "drop" / "mean" modes leave a corrupted group."""
    from mumu.module import MumuModule
    from mumu.rundata import prepare_data

    data = prepare_data(tiny_demo.config())
    batch = next(iter(data.loader(data.samples[:8], batch_size=8)))
    names = [s.name for s in data.specs]
    present = torch.stack([batch["lengths"][n] > 0 for n in names], dim=1)  # (B, M)
    modules, outs = {}, {}
    for as_ in ("missing", kind):
        torch.manual_seed(0)  # same weights for both
        cfg = tiny_demo.config(modality_dropout=0.99, modality_dropout_as=as_, dropout=0.0)
        modules[as_] = module = MumuModule(cfg.to_dict(), [vars(s) for s in data.specs], data.activity_names,
                                           data.group_names)
        module.fit_input_norm(data.loader(data.samples[:8], batch_size=8))  # training means that are not 0
        module.train()
        for layer in module.modules():  # per-sample outputs: BatchNorm with its running statistics
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                layer.eval()
        torch.manual_seed(1)  # same draw of lost modalities for both
        with torch.no_grad():
            outs[as_] = module(batch)
    lost = present & (outs["missing"].attention["sm"] == 0)  # (B, M) what the draw removed
    assert lost.any(1).sum() >= 4
    assert torch.equal(outs[kind].attention["sm"] > 0, present)  # the lost streams stay in the fusion
    x = {n: batch["x"][n].clone() for n in names}
    for m, n in enumerate(names):
        for b in lost[:, m].nonzero().flatten().tolist():
            x[n][b, :batch["lengths"][n][b]] = 0 if kind == "zeros" else getattr(modules[kind], f"mean_{n}")
    with torch.no_grad():
        expected = modules[kind].eval()({**batch, "x": x})
    torch.testing.assert_close(outs[kind].logits, expected.logits)
    assert not torch.allclose(outs[kind].logits, outs["missing"].logits)


def test_train_command_prints_the_headline(tiny_demo, tmp_path):
    out = tmp_path / "cli"
    params = tmp_path / "params.yaml"
    params.write_text("extract:\n  image_size: 32\n")  # the tiny cache's image size
    args = ["--params", str(params), "--dataset", "demo", "--cache", str(tiny_demo.cache),
            "--protocol", "cross_session", "--modalities", "acc_phone,gyro", "--max-epochs", "1", "--batch-size", "8",
            "--embed-dim", "16", "--max-steps-sensor", "6", "--num-workers", "0", "--accelerator", "cpu",
            "--val-fraction", "0.2", "--select", "last", "--ema-decay", "0.5", "--gm-gate", "sigmoid", "--gm-heads", "2",
            "--gm-merge", "concat", "--fusion-init", "xavier",
            "--fusion-norm", "count", "--modality-dropout", "0.3", "--warmup", "0.2", "--label-smoothing", "0.05",
            "--out", str(out)]
    runner = CliRunner()
    result = runner.invoke(train_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert round(100 * metrics["macro_f1"], 2) != round(100 * metrics["accuracy"], 2)  # else the next proves little
    assert last.startswith(f"test macro-F1 {100 * metrics['macro_f1']:.2f} %, accuracy "
                           f"{100 * metrics['accuracy']:.2f} %") and "(n=24 test samples)" in last, last
    assert metrics["selected_by"] == "last epoch"
    written = (out / "config.yaml").read_text()
    assert all(line in written for line in ("ema_decay: 0.5", "gm_gate: sigmoid", "gm_heads: 2", "gm_merge: concat",
                                          "fusion_init: xavier", "fusion_norm: count", "modality_dropout: 0.3",
                                          "warmup: 0.2", "label_smoothing: 0.05"))
    motion = runner.invoke(train_command, args[:-1] + [str(tmp_path / "motion"), "--motion"])  # reaches the config
    assert motion.exit_code != 0 and "motion channels need the sequence sensor encoder" in motion.output
    kl = runner.invoke(train_command, args[:-1] + [str(tmp_path / "kl"), "--fusion-kl", "0.5"])  # with the sigmoid gate
    assert kl.exit_code != 0 and "gm_gate sigmoid gives GM-Fusion no softmax" in kl.output

    missing = runner.invoke(train_command, args[:5] + [str(tmp_path / "absent.zarr")] + args[6:-1]
                            + [str(tmp_path / "other")])
    assert missing.exit_code != 0 and "absent.zarr does not exist" in missing.output


def test_train_command_shows_lightnings_progress_bar_of_each_epoch(tiny_demo, tmp_path):
    """A training run takes hours: `cli.py train` shows Lightning's bar of the epoch and its batches, also where its
    output is not a terminal (a log file, a batch job)."""
    params = tmp_path / "params.yaml"
    params.write_text("extract:\n  image_size: 32\n")  # the tiny cache's image size
    result = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "train", "--params", str(params), "--dataset", "demo", "--cache",
         str(tiny_demo.cache), "--protocol", "cross_session", "--modalities", "acc_phone,gyro", "--max-epochs", "1",
         "--embed-dim", "16", "--max-steps-sensor", "6", "--num-workers", "0", "--accelerator", "cpu",
         "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr  # Lightning's bar (rich's or tqdm's, whichever is installed): stdout
    assert re.search(r"(?:^|\r)Epoch 0\b.* \d+/\d+ ", output, re.MULTILINE), output[-2000:]  # tqdm's: after \r


def test_activity_table_sets_the_auxiliary_groups_without_reextraction(tiny_demo, tmp_path):
    """A table with other groups for the same activities: MuMu learns and reports those groups from the
    same cache; a table whose ids name other activities is refused, naming the table and a sample."""
    with open(table_path("demo"), newline="") as f:
        shipped = list(csv.DictReader(f))

    def write_table(path, rows):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(shipped[0]))
            writer.writeheader()
            writer.writerows(rows)
        return str(path)

    # activities 0-2 -> group 0 "first", 3-5 -> group 1 "second"
    two_groups = write_table(tmp_path / "two_groups.csv", [
        {**row, "group_id": int(row["activity_id"]) // 3, "group": ("first", "second")[int(row["activity_id"]) // 3]}
        for row in shipped])
    cfg = tiny_demo.config(tmp_path / "run", modalities="acc_phone,gyro", max_epochs=1, activity_table=two_groups)
    train_once(cfg)
    predictions = read_predictions(cfg.run_dir)
    assert {(int(r["label"]), int(r["group"])) for r in predictions} == {(a, a // 3) for a in range(6)}
    assert {int(r["group_pred"]) for r in predictions} <= {0, 1}
    assert f"activity_table: {two_groups}" in (cfg.run_dir / "config.yaml").read_text()

    # the table's groups edited in place: the run learnt the old ones, so --restart-if-changed trains it again
    write_table(two_groups, [{**row, "group_id": int(row["activity_id"]) % 2, "group": ("even", "odd")[
        int(row["activity_id"]) % 2]} for row in shipped])
    epochs = EpochsRun()
    train_once(cfg, restart_if_changed=True, callbacks=[epochs])
    assert epochs.epochs == [0]
    assert {(int(r["label"]), int(r["group"])) for r in read_predictions(cfg.run_dir)} == {(a, a % 2) for a in range(6)}

    # ids 0 and 1 exchanged: the cache's labels would silently mean other activities
    swapped = write_table(tmp_path / "swapped.csv", [{**shipped[0], "activity_id": 1}, {**shipped[1], "activity_id": 0},
                                                     *shipped[2:]])
    with pytest.raises(MumuError, match=r"activity table .*swapped.csv: sample \S+ is activity [01] \('carrying_"):
        train_once(tiny_demo.config(tmp_path / "bad", modalities="acc_phone,gyro", activity_table=swapped))


def test_a_damaged_cache_part_is_one_line_naming_it_also_from_a_loader_worker(tiny_demo, tmp_path):
    """Bytes of a cache chunk overwritten (a bad disk, a half-copied cache): training stops with one line that
    names the part and the cure, even when the read fails in a DataLoader worker process."""
    cache = tmp_path / "demo.zarr"
    shutil.copytree(tiny_demo.cache, cache)
    for chunk in (cache / "parts").glob("part-*/acc_phone/values/c/**/*"):
        if chunk.is_file():  # garbage of the file's own size: a change of size is refused when the cache opens
            chunk.write_bytes((b"not a chunk" * chunk.stat().st_size)[:chunk.stat().st_size])
    params = tmp_path / "params.yaml"
    params.write_text("extract:\n  image_size: 32\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "train", "--params", str(params), "--dataset", "demo", "--cache",
         str(cache), "--protocol", "cross_session", "--modalities", "acc_phone,gyro", "--max-epochs", "1",
         "--embed-dim", "16", "--max-steps-sensor", "6", "--num-workers", "1", "--accelerator", "cpu",
         "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert error.startswith("Error: ") and "/parts/part-" in error and "acc_phone of" in error, error
    assert "delete that folder and rerun the same `cli.py extract`" in error



def test_resume_path_with_several_splits_is_refused_before_anything_is_written(tmp_path):
    """LOSO resumes each unfinished fold from its own last.ckpt; one --resume PATH for all of them is refused, and
    the run's config.yaml (an earlier, unfinished run) is left as it was."""
    from mumu.config import resolve_config, save_config
    from pipeline.datasets import build_index
    from pipeline.extract import ExtractSettings, run_extract
    from pipeline.modalities import dataset_modalities
    from tests.fixtures import write_ucsd_mit

    root = write_ucsd_mit(tmp_path / "ucsd")
    settings = ExtractSettings(weights="random", sensor_window=2, sensor_stride=2)
    run_extract(build_index("ucsd_mit", root).samples, "ucsd_mit", dataset_modalities("ucsd_mit"),
                tmp_path / "ucsd.zarr", settings, show_progress=False)

    def config(lr: float):
        return resolve_config(None, dataset="ucsd_mit", cache=str(tmp_path / "ucsd.zarr"), protocol="loso", lr=lr,
                              accelerator="cpu", num_workers=0, extract={"sensor_window": 2, "sensor_stride": 2},
                              out=str(tmp_path / "run"))

    save_config(config(0.01), tmp_path / "run" / "config.yaml")
    before = (tmp_path / "run" / "config.yaml").read_text()
    checkpoint = tmp_path / "some.ckpt"
    checkpoint.write_bytes(b"")
    with pytest.raises(MumuError, match="--resume PATH is ambiguous with 3 splits"):
        train_once(config(0.5), resume=str(checkpoint), progress=False)
    assert (tmp_path / "run" / "config.yaml").read_text() == before


def test_restart_if_changed_resumes_the_same_run_and_starts_a_changed_one_afresh(tiny_demo, tmp_path, capsys):
    """The DVC stage's mode: a killed run resumes and a finished one is kept, while other settings or other cache
    contents start the run afresh. A source file with a new mtime but the same bytes changes nothing; without the
    flag, changed data is a warning and the finished run is kept."""
    from pipeline.datasets import build_index
    from pipeline.extract import ExtractSettings, run_extract
    from pipeline.modalities import select_modalities
    from tests.fixtures import IMAGE_SIZE

    root = shutil.copytree(tiny_demo.root, tmp_path / "demo")
    cache = tmp_path / "sensors.zarr"

    def extract() -> None:
        gc.collect()  # the finished training's cache readers let go (a training command's do at its exit)
        run_extract(build_index("demo", root).samples, "demo", select_modalities("demo", "acc_phone,gyro"), cache,
                    ExtractSettings(image_size=IMAGE_SIZE, weights="random", part_size=16), show_progress=False)

    def train(restart: bool = True, **overrides) -> list[int]:
        """Train into the one run directory; the epochs this call ran."""
        cfg = tiny_demo.config(tmp_path / "run", **{"data_root": str(root), "cache": str(cache),
                                                     "modalities": "acc_phone,gyro", **overrides})
        epochs = EpochsRun()
        train_once(cfg, restart_if_changed=restart, callbacks=[epochs], progress=False)
        return epochs.epochs

    extract()
    with pytest.raises(SystemExit):
        train_once(tiny_demo.config(tmp_path / "run", data_root=str(root), cache=str(cache), modalities="acc_phone,gyro"),
                   restart_if_changed=True, callbacks=[KillAtSecondEpoch()], progress=False)
    assert train() == [1]  # resumed after the kill: only the missing epoch
    assert train() == []  # finished: kept
    capsys.readouterr()

    csv_files = sorted((root / "sensors" / "acc_phone_clip").rglob("*.csv"))
    os.utime(csv_files[0], ns=(10**18, 10**18))  # new mtime, same bytes: the cache keeps the part, the run too
    extract()
    assert train() == []
    moved = shutil.copytree(root, tmp_path / "moved")  # so does the dataset moved elsewhere
    gc.collect()
    run_extract(build_index("demo", moved).samples, "demo", select_modalities("demo", "acc_phone,gyro"), cache,
                ExtractSettings(image_size=IMAGE_SIZE, weights="random", part_size=16), show_progress=False)
    assert train(data_root=str(moved)) == []
    # how the cache was computed (extraction batch size) is no setting of the run either
    assert train(extract={"image_size": IMAGE_SIZE, "weights": "random", "batch_size": 7}) == []
    assert "afresh" not in capsys.readouterr().err
    with pytest.raises(MumuError, match="one machine"):  # several nodes' ranks start at once: none may delete
        train(num_nodes=2)

    shutil.copyfile(csv_files[1], csv_files[0])  # other bytes: extract recomputes that part
    extract()
    assert train(restart=False) == []  # the plain command warns and keeps the finished run
    assert "data changed since it began" in capsys.readouterr().err
    assert train() == [0, 1]
    assert "its data changed since it began; starting it afresh" in capsys.readouterr().err

    assert train(lr=0.5) == [0, 1]  # other settings: afresh, not refused
    assert "its settings changed" in capsys.readouterr().err
    assert load_run(tmp_path / "run").config.lr == 0.5


def test_raw_training_records_an_unusable_input_and_warns(tiny_demo, tmp_path, capsys):
    """From raw files, a video that passes the index's header check but does not decode is used as a missing
    modality (as in a cache); the run records the reason against the file and says so. With no other usable input
    (chosen alone, or its other chosen file absent) the sample is left out of training and testing, as a cache
    leaves it out, and said to be: not a crash, even where it is a whole batch of its own (batch size 1, each test
    subject's statistics adapted to, evaluate)."""
    from mumu.evaluate import evaluate_run

    root = shutil.copytree(tiny_demo.root, tmp_path / "demo")
    video = sorted((root / "video").glob("subject1/cam1/*/session2/*.mp4"))[0]  # a test sample (cross_session)
    parts = video.relative_to(root / "video" / "subject1" / "cam1").with_suffix("").parts  # scene, session, name
    sample_id = "_".join(["subject1", *parts]).lower()
    video.write_bytes(video.read_bytes()[:600])  # the MP4 header survives, the frames do not

    def train(name: str, modalities: str, **settings) -> dict:
        result = train_once(tiny_demo.config(tmp_path / name, source="raw", data_root=str(root), modalities=modalities,
                                             max_epochs=1, **settings), progress=False)
        return result.metrics

    train("both", "rgb_cam1,acc_phone")
    recorded = list((tmp_path / "both" / "input_problems").glob("*.json"))
    assert [record.stem for record in recorded] == [sample_id]
    reasons = json.loads(recorded[0].read_text())
    assert list(reasons) == ["rgb_cam1"] and reasons["rgb_cam1"].startswith(f"{video}: ")
    warned = capsys.readouterr().err
    assert "1 samples had unusable raw inputs" in warned and "left out" not in warned
    assert sample_id in [row["sample_id"] for row in read_predictions(tmp_path / "both")]

    left_out = f"1 of them had no usable input of the chosen modalities and were left out of training and testing: " \
               f"{sample_id}"
    metrics = train("rgb", "rgb_cam1", batch_size=1, adapt_bn=True)
    assert left_out in capsys.readouterr().err
    tested = [row["sample_id"] for row in read_predictions(tmp_path / "rgb")]
    assert sample_id not in tested and len(tested) == metrics["n_samples"] == 23  # the 24 test samples less it
    evaluated, _, _, _ = evaluate_run(tmp_path / "rgb", tmp_path / "rgb-eval", tsne_samples=10,
                                   adapt_by_condition=False)  # each subject's batches adapted to together
    assert evaluated["n_samples"] == 23 and evaluated["accuracy"] == pytest.approx(metrics["accuracy"])
    assert f"1 test samples have no usable input of the chosen modalities and are left out, as in training: " \
           f"{sample_id}" in capsys.readouterr().err

    (root / "sensors" / "acc_phone_clip" / "subject1" / Path(*parts)).with_suffix(".csv").unlink()
    train("absent", "rgb_cam1,acc_phone")
    assert left_out in capsys.readouterr().err
    assert sample_id not in [row["sample_id"] for row in read_predictions(tmp_path / "absent")]


def test_a_raw_test_or_validation_set_with_no_usable_sample_is_a_clear_error(tiny_demo, tmp_path):
    """Had every sample of a part left out, its metrics would have been zeros (and NaN losses) that a LOSO mean
    averages in, or no epoch to select: an error says why instead, in training and in a later evaluate."""
    from mumu.evaluate import evaluate_run

    root = shutil.copytree(tiny_demo.root, tmp_path / "demo")

    def train(name: str) -> None:
        train_once(tiny_demo.config(tmp_path / name, source="raw", data_root=str(root), modalities="rgb_cam1",
                                    max_epochs=1), progress=False)

    def damage(session: str) -> None:  # every cam1 video of that session: its header survives, its frames do not
        for video in (root / "video").glob(f"*/cam1/*/{session}/*.mp4"):
            video.write_bytes(video.read_bytes()[:600])

    train("before")  # finished while the videos were good
    damage("session2")  # the test session (cross_session)
    with pytest.raises(MumuError, match=r"no test sample has a usable input of the chosen modalities"):
        evaluate_run(tmp_path / "before", tmp_path / "eval", tsne_samples=10)
    with pytest.raises(MumuError, match=r"split cross_session: no test sample has a usable input of the chosen"):
        train("test-lost")
    assert not (tmp_path / "test-lost" / "metrics.json").exists()
    damage("session1")
    with pytest.raises(MumuError, match=r"no validation sample has a usable input of the chosen modalities"):
        train("all-lost")


def test_a_training_step_on_an_empty_batch_leaves_the_weights_as_they_were(tiny_demo):
    """A batch whose samples all failed to load trains nothing: AdamW would still step along its momentum."""
    from mumu.module import MumuModule
    from mumu.rundata import prepare_data

    data = prepare_data(tiny_demo.config(modalities="acc_phone,gyro"))
    module = MumuModule(data.cfg.to_dict(), [s.to_dict() for s in data.specs], data.activity_names, data.group_names)
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=0.01)
    loader = data.loader(data.samples[:4])

    def step(batch: dict) -> None:
        optimizer.zero_grad()
        module.training_step(batch, 0).backward()
        module.on_before_optimizer_step(optimizer)
        optimizer.step()

    step(next(iter(loader)))  # a real step: AdamW now has momentum
    before = {name: value.clone() for name, value in module.state_dict().items()}
    step(data.collate()([]))  # an empty batch, as PadCollate gives one whose samples all failed to load
    assert all(torch.equal(before[name], value) for name, value in module.state_dict().items())


def test_loso_tests_each_subject_once_pools_the_folds_resumes_a_missing_one_and_evaluate_agrees(tiny_utd, tmp_path):
    """The UTD-MHAD recipe's protocol end to end: one fold per held-out subject, every sample tested once (by the
    fold that held its subject out), the run's metrics the mean over folds, a rerun trains only a fold that is
    missing (and gets the same numbers), --overwrite trains every fold again, and evaluate pools the same folds."""
    from mumu.evaluate import evaluate_command

    cfg = tiny_utd.config(tmp_path / "run")
    first = train_once(cfg, progress=False)
    run = tmp_path / "run"
    assert sorted(p.parent.name for p in run.glob("fold_s*/metrics.json")) == ["fold_s1", "fold_s2", "fold_s3"]
    rows = read_predictions(run)
    assert len(rows) == len({r["sample_id"] for r in rows}) == first.metrics["n_samples"] == 35
    assert all(r["fold"] == f"fold_s{r['subject']}" for r in rows)  # tested by the fold that held it out
    fold_accuracy = [first.metrics["folds"][f"fold_s{s}"]["accuracy"] for s in (1, 2, 3)]
    assert first.metrics["accuracy"] == pytest.approx(sum(fold_accuracy) / 3)

    shutil.rmtree(run / "fold_s3")  # as if the run had been stopped before this fold
    (run / "metrics.json").unlink()
    epochs = EpochsRun()
    again = train_once(cfg, callbacks=[epochs], progress=False)
    assert epochs.epochs == [0, 1]  # that fold only
    assert again.metrics == first.metrics and read_predictions(run) == rows

    epochs = EpochsRun()
    train_once(cfg, overwrite=True, callbacks=[epochs], progress=False)
    assert epochs.epochs == [0, 1] * 3

    result = CliRunner().invoke(evaluate_command, [str(run), "--out", str(tmp_path / "eval"), "--params", "none",
                                                   "--tsne-samples", "20"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["folds"] == 3 and evaluated["n_samples"] == 35
    assert "mean ± std (population) over folds" in result.output  # which std the summary line gives
    pooled = sum(r["label"] == r["pred"] for r in read_predictions(run)) / len(rows)
    assert evaluated["accuracy"] == pytest.approx(pooled)  # the clean pass pools the folds' predictions

    (run / "fold_s2").rename(tmp_path / "fold_s2")  # a fold folder lost after training: not scored as the run
    result = CliRunner().invoke(evaluate_command, [str(run), "--out", str(tmp_path / "eval2"), "--params", "none"])
    assert result.exit_code == 2 and f"{run}: 1 of its 3 folds have no folder with split.json (fold_s2)" \
        in result.output, result.output
    assert evaluated["fold_mean"]["accuracy"] == pytest.approx(first.metrics["accuracy"])


def test_a_restart_killed_while_it_clears_the_old_run_leaves_none_of_it_to_the_new_settings(tiny_utd, tmp_path,
                                                                                          monkeypatch):
    """--restart-if-changed empties RUN_DIR before training under the new settings. Killed part way, in the worst
    order (config.yaml listed and deleted first), the old folds must not pass for the new run's finished folds."""
    run = tmp_path / "run"
    train_once(tiny_utd.config(run, max_epochs=1), progress=False)
    listed = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(sorted(listed(self),
                                                                          key=lambda e: e.name != "config.yaml")))
    unlink = Path.unlink

    def killed_after_config(self, *args, **kwargs):
        unlink(self, *args, **kwargs)
        if self == run / "config.yaml":
            raise SystemExit("killed")

    monkeypatch.setattr(Path, "unlink", killed_after_config)
    with pytest.raises(SystemExit):
        train_once(tiny_utd.config(run, max_epochs=1, lr=0.01), restart_if_changed=True, progress=False)
    monkeypatch.setattr(Path, "unlink", unlink)
    epochs = EpochsRun()
    train_once(tiny_utd.config(run, max_epochs=1, lr=0.01), restart_if_changed=True, callbacks=[epochs],
               progress=False)
    assert epochs.epochs == [0, 0, 0]  # every fold trained under the new settings
    assert all(load_config(run / f"fold_s{s}" / "config.yaml").lr == 0.01 for s in (1, 2, 3))


def test_a_loso_run_says_which_fold_it_finished_and_how_it_scored(tmp_path, monkeypatch):
    """Lightning's output looks the same for every fold: a newcomer could not tell how far an 8-fold run was. Each
    fold's line carries that fold's own scores (given known, distinct ones: 1-epoch folds all score alike)."""
    import mumu.train
    from pipeline.datasets import build_index
    from pipeline.extract import ExtractSettings, run_extract
    from pipeline.modalities import select_modalities
    from tests.fixtures import write_utd_mhad

    real, scores = mumu.train.train_split, iter([(0.11, 0.52), (0.23, 0.64), (0.35, 0.76)])

    def scored(*args, **kwargs):
        f1, accuracy = next(scores)
        return {**real(*args, **kwargs), "macro_f1": f1, "accuracy": accuracy}

    monkeypatch.setattr(mumu.train, "train_split", scored)
    root = write_utd_mhad(tmp_path / "utd", subjects=(1, 2, 3))
    run_extract(build_index("utd_mhad", root).samples, "utd_mhad", select_modalities("utd_mhad", "skeleton,inertial"),
                tmp_path / "utd.zarr", ExtractSettings(), show_progress=False)
    result = CliRunner().invoke(train_command, [
        "--params", "none", "--dataset", "utd_mhad", "--cache", str(tmp_path / "utd.zarr"), "--protocol", "loso",
        "--modalities", "skeleton,inertial", "--max-epochs", "1", "--embed-dim", "8", "--num-workers", "0",
        "--accelerator", "cpu", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    for number, (f1, accuracy) in enumerate([(11.0, 52.0), (23.0, 64.0), (35.0, 76.0)], 1):
        fold = json.loads((tmp_path / "run" / f"fold_s{number}" / "metrics.json").read_text())
        assert (f"fold_s{number} ({number} of 3): test macro-F1 {f1:.1f} %, accuracy {accuracy:.1f} % "
                f"({fold['n_samples']} samples)") in result.output
