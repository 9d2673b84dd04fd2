"""The zarr feature cache: ragged round trip, fingerprint refusal, the writer lock, cache-info."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cache import (CacheLock, FeatureCache, cache_info_command, prepare_cache, read_part_attrs,
                            write_part)
from pipeline.errors import MumuError
from pipeline.index import Sample
from pipeline.modalities import ModalitySpec

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


def test_cache_info_summarises(tmp_path):
    make_cache(tmp_path / "c.zarr", np.random.default_rng(0))
    result = CliRunner().invoke(cache_info_command, [str(tmp_path / "c.zarr")])
    assert result.exit_code == 0, result.output
    assert "3 samples in 2 parts, 1 with failures" in result.output
    assert "307 segments" in result.output and "14 windows" in result.output
    assert "failed s3: rgb: s3.avi: the video has no frames" in result.output
    assert '"frame_stride": 3' in result.output and '"git_commit": "x"' in result.output
    assert "frame features computed in: not recorded (2 parts)" in result.output  # parts written without it
