"""extract end to end on a tiny dataset: parity with the direct path, bad inputs, idempotence,
fingerprint refusal, resume after SIGKILL, dask == single process, real UTD-MHAD, read with plain zarr."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.backbone import Backbone
from pipeline.cache import FeatureCache, cache_info_command, read_part_attrs
from pipeline.decode import DecodeWorker, RetryableDecodeError
from pipeline.extract import ExtractSettings, extract_command, load_raw_sample, resolve_device, run_extract
from pipeline.errors import MumuError
from pipeline.index import Sample, write_index
from pipeline.modalities import select_modalities
from tests.fixtures import write_utd_mhad
from tests.test_decode import write_mp4
from tests.test_sensors import T0, write_mmact_csv

REPO_ROOT = Path(__file__).resolve().parents[1]
MODALITIES = "rgb_cam1,acc_phone,gyro"
SETTINGS = ExtractSettings(image_size=32, frame_stride=3, batch_size=4, part_size=2, weights="random",
                           decode_timeout_s=60)
CLI_SETTINGS = ["--params", "none",  # these tests set every setting: no params.yaml of the working directory
                "--modalities", MODALITIES, "--image-size", "32", "--frame-stride", "3", "--batch-size", "4",
                "--part-size", "2", "--weights", "random", "--dataset", "demo",
                "--device", "cpu"]  # the references are extracted on the CPU; on a GPU machine auto would differ


def _write_zero_frame_mp4(path: Path) -> None:
    path.unlink(missing_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height = 64, 48
        container.start_encoding()


def make_dataset(root: Path, n_good: int = 3) -> tuple[list[Sample], Path]:
    """n_good clean samples, then: corrupt video; zero-frame video + empty CSV + missing file; no video."""
    rng = np.random.default_rng(1)
    samples = []
    for i in range(n_good + 3):
        sid = f"sample{i}"
        video, acc, gyro = root / f"{sid}.mp4", root / f"{sid}_acc.csv", root / f"{sid}_gyro.csv"
        write_mp4(video, n_frames=7 + i, seed=i)
        start = T0 + timedelta(seconds=10 * i)
        write_mmact_csv(acc, start, 100, rng.normal(size=(100 + 10 * i, 3)))
        write_mmact_csv(gyro, start + timedelta(milliseconds=30), 50, rng.normal(size=(50 + 5 * i, 3)))
        paths = {"rgb_cam1": str(video), "rgb_cam2": None, "acc_phone": str(acc), "acc_watch": None,
                 "gyro": str(gyro), "orientation": None}
        if i == n_good:  # corrupt video, good sensors
            video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(rng.integers(0, 255, 3000, dtype=np.uint8)))
        if i == n_good + 1:  # nothing usable
            _write_zero_frame_mp4(video)
            acc.write_text("")
            paths["gyro"] = str(root / "missing_gyro.csv")
        if i == n_good + 2:  # the index says: no video for this sample
            paths["rgb_cam1"] = None
        samples.append(Sample(sid, "demo", subject=1 + i % 2, activity="walk", activity_id=i % 2, group="g",
                              group_id=0, session=1, scene=1, views=["cam1"], paths=paths))
    index = root / "index.csv"
    write_index(samples, index, list(samples[0].paths))
    return samples, index


def read_all(path: Path) -> dict[str, dict]:
    cache = FeatureCache(path)
    return {s.sample_id: cache.read(s.sample_id) for s in cache.samples}


def assert_same_caches(a: Path, b: Path) -> None:
    left, right = read_all(a), read_all(b)
    assert sorted(left) == sorted(right)
    for sid in left:
        for name, value in left[sid].items():
            if value is None:
                assert right[sid][name] is None, (sid, name)
            else:
                np.testing.assert_array_equal(value, right[sid][name], err_msg=f"{sid} {name}")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    samples, index = make_dataset(root)
    cache = root / "ref.zarr"
    summary = run_extract(samples, "demo", select_modalities("demo", MODALITIES), cache, SETTINGS,
                          workers=0, show_progress=False)
    return {"root": root, "samples": samples, "index": index, "cache": cache, "summary": summary}


def test_cache_equals_backbone_on_decoded_frames(dataset):
    specs = select_modalities("demo", MODALITIES)
    cache = FeatureCache(dataset["cache"])
    backbone = Backbone("random", "cpu", batch_size=4)
    assert cache.fingerprint["weights_hash"] == backbone.weights_hash
    info = CliRunner().invoke(cache_info_command, [str(dataset["cache"])])
    assert "frame features computed in: float32 on cpu (3 parts)" in info.output, info.output
    for sample in dataset["samples"][:2]:
        raw = load_raw_sample(sample, specs, SETTINGS)
        stored = cache.read(sample.sample_id)
        assert raw.inputs["rgb_cam1"].shape == (-(-(7 + int(sample.sample_id[-1])) // 3), 32, 32, 3)
        direct = backbone(raw.inputs["rgb_cam1"])  # (S, 2048)
        assert stored["rgb_cam1"].dtype == np.float16 and stored["rgb_cam1"].shape == direct.shape
        np.testing.assert_allclose(stored["rgb_cam1"].astype(np.float32), direct, rtol=2e-3, atol=2e-3)
        for name in ("acc_phone", "gyro"):
            np.testing.assert_array_equal(stored[name], raw.inputs[name])  # (S, 5, 3)
            assert stored[name].shape[1:] == (5, 3)


def test_plain_zarr_reads_the_cache_as_its_format_doc_says(dataset):
    """docs/cache-format.md promises that any zarr v3 reader can read a cache ("Reading without mumu"): following
    its layout with zarr alone gives every sample's arrays as FeatureCache reads them, a missing modality and an
    unusable sample as zero rows."""
    import zarr

    cache = FeatureCache(dataset["cache"])
    root = zarr.open_group(str(dataset["cache"]), mode="r")
    header = root.attrs["mumu_cache"]
    assert (header["format"], header["dataset"]) == (1, "demo")
    listed = []
    for name in sorted(root["parts"].group_keys()):
        part = root["parts"][name]
        for position, fields in enumerate(part.attrs["samples"]):
            sample_id = fields["sample_id"]
            listed.append(sample_id)
            expected = None if sample_id in part.attrs["unusable"] else cache.read(sample_id)
            for modality in header["modalities"]:
                offsets = part[f"{modality['name']}/offsets"][:]
                rows = part[f"{modality['name']}/values"][offsets[position]:offsets[position + 1]]
                wanted = expected and expected[modality["name"]]
                if wanted is None:
                    assert len(rows) == 0, (sample_id, modality["name"])
                else:
                    assert rows.dtype == wanted.dtype == (np.float16 if modality["kind"] == "video" else np.float32)
                    np.testing.assert_array_equal(rows, wanted, err_msg=f"{sample_id} {modality['name']}")
    assert listed == [s.sample_id for s in dataset["samples"]]


def test_bad_inputs_are_recorded_and_the_rest_continues(dataset):
    cache = FeatureCache(dataset["cache"])
    assert [s.sample_id for s in cache.samples] == ["sample0", "sample1", "sample2", "sample3", "sample5"]
    assert set(cache.failures) == {"sample3", "sample4"}
    root = dataset["root"]  # every reason names its file by its full path
    assert f"rgb_cam1: {root / 'sample3.mp4'}:" in cache.failures["sample3"]
    assert cache.read("sample3")["rgb_cam1"] is None and cache.read("sample3")["gyro"] is not None
    reason = cache.failures["sample4"]
    assert f"rgb_cam1: {root / 'sample4.mp4'}:" in reason and f"acc_phone: {root / 'sample4_acc.csv'}: empty CSV" in reason
    assert f"gyro: {root / 'missing_gyro.csv'}: file not found" in reason
    assert cache.read("sample5")["rgb_cam1"] is None  # missing in the index: not a failure
    assert dataset["summary"]["unusable"] == ["sample4"]


def test_cache_info_describes_frame_features_only_where_there_are_frames(dataset, tmp_path):
    sensors_only = tmp_path / "sensors.zarr"
    run_extract(dataset["samples"], "demo", select_modalities("demo", "acc_phone,gyro"), sensors_only, SETTINGS,
                workers=0, show_progress=False)
    info = CliRunner().invoke(cache_info_command, [str(sensors_only)])
    assert info.exit_code == 0 and "acc_phone" in info.output and "frame features" not in info.output, info.output


def test_an_all_nan_stream_is_missing_and_the_others_are_kept(tmp_path):
    """One sensor file with no finite value loses that modality only, with a reason naming the file."""
    acc, gyro = tmp_path / "s_acc.csv", tmp_path / "s_gyro.csv"
    write_mmact_csv(acc, T0, 100, np.full((100, 3), np.nan))
    write_mmact_csv(gyro, T0, 50, np.random.default_rng(0).normal(size=(50, 3)))
    sample = Sample("s", "demo", subject=1, activity="walk", activity_id=0, group="g", group_id=0, session=1,
                    scene=1, views=[], paths={"acc_phone": str(acc), "gyro": str(gyro)})
    raw = load_raw_sample(sample, select_modalities("demo", "acc_phone,gyro"), SETTINGS)
    assert raw.inputs["acc_phone"] is None
    assert raw.problems == {"acc_phone": f"{acc}: the stream has no finite value"}
    assert raw.inputs["gyro"].shape == (10, 5, 3)  # 50 steps at 50 Hz, windows of 5


@pytest.mark.parametrize("fault", ["short_rows", "text_tail", "short_file"])
def test_a_broken_sensor_file_costs_its_own_stream_only(tmp_path, fault):
    """The accelerometer and the gyroscope share one time base; a gyroscope file broken after its first rows
    (too few columns, or text values), or covering too short a time, must lose the gyroscope alone, with the
    reason recorded against its file, and leave the accelerometer its whole recording."""
    rng = np.random.default_rng(0)
    acc, gyro = tmp_path / "s_acc.csv", tmp_path / "s_gyro.csv"
    write_mmact_csv(acc, T0, 100, rng.normal(size=(100, 3)))  # 1 s
    write_mmact_csv(gyro, T0, 50, rng.normal(size=(50 if fault != "short_file" else 3, 3)))
    lines = gyro.read_text().splitlines()
    if fault == "short_rows":  # every row after the first lacks its last value
        lines = lines[:1] + [line.rsplit(",", 1)[0] for line in lines[1:]]
    elif fault == "text_tail":  # values unreadable from row 12 on
        lines = lines[:11] + [line.split(",")[0] + ",x,y,z" for line in lines[11:]]
    gyro.write_text("\n".join(lines) + "\n")
    sample = Sample("s", "demo", subject=1, activity="walk", activity_id=0, group="g", group_id=0, session=1,
                    scene=1, views=[], paths={"acc_phone": str(acc), "gyro": str(gyro)})
    clean_acc = load_raw_sample(dataclasses.replace(sample, paths={"acc_phone": str(acc)}),
                                select_modalities("demo", "acc_phone"), SETTINGS).inputs["acc_phone"]
    raw = load_raw_sample(sample, select_modalities("demo", "acc_phone,gyro"), SETTINGS)
    assert raw.inputs["gyro"] is None and list(raw.problems) == ["gyro"]
    assert raw.problems["gyro"].startswith(f"{gyro}: ")
    assert ("less than one window" if fault == "short_file" else "% of the file's rows have missing or unreadable") \
        in raw.problems["gyro"]
    np.testing.assert_array_equal(raw.inputs["acc_phone"], clean_acc)  # (10, 5, 3): all of its second


def test_a_sensor_slower_than_its_nominal_rate_is_kept(tmp_path):
    """A gyroscope that wrote 20 rows a second where 50 are nominal is sparse, not broken: it is interpolated."""
    rng = np.random.default_rng(0)
    acc, gyro = tmp_path / "s_acc.csv", tmp_path / "s_gyro.csv"
    write_mmact_csv(acc, T0, 100, rng.normal(size=(100, 3)))
    write_mmact_csv(gyro, T0, 20, rng.normal(size=(20, 3)))
    sample = Sample("s", "demo", subject=1, activity="walk", activity_id=0, group="g", group_id=0, session=1,
                    scene=1, views=[], paths={"acc_phone": str(acc), "gyro": str(gyro)})
    raw = load_raw_sample(sample, select_modalities("demo", "acc_phone,gyro"), SETTINGS)
    assert raw.problems == {} and raw.inputs["gyro"].shape == raw.inputs["acc_phone"].shape == (9, 5, 3)
    assert raw.missing_fraction["gyro"] > 0.5  # recorded, as cache-info reports it


def test_rerun_is_a_no_op_and_strict_fails_on_recorded_failures(dataset):
    parts = dataset["cache"] / "parts"
    before = {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*")}
    args = ["--index", str(dataset["index"]), "--cache", str(dataset["cache"]), "--workers", "0"] + CLI_SETTINGS
    result = CliRunner().invoke(extract_command, args)
    assert result.exit_code == 0, result.output
    assert "extracted 0 samples in 0 parts (3 parts already complete)" in result.output
    assert "2 samples with failures (1 without any usable modality)" in result.output
    assert {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*")} == before
    strict = CliRunner().invoke(extract_command, args + ["--strict"])
    assert strict.exit_code != 0 and "2 samples had failures (--strict)" in strict.output


@pytest.mark.parametrize("option, value, differs", [
    ("--frame-stride", "2", "frame_stride: cache has 3, now 2"),
    ("--image-size", "64", "image_size: cache has 32, now 64"),
    ("--sensor-window", "3", "sensor_window: cache has 5, now 3"),
    ("--sensor-stride", "2", "sensor_stride: cache has 5, now 2"),
    ("--sensor-rate", "25", "sensor_rate_hz: cache has 50.0, now 25.0")])
def test_every_setting_that_shapes_the_features_is_refused_when_it_differs(dataset, option, value, differs):
    args = ["--index", str(dataset["index"]), "--cache", str(dataset["cache"]), "--workers", "0"] + CLI_SETTINGS
    result = CliRunner().invoke(extract_command, args + [option, value])
    assert result.exit_code == 2
    assert f"built with different settings ({differs})" in result.output
    assert "--overwrite" in result.output


def test_settings_come_from_a_params_file_and_options_override_them(dataset, tmp_path):
    """`extract --params FILE` reads the recipe's extract: block (the same settings: the cache is complete) and
    writes to its train.cache; an option still wins over the file; a bad value in the file is refused with its key."""
    params = tmp_path / "recipe.yaml"
    params.write_text(f"dataset: demo\nmodalities: {MODALITIES}\nextract:\n  image_size: 32\n  frame_stride: 3\n"
                      "  batch_size: 4\n  part_size: 2\n  weights: random\n  workers: 0\n")
    args = ["--params", str(params), "--index", str(dataset["index"]), "--cache", str(dataset["cache"])]
    same = CliRunner().invoke(extract_command, args)
    assert same.exit_code == 0, same.output
    assert "extracted 0 samples in 0 parts (3 parts already complete)" in same.output
    other = CliRunner().invoke(extract_command, args + ["--frame-stride", "2"])
    assert other.exit_code == 2 and "frame_stride: cache has 3, now 2" in other.output
    # without --cache, extract writes where the file's training reads: its train.cache
    params.write_text(params.read_text() + f"train:\n  cache: {dataset['cache']}\n")
    to_train_cache = CliRunner().invoke(extract_command, args[:4])
    assert to_train_cache.exit_code == 0, to_train_cache.output
    assert f"{dataset['cache']}: extracted 0 samples in 0 parts (3 parts already complete)" in to_train_cache.output
    for good, wrong, message in (
            ("part_size: 2", "part_size: 0", "extract.part_size must be a whole number >= 1, got 0"),
            ("workers: 0", "workers: -1", "extract.workers must be 0 (this process) or more")):
        params.write_text(params.read_text().replace(good, wrong))
        bad = CliRunner().invoke(extract_command, args)
        assert bad.exit_code == 2 and f"{params}: {message}" in bad.output, bad.output
        params.write_text(params.read_text().replace(wrong, good))


def test_changed_source_redoes_only_its_part(dataset, tmp_path):
    samples, _ = make_dataset(tmp_path, n_good=1)
    specs = select_modalities("demo", MODALITIES)
    run_extract(samples, "demo", specs, tmp_path / "c.zarr", SETTINGS, workers=0, show_progress=False)
    before = read_part_attrs(tmp_path / "c.zarr")
    write_mmact_csv(Path(samples[2].paths["gyro"]), T0, 50, np.ones((60, 3)))  # part-000001
    summary = run_extract(samples, "demo", specs, tmp_path / "c.zarr", SETTINGS, workers=0, show_progress=False)
    assert summary["parts"] == 1 and summary["skipped_parts"] == 1
    after = read_part_attrs(tmp_path / "c.zarr")
    assert after["part-000000"] == before["part-000000"] and after["part-000001"] != before["part-000001"]
    assert np.all(FeatureCache(tmp_path / "c.zarr").read(samples[2].sample_id)["gyro"] == 1)


def test_extract_never_redoes_a_part_under_a_reader(tmp_path):
    samples, _ = make_dataset(tmp_path, n_good=1)
    specs = select_modalities("demo", MODALITIES)
    run_extract(samples, "demo", specs, tmp_path / "c.zarr", SETTINGS, workers=0, show_progress=False)
    reader = FeatureCache(tmp_path / "c.zarr")  # e.g. a training run, reading lazily
    before = read_part_attrs(tmp_path / "c.zarr")
    write_mmact_csv(Path(samples[2].paths["gyro"]), T0, 50, np.ones((60, 3)))  # part-000001 is now stale
    with pytest.raises(MumuError, match="another process is reading the cache.*no part was redone or deleted"):
        run_extract(samples, "demo", specs, tmp_path / "c.zarr", SETTINGS, workers=0, show_progress=False)
    assert read_part_attrs(tmp_path / "c.zarr") == before
    assert all(reader.read(s.sample_id) for s in reader.samples)  # every sample it listed is still there
    del reader
    summary = run_extract(samples, "demo", specs, tmp_path / "c.zarr", SETTINGS, workers=0, show_progress=False)
    assert summary["parts"] == 1
    assert np.all(FeatureCache(tmp_path / "c.zarr").read(samples[2].sample_id)["gyro"] == 1)


def test_a_copied_or_moved_dataset_is_not_extracted_again(tmp_path):
    samples, _ = make_dataset(tmp_path / "a", n_good=1)
    specs = select_modalities("demo", MODALITIES)
    run_extract(samples, "demo", specs, tmp_path / "c.zarr", SETTINGS, workers=0, show_progress=False)
    cache = FeatureCache(tmp_path / "c.zarr")
    before = {s.sample_id: cache.read(s.sample_id) for s in cache.samples}  # the usable samples, in memory
    del cache  # a reader open on the cache would keep extract from redoing part-000001
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copy)  # new mtimes, same bytes
    moved = [dataclasses.replace(s, paths={m: p and p.replace(str(tmp_path / "a"), str(tmp_path / "b"))
                                           for m, p in s.paths.items()}) for s in samples]
    summary = run_extract(moved, "demo", specs, tmp_path / "c.zarr", SETTINGS, workers=0, show_progress=False)
    # part-000000 (two clean samples) is kept; part-000001 lists a file that is missing in both places, and
    # its recorded failure names the old path, so it is redone
    assert (summary["parts"], summary["skipped_parts"]) == (1, 1)
    assert summary["failures"]["sample2"].endswith(f"{tmp_path / 'b/missing_gyro.csv'}: file not found")
    after = FeatureCache(tmp_path / "c.zarr")
    for sid, inputs in before.items():
        for m, value in inputs.items():
            assert (value is None and after.read(sid)[m] is None) or np.array_equal(value, after.read(sid)[m])
    del after
    recorded = {sid: stamps["gyro"][0] for attrs in read_part_attrs(tmp_path / "c.zarr").values()
                for sid, stamps in attrs["sources"].items()}
    assert all(path.startswith(str(tmp_path / "b")) for path in recorded.values())  # the stamps follow the move
    os.utime(moved[0].paths["gyro"], ns=(1, 1))  # a new mtime again, same bytes: still nothing to do
    assert run_extract(moved, "demo", specs, tmp_path / "c.zarr", SETTINGS, workers=0, show_progress=False)["parts"] == 0
    Path(moved[0].paths["gyro"]).write_bytes(Path(moved[0].paths["gyro"]).read_bytes()[::-1])  # same size, new bytes
    summary = run_extract(moved, "demo", specs, tmp_path / "c.zarr", SETTINGS, workers=0, show_progress=False)
    assert (summary["parts"], summary["skipped_parts"]) == (1, 1)


def test_sigkill_then_rerun_equals_an_uninterrupted_run(dataset, tmp_path):
    cache = tmp_path / "killed.zarr"
    cmd = [sys.executable, "cli.py", "extract", "--index", str(dataset["index"]), "--cache", str(cache),
           "--workers", "0", "--part-size", "1"] + [a for a in CLI_SETTINGS if a != "--part-size"]
    cmd.remove("2")  # the default part size given above
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (cache / "parts" / "part-000001").exists():  # kill after the second part, mid-run
            assert proc.poll() is None, "extract ended before it could be killed"
            assert time.monotonic() < deadline, "extract wrote no second part in 240 s"  # not hang the suite
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    survivors = {p.name: p.stat().st_mtime_ns for p in (cache / "parts").glob("part-*")}
    assert 2 <= len(survivors) < 6
    rerun = CliRunner().invoke(extract_command, cmd[3:])
    assert rerun.exit_code == 0, rerun.output
    assert f"({len(survivors)} parts already complete)" in rerun.output, rerun.output  # not redone
    assert {p.name: p.stat().st_mtime_ns for p in (cache / "parts").glob("part-*") if p.name in survivors} == survivors
    reference = tmp_path / "uninterrupted.zarr"
    settings = ExtractSettings(**{**vars(SETTINGS), "part_size": 1})
    run_extract(dataset["samples"], "demo", select_modalities("demo", MODALITIES), reference, settings,
                workers=0, show_progress=False)
    assert_same_caches(cache, reference)
    assert FeatureCache(cache).failures == FeatureCache(reference).failures


def test_ctrl_c_during_a_dask_extraction_records_no_failure_and_the_rerun_finishes(tmp_path):
    """Ctrl-C reaches the whole process group: it killed the decode helpers, whose files the dask workers then
    recorded as failed in parts saved as complete, and each worker printed a traceback. Now: exit 130 with the
    resume hint and no traceback, and the rerun completes a cache without failures."""
    from pipeline.datasets import build_index
    from pipeline.demo import write_demo_dataset

    root = write_demo_dataset(tmp_path / "demo", n_subjects=2, n_sessions=1, n_frames=12, frame_size=32)
    samples = build_index("demo", root).samples
    write_index(samples, tmp_path / "index.csv", list(samples[0].paths))
    cache = tmp_path / "c.zarr"
    settings = list(CLI_SETTINGS)
    del settings[settings.index("--part-size"):settings.index("--part-size") + 2]
    cmd = [sys.executable, "cli.py", "extract", "--index", str(tmp_path / "index.csv"), "--cache", str(cache),
           "--workers", "2", "--part-size", "1", *settings]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while not any((cache / "parts").glob("part-*")):  # Ctrl-C once a part is written, mid-run
            assert proc.poll() is None, "extract ended before it could be interrupted"
            assert time.monotonic() < deadline, "extract wrote no part in 240 s"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        output = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130 and "interrupted: rerun the same command to resume" in output, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    rerun = CliRunner().invoke(extract_command, cmd[3:])
    assert rerun.exit_code == 0, rerun.output
    finished = FeatureCache(cache)
    assert len(finished) == len(samples) and finished.failures == {}


def test_two_dask_workers_give_the_same_bytes_as_one_process(dataset, tmp_path):
    run_extract(dataset["samples"], "demo", select_modalities("demo", MODALITIES), tmp_path / "dask.zarr", SETTINGS,
                workers=2, show_progress=False)
    assert len(read_part_attrs(tmp_path / "dask.zarr")) == 3
    assert_same_caches(tmp_path / "dask.zarr", dataset["cache"])


def test_utd_mhad_rgb_depth_skeleton_inertial_from_files_like_the_release(tmp_path):
    """RGB (the release's _color.avi) and depth through the backbone, skeleton and inertial windowed on the inertial
    clock, one cache: the real-copy test below, on files written like the release (so it runs without the data,
    and with the RGB this machine's copy lacks)."""
    import scipy.io

    from pipeline.datasets import build_index

    root = write_utd_mhad(tmp_path / "utd", actions=(1, 27), subjects=(1,), trials=(1,), rgb=True)
    (root / "Skeleton/a27_s1_t1_skeleton.mat").unlink()  # a sequence with a stream missing
    specs = select_modalities("utd_mhad", "rgb,depth,skeleton,inertial")
    samples = build_index("utd_mhad", root).samples
    run_extract(samples, "utd_mhad", specs, tmp_path / "utd.zarr", SETTINGS, workers=0, show_progress=False)
    cache = FeatureCache(tmp_path / "utd.zarr")
    first = cache.read("a1_s1_t1")
    steps = scipy.io.loadmat(root / "Inertial/a1_s1_t1_inertial.mat")["d_iner"].shape[0]  # 50 Hz
    frames = scipy.io.loadmat(root / "Depth/a1_s1_t1_depth.mat")["d_depth"].shape[2]
    assert first["depth"].shape == (-(-frames // 3), 2048)
    assert first["inertial"].shape == (steps // 5, 5, 6) and first["skeleton"].shape == (steps // 5, 5, 60)
    assert cache.read("a27_s1_t1")["skeleton"] is None and cache.read("a27_s1_t1")["depth"] is not None
    raw = load_raw_sample(samples[0], specs, SETTINGS).inputs
    assert first["rgb"].shape == (2, 2048) and raw["rgb"].shape == (2, 32, 32, 3)  # frames 0 and 3 of 4
    for name in ("rgb", "depth"):
        direct = Backbone("random", "cpu", 4)(raw[name])
        np.testing.assert_allclose(first[name].astype(np.float32), direct, rtol=2e-3, atol=2e-3)


def test_one_dask_cluster_serves_extracts_of_other_modalities(dataset, tmp_path):
    """A long-lived cluster (`--scheduler`) keeps its workers between extracts: the second, of other modalities,
    must get what a run of its own gives, not the first's decoders."""
    from dask.distributed import LocalCluster

    sensors = select_modalities("demo", "acc_phone,gyro")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        run_extract(dataset["samples"], "demo", select_modalities("demo", "rgb_cam1"), tmp_path / "video.zarr",
                    SETTINGS, scheduler=cluster.scheduler_address, show_progress=False)
        run_extract(dataset["samples"], "demo", sensors, tmp_path / "sensors.zarr", SETTINGS,
                    scheduler=cluster.scheduler_address, show_progress=False)
    run_extract(dataset["samples"], "demo", sensors, tmp_path / "alone.zarr", SETTINGS, workers=0, show_progress=False)
    assert_same_caches(tmp_path / "sensors.zarr", tmp_path / "alone.zarr")
    assert FeatureCache(tmp_path / "sensors.zarr").failures == FeatureCache(tmp_path / "alone.zarr").failures


def test_a_cluster_run_writes_a_relative_cache_here_and_refuses_a_gpu_no_worker_offers(dataset, tmp_path, monkeypatch):
    from dask.distributed import Client, LocalCluster

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    sensors = select_modalities("demo", "acc_phone,gyro")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.run(os.chdir, str(tmp_path / "elsewhere"))  # a worker started in another directory
        run_extract(dataset["samples"], "demo", sensors, "sensors.zarr", SETTINGS, scheduler=cluster.scheduler_address,
                    show_progress=False)
        with pytest.raises(MumuError, match="no worker declares one; start GPU workers with `dask worker "):
            run_extract(dataset["samples"], "demo", sensors, "gpu.zarr", SETTINGS, device="cuda",
                        scheduler=cluster.scheduler_address, show_progress=False)  # before: waited forever
    run_extract(dataset["samples"], "demo", sensors, tmp_path / "alone.zarr", SETTINGS, workers=0, show_progress=False)
    assert_same_caches(tmp_path / "sensors.zarr", tmp_path / "alone.zarr")
    assert not (tmp_path / "elsewhere/sensors.zarr").exists()


def test_a_decode_that_ran_out_of_time_is_recorded_and_retried_by_the_next_run(tmp_path, monkeypatch):
    """A timeout may be a busy machine's, not the file's: the part keeps the failure and the next run redoes it."""
    samples, _ = make_dataset(tmp_path / "data", n_good=1)  # 4 samples in parts of 2
    specs, cache, slow = select_modalities("demo", MODALITIES), tmp_path / "c.zarr", samples[0]
    decode = DecodeWorker.decode

    def times_out_on_slow(worker, path, *args):
        if path == slow.paths["rgb_cam1"]:
            raise RetryableDecodeError("decoding took longer than 60 s with decord and PyAV; killed")
        return decode(worker, path, *args)

    monkeypatch.setattr(DecodeWorker, "decode", times_out_on_slow)
    first = run_extract(samples, "demo", specs, cache, SETTINGS, workers=0, show_progress=False)
    assert "longer than 60 s" in first["failures"][slow.sample_id]
    assert FeatureCache(cache).read(slow.sample_id)["rgb_cam1"] is None
    monkeypatch.setattr(DecodeWorker, "decode", decode)
    second = run_extract(samples, "demo", specs, cache, SETTINGS, workers=0, show_progress=False)
    assert (second["parts"], second["skipped_parts"]) == (1, 1) and slow.sample_id not in second["failures"]
    assert FeatureCache(cache).read(slow.sample_id)["rgb_cam1"].shape == (-(-7 // 3), 2048)
    third = run_extract(samples, "demo", specs, cache, SETTINGS, workers=0, show_progress=False)
    assert (third["parts"], third["skipped_parts"]) == (0, 2)


def test_a_decode_worker_that_does_not_start_stops_the_run_without_recording_a_failure(tmp_path, monkeypatch):
    _, index = make_dataset(tmp_path / "data", n_good=1)
    arguments = ["--index", str(index), "--cache", str(tmp_path / "c.zarr"), *CLI_SETTINGS, "--workers", "0"]
    monkeypatch.setattr("pipeline.decode.STARTUP_TIMEOUT_S", 0.0)
    result = CliRunner().invoke(extract_command, arguments)
    assert result.exit_code == 2 and "the decode worker process did not start within 0 s" in result.output, \
        result.output
    assert not read_part_attrs(tmp_path / "c.zarr")  # no part saved a failure that was the run's
    monkeypatch.setattr("pipeline.decode.STARTUP_TIMEOUT_S", 300.0)
    assert CliRunner().invoke(extract_command, arguments).exit_code == 0
    assert FeatureCache(tmp_path / "c.zarr").read("sample0")["rgb_cam1"] is not None


def test_real_utd_mhad_depth_skeleton_inertial(utd_root, tmp_path):
    specs = select_modalities("utd_mhad", "depth,skeleton,inertial")
    samples = []
    for sid in ("a1_s1_t1", "a8_s1_t4"):  # the second is absent from the release
        a, s, t = (int(x[1:]) for x in sid.split("_"))
        samples.append(Sample(sid, "utd_mhad", subject=s, activity=f"a{a}", activity_id=a - 1, group="g", group_id=0,
                              trial=t, paths={"depth": str(utd_root / "Depth" / f"{sid}_depth.mat"),
                                              "skeleton": str(utd_root / "Skeleton" / f"{sid}_skeleton.mat"),
                                              "inertial": str(utd_root / "Inertial" / f"{sid}_inertial.mat")}))
    run_extract(samples, "utd_mhad", specs, tmp_path / "utd.zarr", SETTINGS, workers=0, show_progress=False)
    cache = FeatureCache(tmp_path / "utd.zarr")
    first = cache.read("a1_s1_t1")  # inertial (160, 6), skeleton (20, 3, 48), depth (240, 320, 48)
    assert first["depth"].shape == (16, 2048)
    assert first["inertial"].shape == (32, 5, 6) and first["skeleton"].shape == (32, 5, 60)
    assert "file not found" in cache.failures["a8_s1_t4"]
    assert [s.sample_id for s in cache.samples] == ["a1_s1_t1"]
    direct = Backbone("random", "cpu", 4)(load_raw_sample(samples[0], specs, SETTINGS).inputs["depth"])
    np.testing.assert_allclose(first["depth"].astype(np.float32), direct, rtol=2e-3, atol=2e-3)


def test_a_shorter_index_leaves_no_old_parts_behind(dataset, tmp_path):
    """Samples removed from the index (a bad recording dropped): the next extract regroups the rest into fewer
    parts and removes the longer index's last parts, whose samples would otherwise be read twice or stale."""
    specs = select_modalities("demo", "acc_phone,gyro")
    cache = tmp_path / "c.zarr"
    run_extract(dataset["samples"], "demo", specs, cache, SETTINGS, workers=0, show_progress=False)  # 3 parts
    limited = run_extract(dataset["samples"][:2], "demo", specs, cache, SETTINGS, workers=0, show_progress=False,
                          whole_index=False)  # --limit 2: the parts beyond it are kept
    assert limited["parts"] == 0 and len(read_part_attrs(cache)) == 3
    shorter = [s for s in dataset["samples"] if s.sample_id != "sample1"]
    run_extract(shorter, "demo", specs, cache, SETTINGS, workers=0, show_progress=False)
    assert sorted(read_part_attrs(cache)) == ["part-000000", "part-000001", "part-000002"]  # 5 samples in parts of 2
    ids = [s.sample_id for s in FeatureCache(cache).samples]
    assert "sample1" not in ids and len(ids) == len(set(ids))
    run_extract(shorter[:4], "demo", specs, cache, SETTINGS, workers=0, show_progress=False)  # the whole index now
    assert sorted(read_part_attrs(cache)) == ["part-000000", "part-000001"]
    run_extract(dataset["samples"], "demo", specs, cache, SETTINGS, workers=0, show_progress=False)
    run_extract(dataset["samples"][2:], "demo", specs, cache, SETTINGS, workers=0, show_progress=False,
                whole_index=False)  # two samples fewer under --limit: the old last part repeats two samples
    with pytest.raises(MumuError, match=r"sample 'sample5' is in both part-000001 and part-000002; rerun"):
        FeatureCache(cache)


def test_files_skipped_when_indexing_are_listed_recorded_and_stop_strict(tmp_path):
    """A bad raw file is skipped by the indexing (its sample keeps the modality as missing); extract must say so,
    record it (in the cache when it indexed the data root itself, beside --index otherwise) and fail --strict when
    it is of a modality extracted."""
    from pipeline.commands import index as index_command
    from tests.fixtures import write_mmact

    root = write_mmact(tmp_path / "mmact")
    bad_video = root / "Video_trimmed/subject2/cam1/scene3/session1/using_pc.mp4"  # not an MP4 (the fixture's fault)
    cache = tmp_path / "c.zarr"
    args = ["--dataset", "mmact", "--cache", str(cache), "--modalities", "acc_phone", "--params", "none",
            "--workers", "0", "--device", "cpu", "--weights", "random"]
    itself = CliRunner().invoke(extract_command, args + ["--data-root", str(root)])
    assert itself.exit_code == 0, itself.output
    assert "2 files were skipped when indexing" in itself.output and f"{bad_video}: not an MP4 file" in itself.output
    recorded = json.loads((cache / "index_report.json").read_text())["skipped_files"]
    assert {"path": str(bad_video), "reason": "not an MP4 file (no MP4 box at the start)", "modality": "rgb_cam1"} \
        in recorded
    strict = CliRunner().invoke(extract_command, args + ["--data-root", str(root), "--strict", "--modalities", "gyro"])
    assert strict.exit_code != 0 and "empty file" in strict.output  # the bad gyro file (the video is not extracted)

    index = tmp_path / "index.csv"
    assert CliRunner().invoke(index_command, ["--dataset", "mmact", "--data-root", str(root), "--out", str(index)]
                              ).exit_code == 0
    from_index = CliRunner().invoke(extract_command, args + ["--index", str(index), "--strict", "--modalities", "gyro"])
    assert from_index.exit_code != 0
    assert "2 files were skipped when indexing" in from_index.output and str(tmp_path / "index_report.json") in from_index.output


def test_cache_info_tells_bridged_gaps_from_refused_streams(tmp_path):
    """Missing values are bridged by interpolation up to half a stream: cache-info says where and how much; a
    stream missing more is a failure instead, and not also reported as bridged."""
    rng = np.random.default_rng(0)
    samples = []
    for i, missing in enumerate((0.3, 0.8)):
        acc, gyro = tmp_path / f"s{i}_acc.csv", tmp_path / f"s{i}_gyro.csv"
        values = rng.normal(size=(100, 3))
        values[: int(100 * missing)] = np.nan  # the first rows keep their time stamps, not their values
        write_mmact_csv(acc, T0, 100, values)
        write_mmact_csv(gyro, T0, 50, rng.normal(size=(50, 3)))
        samples.append(Sample(f"s{i}", "demo", subject=1, activity="walk", activity_id=0, group="g", group_id=0,
                              session=1, scene=1, views=[], paths={"acc_phone": str(acc), "gyro": str(gyro)}))
    cache = tmp_path / "c.zarr"
    run_extract(samples, "demo", select_modalities("demo", "acc_phone,gyro"), cache, SETTINGS, show_progress=False)
    info = CliRunner().invoke(cache_info_command, [str(cache)])
    assert info.exit_code == 0, info.output
    assert "missing values bridged by interpolation: acc_phone in 1 samples (up to 30 %)" in info.output
    assert "1 with failures" in info.output and "80 % of the file's rows have missing or unreadable" in info.output


SENSOR_ARGS = CLI_SETTINGS + ["--modalities", "acc_phone,gyro", "--workers", "0"]  # the later --modalities wins


def _extract(index: Path, cache: Path, *more: str):
    return CliRunner().invoke(extract_command, ["--index", str(index), "--cache", str(cache), *SENSOR_ARGS, *more])


def _part_files(cache: Path) -> dict[str, int]:
    """Every file of the cache's parts with its mtime: what a run that must change nothing leaves as it was."""
    return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in (cache / "parts").rglob("*") if p.is_file()}


def test_rebuild_if_changed_resumes_an_unchanged_cache_instead_of_rebuilding_it(tmp_path):
    """dvc.yaml's extract passes --rebuild-if-changed: with the settings unchanged (a `dvc repro` after a kill) the
    cache is kept, its complete parts untouched, and only a missing part is computed."""
    _, index = make_dataset(tmp_path / "data", n_good=1)  # 4 samples in parts of 2
    cache = tmp_path / "c.zarr"
    assert _extract(index, cache).exit_code == 0
    before = _part_files(cache)
    same = _extract(index, cache, "--rebuild-if-changed")
    assert same.exit_code == 0, same.output
    assert "extracted 0 samples in 0 parts (2 parts already complete)" in same.output
    assert _part_files(cache) == before
    shutil.rmtree(cache / "parts" / "part-000001")  # as if `dvc repro` had been killed mid-extract
    resumed = _extract(index, cache, "--rebuild-if-changed")
    assert resumed.exit_code == 0, resumed.output
    assert "in 1 parts (1 parts already complete)" in resumed.output
    kept = {k: v for k, v in before.items() if k.startswith("parts/part-000000")}
    assert kept and {k: v for k, v in _part_files(cache).items() if k.startswith("parts/part-000000")} == kept


def test_extract_shows_a_progress_bar_of_its_samples_on_stderr(tmp_path):
    """Extraction of a real dataset takes hours: `cli.py extract` shows how many samples are done, also where its
    output is not a terminal (a log file, a batch job), on stderr, so that stdout keeps only the report. It counts
    samples as they are done, not whole parts (a part of 32 videos can take minutes on a CPU)."""
    _, index = make_dataset(tmp_path / "data", n_good=1)  # 4 samples, one part
    every_update = {**os.environ, "TQDM_MININTERVAL": "0", "TQDM_MINITERS": "1"}  # tqdm's own defaults, overridden
    result = subprocess.run([sys.executable, "cli.py", "extract", "--index", str(index), "--cache",
                             str(tmp_path / "c.zarr"), *SENSOR_ARGS, "--part-size", "4"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300, env=every_update)
    assert result.returncode == 0, result.stderr[-2000:]
    # tqdm redraws after \r; its rate reads "sample/s", or "s/sample" where a sample takes over a second
    assert re.search(r"(?:^|\r)extract: 100%.* 4/4 \[.*sample", result.stderr, re.MULTILINE), result.stderr[-2000:]
    assert re.search(r"(?:^|\r)extract:  50%.* 2/4 \[", result.stderr, re.MULTILINE), result.stderr[-2000:]
    assert "extract:" not in result.stdout


@pytest.mark.parametrize("flag", [[], ["--rebuild-if-changed"], ["--overwrite"]])
def test_an_index_that_would_empty_the_cache_is_refused_before_it_is_touched(tmp_path, flag):
    """An index of no samples, of one sample twice, or of a dataset that moved (not one file where it says) would
    leave a cache of nothing, or one cache-info rejects: extract refuses it, naming the index, and keeps the cache."""
    samples, index = make_dataset(tmp_path / "data", n_good=1)
    cache = tmp_path / "c.zarr"
    assert _extract(index, cache).exit_code == 0
    before = _part_files(cache)
    assert len(before) > 4
    empty = tmp_path / "empty.csv"
    empty.write_text(index.read_text().splitlines()[0] + "\n")
    twice = tmp_path / "twice.csv"
    write_index(samples + samples[:1], twice, list(samples[0].paths))
    moved = tmp_path / "moved.csv"
    shutil.copy(index, moved)
    shutil.move(tmp_path / "data", tmp_path / "elsewhere")
    expected = {empty: f"{empty}: the sample index holds no samples",
                twice: f"{twice}: duplicate sample_id sample0 (lines 2 and 6)",
                moved: f"{moved}: none of its 8 source files exists, the first: {tmp_path / 'data/sample0_acc.csv'}; "
                       "has the dataset moved"}
    for bad, message in expected.items():
        for target in (cache, tmp_path / "new.zarr"):
            result = _extract(bad, target, *flag)
            assert result.exit_code == 2 and message in result.output, result.output
            assert "Traceback" not in result.output
        assert _part_files(cache) == before and FeatureCache(cache).samples  # not one part redone or removed
        assert not (tmp_path / "new.zarr").exists()


@pytest.mark.parametrize("device, message", [("gpu", "--device gpu: not a device; use cpu, cuda, cuda:N or auto"),
                                             ("cuda", "--device cuda: CUDA is not available on this machine")])
def test_a_bad_device_is_refused_before_the_cache_is_rebuilt(tmp_path, monkeypatch, device, message):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine, wherever the test runs
    _, index = make_dataset(tmp_path / "data", n_good=1)
    cache = tmp_path / "c.zarr"
    assert _extract(index, cache).exit_code == 0
    before = _part_files(cache)
    for flag in ("--overwrite", "--rebuild-if-changed"):
        result = _extract(index, cache, flag, "--device", device)
        assert result.exit_code == 2 and f"Error: {message}" in result.output, result.output
        assert _part_files(cache) == before
    assert _extract(index, tmp_path / "new.zarr", "--device", device).exit_code == 2
    assert not (tmp_path / "new.zarr").exists()
    # with --scheduler the backbone runs on the cluster's workers: a head node without CUDA may still ask for it
    if device == "cuda":
        assert resolve_device("cuda:1", here=False) == "cuda:1"
    else:
        with pytest.raises(MumuError, match=message):
            resolve_device(device, here=False)


def test_device_auto_is_the_gpu_where_there_is_one_and_the_cpu_otherwise(monkeypatch):
    for available, expected in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr("torch.cuda.is_available", lambda: available)
        assert resolve_device("auto") == expected


def test_an_unreachable_scheduler_is_a_clear_error_and_the_rerun_without_it_finishes(tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.extract.SCHEDULER_TIMEOUT_S", 1)  # 60 s by default
    samples, _ = make_dataset(tmp_path, n_good=2)
    index = tmp_path / "index.csv"
    write_index(samples[:2], index, list(samples[0].paths))
    result = _extract(index, tmp_path / "c.zarr", "--scheduler", "tcp://127.0.0.1:1")  # nothing listens there
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "--scheduler tcp://127.0.0.1:1: no dask scheduler answered within 1 s" in result.output
    no_port = _extract(index, tmp_path / "c.zarr", "--scheduler", "127.0.0.1")
    assert no_port.exit_code == 2 and "--scheduler 127.0.0.1: not a dask scheduler address (missing port" \
        in no_port.output, no_port.output
    assert _extract(index, tmp_path / "c.zarr").exit_code == 0
    assert len(FeatureCache(tmp_path / "c.zarr")) == 2


def test_an_extraction_without_one_usable_sample_fails(tmp_path):
    """Every file there but none usable (a zero-frame video, an empty CSV): the cache records why, and the run
    says where that is listed and exits non-zero instead of reporting success."""
    samples, _ = make_dataset(tmp_path, n_good=0)
    index = tmp_path / "unusable.csv"
    write_index(samples[1:2], index, list(samples[0].paths))  # sample1: nothing usable
    Path(samples[1].paths["gyro"]).write_text("")  # present, but empty
    result = _extract(index, tmp_path / "c.zarr")
    assert result.exit_code == 2, result.output
    assert f"not one of the 1 samples has a usable modality; the failures are listed by `python cli.py cache-info " \
           f"{tmp_path / 'c.zarr'}`" in result.output
    assert set(FeatureCache(tmp_path / "c.zarr").failures) == {"sample1"}


def test_strict_fails_only_on_skipped_files_of_the_modalities_extracted(tmp_path):
    """A corrupt depth file does not stop --strict extracting skeleton and inertial (it is still listed), and the
    report records each skipped file's modality; extracting depth --strict fails on it."""
    root = write_utd_mhad(tmp_path / "utd", actions=(1,), subjects=(1,), trials=(1, 2))
    bad = root / "Depth/a1_s1_t2_depth.mat"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    args = ["--params", "none", "--dataset", "utd_mhad", "--data-root", str(root), "--weights", "random",
            "--workers", "0", "--device", "cpu", "--strict"]
    cache = tmp_path / "sensors.zarr"
    sensors = CliRunner().invoke(extract_command, args + ["--modalities", "skeleton,inertial", "--cache", str(cache)])
    assert sensors.exit_code == 0, sensors.output
    assert "1 files were skipped when indexing" in sensors.output and str(bad) in sensors.output
    (skipped,) = json.loads((cache / "index_report.json").read_text())["skipped_files"]
    assert skipped["path"] == str(bad) and skipped["modality"] == "depth"
    assert len(FeatureCache(cache).samples) == 2
    depth = CliRunner().invoke(extract_command,
                               [*args, "--modalities", "depth,inertial", "--cache", str(tmp_path / "d.zarr")])
    assert depth.exit_code == 2 and f"the first {bad}: truncated MATLAB file" in depth.output, depth.output


def test_the_bridged_gaps_line_lists_only_streams_with_gaps(tmp_path):
    rng = np.random.default_rng(0)
    acc, gyro = tmp_path / "s_acc.csv", tmp_path / "s_gyro.csv"
    values = rng.normal(size=(100, 3))
    values[:30] = np.nan
    write_mmact_csv(acc, T0, 100, values)
    write_mmact_csv(gyro, T0, 50, rng.normal(size=(50, 3)))  # whole: nothing bridged
    sample = Sample("s0", "demo", subject=1, activity="walk", activity_id=0, group="g", group_id=0, session=1,
                    scene=1, views=[], paths={"acc_phone": str(acc), "gyro": str(gyro)})
    run_extract([sample], "demo", select_modalities("demo", "acc_phone,gyro"), tmp_path / "c.zarr", SETTINGS,
                show_progress=False)
    info = CliRunner().invoke(cache_info_command, [str(tmp_path / "c.zarr")])
    (line,) = [l for l in info.output.splitlines() if l.startswith("missing values bridged")]
    assert line == "missing values bridged by interpolation: acc_phone in 1 samples (up to 30 %)", line
