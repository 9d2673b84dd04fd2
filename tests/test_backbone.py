"""The frozen ResNet-50's weights, as a user meets them: ImageNet from torch's cache (no download here, so a missing
file is a clear error that says where to put it), a user's state_dict file, or random; the cache records which."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner

from pipeline.backbone import Backbone, state_dict_hash
from pipeline.cache import FeatureCache
from pipeline.datasets import build_index
from pipeline.errors import MumuError
from pipeline.extract import extract_command
from pipeline.index import write_index
from tests.fixtures import IMAGE_SIZE

IMAGENET_FILE = "resnet50-11ad3fa6.pth"  # torchvision's IMAGENET1K_V2 file name in torch's hub cache


@pytest.fixture
def few_samples(tiny_demo, tmp_path) -> Path:
    samples = build_index("demo", tiny_demo.root).samples[:2]
    write_index(samples, tmp_path / "index.csv", list(samples[0].paths))
    return tmp_path / "index.csv"


def extract(index: Path, cache: Path, weights: str):
    return CliRunner().invoke(extract_command, [
        "--params", "none", "--dataset", "demo", "--index", str(index), "--cache", str(cache), "--modalities",
        "rgb_cam1", "--image-size", str(IMAGE_SIZE), "--weights", weights, "--device", "cpu"])


def other_resnet50(path: Path) -> dict[str, torch.Tensor]:
    """A ResNet-50 state_dict that is neither torchvision's random init at our seed nor ImageNet's, saved at path."""
    torch.manual_seed(123)
    state = torchvision.models.resnet50(weights=None).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_missing_imagenet_weights_say_where_to_put_them_and_leave_no_cache(few_samples, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    result = extract(few_samples, tmp_path / "c.zarr", "imagenet")
    expected = tmp_path / "torch" / "hub" / "checkpoints" / IMAGENET_FILE
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    assert f"ImageNet ResNet-50 weights not found at {expected}" in result.output
    assert "cannot download" in result.output and "--weights PATH" in result.output
    assert not (tmp_path / "c.zarr").exists()  # refused before the cache is created


def test_imagenet_weights_from_torch_cache_and_a_user_file_give_the_same_features_recorded_as_such(
        tiny_demo, few_samples, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    state = other_resnet50(tmp_path / "torch" / "hub" / "checkpoints" / IMAGENET_FILE)  # stands in for ImageNet's
    user_file = tmp_path / "mine.pt"
    torch.save({"state_dict": state}, user_file)  # a training checkpoint's layout is read too
    for weights, cache in (("imagenet", "imagenet.zarr"), (str(user_file), "file.zarr")):
        result = extract(few_samples, tmp_path / cache, weights)
        assert result.exit_code == 0, result.output
    caches = {"imagenet": FeatureCache(tmp_path / "imagenet.zarr"), "file": FeatureCache(tmp_path / "file.zarr"),
              "random": FeatureCache(tiny_demo.cache)}  # the same samples and settings, random weights
    assert {name: c.fingerprint["weights"] for name, c in caches.items()} == {
        "imagenet": "imagenet", "file": "file", "random": "random"}
    assert caches["imagenet"].fingerprint["weights_hash"] == caches["file"].fingerprint["weights_hash"] \
        == state_dict_hash(state) != caches["random"].fingerprint["weights_hash"]
    sample_id = caches["file"].samples[0].sample_id
    features = {name: c.read(sample_id)["rgb_cam1"] for name, c in caches.items()}  # (S, 2048)
    np.testing.assert_array_equal(features["imagenet"], features["file"])
    assert features["file"].shape == features["random"].shape and not np.allclose(features["file"], features["random"])


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"not a checkpoint", "cannot load a state_dict"),
    ("resnet18", r"not a ResNet-50 state_dict \(missing \['layer1.0.bn3.bias'.*other shapes \['layer1.0.conv1.weight'"),
])
def test_weights_that_are_not_a_resnet50_are_a_clear_error_naming_them_before_a_cache_is_made(
        few_samples, tmp_path, content, message):
    path = tmp_path / "weights.pt"
    if content == "resnet18":
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    elif content is not None:
        path.write_bytes(content)
    result = extract(few_samples, tmp_path / "c.zarr", str(path))
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    assert re.search(message, result.output) and str(path) in result.output, result.output
    assert not (tmp_path / "c.zarr").exists()
    with pytest.raises(MumuError, match=message):  # the backbone itself, as dask workers build it
        Backbone(str(path))


def test_training_refuses_a_cache_made_with_another_kind_of_weights(tiny_demo, tmp_path, monkeypatch):
    from mumu.rundata import prepare_data

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no ImageNet file here: only the kinds can be compared
    config = tiny_demo.config(tmp_path / "run", extract={"image_size": IMAGE_SIZE, "weights": "imagenet"})
    with pytest.raises(MumuError, match=rf"feature cache {re.escape(str(tiny_demo.cache))} was extracted with "
                                        r"weights='random' \(requested 'imagenet'\); re-extract it"):
        prepare_data(config)


def test_training_checks_a_weights_files_content_not_its_name(tiny_demo, few_samples, tmp_path, capsys):
    from mumu.rundata import prepare_data

    state = other_resnet50(tmp_path / "a" / "weights.pt")
    assert extract(few_samples, tmp_path / "c.zarr", str(tmp_path / "a" / "weights.pt")).exit_code == 0
    torch.save(state, tmp_path / "copy.pt")  # the same weights under another name
    (tmp_path / "b").mkdir()
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "b" / "weights.pt")  # other
    # weights under the same file name

    def config(weights: Path):
        return tiny_demo.config(tmp_path / "run", cache=str(tmp_path / "c.zarr"), modalities="rgb_cam1",
                                extract={"image_size": IMAGE_SIZE, "weights": str(weights)})

    assert prepare_data(config(tmp_path / "copy.pt"))  # accepted: the content is what the cache was made with
    # a cache extracted elsewhere, its weights file not copied here: trained on, with a warning that says so
    assert prepare_data(config(tmp_path / "elsewhere.pt"))
    assert f"warning: weights file {tmp_path / 'elsewhere.pt'} (extract.weights) is not here" in capsys.readouterr().err
    with pytest.raises(MumuError, match=rf"feature cache {re.escape(str(tmp_path / 'c.zarr'))} was extracted with "
                                        rf"weights 'file' with hash '{state_dict_hash(state)}' \(requested "
                                        rf"{re.escape(str(tmp_path / 'b' / 'weights.pt'))}, hash '[0-9a-f]{{16}}'\); "
                                        r"re-extract it with these settings$"):
        prepare_data(config(tmp_path / "b" / "weights.pt"))


def test_training_takes_imagenet_by_its_tensors_whether_the_cache_had_it_from_torchs_cache_or_a_file(
        tiny_demo, few_samples, tmp_path, monkeypatch):
    """A user who extracted with --weights ~/resnet50-imagenet.pth and trains with weights: imagenet asks for the same
    backbone; other tensors under ImageNet's file name are refused, whichever way the cache recorded its weights."""
    from mumu.rundata import prepare_data

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    imagenet = tmp_path / "torch" / "hub" / "checkpoints" / IMAGENET_FILE
    state = other_resnet50(imagenet)  # stands in for ImageNet's
    shutil.copy(imagenet, tmp_path / "mine.pt")
    for weights, cache in ((str(tmp_path / "mine.pt"), "file.zarr"), ("imagenet", "imagenet.zarr")):
        assert extract(few_samples, tmp_path / cache, weights).exit_code == 0

    def config(cache: str):
        return tiny_demo.config(tmp_path / "run", cache=str(tmp_path / cache), modalities="rgb_cam1",
                                extract={"image_size": IMAGE_SIZE, "weights": "imagenet"})

    assert prepare_data(config("file.zarr")) and prepare_data(config("imagenet.zarr"))
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), imagenet)  # not the weights either cache had
    for cache, kind in (("file.zarr", "file"), ("imagenet.zarr", "imagenet")):
        with pytest.raises(MumuError, match=rf"extracted with weights '{kind}' with hash '{state_dict_hash(state)}' "
                                            r"\(requested imagenet, hash '[0-9a-f]{16}'\)"):
            prepare_data(config(cache))


def test_features_are_torchvisions_resnet50_pooled_output_on_imagenet_normalised_frames(tmp_path):
    """What a user of the cache expects the 2048 numbers to be, computed here without mumu's code."""
    state = other_resnet50(tmp_path / "weights.pt")
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 48, 48, 3), dtype=np.uint8)  # (N, H, W, 3)
    reference = torchvision.models.resnet50(weights=None)
    reference.load_state_dict(state)
    reference.fc = torch.nn.Identity()
    normalise = torchvision.transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # ImageNet's
    with torch.no_grad():
        expected = reference.eval()(normalise(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)).numpy()
    features = Backbone(str(tmp_path / "weights.pt"), batch_size=2)(frames)  # two chunks
    assert features.shape == (3, 2048) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    # an export without BatchNorm's batch counters (older torchvision ImageNet files are so) is the same network
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, tmp_path / "older.pt")
    np.testing.assert_array_equal(Backbone(str(tmp_path / "older.pt"), batch_size=2)(frames), features)
