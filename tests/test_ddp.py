"""2-process DDP on CPU (gloo), through the command line as a user runs it: it trains, and the test
metrics and predictions cover the whole test set, not one process's shard."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from tests.test_data import tiny_demo  # noqa: F401  (session fixture)

REPO = Path(__file__).resolve().parent.parent


def test_two_process_ddp_covers_the_whole_test_set(tiny_demo, tmp_path):  # noqa: F811
    params = tmp_path / "params.yaml"
    params.write_text("extract:\n  image_size: 32\n")  # the tiny cache's image size
    out = tmp_path / "ddp"
    command = [sys.executable, "cli.py", "train", "--params", str(params), "--dataset", "demo",
               "--cache", str(tiny_demo.cache), "--protocol", "cross_session", "--modalities", "rgb_cam1,gyro",
               "--max-epochs", "2", "--batch-size", "4", "--embed-dim", "16", "--max-steps-visual", "4",
               "--max-steps-sensor", "6", "--num-workers", "0", "--val-fraction", "0.2",
               "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith("test macro-F1")

    metrics = json.loads((out / "metrics.json").read_text())
    test_ids = json.loads((out / "split.json").read_text())["test"]
    assert metrics["world_size"] == 2  # really two processes ...
    assert metrics["n_samples"] == len(test_ids) == 24  # ... and the metrics saw every test sample once
    with open(out / "predictions.csv", newline="") as f:
        assert sorted(row["sample_id"] for row in csv.DictReader(f)) == sorted(test_ids)
    with open(out / "logs/metrics.csv", newline="") as f:
        losses = [row["train/loss"] for row in csv.DictReader(f) if row.get("train/loss")]
    assert len(losses) == 2  # one (synced) training loss per epoch
