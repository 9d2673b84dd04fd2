"""`dvc repro` end to end in a fresh copy of the repository, on a tiny demo configuration.

Checks what a user relies on: the pipeline runs from nothing, leaves metrics and plots, a second
`dvc repro` does nothing, a training-parameter change retrains without re-extracting, a raw file changed in
place makes extraction stale, and a `dvc repro` killed during training resumes the run when repeated, while
a code change trains it afresh.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

# The smallest demo that still has train/val/test subjects: 3 subjects x 1 session x 6 activities,
# 9 frames of 32 px, one camera and two sensors, one training epoch.
TINY = {
    "modalities": "rgb_cam1,acc_phone,gyro",
    "demo": {"subjects": 3, "sessions": 1, "frames": 9, "frame_size": 32},
    "extract": {"image_size": 32, "workers": 0, "batch_size": 16},
    "train": {"max_epochs": 1, "embed_dim": 16, "batch_size": 8, "max_steps_visual": 4, "max_steps_sensor": 8,
              "num_workers": 0},
    "evaluate": {"tsne_samples": 50},
}


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def run(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def ran_stages(result: subprocess.CompletedProcess) -> set[str]:
    return {line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage '")}


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The repository's tracked files (as they are in the working tree) in a new git repo, tiny params."""
    missing = [tool for tool in ("dvc", "git") if shutil.which(tool) is None]
    assert not missing, f"{' and '.join(missing)} not found: pip install -r requirements.txt installs dvc (pinned)"
    root = tmp_path_factory.mktemp("clone")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.split("\0")
    for name in filter(None, tracked):
        source = REPO_ROOT / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in TINY.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "fresh clone"], root)
    return root


@contextmanager
def changed_params(clone: Path, section: str, key: str, change) -> Iterator[None]:
    """params.yaml with one setting changed, restored afterwards (the stages it touched are then stale)."""
    original = (clone / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params[section][key] = change(params[section][key])
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        yield
    finally:
        (clone / "params.yaml").write_text(original)


def test_every_stage_depends_on_the_code_its_command_can_run():
    """DVC reruns a stage only when one of its deps changed: a source file a stage's command can run (imports,
    lazy ones too) that is not a dep would leave that stage's outputs stale yet "up to date" after an edit."""
    from mumu.train import training_code
    from pipeline.codebase import imported_sources

    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    code = {"demo_data": imported_sources("pipeline.commands"), "index": imported_sources("pipeline.commands"),
            "extract": imported_sources("pipeline.extract"), "train": training_code(),
            # what evaluate runs of the training code reaches it through its dep on the run directory
            "evaluate": sorted(set(imported_sources("mumu.evaluate")) - set(training_code()))}
    assert {path.name for path in code["train"]} >= {"model.py", "encoders.py", "utd_mhad.py", "utd_mhad.csv"}
    for stage, files in code.items():
        deps = [d for d in stages[stage]["deps"] if not d.startswith("$")]
        missing = [str(f.relative_to(REPO_ROOT)) for f in files if f.stat().st_size  # DVC warns on empty deps
                   and not any(f == REPO_ROOT / d or (REPO_ROOT / d) in f.parents for d in deps)]
        assert not missing, f"dvc.yaml stage {stage} lacks deps {missing}"


@pytest.fixture(scope="module")
def first_repro(clone):
    return run(["dvc", "repro"], clone)


def test_repro_from_nothing_leaves_metrics_and_plots(clone, first_repro):
    assert ran_stages(first_repro) == {"demo_data", "index", "extract", "train", "evaluate"}
    metrics = json.loads((clone / "eval/demo/metrics.json").read_text())
    assert 0 <= metrics["macro_f1"] <= 1 and metrics["n_samples"] > 0
    for name in ("confusion.png", "per_class_f1.png", "attention.png", "tsne.png"):
        assert (clone / "eval/demo/plots" / name).stat().st_size > 10_000, name
    assert (clone / "eval/demo/confusion.csv").stat().st_size > 0
    assert "macro-F1" in first_repro.stdout  # the headline metric is printed
    # Lightning's advert and a deprecation inside its own code say nothing about the run (once per fold in LOSO)
    assert "litlogger" not in first_repro.stderr and "LeafSpec" not in first_repro.stderr, first_repro.stderr[-3000:]
    shown = run(["dvc", "metrics", "show", "--json"], clone)
    assert "macro_f1" in shown.stdout
    run(["dvc", "plots", "show", "-o", str(clone / "plots_html")], clone)
    assert (clone / "plots_html" / "index.html").stat().st_size > 0


def test_second_repro_does_nothing(clone, first_repro):
    run(["dvc", "repro"], clone)  # whatever ran before (in any order), bring it up to date
    again = run(["dvc", "repro"], clone)
    assert ran_stages(again) == set()
    assert "up to date" in again.stdout


def test_training_parameter_change_does_not_re_extract(clone, first_repro):
    run(["dvc", "repro"], clone)  # up to date, whatever ran before
    cache_meta = clone / "cache/demo.zarr/zarr.json"
    before = cache_meta.stat().st_mtime_ns
    with changed_params(clone, "train", "lr", lambda lr: lr * 2):
        status = run(["dvc", "status", "--json"], clone)
        assert set(json.loads(status.stdout)) == {"train"}  # evaluate follows once train's output changes
        rerun = run(["dvc", "repro"], clone)
        assert ran_stages(rerun) == {"train", "evaluate"}
        assert cache_meta.stat().st_mtime_ns == before


def test_extraction_parameter_change_rebuilds_the_cache(clone, first_repro):
    from pipeline.cache import FeatureCache

    run(["dvc", "repro", "--single-item", "extract"], clone)  # the cache up to date, whatever ran before
    assert FeatureCache(clone / "cache/demo.zarr").fingerprint["image_size"] == 32
    with changed_params(clone, "extract", "image_size", lambda _: 48):
        assert "extract" in json.loads(run(["dvc", "status", "--json"], clone).stdout)
        # the persisted cache was built at 32 px: extract must rebuild it, not refuse or mix the two
        rerun = run(["dvc", "repro", "--single-item", "extract"], clone)
        assert ran_stages(rerun) == {"extract"}
        cache = FeatureCache(clone / "cache/demo.zarr")
        assert cache.fingerprint["image_size"] == 48 and len(cache.samples) == 18


def test_a_raw_file_changed_in_place_makes_extract_stale(clone, first_repro):
    """A sensor file mended or replaced keeps its path, so the index is the same: extract must still rerun (its
    --rebuild-if-changed then redoes the parts that read the file), or the cache and metrics stay stale."""
    run(["dvc", "repro"], clone)  # up to date, whatever ran before
    csv_file = sorted((clone / "data/demo").rglob("*.csv"))[0]
    original = csv_file.read_bytes()
    csv_file.write_bytes(original + original.splitlines(keepends=True)[-1])  # one more reading
    try:
        stale = json.loads(run(["dvc", "status", "--json"], clone).stdout)
        assert "extract" in stale, stale
    finally:
        csv_file.write_bytes(original)


def test_killed_training_resumes_under_repro_and_a_code_change_trains_afresh(clone, first_repro):
    import torch

    run(["dvc", "repro"], clone)  # up to date, whatever ran before
    run_dir = clone / "runs/demo"
    last = run_dir / "checkpoints/last.ckpt"
    with changed_params(clone, "train", "max_epochs", lambda _: 30):
        shutil.rmtree(run_dir)
        repro = subprocess.Popen(["dvc", "repro"], cwd=clone, env=ENV, start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while not last.is_file() and repro.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(repro.pid, signal.SIGKILL)  # dvc, its shell and the training, mid-run
        repro.wait()
        assert last.is_file() and not (run_dir / "metrics.json").exists(), "the kill came before or after training"
        killed_at = torch.load(last, weights_only=False)["epoch"]
        assert killed_at < 29

        again = run(["dvc", "repro"], clone)
        assert ran_stages(again) == {"train", "evaluate"}
        assert "afresh" not in again.stdout + again.stderr
        assert list((run_dir / "logs").glob("metrics-until-resume-*.csv"))  # the epochs before the kill: kept
        assert torch.load(last, weights_only=False)["epoch"] == 29
        assert run(["dvc", "status", "--json"], clone).stdout.strip() == "{}"

        model_code = clone / "mumu/model.py"
        original = model_code.read_text()
        model_code.write_text(original + "# an edit\n")
        try:
            rerun = run(["dvc", "repro"], clone)
            assert ran_stages(rerun) == {"train", "evaluate"}
            assert "its code changed since it began; starting it afresh" in rerun.stdout + rerun.stderr
            assert not list((run_dir / "logs").glob("metrics-until-resume-*.csv"))
        finally:
            model_code.write_text(original)
