"""The zarr feature cache: ragged round trip, fingerprint refusal, the writer lock, cache-info, damaged caches."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cache import (CacheLock, FeatureCache, cache_info_command, prepare_cache, read_part_attrs,
                            write_part)
from pipeline.errors import MumuError
from pipeline.index import Sample
from pipeline.modalities import ModalitySpec

ROOT = Path(__file__).resolve().parents[1]
SPECS = [ModalitySpec("rgb", "video"), ModalitySpec("imu", "sensor", 2, 3, 50.0)]


def header(**fingerprint) -> dict:
    return {"dataset": "utd_mhad", "modalities": [vars(s) for s in SPECS],
            "fingerprint": {"image_size": 112, "frame_stride": 3, **fingerprint}, "provenance": {"git_commit": "x"}}


def sample(i: int) -> Sample:
    return Sample(f"s{i}", "utd_mhad", subject=i, activity="wave", activity_id=2, group="hand", group_id=0,
                  paths={"rgb": f"/data/s{i}.avi", "imu": f"/data/s{i}.mat"})


def make_cache(path, rng) -> dict:
    prepare_cache(path, header(), overwrite=False)
    visual = [rng.normal(size=(n, 2048)).astype(np.float32) for n in (7, 300)] + [None]  # (S, 2048)
    sensor = [rng.normal(size=(n, 5, 6)).astype(np.float32) for n in (4, 1, 9)]  # (S, W, C)
    attrs = {"failures": {"s3": "rgb: s3.avi: the video has no frames"}, "unusable": [], "sources": {}}
    assert write_part(path, "part-000000", SPECS, [sample(1), sample(2)], {"rgb": visual[:2], "imu": sensor[:2]}, attrs)
    assert write_part(path, "part-000001", SPECS, [sample(3)], {"rgb": visual[2:], "imu": sensor[2:]}, attrs)
    return {"rgb": visual, "imu": sensor}


def test_ragged_round_trip_float16_visual_float32_sensor(tmp_path):
    written = make_cache(tmp_path / "c.zarr", np.random.default_rng(0))
    cache = FeatureCache(tmp_path / "c.zarr")
    assert [s.sample_id for s in cache.samples] == ["s1", "s2", "s3"]
    assert cache.samples[1].paths["imu"] == "/data/s2.mat" and cache.samples[1].activity == "wave"
    assert cache.failures == {"s3": "rgb: s3.avi: the video has no frames"}
    assert [m.name for m in cache.modalities] == ["rgb", "imu"]
    for i, sid in enumerate(["s1", "s2", "s3"]):
        got = cache.read(sid)
        if written["rgb"][i] is None:
            assert got["rgb"] is None
        else:
            assert got["rgb"].dtype == np.float16 and got["rgb"].shape == written["rgb"][i].shape
            np.testing.assert_array_equal(got["rgb"], written["rgb"][i].astype(np.float16))
        assert got["imu"].dtype == np.float32
        np.testing.assert_array_equal(got["imu"], written["imu"][i])
    with pytest.raises(MumuError, match="'s9' is not in the cache"):
        cache.read("s9")


def test_different_settings_are_refused_and_overwrite_rebuilds(tmp_path):
    make_cache(tmp_path / "c.zarr", np.random.default_rng(0))
    prepare_cache(tmp_path / "c.zarr", header(), overwrite=False)  # same settings: fine, parts kept
    assert len(read_part_attrs(tmp_path / "c.zarr")) == 2
    with pytest.raises(MumuError, match="frame_stride: cache has 3, now 2.*--overwrite"):
        prepare_cache(tmp_path / "c.zarr", header(frame_stride=2), overwrite=False)
    prepare_cache(tmp_path / "c.zarr", header(frame_stride=2), overwrite=True)
    cache = FeatureCache(tmp_path / "c.zarr")
    assert len(cache) == 0 and cache.fingerprint["frame_stride"] == 2


def test_a_rebuild_killed_while_deleting_the_old_cache_is_finished_by_the_rerun(tmp_path, monkeypatch):
    """The old cache's entries went in directory order, its header (zarr.json) before its parts: a kill in
    between left a folder every later extract (and `dvc repro`) refused as "not a mumu feature cache"."""
    import pipeline.cache

    make_cache(tmp_path / "c.zarr", np.random.default_rng(0))
    real_rmtree, calls = pipeline.cache.shutil.rmtree, []

    def killed_after_one(path, *args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(path)
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(pipeline.cache.shutil, "rmtree", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        with CacheLock(tmp_path / "c.zarr") as lock:
            prepare_cache(tmp_path / "c.zarr", header(frame_stride=2), overwrite=False, rebuild_if_changed=True,
                          lock=lock)
    monkeypatch.undo()
    assert (tmp_path / "c.zarr" / "zarr.json").is_file()  # deleted last
    (tmp_path / "c.zarr" / "zarr.json").unlink()  # what the old order left behind
    with CacheLock(tmp_path / "c.zarr") as lock:
        prepare_cache(tmp_path / "c.zarr", header(frame_stride=2), overwrite=False, rebuild_if_changed=True, lock=lock)
    cache = FeatureCache(tmp_path / "c.zarr")
    assert len(cache) == 0 and cache.fingerprint["frame_stride"] == 2


def test_a_part_left_in_staging_by_a_killed_writer_is_invisible(tmp_path):
    make_cache(tmp_path / "c.zarr", np.random.default_rng(0))
    staged = tmp_path / "c.zarr" / ".staging" / "part-000002-deadbeef"
    staged.mkdir(parents=True)
    (staged / "zarr.json").write_text("{half written")
    assert len(FeatureCache(tmp_path / "c.zarr")) == 3


def test_a_folder_that_is_not_a_cache_is_never_deleted(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(MumuError, match="is not a mumu feature cache"):
        prepare_cache(tmp_path / "data", header(), overwrite=True)
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"


def test_second_writer_is_locked_out(tmp_path):
    with CacheLock(tmp_path / "c.zarr"):
        with pytest.raises(MumuError, match="being written by another extract"):
            with CacheLock(tmp_path / "c.zarr"):
                pass
    with CacheLock(tmp_path / "c.zarr"):  # released after the first writer ends
        pass


def test_a_rebuild_waits_for_readers_and_readers_wait_for_a_rebuild(tmp_path):
    make_cache(tmp_path / "c.zarr", np.random.default_rng(0))
    reader = FeatureCache(tmp_path / "c.zarr")
    with CacheLock(tmp_path / "c.zarr") as lock:
        with pytest.raises(MumuError, match="another process is reading the cache"):
            prepare_cache(tmp_path / "c.zarr", header(frame_stride=2), overwrite=True, lock=lock)
    assert len(read_part_attrs(tmp_path / "c.zarr")) == 2 and len(reader) == 3  # nothing deleted
    del reader
    with CacheLock(tmp_path / "c.zarr") as lock:
        prepare_cache(tmp_path / "c.zarr", header(frame_stride=2), overwrite=True, lock=lock)
        with pytest.raises(MumuError, match="being rebuilt by extract"):
            FeatureCache(tmp_path / "c.zarr")
    assert len(FeatureCache(tmp_path / "c.zarr")) == 0  # readable again once the writer has finished


def test_not_a_cache_is_a_clear_error(tmp_path):
    with pytest.raises(MumuError, match="no feature cache here"):
        FeatureCache(tmp_path / "nothing.zarr")
    (tmp_path / "other.zarr").mkdir()
    (tmp_path / "other.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    with pytest.raises(MumuError, match="not a mumu feature cache"):
        FeatureCache(tmp_path / "other.zarr")


def test_cache_info_on_something_else_says_it_is_not_a_cache_rather_than_to_extract_into_it(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a01_s1_t1_inertial.mat").write_bytes(b"raw data")
    (tmp_path / "index.csv").write_text("sample_id,dataset\ns1,demo\n")
    for path in (tmp_path / "raw", tmp_path / "index.csv"):
        result = CliRunner().invoke(cache_info_command, [str(path)])
        assert result.exit_code == 2  # a MumuError: one line, no traceback
        assert f"Error: {path} is not a mumu feature cache" in result.output and "extract" not in result.output
    result = CliRunner().invoke(cache_info_command, [str(tmp_path / "new.zarr")])
    assert f"run `python cli.py extract --cache {tmp_path / 'new.zarr'}`" in result.output  # nothing there yet


def test_cache_info_reports_a_part_folder_without_its_zarr_json_but_not_staging_debris(tmp_path):
    make_cache(tmp_path / "c.zarr", np.random.default_rng(0))
    (tmp_path / "c.zarr" / ".staging" / "part-000002-deadbeef").mkdir(parents=True)  # a killed writer's: normal
    assert "warning" not in CliRunner().invoke(cache_info_command, [str(tmp_path / "c.zarr")]).output
    (tmp_path / "c.zarr" / "parts" / "part-000000" / "zarr.json").unlink()
    result = CliRunner().invoke(cache_info_command, [str(tmp_path / "c.zarr")])
    assert result.exit_code == 0, result.output
    assert "1 samples in 1 parts" in result.output
    assert (f"warning: {tmp_path / 'c.zarr' / 'parts'}: 1 part folder(s) without their zarr.json, so not complete "
            "and left out: part-000000; rerun the same `cli.py extract` to redo them") in result.output


def randomise(path: Path) -> None:
    """Garbage of the file's own size (a change of size is found before anything is read)."""
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


@pytest.mark.parametrize("damaged, named", [
    ("parts/part-000001/imu/values/zarr.json", "parts/part-000001: imu/values cannot be read (UnicodeDecodeError"),
    ("parts/part-000001/rgb/offsets/zarr.json", "parts/part-000001: rgb/offsets cannot be read (UnicodeDecodeError"),
    ("parts/part-000001/zarr.json", "parts/part-000001: zarr.json cannot be read (UnicodeDecodeError"),
])
def test_cache_info_names_a_damaged_part_and_the_cure(tmp_path, damaged, named):
    make_cache(tmp_path / "c.zarr", np.random.default_rng(0))
    randomise(tmp_path / "c.zarr" / damaged)
    result = CliRunner().invoke(cache_info_command, [str(tmp_path / "c.zarr")])
    assert result.exit_code == 2  # a MumuError: one line, no traceback
    assert f"Error: {tmp_path / 'c.zarr'}/{named}" in result.output
    assert "the part is damaged: delete that folder and rerun the same `cli.py extract`" in result.output


def test_a_part_zarr_json_that_is_not_json_is_named(tmp_path):
    make_cache(tmp_path / "c.zarr", np.random.default_rng(0))
    (tmp_path / "c.zarr" / "parts" / "part-000000" / "zarr.json").write_text('{"attributes": ')
    with pytest.raises(MumuError, match=r"parts/part-000000: zarr.json cannot be read \(JSONDecodeError"):
        FeatureCache(tmp_path / "c.zarr")


def test_a_damaged_root_zarr_json_is_named(tmp_path):
    make_cache(tmp_path / "c.zarr", np.random.default_rng(0))
    randomise(tmp_path / "c.zarr" / "zarr.json")
    result = CliRunner().invoke(cache_info_command, [str(tmp_path / "c.zarr")])
    assert result.exit_code == 2  # a MumuError: one line, no traceback
    assert f"Error: {tmp_path / 'c.zarr' / 'zarr.json'} cannot be read (UnicodeDecodeError" in result.output


def test_cache_info_summarises(tmp_path):
    make_cache(tmp_path / "c.zarr", np.random.default_rng(0))
    result = CliRunner().invoke(cache_info_command, [str(tmp_path / "c.zarr")])
    assert result.exit_code == 0, result.output
    assert "3 samples in 2 parts, 1 with failures" in result.output
    assert "307 segments" in result.output and "14 windows" in result.output
    assert "failed s3: rgb: s3.avi: the video has no frames" in result.output
    assert '"frame_stride": 3' in result.output and '"git_commit": "x"' in result.output
    assert "frame features computed in: not recorded (2 parts)" in result.output  # parts written without it


# ---------------------------------------------------------------------------------------------
# with extract and train: a small demo cache of sensors, three subjects in parts of one subject each


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    from pipeline.datasets import build_index
    from pipeline.demo import write_demo_dataset
    from pipeline.extract import ExtractSettings

    base = tmp_path_factory.mktemp("demo")
    root = write_demo_dataset(base / "demo", n_subjects=3, n_sessions=1, n_frames=9, frame_size=32)
    demo = {"samples": build_index("demo", root).samples, "settings": ExtractSettings(image_size=32, part_size=6)}
    extract(demo, base / "c.zarr")
    return {**demo, "cache": base / "c.zarr"}


def extract(demo: dict, cache: Path) -> dict:
    from pipeline.extract import run_extract
    from pipeline.modalities import select_modalities

    return run_extract(demo["samples"], "demo", select_modalities("demo", "acc_phone,gyro"), cache, demo["settings"],
                       show_progress=False)


def snapshot(folder: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every entry's bytes and mtime, the folder's own included (adding and removing a file changes it)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in [folder, *sorted(folder.rglob("*"))]}


def test_a_failed_extract_into_a_folder_that_is_not_a_cache_leaves_it_as_it_was(demo, tmp_path):
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "notes.txt").write_text("keep me")
    (tmp_path / "data" / "sub" / "x.csv").write_text("1,2,3\n")
    before = snapshot(tmp_path / "data")
    with pytest.raises(MumuError, match=f"{tmp_path / 'data'} is not a mumu feature cache"):
        extract(demo, tmp_path / "data")
    assert snapshot(tmp_path / "data") == before


def test_rerunning_extract_redoes_a_part_folder_without_its_zarr_json(demo, tmp_path):
    shutil.copytree(demo["cache"], tmp_path / "c.zarr")
    (tmp_path / "c.zarr" / "parts" / "part-000001" / "zarr.json").unlink()
    result = extract(demo, tmp_path / "c.zarr")
    assert (result["parts"], result["skipped_parts"]) == (1, 2)
    assert len(FeatureCache(tmp_path / "c.zarr")) == len(demo["samples"])
    assert "warning" not in CliRunner().invoke(cache_info_command, [str(tmp_path / "c.zarr")]).output


@pytest.mark.parametrize("damage", ["delete", "cut short"])
def test_an_array_file_lost_or_cut_short_is_named_and_the_rerun_redoes_its_part(demo, tmp_path, damage):
    """zarr would read a missing chunk as zeros: the part's list of its files finds it instead."""
    shutil.copytree(demo["cache"], tmp_path / "c.zarr")
    part = tmp_path / "c.zarr" / "parts" / "part-000001"
    chunk = next(f for f in sorted((part / "gyro" / "values").rglob("*")) if f.is_file() and f.name != "zarr.json")
    if damage == "delete":
        chunk.unlink()
    else:
        chunk.write_bytes(chunk.read_bytes()[:-10])
    with pytest.raises(MumuError, match=re.escape(f"{part}: gyro/values/{chunk.relative_to(part / 'gyro/values')} ")):
        FeatureCache(tmp_path / "c.zarr")
    result = extract(demo, tmp_path / "c.zarr")
    assert (result["parts"], result["skipped_parts"]) == (1, 2)
    redone, original = FeatureCache(tmp_path / "c.zarr"), FeatureCache(demo["cache"])
    for s in original.samples:
        for name, values in original.read(s.sample_id).items():
            np.testing.assert_array_equal(redone.read(s.sample_id)[name], values)


def test_a_cache_whose_extraction_has_not_finished_is_said_to_be_so_until_the_rerun(demo, tmp_path):
    shutil.copytree(demo["cache"], tmp_path / "c.zarr")
    shutil.rmtree(tmp_path / "c.zarr" / "parts" / "part-000002")  # as if extract were stopped before its last part
    info = CliRunner().invoke(cache_info_command, [str(tmp_path / "c.zarr")]).output
    assert (f"warning: {tmp_path / 'c.zarr'}: extraction has not finished: 1 planned part(s) are not written "
            "(part-000002); rerun the same `cli.py extract`") in info, info
    assert (extract(demo, tmp_path / "c.zarr")["parts"]) == 1
    assert "warning" not in CliRunner().invoke(cache_info_command, [str(tmp_path / "c.zarr")]).output


def test_training_on_a_cache_with_incomplete_parts_warns_naming_them(demo, tmp_path):
    shutil.copytree(demo["cache"], tmp_path / "c.zarr")
    for name in ("part-000000", "part-000001"):  # subjects 1 and 2: cross_subject has no one left to train on
        (tmp_path / "c.zarr" / "parts" / name / "zarr.json").unlink()
    (tmp_path / "params.yaml").write_text("extract:\n  image_size: 32\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "train", "--params", str(tmp_path / "params.yaml"), "--dataset", "demo",
         "--cache", str(tmp_path / "c.zarr"), "--modalities", "acc_phone,gyro", "--protocol", "cross_subject",
         "--max-epochs", "1", "--embed-dim", "8", "--accelerator", "cpu", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert (f"warning: {tmp_path / 'c.zarr' / 'parts'}: 2 part folder(s) without their zarr.json, so not complete "
            "and left out: part-000000, part-000001; rerun the same `cli.py extract` to redo them") in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: protocol cross_subject on demo")


def test_cache_info_counts_the_samples_that_hold_each_modality(tmp_path):
    make_cache(tmp_path / "c.zarr", np.random.default_rng(0))  # rgb: 2 of 3 samples; imu: all 3
    output = CliRunner().invoke(cache_info_command, [str(tmp_path / "c.zarr")]).output
    assert re.search(r"rgb\s+video\s+2 samples\s+307 segments", output), output
    assert re.search(r"imu\s+sensor\s+3 samples\s+14 windows", output), output


def test_a_cache_of_another_format_version_is_refused(tmp_path):
    make_cache(tmp_path / "c.zarr", np.random.default_rng(0))
    meta = tmp_path / "c.zarr" / "zarr.json"
    document = json.loads(meta.read_text())
    document["attributes"]["mumu_cache"]["format"] = 0
    meta.write_text(json.dumps(document))
    with pytest.raises(MumuError,
                       match=r"cache format 0, this code reads format 1; rebuild it with `extract --overwrite`"):
        FeatureCache(tmp_path / "c.zarr")
