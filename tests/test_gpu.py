"""On a CUDA GPU: extraction and training take the GPU path, agree with the CPU path, resume and evaluate.

Skipped where no GPU is present (CI has none). On a GPU machine: `python -m pytest tests/test_gpu.py -v -s`
(`-s` shows the measured GPU/CPU feature agreement).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from click.testing import CliRunner

from mumu.evaluate import evaluate_command
from mumu.train import train_once
from pipeline.cache import FeatureCache, cache_info_command
from pipeline.datasets import build_index
from pipeline.extract import ExtractSettings, extract_command, run_extract
from pipeline.index import write_index
from pipeline.modalities import dataset_modalities
from tests.fixtures import IMAGE_SIZE
from tests.test_train import CHANCE, KillAtSecondEpoch, read_predictions

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")

VISUAL = ("rgb_cam1", "rgb_cam2")


class DeviceSeen(pl.Callback):
    """Records where the training steps ran and in which precision."""

    backbone = None  # the raw path's frozen ResNet-50: where it ran the first training batch's frames

    def on_train_start(self, trainer, module):
        self.device, self.precision = module.device.type, trainer.precision

    def on_train_batch_end(self, trainer, module, *args):
        if self.backbone is None and module._backbone is not None:
            self.backbone = module._backbone.device.type


@pytest.fixture(scope="module")
def gpu_cache(tiny_demo, tmp_path_factory):
    """The tiny demo extracted by `cli.py extract` with its default device (auto: the GPU here)."""
    out = tmp_path_factory.mktemp("gpu")
    index = out / "index.csv"
    samples = build_index("demo", tiny_demo.root).samples
    write_index(samples, index, list(samples[0].paths))
    cache = out / "demo.zarr"
    result = CliRunner().invoke(extract_command, ["--params", "none", "--dataset", "demo", "--index", str(index),
                                                  "--cache", str(cache), "--image-size", str(IMAGE_SIZE),
                                                  "--weights", "random", "--part-size", "16"])
    assert result.exit_code == 0, result.output
    return cache


def test_gpu_features_agree_with_cpu_features(tiny_demo, gpu_cache):
    """bf16 on the GPU vs float32 on the CPU, same frames and weights: sensor windows identical, every
    2048-d frame feature pointing the same way (cosine) and close in size."""
    cpu, gpu = FeatureCache(tiny_demo.cache), FeatureCache(gpu_cache)
    assert cpu.fingerprint == gpu.fingerprint  # same weights, same settings
    for path, computed in ((tiny_demo.cache, "float32 on cpu (3 parts)"), (gpu_cache, "bfloat16 on cuda (3 parts)")):
        info = CliRunner().invoke(cache_info_command, [str(path)])
        assert f"frame features computed in: {computed}" in info.output, info.output
    assert sorted(s.sample_id for s in cpu.samples) == sorted(s.sample_id for s in gpu.samples)
    worst_cosine, worst_relative = 1.0, 0.0
    for sample in cpu.samples:
        on_cpu, on_gpu = cpu.read(sample.sample_id), gpu.read(sample.sample_id)
        for name, value in on_cpu.items():
            if name not in VISUAL:
                np.testing.assert_array_equal(on_gpu[name], value, err_msg=f"{sample.sample_id} {name}")
                continue
            a, b = value.astype(np.float64), on_gpu[name].astype(np.float64)  # (S, 2048)
            cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            relative = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)
            worst_cosine, worst_relative = min(worst_cosine, cosine.min()), max(worst_relative, relative.max())
    print(f"\nGPU (bf16) vs CPU (float32) frame features: worst cosine {worst_cosine:.5f}, "
          f"worst relative L2 difference {worst_relative:.4f}")
    assert worst_cosine > 0.995 and worst_relative < 0.1


@pytest.mark.parametrize("workers", [0, 2])
def test_gpu_extraction_is_the_same_in_process_and_on_dask(tiny_demo, gpu_cache, tmp_path, workers):
    """The GPU result does not depend on how extraction runs (repeatable; dask workers share the GPU)."""
    if workers:
        pytest.importorskip("distributed")
    samples = build_index("demo", tiny_demo.root).samples
    cache = tmp_path / "again.zarr"
    run_extract(samples, "demo", dataset_modalities("demo"), cache,
                ExtractSettings(image_size=IMAGE_SIZE, weights="random", part_size=16), device="cuda",
                workers=workers, show_progress=False)
    first, again = FeatureCache(gpu_cache), FeatureCache(cache)
    for sample in first.samples:
        for name, value in first.read(sample.sample_id).items():
            np.testing.assert_array_equal(again.read(sample.sample_id)[name], value)


@pytest.fixture(scope="module")
def gpu_run(tiny_demo, gpu_cache, tmp_path_factory):
    """MuMu trained on the GPU-extracted cache with the default accelerator (auto: the GPU here)."""
    seen = DeviceSeen()
    cfg = tiny_demo.config(tmp_path_factory.mktemp("runs") / "gpu", cache=str(gpu_cache), accelerator="auto",
                           max_epochs=15, batch_size=4, lr=1e-2, dropout=0.0)
    return cfg, train_once(cfg, callbacks=[seen], progress=False), seen


def test_training_runs_on_the_gpu_in_bf16_and_learns(gpu_run):
    cfg, result, seen = gpu_run
    assert (seen.device, seen.precision) == ("cuda", "bf16-mixed")
    assert result.metrics["accuracy"] > 2 * CHANCE, result.metrics  # the CPU test's thresholds
    assert result.metrics["macro_f1"] > 1.5 * CHANCE, result.metrics
    accuracy = np.mean([r["label"] == r["pred"] for r in read_predictions(cfg.run_dir)])
    assert accuracy == pytest.approx(result.metrics["accuracy"])


def test_evaluate_reproduces_the_gpu_runs_clean_metrics(gpu_run, tmp_path):
    cfg, result, _ = gpu_run
    out = tmp_path / "eval"
    run = CliRunner().invoke(evaluate_command, [str(cfg.run_dir), "--out", str(out), "--params", "none",
                                                "--tsne-samples", "40"])
    assert run.exit_code == 0, run.output
    metrics = json.loads((out / "metrics.json").read_text())
    print(f"\ntrain (GPU) accuracy {result.metrics['accuracy']:.4f} macro-F1 {result.metrics['macro_f1']:.4f}; "
          f"evaluate accuracy {metrics['accuracy']:.4f} macro-F1 {metrics['macro_f1']:.4f}")
    assert metrics["accuracy"] == pytest.approx(result.metrics["accuracy"], abs=1e-6)
    assert metrics["macro_f1"] == pytest.approx(result.metrics["macro_f1"], abs=1e-6)


def test_same_seed_same_gpu_run(tiny_demo, gpu_cache, tmp_path):
    """`--seed`'s promise (same seed, same run) on the GPU too."""
    runs = [train_once(tiny_demo.config(tmp_path / name, cache=str(gpu_cache), accelerator="auto"), progress=False)
            for name in ("a", "b")]
    assert runs[0].metrics == runs[1].metrics
    assert read_predictions(tmp_path / "a") == read_predictions(tmp_path / "b")


def test_a_killed_gpu_run_resumes_and_finishes(tiny_demo, gpu_cache, tmp_path):
    cfg = tiny_demo.config(tmp_path / "killed", cache=str(gpu_cache), accelerator="auto")
    with pytest.raises(SystemExit):
        train_once(cfg, callbacks=[KillAtSecondEpoch()], progress=False)
    assert not (tmp_path / "killed/metrics.json").exists()
    seen = DeviceSeen()
    resumed = train_once(cfg, callbacks=[seen], progress=False)
    assert seen.device == "cuda" and (tmp_path / "killed/metrics.json").is_file()
    assert resumed.metrics["n_samples"] == len(read_predictions(tmp_path / "killed"))


def test_training_from_raw_files_runs_the_backbone_on_the_gpu(tiny_demo, tmp_path):
    seen = DeviceSeen()
    result = train_once(tiny_demo.config(tmp_path / "raw", source="raw", accelerator="auto", max_epochs=1),
                        callbacks=[seen], progress=False)
    assert seen.device == "cuda" and seen.backbone == "cuda" and 0 <= result.metrics["accuracy"] <= 1
    assert (tmp_path / "raw/metrics.json").is_file()
