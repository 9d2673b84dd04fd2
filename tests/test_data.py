"""Batches from the feature cache and from raw files: shapes, masking, sampling, workers, parity, errors.

Most tests read the `tiny_demo` fixture (conftest.py): a small demo dataset and its feature cache.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mumu.data import CacheDataset, EpochSampler, PadCollate, is_empty, make_loader, step_indices
from pipeline.errors import MumuError
from tests.fixtures import IMAGE_SIZE


def test_step_indices_uniform_at_eval_jittered_in_training():
    assert step_indices(3, 8, None).tolist() == [0, 1, 2]  # short: kept whole (and padded later)
    assert step_indices(10, 5, None).tolist() == [1, 3, 5, 7, 9]  # centre of each of 5 bins of 2
    rng = np.random.default_rng(0)
    draws = np.stack([step_indices(10, 5, rng) for _ in range(200)])  # (200, 5)
    assert (draws // 2 == np.arange(5)).all()  # one step from each bin ...
    assert len({tuple(d) for d in draws}) > 1  # ... at random positions inside it
    assert step_indices(10, 5, None, span=(0.2, 0.8)).tolist() == [2, 3, 5, 6, 7]  # bins over steps 2-8 only
    # a stream with fewer steps than kept is cropped too: every modality shares the crop (12 segments of video
    # beside 100 sensor steps, the middle half of each)
    assert step_indices(12, 32, None, span=(0.25, 0.75)).tolist() == [3, 4, 5, 6, 7, 8]
    assert step_indices(100, 64, None, span=(0.25, 0.75))[[0, -1]].tolist() == [25, 74]


def test_time_crop_gives_every_modality_the_same_steps_of_one_random_crop_and_none_jitters_each(tiny_demo):
    from pipeline.cache import FeatureCache
    from pipeline.modalities import select_modalities

    cache = FeatureCache(tiny_demo.cache)
    sample = cache.samples[0]
    arrays = cache.read(sample.sample_id)
    n = len(arrays["acc_phone"])  # the phone accelerometer and the gyroscope share one time base
    assert len(arrays["gyro"]) == n > 4
    specs = select_modalities("demo", "acc_phone,gyro")
    steps = {"acc_phone": 4, "gyro": 4}

    def chosen(item, name):  # which cached windows the item holds
        return [int(np.flatnonzero((arrays[name] == row.numpy()).all(axis=(1, 2)))[0]) for row in item["x"][name]]

    train = CacheDataset(tiny_demo.cache, [sample], specs, steps, train=True, seed=0, time_crop=0.4)
    patterns = set()
    for epoch in range(30):
        item = train[(0, epoch)]
        assert chosen(item, "acc_phone") == chosen(item, "gyro")
        patterns.add(tuple(chosen(item, "acc_phone")))
    assert len(patterns) > 1 and all(list(p) == sorted(p) for p in patterns)  # in time order
    evaluation = CacheDataset(tiny_demo.cache, [sample], specs, steps, train=False, seed=0, time_crop=0.4)
    assert chosen(evaluation[0], "gyro") == step_indices(n, 4, None).tolist()  # no crop at evaluation

    jittered = CacheDataset(tiny_demo.cache, [sample], specs, steps, train=True, seed=0)  # time_crop 0, the default
    draws = [(chosen(jittered[(0, epoch)], "acc_phone"), chosen(jittered[(0, epoch)], "gyro")) for epoch in range(30)]
    assert len({tuple(acc) for acc, _ in draws}) > 1  # a random step per bin, not the bin centres
    assert any(acc != gyro for acc, gyro in draws)  # drawn anew for each modality


def test_collate_pads_and_marks_missing_modalities():
    collate = PadCollate({"v": (2048,), "s": (5, 3)}, {"v": 4, "s": 6})
    items = [
        {"x": {"v": torch.ones(2, 2048), "s": torch.ones(6, 5, 3)}, "label": 1, "group": 0, "sample_id": "a"},
        {"x": {"v": torch.ones(4, 2048), "s": None}, "label": 2, "group": 1, "sample_id": "b"},
    ]
    batch = collate(items)
    assert batch["x"]["v"].shape == (2, 4, 2048) and batch["x"]["s"].shape == (2, 6, 5, 3)
    assert batch["lengths"]["v"].tolist() == [2, 4] and batch["lengths"]["s"].tolist() == [6, 0]
    assert batch["x"]["v"][0, 2:].abs().sum() == 0  # padding is zero
    assert batch["x"]["s"][1].abs().sum() == 0  # a missing modality is all padding, length 0
    assert batch["label"].tolist() == [1, 2] and batch["group"].tolist() == [0, 1]
    assert batch["sample_id"] == ["a", "b"]
    with pytest.raises(MumuError, match="expected"):
        collate([{"x": {"v": torch.ones(2, 512), "s": None}, "label": 0, "group": 0, "sample_id": "c"}])
    nothing = {"x": {"v": None, "s": None}, "label": 0, "group": 0, "sample_id": "d"}  # its raw files all failed
    assert collate([*items, nothing])["sample_id"] == ["a", "b"]  # left out, as a cache leaves it out
    empty = collate([nothing])  # a batch of such samples only: empty, which the model steps skip
    assert is_empty(empty) and empty["x"]["s"].shape == (0, 6, 5, 3) and empty["label"].shape == (0,)


def test_sampler_shards_cover_every_sample():
    # evaluation: 2 ranks together see each of 11 samples exactly once
    seen = [i for rank in range(2) for i, _ in EpochSampler(11, shuffle=False, seed=0, rank=rank, world_size=2)]
    assert sorted(seen) == list(range(11))
    # training: equal shares per rank (DDP steps in lockstep), an order fixed by (seed, epoch)
    shares = [list(EpochSampler(11, shuffle=True, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 6
    assert {i for share in shares for i, _ in share} == set(range(11))
    again = EpochSampler(11, shuffle=True, seed=3, rank=0, world_size=2)
    assert list(again) == shares[0]
    again.set_epoch(1)
    assert [i for i, _ in again] != [i for i, _ in shares[0]] and all(e == 1 for _, e in again)


def test_cache_batches_hold_the_cached_features(tiny_demo):
    from pipeline.cache import FeatureCache
    from pipeline.modalities import select_modalities

    cache = FeatureCache(tiny_demo.cache)
    specs = select_modalities("demo", "rgb_cam1,acc_phone")
    max_steps = {"rgb_cam1": 3, "acc_phone": 16}
    dataset = CacheDataset(tiny_demo.cache, cache.samples[:5], specs, max_steps, train=False, seed=0)
    collate = PadCollate({"rgb_cam1": (2048,), "acc_phone": (5, 3)}, max_steps)
    batch = next(iter(make_loader(dataset, collate, batch_size=5, shuffle=False, seed=0, num_workers=0)))
    assert batch["x"]["rgb_cam1"].shape == (5, 3, 2048) and batch["x"]["rgb_cam1"].dtype == torch.float32
    assert batch["x"]["acc_phone"].shape == (5, 16, 5, 3)
    first = cache.read(cache.samples[0].sample_id)
    n_frames, n_windows = len(first["rgb_cam1"]), len(first["acc_phone"])  # 4 segments, 7 windows
    assert batch["lengths"]["rgb_cam1"][0] == 3 and batch["lengths"]["acc_phone"][0] == n_windows
    keep = step_indices(n_frames, 3, None)  # evaluation: uniform, deterministic
    assert torch.equal(batch["x"]["rgb_cam1"][0], torch.from_numpy(first["rgb_cam1"][keep].astype(np.float32)))
    assert torch.equal(batch["x"]["acc_phone"][0, :n_windows], torch.from_numpy(first["acc_phone"]))
    assert batch["x"]["acc_phone"][0, n_windows:].abs().sum() == 0
    assert batch["label"][0] == cache.samples[0].activity_id and batch["sample_id"][0] == cache.samples[0].sample_id


def test_spawned_workers_give_the_same_training_batches(tiny_demo):
    from pipeline.cache import FeatureCache
    from pipeline.modalities import select_modalities

    cache = FeatureCache(tiny_demo.cache)
    specs = select_modalities("demo", "rgb_cam1,gyro")
    max_steps = {"rgb_cam1": 2, "gyro": 3}  # shorter than the sequences: training draws random steps
    collate = PadCollate({"rgb_cam1": (2048,), "gyro": (5, 3)}, max_steps)

    def epoch_batches(workers: int) -> list[dict]:
        dataset = CacheDataset(tiny_demo.cache, cache.samples[:12], specs, max_steps, train=True, seed=5)
        loader = make_loader(dataset, collate, batch_size=4, shuffle=True, seed=5, num_workers=workers)
        loader.sampler.set_epoch(1)
        return list(loader)

    in_process, spawned = epoch_batches(0), epoch_batches(2)
    assert [b["sample_id"] for b in in_process] == [b["sample_id"] for b in spawned]
    for a, b in zip(in_process, spawned):
        for name in max_steps:
            assert torch.equal(a["x"][name], b["x"][name])


def test_raw_path_gives_the_cache_inputs_and_logits(tiny_demo):
    """Parity: decoding + the frozen ResNet-50 in the model step == the cached features (float16
    tolerance), sensor windows identical, and so the same logits from the same model."""
    from mumu.module import MumuModule
    from mumu.rundata import prepare_data

    cached, raw = (prepare_data(tiny_demo.config(source=source)) for source in ("cache", "raw"))
    by_id = {s.sample_id: s for s in raw.samples}
    samples = [s for s in cached.samples if s.subject == 2][:4]
    cache_batch = next(iter(cached.loader(samples, batch_size=4)))
    raw_batch = next(iter(raw.loader([by_id[s.sample_id] for s in samples], batch_size=4)))
    assert raw_batch["x"]["rgb_cam1"].dtype == torch.uint8  # frames, (B, S, H, W, 3)
    assert raw_batch["x"]["rgb_cam1"].shape[2:] == (IMAGE_SIZE, IMAGE_SIZE, 3)

    torch.manual_seed(0)
    cfg = tiny_demo.config()
    module = MumuModule(cfg.to_dict(), [vars(s) for s in cached.specs], cached.activity_names, cached.group_names)
    raw_module = MumuModule(cfg.to_dict(), [vars(s) for s in cached.specs], cached.activity_names,
                            cached.group_names, raw_visual=True)
    raw_module.load_state_dict(module.state_dict())
    module.eval(), raw_module.eval()
    with torch.no_grad():
        x_cache, x_raw = module.encoder_inputs(cache_batch), raw_module.encoder_inputs(raw_batch)
        for name in x_cache:
            assert torch.equal(cache_batch["lengths"][name], raw_batch["lengths"][name])
            torch.testing.assert_close(x_raw[name], x_cache[name], rtol=1e-2, atol=2e-3)  # float16 storage
        torch.testing.assert_close(raw_module(raw_batch).logits, module(cache_batch).logits, rtol=1e-3, atol=1e-3)


def test_noise_hits_a_raw_runs_features_as_it_hits_a_cache_runs(tiny_demo, tmp_path):
    """The noise study corrupts features. A run trained from raw files had its frames corrupted instead: dropped
    frames are black images, whose ResNet-50 features are not zero, so the same model scored otherwise."""
    from mumu.evaluate import infer
    from mumu.module import MumuModule
    from mumu.rundata import prepare_data
    from mumu.rundir import LoadedRun

    cached, raw = (prepare_data(tiny_demo.config(source=source)) for source in ("cache", "raw"))
    torch.manual_seed(0)
    modules = [MumuModule(tiny_demo.config().to_dict(), [vars(s) for s in cached.specs], cached.activity_names,
                          cached.group_names, raw_visual=raw_visual).eval() for raw_visual in (False, True)]
    modules[1].load_state_dict(modules[0].state_dict())
    split = {"train": [], "val": [], "test": [s.sample_id for s in cached.samples if s.subject == 2][:4]}
    for noise in ("drop", "mean"):  # "mean" was refused for raw runs: it sets features, not pixels
        cache_run, raw_run = (infer(LoadedRun(module, data.cfg, data, split, tmp_path), "visual", noise)
                              for module, data in zip(modules, (cached, raw)))
        np.testing.assert_allclose(raw_run.fused, cache_run.fused, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# bad input: one clear line naming the problem


def test_missing_cache_is_a_clear_error(tiny_demo, tmp_path):
    from mumu.rundata import prepare_data

    with pytest.raises(MumuError, match=r"feature cache .*nowhere\.zarr does not exist.*extract"):
        prepare_data(tiny_demo.config(cache=str(tmp_path / "nowhere.zarr")))


def test_modality_missing_from_cache_is_a_clear_error(tiny_demo):
    from mumu.rundata import prepare_data

    with pytest.raises(MumuError, match=r"has no modality rgb_cam1 \(it has acc_phone\)"):
        prepare_data(tiny_demo.config(cache=str(tiny_demo.sensor_cache), modalities="rgb_cam1,acc_phone"))


def test_fingerprint_mismatch_is_a_clear_error(tiny_demo):
    from mumu.rundata import prepare_data

    with pytest.raises(MumuError, match=r"extracted with image_size=32 \(requested 112\)"):
        prepare_data(tiny_demo.config(extract={"image_size": 112}))


def test_empty_split_is_a_clear_error(tiny_demo):
    from mumu.rundata import prepare_data, split_samples

    data = prepare_data(tiny_demo.config(cache=str(tiny_demo.sensor_cache), modalities="acc_phone",
                                         protocol="cross_subject"))  # one subject only: nobody to test on
    with pytest.raises(MumuError, match=r"split cross_subject: the \w+ set is empty"):
        split_samples(data)


def test_each_bin_draws_its_own_offset():
    rng = np.random.default_rng(0)
    draws = np.stack([step_indices(10, 5, rng) for _ in range(200)])  # bins of 2 steps
    assert any(len(set((d % 2).tolist())) > 1 for d in draws)  # not one offset shared by every bin


def test_the_training_order_depends_on_the_seed():
    orders = {seed: [i for i, _ in EpochSampler(11, shuffle=True, seed=seed)] for seed in (3, 4)}
    assert orders[3] != orders[4]


def test_a_cache_of_some_sensors_gives_what_training_from_raw_files_gives(tmp_path):
    """The time base of a sample is the span all of its sensor streams cover. A cache extracted with the skeleton
    alone put it on the skeleton's own span, while training from raw files (and a cache of both) used the span
    the inertial stream also covers: the same skeleton, other steps (up to 0.25 apart on real UTD-MHAD)."""
    from mumu.config import resolve_config
    from mumu.rundata import prepare_data
    from pipeline.datasets import build_index
    from pipeline.extract import ExtractSettings, run_extract
    from pipeline.modalities import select_modalities
    from tests.fixtures import write_utd_mhad

    root = write_utd_mhad(tmp_path / "utd", actions=(1,), subjects=(1, 2), trials=(1,), absent=())
    extract = {"sensor_window": 1, "sensor_stride": 1, "sensor_rate_hz": 50, "weights": "random"}
    run_extract(build_index("utd_mhad", root).samples, "utd_mhad", select_modalities("utd_mhad", "skeleton"),
                tmp_path / "skeleton.zarr", ExtractSettings(**extract), show_progress=False)
    settings = dict(dataset="utd_mhad", data_root=str(root), cache=str(tmp_path / "skeleton.zarr"),
                    modalities="skeleton", protocol="odd_even", extract=extract, max_steps_sensor=512)
    cached, raw = (prepare_data(resolve_config(None, **settings, source=source)) for source in ("cache", "raw"))
    cache_batch, raw_batch = (next(iter(data.loader(data.samples))) for data in (cached, raw))
    assert torch.equal(cache_batch["lengths"]["skeleton"], raw_batch["lengths"]["skeleton"])
    torch.testing.assert_close(cache_batch["x"]["skeleton"], raw_batch["x"]["skeleton"])
