"""Params files written as changes to another (`base:`), as training, extraction and evaluation read them."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from click.testing import CliRunner

from mumu.config import resolve_config, save_config
from pipeline.errors import MumuError
from pipeline.extract import params_defaults
from pipeline.params import read_params

ROOT = Path(__file__).resolve().parents[1]

RECIPE = """\
dataset: utd_mhad
protocol: loso
modalities: skeleton,inertial
extract:
  image_size: 112
  sensor_rate_hz: 50
train:
  lr: 0.003
  beta_aux: 0.5
  transforms:
    skeleton: {modality: skeleton, centre_joint: 3}
    augment: {rotate_deg: 15, scale: 0.15}
evaluate:
  noise_level: 1.0
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_variant_holds_only_its_changes_and_every_reader_sees_the_merged_settings(tmp_path):
    write(tmp_path / "recipe.yaml", RECIPE)
    variant = write(tmp_path / "variants/v.yaml", "base: ../recipe.yaml\nmodalities: skeleton\nextract:\n"
                    "  image_size: 64\ntrain:\n  beta_aux: 0.1\n  transforms:\n    augment: {scale: 0.3}\n")
    cfg = resolve_config(variant)
    assert (cfg.dataset, cfg.protocol, cfg.modalities) == ("utd_mhad", "loso", "skeleton")
    assert (cfg.lr, cfg.beta_aux) == (0.003, 0.1)
    assert cfg.transforms == {"skeleton": {"modality": "skeleton", "centre_joint": 3},  # nested keys merge one by one
                              "augment": {"rotate_deg": 15, "scale": 0.3}}
    assert (cfg.extract.image_size, cfg.extract.sensor_rate_hz) == (64, 50)
    assert params_defaults(variant) == {"dataset": "utd_mhad", "modalities": "skeleton", "image_size": 64,
                                        "sensor_rate_hz": 50}
    assert read_params(variant)["evaluate"] == {"noise_level": 1.0}  # what evaluate reads
    assert resolve_config(variant, beta_aux=0.3).beta_aux == 0.3  # the command line still wins


def test_bases_chain_and_a_broken_chain_names_the_file(tmp_path):
    write(tmp_path / "recipe.yaml", RECIPE)
    write(tmp_path / "a.yaml", "base: recipe.yaml\ntrain:\n  lr: 0.001\n")
    b = write(tmp_path / "b.yaml", "base: a.yaml\ntrain:\n  beta_aux: 0.2\n")
    cfg = resolve_config(b)
    assert (cfg.lr, cfg.beta_aux, cfg.protocol) == (0.001, 0.2, "loso")

    orphan = write(tmp_path / "orphan.yaml", "base: gone.yaml\n")
    with pytest.raises(MumuError, match=r"orphan\.yaml: its base 'gone\.yaml' .* does not exist"):
        resolve_config(orphan)
    write(tmp_path / "x.yaml", "base: y.yaml\n")
    loop = write(tmp_path / "y.yaml", "base: x.yaml\n")
    with pytest.raises(MumuError, match="chain of params files loops"):
        resolve_config(loop)
    not_a_path = write(tmp_path / "n.yaml", "base: [recipe.yaml]\n")
    with pytest.raises(MumuError, match="`base` is the path of another params file"):
        params_defaults(not_a_path)


def test_the_shipped_utd_variants_are_the_recipe_plus_their_stated_changes():
    recipe = resolve_config(ROOT / "params/utd_mhad.yaml").to_dict()
    headline = resolve_config(ROOT / "params/utd_mhad_headline.yaml").to_dict()
    assert {k: v for k, v in headline.items() if recipe[k] != v} == {
        "beta_aux": 0.1, "gm_heads": 4, "fusion_kl": 1.0, "label_smoothing": 0.2, "adapt_bn": True}
    depth = resolve_config(ROOT / "params/utd_mhad_depth.yaml").to_dict()
    changed = {k: v for k, v in depth.items() if recipe[k] != v}
    assert changed["modalities"] == "depth,skeleton,inertial" and changed["cache"] == "cache/utd_mhad_dsi_w1.zarr"
    assert {k: v for k, v in changed["extract"].items() if recipe["extract"][k] != v} == {
        "image_size": 64, "frame_stride": 6}


def test_a_mistyped_params_file_is_an_error_not_a_silent_default_run(tmp_path, monkeypatch):
    from mumu.train import train_command

    result = CliRunner().invoke(train_command, ["--params", str(tmp_path / "utd_mhad_headlin.yaml")])
    assert result.exit_code != 0 and "utd_mhad_headlin.yaml: params file not found" in result.output
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the default file may be absent
    assert resolve_config().dataset == "demo"
    assert resolve_config("none").dataset == "demo"  # --params none: no file at all


@pytest.mark.parametrize("skeleton, message", [
    ({"modality": "skeletn", "centre_joint": 3}, r"utd_mhad has no skeleton modality 'skeletn' \(xyz-joint modalities: skeleton"),
    ({"modality": "skeleton", "centre_joint": 20}, r"joint 20 is not one of skeleton's 20 joints"),
    ({"modality": "skeleton", "centre_joint": 3, "scale_joints": [1, -1]}, r"joint -1 is not one of"),
])
def test_a_skeleton_frame_the_dataset_cannot_have_is_refused_before_training(tmp_path, skeleton, message):
    """A misspelt modality used to switch the body frame off silently; a joint out of range failed mid-loading."""
    params = write(tmp_path / "p.yaml", f"dataset: utd_mhad\ntrain:\n  transforms:\n    skeleton: {skeleton}\n")
    with pytest.raises(MumuError, match=message):
        resolve_config(params)


def test_devices_are_checked_and_a_yaml_list_means_device_ids(tmp_path):
    assert resolve_config(write(tmp_path / "p.yaml", "train:\n  devices: [0, 1]\n")).devices == "0,1"
    with pytest.raises(MumuError, match=r"devices is 'auto', a device count \(2\) or device ids .* got 'two'"):
        resolve_config(None, devices="two")


# ------------------------------------------------------------------ bad settings: refused up front, file and key named

@pytest.fixture(scope="module")
def sensor_demo(tmp_path_factory) -> dict[str, Path]:
    """A sensor-only demo cache (3 subjects, image_size 32 recorded) that training runs on, and a params file
    whose every other setting makes that run short."""
    from pipeline.datasets import build_index
    from pipeline.demo import write_demo_dataset
    from pipeline.extract import ExtractSettings, run_extract
    from pipeline.modalities import select_modalities

    base = tmp_path_factory.mktemp("sensor_demo")
    root = write_demo_dataset(base / "demo", n_subjects=3, n_sessions=1, n_frames=9, frame_size=32)
    run_extract(build_index("demo", root).samples, "demo", select_modalities("demo", "acc_phone,gyro"),
                base / "c.zarr", ExtractSettings(image_size=32), show_progress=False)
    train = (f"max_epochs: 1, embed_dim: 8, accelerator: cpu, num_workers: 0, protocol: cross_subject, "
             f"cache: {base / 'c.zarr'}, modalities: 'acc_phone,gyro'")
    return {"cache": base / "c.zarr", "train": train}


def invoke(command, args: list[str]):
    return CliRunner().invoke(command, [str(a) for a in args])


@pytest.mark.parametrize("train, options, message", [
    ("lr: abc", [], "p.yaml: train.lr must be a number, got 'abc'"),
    (None, [], "p.yaml: train: must be a block of settings (key: value lines), not 'hello'"),
    ("", ["--lr", "-1"], "command line: lr must be >= 0, got -1.0"),
])
def test_a_bad_value_is_refused_naming_its_source_before_a_run_directory_exists(sensor_demo, tmp_path, train,
                                                                                       options, message):
    """These used to fail inside Lightning with a bare TypeError/ValueError, leaving a run directory behind."""
    from mumu.studies import study_command
    from mumu.train import train_command

    block = "hello" if train is None else "{" + ", ".join(filter(None, [sensor_demo["train"], train])) + "}"
    params = write(tmp_path / "p.yaml", f"dataset: demo\nextract: {{image_size: 32}}\ntrain: {block}\n")
    runs = [(train_command, ["--params", params, "--out", tmp_path / "run", *options])]
    runs += [(study_command, [study, "--quick", "--params", params, "--out", tmp_path / study])
             for study in ("ablation", "modalities") if not options]  # studies read the same files
    for command, args in runs:
        result = invoke(command, args)
        assert result.exit_code == 2 and message in result.output  # a user error (MumuError), no traceback
        assert not (tmp_path / "run").exists() and not list(tmp_path.glob("ablation*")) + list(tmp_path.glob("modal*"))
    if train == "lr: abc":  # the same file, corrected, trains: the refusal was the value's, not the setup's
        params.write_text(params.read_text().replace("lr: abc", "lr: 0.01"))
        assert invoke(train_command, ["--params", params, "--out", tmp_path / "run"]).exit_code == 0
        assert (tmp_path / "run/metrics.json").is_file()


@pytest.mark.parametrize("train, message", [
    ("{embed_dim: 8.5}", "train.embed_dim must be a whole number, got 8.5"),  # was: gm_heads must divide 8.5
    ("{max_epochs: true}", "train.max_epochs must be a whole number, got True"),
    ("{motion: maybe}", "train.motion must be true or false, got 'maybe'"),
    ("{lr: null}", "train.lr must be a number, got None"),
    ("{cache: 5}", "train.cache must be a string or null, got 5"),
    ("{dropout: 1.5}", "train.dropout is a probability in [0, 1), got 1.5"),
    ("{num_workers: -1}", "train.num_workers must be >= 0 (0 = load in the main process), got -1"),
    ("{select: best}", "unknown train.select 'best'; choose one of macro_f1, nll, last"),
    # settings that must agree with each other
    ("{model: mumu, embed_dim: 128, gm_heads: 3}", "gm_heads must be >= 1 and divide embed_dim (128), got 3"),
    ("{model: b3, embed_dim: 127}", "B3's 2 self-attention heads must divide embed_dim (127)"),
    ("{motion: true, sensor_encoder: window}",
     "motion channels need the sequence sensor encoder (sensor_encoder: sequence)"),
    ("{sensor_encoder: sequence, kernel_size: 4}",
     "the sequence sensor encoder needs an odd kernel_size (it keeps every step), got 4"),
    ("{model: b1, lstm_layers: 0}", "B1 (non-attention) pools the last LSTM state; with lstm_layers 0 it would read "
                                    "only the last step's embedding. Set lstm_layers >= 1 (--lstm-layers 1) for b1"),
])
def test_each_value_is_checked_for_its_type_its_range_and_agreement_with_the_others(tmp_path, train, message):
    params = write(tmp_path / "p.yaml", f"train: {train}\n")
    with pytest.raises(MumuError) as error:
        resolve_config(params)
    assert error.value.message == f"{params}: {message}"


def test_gm_heads_bind_mumu_only(tmp_path):
    assert resolve_config(write(tmp_path / "p.yaml", "train: {model: b2, embed_dim: 128, gm_heads: 3}\n")).model == "b2"


def test_whole_numbers_fill_number_settings_and_null_fills_optional_ones(tmp_path):
    cfg = resolve_config(write(tmp_path / "p.yaml", "dataset: demo\ntrain:\n  embed_dim: 8\n  lr: 1\n  cache: null\n"
                                                    "  devices: 1\nextract:\n  sensor_rate_hz: 50\n"))
    assert (cfg.embed_dim, cfg.lr, cfg.cache, cfg.devices, cfg.extract.sensor_rate_hz) == (8, 1, None, "1", 50)
    with pytest.raises(MumuError, match=r"^command line: embed_dim must be a whole number, got 8\.5$"):
        resolve_config(None, embed_dim=8.5)


def test_a_number_in_exponent_form_is_a_number_though_yaml_reads_it_as_text(tmp_path):
    cfg = resolve_config(write(tmp_path / "p.yaml", "train:\n  lr: 1e-4\n  weight_decay: 5E-3\n"))
    assert (cfg.lr, cfg.weight_decay) == (1e-4, 5e-3)
    with pytest.raises(MumuError, match="train.lr must be a number, got 'fast'"):
        resolve_config(write(tmp_path / "q.yaml", "train:\n  lr: fast\n"))


@pytest.mark.parametrize("text, message", [
    ("protocl: cross_subject\n", "unknown top-level key(s) protocl (did you mean protocol?)"),
    ("extract:\n  imge_size: 32\n", "unknown extract: setting(s) imge_size (did you mean image_size?)"),
    ("extract:\n  image_size: 8.5\n", "extract.image_size must be a whole number, got 8.5"),
    ("demo:\n  fps: 30\n", "unknown demo: setting(s) fps; known: frame_size, frames, seed, sessions, subjects"),
    ("demo:\n  subjects: many\n", "demo.subjects must be a whole number, got 'many'"),
    ("lr: 0.1\n", "unknown top-level key(s) lr; known: base, data_root, dataset, demo, evaluate, extract, "
                   "modalities, protocol, train; each command's own settings go in its block"),
])
def test_a_key_outside_the_params_layout_is_refused_by_every_command(sensor_demo, tmp_path, text, message):
    """Top level: the shared settings and one block per command (train:, extract: ... ; dvc.yaml reads the same);
    a misspelt key used to be ignored silently by `train` and `extract` alike."""
    from pipeline.extract import extract_command
    from mumu.train import train_command

    params = write(tmp_path / "p.yaml", text)
    for command, args in ((train_command, ["--out", tmp_path / "run"]),
                          (extract_command, ["--cache", tmp_path / "c.zarr", "--workers", 0])):
        result = invoke(command, ["--params", params, *args])
        assert result.exit_code == 2 and f"{params}: {message}" in result.output
        assert not Path(args[1]).exists()
    variant = write(tmp_path / "v.yaml", "base: p.yaml\n")  # a chain names the file holding the key
    with pytest.raises(MumuError, match=f"^{re.escape(str(params))}: "):
        resolve_config(variant)
    with pytest.raises(MumuError, match=r"p2\.yaml: unknown training setting\(s\) lrr \(did you mean lr\?\)"):
        resolve_config(write(tmp_path / "p2.yaml", "train:\n  lrr: 0.1\n"))


def test_the_shipped_params_files_keep_to_the_layout():
    for path in (ROOT / "params.yaml", *sorted((ROOT / "params").glob("*.yaml"))):
        read_params(path)
        resolve_config(path)


def test_dvc_exp_run_can_set_every_training_setting(tmp_path):
    """`dvc exp run -S train.KEY=VALUE` sets only keys that params.yaml already has (a new one needs `+`), so
    params.yaml lists every training setting but those dvc.yaml's train command gives (cache, out, source)."""
    import dataclasses
    import shutil

    import yaml
    from dvc.utils.hydra import apply_overrides

    from mumu.config import TrainConfig

    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    top_level = {"dataset", "data_root", "protocol", "modalities"}
    settable = {f.name for f in dataclasses.fields(TrainConfig)} - {"extract", "cache", "out", "source"} - top_level
    assert sorted(settable - set(yaml.safe_load(params.read_text())["train"])) == []
    apply_overrides(params, ["train.select=nll", "train.fusion_kl=1.0", "train.adapt_bn=true"])
    cfg = resolve_config(params)
    assert (cfg.select, cfg.fusion_kl, cfg.adapt_bn) == ("nll", 1.0, True)
    assert resolve_config(ROOT / "params.yaml").select == "macro_f1"  # the file as shipped: the code's defaults


@pytest.mark.parametrize("content", ["keep\n", "defaults:\n- model: resnet\nname: other\n", ""])  # Hydra's, say
def test_a_folder_with_another_tools_config_yaml_is_not_taken_for_a_run(sensor_demo, tmp_path, content):
    from mumu.evaluate import evaluate_command
    from mumu.train import retest_command, train_command

    folder = tmp_path / "folder"
    write(folder / "config.yaml", content)
    run = tmp_path / "run"
    save_config(resolve_config(None, dataset="demo", cache=str(sensor_demo["cache"])), run / "config.yaml")
    message = f"{folder / 'config.yaml'} is not a mumu run config (it holds no training settings), so {folder} is not"
    for command, args in ((train_command, ["--params", "none", "--out", folder]),
                          (retest_command, [run, "--out", folder]), (retest_command, [folder, "--out", run]),
                          (evaluate_command, [folder, "--params", "none"])):
        result = invoke(command, args)
        assert result.exit_code == 2 and message in result.output, result.output
        assert (folder / "config.yaml").read_text() == content


def test_a_cache_mismatch_without_a_params_file_advises_one(sensor_demo, tmp_path):
    from mumu.train import train_command

    result = invoke(train_command, ["--params", "none", "--dataset", "demo", "--cache", sensor_demo["cache"],
                                    "--modalities", "acc_phone,gyro", "--out", tmp_path / "run"])
    assert result.exit_code == 2
    assert (f"feature cache {sensor_demo['cache']} was extracted with image_size=32 (requested 112); re-extract it "
            f"with these settings, or train with a --params file whose extract: block matches the cache "
            f"(image_size: 32)") in result.output
    assert "params.yaml" not in result.output  # no file was read


def test_a_demo_value_of_true_is_not_a_whole_number(tmp_path):
    with pytest.raises(MumuError, match=r"demo\.subjects must be a whole number, got True"):
        read_params(write(tmp_path / "p.yaml", "demo:\n  subjects: true\n"))
