"""`cli.py evaluate RUN_DIR`: the metrics agree with training's, the figures are written, errors are clear."""
from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from mumu import plots
from mumu.evaluate import Inference, compute_metrics, evaluate_command, infer, infer_folds
from mumu.rundir import load_run
from mumu.plots import plot_attention

PNGS = ("confusion.png", "per_class_f1.png", "per_subject.png", "attention.png", "tsne.png")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained_run(tiny_demo, tmp_path_factory):
    """MuMu trained on the tiny demo cache (cross_session: every subject in train and test) until it learns: a
    model that predicts one class whatever its input would score corrupted inputs as clean ones."""
    from mumu.train import train_once

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run") / "mumu"
    return train_once(tiny_demo.config(out, max_epochs=15, batch_size=4, lr=1e-2, dropout=0.0), progress=False)


@pytest.fixture(scope="module")
def evaluated(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    result = CliRunner().invoke(evaluate_command, [str(trained_run.run_dir), "--out", str(out), "--params", "none",
                                                   "--tsne-samples", "40"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_clean_metrics_match_the_training_run(trained_run, evaluated):
    out, _ = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    # evaluation re-runs the best checkpoint on the test set: same numbers as `train` reported
    assert metrics["macro_f1"] == pytest.approx(trained_run.metrics["macro_f1"], abs=1e-6)
    assert metrics["accuracy"] == pytest.approx(trained_run.metrics["accuracy"], abs=1e-6)
    assert metrics["group_accuracy"] == pytest.approx(trained_run.metrics["group_accuracy"], abs=1e-6)
    n = trained_run.metrics["n_samples"]
    assert metrics["n_samples"] == n
    for condition in ("noisy", "noisy_visual", "noisy_non_visual"):
        assert metrics[condition]["n_samples"] == n
    assert sum(g["n_samples"] for g in metrics["per_group"].values()) == n
    # a short run's accuracy may not move under noise: the clean pass's features are the model's on clean inputs,
    # and every noisy pass's differ
    (fold,), run = infer_folds(trained_run.run_dir, "drop", 1.0, 0)
    with torch.no_grad():
        clean = {i: f for b in run.loader("test") for i, f in zip(b["sample_id"], run.predict(b).fused.numpy())}
    np.testing.assert_allclose(fold["clean"].fused, np.stack([clean[i] for i in fold["clean"].sample_ids]), atol=1e-5)
    for condition in ("noisy", "noisy_visual", "noisy_non_visual"):
        assert not np.allclose(fold[condition].fused, fold["clean"].fused), condition


def test_metrics_read_each_condition_from_its_own_predictions():
    labels = np.array([0, 1, 2, 0, 1, 2])
    names, group_names, class_groups = ["a", "b", "c"], ["g"], [0, 0, 0]

    def inference(preds: np.ndarray) -> Inference:
        n = len(labels)
        return Inference([str(i) for i in range(n)], labels, np.zeros(n, int), preds, None, {}, np.zeros((n, 2, 4)),
                         np.zeros((n, 4)))

    results = {"clean": inference(labels), "noisy": inference((labels + 1) % 3),
               "noisy_visual": inference(np.where(labels == 0, 0, 2)), "noisy_non_visual": inference(np.zeros(6, int))}
    metrics, _ = compute_metrics(results, names, group_names, class_groups)
    assert metrics["accuracy"] == 1.0 and metrics["noisy"]["accuracy"] == 0.0
    assert metrics["noisy_visual"]["accuracy"] == pytest.approx(4 / 6)
    assert metrics["noisy_non_visual"]["accuracy"] == pytest.approx(2 / 6)


def test_noise_mean_changes_only_the_noisy_conditions(trained_run, evaluated, tmp_path):
    out = tmp_path / "eval-mean"
    result = CliRunner().invoke(evaluate_command, [str(trained_run.run_dir), "--out", str(out), "--params", "none",
                                                   "--tsne-samples", "40", "--noise", "mean"])
    assert result.exit_code == 0, result.output
    drop = json.loads((evaluated[0] / "metrics.json").read_text())
    mean = json.loads((out / "metrics.json").read_text())
    assert mean["noise"] == {"mode": "mean", "level": 1.0} and drop["noise"]["mode"] == "drop"
    for clean in ("accuracy", "macro_f1", "group_accuracy", "per_group"):  # the clean pass is the same
        assert mean[clean] == drop[clean], clean
    # the corrupted group reaches the model as its training mean: its unimodal features are those of a
    # sample whose every step is that mean, and differ from those of zeroed steps
    run = load_run(trained_run.run_dir)
    visual = [m for m, spec in enumerate(run.data.specs) if spec.visual]
    by_mode = {mode: infer(run, "visual", mode).unimodal[:, visual] for mode in ("drop", "mean")}  # (N, V, D)
    assert not np.allclose(by_mode["drop"], by_mode["mean"])
    assert np.allclose(by_mode["mean"], by_mode["mean"][:1], atol=1e-5)  # the same constant input in every sample


def test_per_class_rows_and_confusion_csv_cover_the_test_set(trained_run, evaluated):
    out, _ = evaluated
    per_class = json.loads((out / "per_class.json").read_text())["per_class"]
    assert [r["activity"] for r in per_class] == trained_run.metrics["activities"]
    assert sum(r["support"] for r in per_class) == trained_run.metrics["n_samples"]
    assert np.mean([r["f1"] for r in per_class]) == pytest.approx(trained_run.metrics["macro_f1"], abs=1e-6)
    with open(out / "confusion.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == trained_run.metrics["n_samples"]
    assert {r["actual"] for r in rows} <= set(trained_run.metrics["activities"])


def test_per_subject_rows_agree_with_trainings_predictions_and_add_up_to_the_whole(trained_run, evaluated):
    out, output = evaluated
    rows = json.loads((out / "per_subject.json").read_text())["per_subject"]
    metrics = json.loads((out / "metrics.json").read_text())
    with open(trained_run.run_dir / "predictions.csv", newline="") as f:
        predicted = list(csv.DictReader(f))
    by_subject = {}
    for row in predicted:
        by_subject.setdefault(int(row["subject"]), []).append(row["label"] == row["pred"])
    assert [row["subject"] for row in rows] == sorted(by_subject) and len(rows) > 1  # cross_session: all subjects
    for row in rows:
        assert row["n_samples"] == len(by_subject[row["subject"]])
        assert row["accuracy"] == pytest.approx(np.mean(by_subject[row["subject"]]), abs=1e-9)
    n = np.array([row["n_samples"] for row in rows])
    assert n.sum() == metrics["n_samples"]
    for condition, key in (("accuracy", "accuracy"), ("noisy", "noisy_accuracy"), ("noisy_visual",
                                                                                   "noisy_visual_accuracy")):
        pooled = metrics[condition] if condition == "accuracy" else metrics[condition]["accuracy"]
        assert np.dot(n, [row[key] for row in rows]) / n.sum() == pytest.approx(pooled, abs=1e-9), condition
    weakest = min(rows, key=lambda row: row["accuracy"])
    assert f"lowest subject acc.: subject {weakest['subject']} {100 * weakest['accuracy']:.1f}" in output


def test_figures_are_written_and_summary_says_where(evaluated):
    out, output = evaluated
    for name in PNGS:
        with Image.open(out / "plots" / name) as image:
            assert min(image.size) >= 300, (name, image.size)  # a real figure, not an empty canvas
            assert np.asarray(image.convert("L")).std() > 5, name  # it has content
    assert str(out) in output and "macro-F1" in output and "noisy visual" in output


def test_attention_plot_marks_corrupted_modalities_in_red(tmp_path):
    weights = {"SM-Fusion": np.array([[0.7, 0.3]]), "GM-Fusion": np.array([[0.4, 0.6]])}

    def red_pixels(corrupted: list[str]) -> int:
        path = plot_attention(["carrying_heavy"], ["rgb_cam1", "gyro"],
                              [("clean input", weights, []), ("noisy non-visual", weights, corrupted)],
                              tmp_path / "a.png", "test")
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB")).astype(int)
        return int(((rgb[..., 0] > 180) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)).sum())  # the bars are blue, orange

    assert red_pixels(["gyro"]) > 20 and red_pixels([]) == 0


@pytest.mark.parametrize("block, options, message", [
    ("tsne_samples: abc", [], "p.yaml: evaluate.tsne_samples must be a whole number, got 'abc'"),
    ("adapt_by_condition: 'no'", [], "p.yaml: evaluate.adapt_by_condition must be true or false, got 'no'"),
    ("noise_level: 2", [], "p.yaml (evaluate:): noise level must lie in [0, 1], got 2"),
    ("noise: shift", ["--noise-level", "1"], "p.yaml (evaluate:) + command line: noise 'shift' delays a stream"),
    ("nois: drop", [], "p.yaml: unknown evaluate: setting(s) nois (did you mean noise?)"),
])
def test_a_bad_evaluate_setting_in_the_params_file_is_named_before_the_run_loads(tmp_path, block, options, message):
    """Values in the evaluate: block were only checked for unknown keys: a wrong type failed after inference with a
    bare TypeError, and `adapt_by_condition: 'no'` was taken as true."""
    params = tmp_path / "p.yaml"
    params.write_text(f"evaluate:\n  {block}\n")
    result = CliRunner().invoke(evaluate_command, [str(tmp_path / "no-run"), "--params", str(params), *options])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_noise_shift_from_the_params_file_takes_its_level_from_the_command_line(trained_run, tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("evaluate:\n  noise: shift\n")
    out = tmp_path / "eval"
    result = CliRunner().invoke(evaluate_command, [str(trained_run.run_dir), "--params", str(params),
                                                   "--noise-level", "0.25", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["noise"] == {"mode": "shift", "level": 0.25}


def test_not_a_run_directory_is_one_clear_line(tmp_path):
    result = CliRunner().invoke(evaluate_command, [str(tmp_path), "--params", "none"])
    assert not (tmp_path / "eval").exists()  # refused before anything was written
    assert str(tmp_path) in result.output
    assert result.exit_code == 2  # a user error (MumuError): its message, no traceback
    result = CliRunner().invoke(evaluate_command, [str(tmp_path / "typo"), "--params", "none"])
    assert result.exit_code == 2 and f"{tmp_path / 'typo'} does not exist" in result.output, result.output


def test_a_run_that_has_not_written_a_split_yet_is_one_clear_line(trained_run, tmp_path):
    started = tmp_path / "started"
    started.mkdir()
    (started / "config.yaml").write_bytes((trained_run.run_dir / "config.yaml").read_bytes())
    result = CliRunner().invoke(evaluate_command, [str(started), "--params", "none"])
    assert "has not finished training (no split.json)" in result.output  # it said "no metrics.json"
    assert result.exit_code == 2  # a user error (MumuError): its message, no traceback


def test_a_damaged_split_file_a_lost_cache_and_an_unwritable_out_are_named(trained_run, tmp_path):
    """These surfaced as a bare JSONDecodeError, as advice to pass an option evaluate lacks (--cache), and as
    NotADirectoryError after the whole evaluation had run."""
    import yaml

    damaged = tmp_path / "damaged"
    shutil.copytree(trained_run.run_dir, damaged, symlinks=True)
    (damaged / "split.json").write_text("{")
    result = CliRunner().invoke(evaluate_command, [str(damaged), "--params", "none"])
    assert result.exit_code == 2 and f"{damaged / 'split.json'}: cannot be read" in result.output, result.output

    moved = tmp_path / "moved"
    shutil.copytree(trained_run.run_dir, moved, symlinks=True)
    config = yaml.safe_load((moved / "config.yaml").read_text())
    config["cache"] = str(tmp_path / "gone.zarr")
    (moved / "config.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(evaluate_command, [str(moved), "--params", "none"])
    assert result.exit_code == 2 and "gone.zarr, which does not exist" in result.output, result.output
    assert "--cache" not in result.output

    (tmp_path / "a_file").write_text("")
    result = CliRunner().invoke(evaluate_command, [str(trained_run.run_dir), "--params", "none", "--out",
                                                   str(tmp_path / "a_file" / "eval")])
    assert result.exit_code != 0 and "a_file" in str(result.exception or result.output)
    assert "evaluate (4 conditions)" not in result.output  # refused before the test set was passed over

    trained_metrics = (trained_run.run_dir / "metrics.json").read_bytes()
    result = CliRunner().invoke(evaluate_command, [str(trained_run.run_dir), "--params", "none", "--out",
                                                   str(trained_run.run_dir)])
    assert result.exit_code == 2 and "is the run's own folder" in result.output, result.output
    assert (trained_run.run_dir / "metrics.json").read_bytes() == trained_metrics  # the run stays finished

    lost = tmp_path / "lost"  # a test sample the cache no longer holds (rebuilt from fewer files): a KeyError before
    shutil.copytree(trained_run.run_dir, lost, symlinks=True)
    split = json.loads((lost / "split.json").read_text())
    (lost / "split.json").write_text(json.dumps({**split, "test": [*split["test"], "subject9_gone"]}))
    result = CliRunner().invoke(evaluate_command, [str(lost), "--params", "none"])
    assert result.exit_code == 2 and f"{lost / 'split.json'}: 1 of its test samples (subject9_gone) are not in " \
        in result.output, result.output


def test_an_unknown_activity_for_the_plot_is_refused_before_the_test_passes(trained_run, tmp_path, monkeypatch):
    import mumu.evaluate

    def passes(*args, **kwargs):
        raise AssertionError("the test set was passed over before the activity names were checked")

    monkeypatch.setattr(mumu.evaluate, "infer_folds", passes)
    result = CliRunner().invoke(evaluate_command, [str(trained_run.run_dir), "--params", "none", "--out",
                                                   str(tmp_path / "eval"), "--activities", "walkng"])
    assert result.exit_code != 0 and "no activity walkng; known:" in result.output, result.output


def _drop_first_layer(state: dict) -> None:
    del state["state_dict"][next(iter(state["state_dict"]))]  # as if the layer had not existed then


def _widen_first_layer(state: dict) -> None:
    name = next(iter(state["state_dict"]))
    state["state_dict"][name] = torch.zeros(*state["state_dict"][name].shape[:-1], 1 + state["state_dict"][name].shape[-1])


@pytest.mark.parametrize("change", [_drop_first_layer, _widen_first_layer])
def test_a_checkpoint_from_an_earlier_model_version_is_one_clear_line(trained_run, tmp_path, change):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(trained_run.run_dir, old, ignore=shutil.ignore_patterns("eval*"))
    ckpt = old / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    change(state)
    torch.save(state, ckpt)
    result = CliRunner().invoke(evaluate_command, [str(old), "--params", "none"])
    assert str(ckpt) in result.output and "earlier version" in result.output
    assert result.exit_code == 2  # a user error (MumuError): its message, no traceback


def test_a_truncated_checkpoint_is_one_clear_line(trained_run, tmp_path):
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(trained_run.run_dir, cut, ignore=shutil.ignore_patterns("eval*"))
    ckpt = cut / "checkpoints" / "best.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    result = CliRunner().invoke(evaluate_command, [str(cut), "--params", "none"])
    assert f"cannot read {ckpt}" in result.output
    assert result.exit_code == 2  # a user error (MumuError): its message, no traceback


def test_per_group_macro_f1_is_the_mean_of_its_classes_f1_as_per_class_json_gives_them():
    """It was a macro-F1 over the group's samples only, which never counted another group's sample predicted as
    one of the group's classes: above the mean of the same classes in per_class.json."""
    # group "a" = classes 0, 1; group "b" = classes 2, 3. One sample of class 1 is predicted as class 2.
    labels, preds = np.array([0, 0, 1, 1, 2, 3]), np.array([0, 0, 1, 2, 2, 3])
    groups = np.array([0, 0, 0, 0, 1, 1])
    clean = Inference(sample_ids=list("uvwxyz"), labels=labels, groups=groups, preds=preds, group_preds=None,
                      attention={}, unimodal=np.zeros((6, 2, 4)), fused=np.zeros((6, 4)))
    metrics, per_class = compute_metrics({"clean": clean}, ["c0", "c1", "c2", "c3"], ["a", "b"], [0, 0, 1, 1])
    # class 0: F1 1; class 1: precision 1, recall 0.5, F1 2/3; class 2: precision 1/2 (class 1's sample), recall 1
    assert metrics["per_group"]["a"]["macro_f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert metrics["per_group"]["a"]["accuracy"] == pytest.approx(0.75)
    assert metrics["per_group"]["b"]["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    for group in ("a", "b"):
        f1 = [row["f1"] for row in per_class if row["group"] == group]
        assert metrics["per_group"][group]["macro_f1"] == pytest.approx(np.mean(f1))


def test_an_unfinished_run_is_refused_and_a_failed_evaluation_leaves_no_complete_looking_metrics(trained_run,
                                                                                                  tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(trained_run.run_dir, unfinished)
    (unfinished / "metrics.json").unlink()  # as if training had been killed after an early best.ckpt
    result = CliRunner().invoke(evaluate_command, [str(unfinished), "--params", "none"])
    assert result.exit_code == 2 and "has not finished training (no metrics.json)" in result.output
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text('{"accuracy": 0.99}')  # an earlier evaluation, other settings
    (out / "plots").write_text("a file where the plots folder goes: this evaluation fails midway")
    failed = CliRunner().invoke(evaluate_command, [str(trained_run.run_dir), "--out", str(out), "--params", "none",
                                                   "--tsne-samples", "40"])
    assert failed.exit_code != 0
    assert not (out / "metrics.json").exists()


def test_the_tsne_map_does_not_depend_on_the_machines_core_count(tmp_path):
    """With its OpenMP/BLAS threads left to the machine, a fresh `dvc repro` on another core count changed the
    committed tsne.png (same metrics, other map)."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    centres = np.repeat(rng.normal(size=(6, 128)) * 3, 28, axis=0)
    np.save(tmp_path / "features.npy", (rng.normal(size=(168, 128)) + centres).astype(np.float32))
    script = ("import sys, numpy as np; from mumu.plots import tsne_2d; "
              "np.save(sys.argv[2], tsne_2d(np.load(sys.argv[1])))")
    for threads in ("1", "2"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / "features.npy"), str(tmp_path / f"{threads}.npy")],
                       cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": threads}, check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "1.npy"), np.load(tmp_path / "2.npy"))


def _pairs(out):
    with open(out / "confusion.csv") as f:
        return [(r["actual"], r["predicted"]) for r in csv.DictReader(f)]


def test_confusion_csv_rows_are_actual_predicted_pairs(trained_run, evaluated):
    out, _ = evaluated
    pairs = _pairs(out)
    per_class = json.loads((out / "per_class.json").read_text())["per_class"]
    assert Counter(a for a, _ in pairs) == Counter({r["activity"]: r["support"] for r in per_class if r["support"]})
    assert np.mean([a == p for a, p in pairs]) == pytest.approx(trained_run.metrics["accuracy"], abs=1e-6)


def test_per_class_precision_and_recall_agree_with_the_confusion_csv(evaluated):
    out, _ = evaluated
    pairs = _pairs(out)
    for row in json.loads((out / "per_class.json").read_text())["per_class"]:
        name = row["activity"]
        hits = sum(a == p == name for a, p in pairs)
        predicted = sum(p == name for _, p in pairs)
        assert row["recall"] == pytest.approx(hits / row["support"] if row["support"] else 0.0), name
        assert row["precision"] == pytest.approx(hits / predicted if predicted else 0.0), name


@pytest.fixture
def saved_figures(monkeypatch) -> list:
    """Every figure a plotting function saves, in order; still readable after it is closed."""
    figures = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    return figures


def test_the_red_tick_labels_are_the_corrupted_modalities(tmp_path, saved_figures):
    weights = {"SM-Fusion": np.array([[0.7, 0.3]]), "GM-Fusion": np.array([[0.4, 0.6]])}
    plots.plot_attention(["carrying_heavy"], ["rgb_cam1", "gyro"],
                         [("clean input", weights, []), ("noisy non-visual", weights, ["gyro"])],
                         tmp_path / "a.png", "t")
    clean, noisy = [[(t.get_text(), t.get_color()) for t in ax.get_xticklabels()] for ax in saved_figures[0].axes][:2]
    assert [name for name, color in clean if color == "red"] == []
    assert [name for name, color in noisy if color == "red"] == ["gyro"]


def test_attention_plot_bars_are_each_chosen_activitys_own_mean_weights():
    """The bars of attention.png: for each activity chosen (by default the first two of each of the first two groups
    among those in the test set), the modality weights averaged over that activity's test samples only."""
    from mumu.evaluate import choose_activities, mean_weights

    names, group_names, class_groups = ["a0", "a1", "a2", "a3", "a4", "a5"], ["g0", "g1"], [0, 0, 0, 1, 1, 1]
    labels = np.array([1, 1, 2, 3, 3, 4, 5, 2])  # a0 has no test sample
    sm = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.5, 0.5], [0.6, 0.4], [1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    n = len(labels)
    result = Inference([str(i) for i in range(n)], labels, np.array(class_groups)[labels], labels, None,
                       {"sm": sm, "gm": sm[:, ::-1]}, np.zeros((n, 2, 4)), np.zeros((n, 4)))
    chosen = choose_activities("auto", names, group_names, class_groups, set(labels.tolist()))
    assert [names[a] for a in chosen] == ["a1", "a2", "a3", "a4"]
    expected = np.array([[0.8, 0.2], [0.3, 0.7], [0.55, 0.45], [1.0, 0.0]])  # rows: a1, a2, a3, a4
    weights = mean_weights(result, chosen, "mumu")
    assert list(weights) == ["SM-Fusion", "GM-Fusion"]
    np.testing.assert_allclose(weights["SM-Fusion"], expected)
    np.testing.assert_allclose(weights["GM-Fusion"], expected[:, ::-1])
    b3 = mean_weights(Inference(result.sample_ids, labels, result.groups, labels, None, {"gm": sm}, result.unimodal,
                                result.fused), chosen, "b3")
    assert list(b3) == ["self-attention"]
    np.testing.assert_allclose(b3["self-attention"], expected)


def test_summary_lines_carry_their_conditions_numbers(evaluated):
    out, output = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    for label, key in (("noisy visual", "noisy_visual"), ("noisy non-visual", "noisy_non_visual")):
        line = next(l for l in output.splitlines() if l.strip().startswith(label + " "))
        assert f"accuracy {100 * metrics[key]['accuracy']:5.1f} %" in line, (line, metrics[key])


def test_every_activity_in_the_tsne_legend_looks_different(tmp_path, saved_figures):
    """MMAct has 37 activities and UTD-MHAD 27, more than any colour map's 20: two classes must still never share
    a look, or the legend cannot tell a reader which cluster is which."""
    labels = np.repeat(np.arange(37), 2)
    embeddings = {"fused": np.random.default_rng(0).normal(size=(len(labels), 4)) + labels[:, None]}
    plots.plot_tsne(embeddings, labels, [f"a{k}" for k in range(37)], tmp_path / "t.png", "t")
    looks = [(tuple(handle.get_facecolor()[0]), handle.get_paths()[0].vertices.round(3).tobytes())
             for handle in saved_figures[0].legends[0].legend_handles]  # (colour, marker shape) per entry
    assert len(looks) == 37 and len(set(looks)) == 37
