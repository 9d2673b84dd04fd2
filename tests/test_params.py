"""Params files written as changes to another (`base:`), as training, extraction and evaluation read them."""
from __future__ import annotations

from pathlib import Path

import pytest

from mumu.config import resolve_config
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
    assert cfg.transforms == {"augment": {"rotate_deg": 15, "scale": 0.3}}  # nested keys merge one by one
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
    from click.testing import CliRunner

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
