"""The studies' --quick settings on a tiny demo cache, and the significance test they report."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from mumu.significance import aso, pairwise_aso, significantly_better, violation_ratio
from mumu.studies import modality_combinations, study_command


# ------------------------------------------------------------------ significance (ASO, Dror et al. 2019)

def test_violation_ratio_is_zero_for_dominance_and_complements():
    assert violation_ratio([0.7, 0.8, 0.9], [0.5, 0.6, 0.65]) == 0.0
    assert violation_ratio([0.5, 0.6, 0.65], [0.7, 0.8, 0.9]) == 1.0
    a, b = [0.60, 0.70, 0.72, 0.90], [0.65, 0.66, 0.80, 0.81]  # crossing quantile functions
    assert 0 < violation_ratio(a, b) < 1
    assert violation_ratio(a, b) + violation_ratio(b, a) == pytest.approx(1.0)


def test_aso_finds_a_clearly_better_model_and_not_a_tie():
    rng = np.random.default_rng(0)
    better, worse = rng.normal(0.76, 0.003, 5), rng.normal(0.70, 0.01, 5)
    assert aso(better, worse) < 0.5 < aso(worse, better)
    same = rng.normal(0.7, 0.01, 5)
    assert aso(same, same) >= 0.5  # a model is never significantly better than itself
    eps = pairwise_aso({"mumu": list(better), "b1": list(worse)})
    assert significantly_better(eps) == {"mumu": ["b1"], "b1": []}


def test_aso_on_a_few_seeds_of_two_equal_models_is_rarely_confident():
    """The bound's spread comes from resampling as many scores as were observed: resampling 1,000 made a few seeds
    look decisive (eps_min 0 for [.70, .71, .72] against [.69, .70, .705], and one tie in five called better at the
    stricter 0.2 threshold)."""
    assert aso([0.70, 0.71, 0.72], [0.69, 0.70, 0.705]) > 0.1  # ahead on every seed, but only three of them
    rng = np.random.default_rng(1)
    ties = [aso(rng.normal(size=5), rng.normal(size=5), seed=trial) for trial in range(100)]
    assert np.mean(np.array(ties) < 0.2) <= 0.1  # 5 v 5 from one distribution: ~5 % (alpha), not ~20 %


def test_modality_combinations_follow_table_5():
    groups = {"visual": ["depth", "skeleton"], "non_visual": ["inertial"]}
    assert len(modality_combinations(["depth", "skeleton", "inertial"], groups, quick=False)) == 7
    six = ["rgb_cam1", "rgb_cam2", "acc_phone", "acc_watch", "gyro", "orientation"]
    demo = {"visual": six[:2], "non_visual": six[2:]}
    assert modality_combinations(six, demo, quick=True) == [six[:2], six[2:], six]
    assert len(modality_combinations(six, demo, quick=False)) == 6 + 3


# ------------------------------------------------------------------ the quick studies, end to end

@pytest.fixture(scope="module")
def params(tiny_demo, tmp_path_factory):
    """params.yaml for the tiny demo: three modalities, one epoch, 16-d embeddings."""
    torch.set_num_threads(1)
    settings = tiny_demo.config(max_epochs=1).to_dict()
    extract = settings.pop("extract")
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump({"train": settings, "extract": extract}))
    return path


def run_study(*args: str) -> str:
    result = CliRunner().invoke(study_command, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_quick_noise_study_reports_clean_and_noisy_columns(params, tmp_path):
    """Each column is its own condition's score, as `evaluate` computes it for the same run with the same params
    file's evaluate: block (noise, level, seed); the runs learn above chance (a one-epoch run predicted one class,
    so every column scored alike whatever it was computed from)."""
    from mumu.evaluate import CONDITIONS, evaluate_run

    learning = tmp_path / "learning.yaml"
    settings = yaml.safe_load(params.read_text())
    settings["train"].update(batch_size=4, lr=1e-2, dropout=0.0)
    noise = {"noise": "gaussian", "noise_level": 0.9, "seed": 3}
    settings["evaluate"] = noise
    learning.write_text(yaml.safe_dump(settings))
    args = ["noise", "--quick", "--params", str(learning), "--out", str(tmp_path), "--max-epochs", "15",
            "--models", "b3,mumu"]
    output = run_study(*args)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["results"]) == {"b3", "mumu"}
    assert {k: results["noise"][k] for k in ("mode", "level", "seed")} == {"mode": "gaussian", "level": 0.9, "seed": 3}
    for model in ("b3", "mumu"):
        row = results["results"][model]
        assert set(row) == set(CONDITIONS)
        assert len({r["n_samples"] for r in row.values()}) == 1  # every condition covers the whole test set
        evaluated, _, _, _ = evaluate_run(tmp_path / "runs" / model, tmp_path / f"eval-{model}", tsne_samples=20,
                                          **noise)
        for condition in CONDITIONS:
            expected = evaluated if condition == "clean" else evaluated[condition]
            assert row[condition]["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-9), (model, condition)
    mumu = results["results"]["mumu"]
    assert mumu["clean"]["accuracy"] > 2 / 6 and mumu["noisy"]["accuracy"] != mumu["clean"]["accuracy"]
    table = (tmp_path / "table.md").read_text()
    assert "| MuMu |" in table and "noisy visual" in table and table.split("\n\n")[1] in output
    # a rerun reuses the finished runs instead of training again
    checkpoint = tmp_path / "runs" / "mumu" / "checkpoints" / "best.ckpt"
    before = checkpoint.stat().st_mtime_ns
    run_study(*args)
    assert checkpoint.stat().st_mtime_ns == before


def test_quick_ablation_study_reports_mean_std_and_aso(params, tmp_path):
    """Also: settings without an LSTM (as the UTD recipe's) still give B1 its LSTM, which defines it."""
    no_lstm = tmp_path / "no_lstm.yaml"
    settings = yaml.safe_load(params.read_text())
    settings["train"]["lstm_layers"] = 0
    no_lstm.write_text(yaml.safe_dump(settings))
    output = run_study("ablation", "--quick", "--params", str(no_lstm), "--out", str(tmp_path),
                       "--max-epochs", "1", "--models", "b1,mumu")
    configs = {(m, s): yaml.safe_load((tmp_path / "runs" / f"{m}-seed{s}" / "config.yaml").read_text())
               for m in ("b1", "mumu") for s in (0, 1)}
    assert {m: configs[m, 0]["lstm_layers"] for m in ("b1", "mumu")} == {"b1": 1, "mumu": 0}
    assert all(config["seed"] == s for (_, s), config in configs.items())  # each run is trained with its seed
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["seeds"] == [0, 1]
    assert all(len(scores) == 2 for scores in results["macro_f1"].values())
    eps = results["significance"]["eps_min"]
    assert 0 <= eps["mumu"]["b1"] <= 1 and 0 <= eps["b1"]["mumu"] <= 1
    assert "Almost Stochastic Order" in output and "±" in output
    table = (tmp_path / "table.md").read_text()
    assert "| B1 non-attention |" in table
    # 2 seeds: no verdict (it called near-chance ties significant), and the table says it is a quick run
    assert table.count("not tested (< 3 seeds)") == 2
    assert "**Quick mode** (`--quick`: max_epochs 1, embed_dim 32" in table  # --max-epochs wins over --quick's 3
    assert results["significance"]["significantly_better_than"] is None  # as the table: no verdict
    # the study's own advice when its runs hold other settings: studies have --out, not --overwrite
    result = CliRunner().invoke(study_command, ["ablation", "--quick", "--params", str(no_lstm), "--out",
                                                str(tmp_path), "--max-epochs", "2", "--models", "b1,mumu"])
    assert result.exit_code == 2 and "use another --out" in result.output and "--overwrite" not in result.output


def test_ablation_with_three_seeds_names_the_significantly_better_model_and_no_winner_of_a_tie(tmp_path, monkeypatch):
    """With 3 seeds (only --quick's 2 had a test), the table's last column and results.json give ASO's verdict.
    Training is replaced by fixed per-seed scores: MuMu far above B1 and B2, whose scores are near-identical,
    so neither is called better than the other."""
    from mumu.studies import Study
    from mumu.train import RunResult

    f1 = {"mumu": [0.91, 0.93, 0.92], "b1": [0.52, 0.55, 0.50], "b2": [0.521, 0.549, 0.501]}

    def train(study, runs):  # {run name: config} -> {run name: RunResult}, as Study.train
        return {name: RunResult(tmp_path / name, {"macro_f1": f1[cfg.model][cfg.seed], "accuracy": 0.5}, {})
                for name, cfg in runs.items()}

    monkeypatch.setattr(Study, "train", train)
    output = run_study("ablation", "--params", "none", "--out", str(tmp_path), "--seeds", "3",
                       "--models", "b1,b2,mumu")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["macro_f1"] == f1  # each seed's run scored into its own model
    significance = results["significance"]
    assert significance["significantly_better_than"] == {"mumu": ["b1", "b2"], "b1": [], "b2": []}
    eps = significance["eps_min"]
    assert eps["mumu"]["b1"] < 0.5 < eps["b1"]["mumu"]  # the verdict reads eps_min in the better model's row
    assert eps["b1"]["b2"] >= 0.5 and eps["b2"]["b1"] >= 0.5
    verdicts = {row.split(" | ")[0].lstrip("| "): row.split(" | ")[-1].rstrip(" |")
                for row in (tmp_path / "table.md").read_text().splitlines() if row.startswith("| ") and "±" in row}
    assert verdicts == {"MuMu": "B1, B2", "B1 non-attention": "none", "B2 unimodal attention (Keyless)": "none"}
    mumu_row = next(row for row in (tmp_path / "table.md").read_text().splitlines() if row.startswith("| MuMu"))
    assert "| 92.0 ± 0.8 |" in mumu_row  # mean ± population std of the seeds' macro-F1, in percent
    assert "read the verdicts as indicative" in output and "not tested" not in output


def test_quick_modalities_study_trains_each_group(params, tmp_path):
    run_study("modalities", "--quick", "--params", str(params), "--out", str(tmp_path), "--max-epochs", "1")
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    # the tiny config uses rgb_cam1 (visual) + acc_phone, gyro (non-visual)
    assert set(results) == {"rgb_cam1", "acc_phone+gyro", "rgb_cam1+acc_phone+gyro"}
    for name, result in results.items():  # each row is the run trained on exactly its combination
        run_dir = tmp_path / "runs" / f"mumu-{name}"
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["modalities"] == name.replace("+", ",")
        assert result["macro_f1"] == json.loads((run_dir / "metrics.json").read_text())["macro_f1"]


def test_the_modality_study_sets_the_papers_table_5_beside_its_rows(tmp_path, monkeypatch):
    """On UTD-MHAD the study trains every subset of its modalities; the paper's Table 5 has three of them, and the
    table gives the paper's number on exactly those rows (training replaced by fixed scores)."""
    from mumu.studies import Study
    from mumu.train import RunResult

    def train(study, runs):
        return {name: RunResult(tmp_path / name, {"macro_f1": 0.9, "accuracy": 0.9}, {}) for name in runs}

    monkeypatch.setattr(Study, "train", train)
    params = tmp_path / "p.yaml"
    params.write_text("dataset: utd_mhad\nmodalities: rgb,depth,skeleton,inertial\n")
    run_study("modalities", "--params", str(params), "--out", str(tmp_path / "out"))
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert len(results) == 15
    assert {name: r["paper_accuracy"] for name, r in results.items() if r["paper_accuracy"]} == {
        "rgb+skeleton": 96.10, "rgb+skeleton+inertial": 97.44, "rgb+depth+skeleton+inertial": 97.60}
    rows = (tmp_path / "out" / "table.md").read_text().splitlines()
    assert "| rgb, skeleton | 90.0 | 90.0 | 96.10 |" in rows and "| depth | 90.0 | 90.0 | – |" in rows


def test_unknown_model_is_a_clear_error(params, tmp_path):
    result = CliRunner().invoke(study_command, ["ablation", "--params", str(params), "--out", str(tmp_path),
                                                "--models", "b9"])
    assert result.exit_code != 0 and "b9" in result.output


def test_the_noise_study_adapts_to_noisy_subjects_as_the_params_file_says(utd_root, tmp_path):
    """With AdaBN and a random group zeroed per sample, `evaluate.adapt_by_condition` decides whether each subject's
    statistics are re-estimated per pattern of silent streams or over all its samples; the study's noisy column must
    follow the file as `evaluate` does. Real UTD-MHAD (430 odd_even test samples): on the tiny demo both ways score
    alike, so nothing there could tell whether the setting reached the study."""
    from mumu.evaluate import evaluate_run
    from pipeline.datasets import build_index
    from pipeline.extract import ExtractSettings, run_extract
    from pipeline.modalities import select_modalities

    extract = {"sensor_window": 1, "sensor_stride": 1, "sensor_rate_hz": 50, "weights": "random"}
    run_extract(build_index("utd_mhad", utd_root).samples, "utd_mhad",
                select_modalities("utd_mhad", "skeleton,inertial"), tmp_path / "utd.zarr", ExtractSettings(**extract),
                show_progress=False)
    params = tmp_path / "params.yaml"
    scores = {}
    for by_condition in (True, False):  # the second study reuses the first one's trained run
        params.write_text(yaml.safe_dump({
            "dataset": "utd_mhad", "protocol": "odd_even", "modalities": "skeleton,inertial", "extract": extract,
            "train": {"cache": str(tmp_path / "utd.zarr"), "max_epochs": 3, "lr": 0.003, "batch_size": 32,
                      "num_workers": 0, "accelerator": "cpu", "embed_dim": 32, "max_steps_sensor": 16, "adapt_bn": True,
                      "sensor_encoder": "sequence", "lstm_layers": 0},  # the UTD recipe's encoder
            "evaluate": {"noise": "drop", "adapt_by_condition": by_condition}}))
        run_study("noise", "--params", str(params), "--out", str(tmp_path / "study"), "--models", "b2")
        results = json.loads((tmp_path / "study" / "results.json").read_text())
        assert results["noise"]["adapt_by_condition"] is by_condition
        assert ("per pattern of silent streams" if by_condition else "over all its samples") \
            in (tmp_path / "study" / "table.md").read_text()  # the table says how its noisy columns were adapted
        scores[by_condition] = results["results"]["b2"]["noisy"]["accuracy"]
        evaluated, _, _, _ = evaluate_run(tmp_path / "study" / "runs" / "b2", tmp_path / f"eval-{by_condition}",
                                          tsne_samples=20, adapt_by_condition=by_condition)
        assert scores[by_condition] == pytest.approx(evaluated["noisy"]["accuracy"])
    assert abs(scores[True] - scores[False]) > 1 / 430  # the setting matters here, so the parity above means something


def test_the_noise_study_scores_a_loso_run_as_its_metrics_and_the_other_studies_do(tiny_utd, tmp_path):
    """Its clean column pooled every fold's predictions while the ablation and modality tables (and the run's own
    metrics.json) average the folds: the same run had two different clean scores."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "dataset": "utd_mhad", "protocol": "loso", "modalities": "skeleton,inertial", "extract": tiny_utd.extract,
        "train": {"cache": str(tiny_utd.cache), "max_epochs": 6, "lr": 0.01, "batch_size": 8, "num_workers": 0,
                  "accelerator": "cpu", "embed_dim": 16, "max_steps_sensor": 8}}))
    run_study("noise", "--params", str(params), "--out", str(tmp_path / "study"), "--models", "b2")
    clean = json.loads((tmp_path / "study" / "results.json").read_text())["results"]["b2"]["clean"]
    trained = json.loads((tmp_path / "study" / "runs" / "b2" / "metrics.json").read_text())
    assert len(trained["folds"]) == 3
    assert clean["macro_f1"] == pytest.approx(trained["macro_f1"]) and clean["n_samples"] == 35
    assert clean["accuracy"] == pytest.approx(trained["accuracy"])
