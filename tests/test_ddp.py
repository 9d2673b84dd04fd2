"""2-process DDP on CPU (gloo), through the command line as a user runs it: it trains, and the test
metrics and predictions cover the whole test set, not one process's shard; and killing the command leaves
no worker behind."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil


REPO = Path(__file__).resolve().parent.parent


def ddp_command(tiny_demo, tmp_path: Path, out: Path, epochs: int) -> list[str]:
    params = tmp_path / "params.yaml"
    params.write_text("extract:\n  image_size: 32\n")  # the tiny cache's image size
    return [sys.executable, "cli.py", "train", "--params", str(params), "--dataset", "demo",
            "--cache", str(tiny_demo.cache), "--protocol", "cross_session", "--modalities", "rgb_cam1,gyro",
            "--max-epochs", str(epochs), "--batch-size", "4", "--embed-dim", "16", "--max-steps-visual", "4",
            "--max-steps-sensor", "6", "--num-workers", "0", "--val-fraction", "0.2",
            "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--out", str(out)]


def test_two_process_ddp_covers_the_whole_test_set(tiny_demo, tmp_path):
    out = tmp_path / "ddp"
    done = subprocess.run(ddp_command(tiny_demo, tmp_path, out, epochs=2), cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith("test macro-F1")
    assert "sync_dist" not in done.stderr  # the metrics are synced before they are logged: no warning says otherwise

    metrics = json.loads((out / "metrics.json").read_text())
    test_ids = json.loads((out / "split.json").read_text())["test"]
    assert metrics["world_size"] == 2  # really two processes ...
    assert metrics["n_samples"] == len(test_ids) == 24  # ... and the metrics saw every test sample once
    with open(out / "predictions.csv", newline="") as f:
        assert sorted(row["sample_id"] for row in csv.DictReader(f)) == sorted(test_ids)
    with open(out / "logs/metrics.csv", newline="") as f:
        losses = [row["train/loss"] for row in csv.DictReader(f) if row.get("train/loss")]
    assert len(losses) == 2  # one (synced) training loss per epoch


def test_killing_a_ddp_run_kills_its_worker(tiny_demo, tmp_path):
    launcher = subprocess.Popen(ddp_command(tiny_demo, tmp_path, tmp_path / "ddp", epochs=1000), cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 300
        while not workers:  # Lightning starts the second rank once the launcher reaches fit()
            assert launcher.poll() is None and time.monotonic() < deadline, "Lightning started no second process"
            time.sleep(0.2)
            workers = psutil.Process(launcher.pid).children(recursive=True)
        time.sleep(1.0)  # the worker is starting up, before the ranks first talk: it would wait for rank 0 for good
        launcher.send_signal(signal.SIGKILL)  # as a timeout or an OOM killer would
        launcher.wait()
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"DDP workers outlived the killed command: {[p.pid for p in alive]}"
    finally:
        launcher.kill()
        for worker in workers:
            if worker.is_running():
                worker.kill()


def test_more_cpu_processes_than_cores_is_warned_before_anything_starts(tiny_demo, tmp_path):
    command = ddp_command(tiny_demo, tmp_path, tmp_path / "ddp", epochs=1)
    command[command.index("--devices") + 1] = str((os.cpu_count() or 1) + 1)
    done = subprocess.run(command + ["--resume", str(tmp_path / "missing.ckpt")], cwd=REPO, capture_output=True,
                          text=True, timeout=300)  # the missing checkpoint stops it before any process starts
    assert done.returncode != 0
    assert f"training processes on this machine's {os.cpu_count()} CPU cores" in done.stderr
    assert "no such checkpoint" in done.stderr


def test_two_process_ddp_from_raw_files_leaves_out_samples_with_no_usable_input(tiny_demo, tmp_path):
    """A rank whose batch is empty (its one sample's video is broken) still meets the other rank's gradient sync and
    epoch logging: the run finishes, without those samples, instead of hanging or failing."""
    root = shutil.copytree(tiny_demo.root, tmp_path / "demo")
    broken = sorted((root / "video").glob("subject1/cam1/*/session1/*.mp4"))[:2]  # training or validation samples
    for video in broken:
        video.write_bytes(video.read_bytes()[:600])  # the MP4 header survives, the frames do not
    command = ddp_command(tiny_demo, tmp_path, tmp_path / "ddp", epochs=1)
    command[command.index("--modalities") + 1] = "rgb_cam1"
    command[command.index("--batch-size") + 1] = "1"
    command += ["--from-raw", "--data-root", str(root)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 of them had no usable input of the chosen modalities and were left out" in done.stderr
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["n_samples"] == 24  # the test session is whole
