"""Input corruption for the noise study: which features change, and which must not."""
from __future__ import annotations

import pytest
import torch

from mumu.noise import corrupt_batch, split_groups
from pipeline.errors import MumuError
from pipeline.modalities import dataset_modalities, select_modalities

DEMO = dataset_modalities("demo")  # rgb_cam1, rgb_cam2 (visual) + four wearable sensors


def make_batch(n: int = 64, steps: int = 6) -> dict:
    """Random positive features, every sample with a ragged number of valid steps (rest zero padding)."""
    g = torch.Generator().manual_seed(1)
    x, lengths = {}, {}
    for spec in DEMO:
        shape = (n, steps, 2048) if spec.visual else (n, steps, 5, spec.channels)
        length = torch.randint(1, steps + 1, (n,), generator=g)
        length[0] = 0  # sample 0 lacks every modality's data: must stay untouched
        mask = (torch.arange(steps)[None, :] < length[:, None]).reshape(n, steps, *[1] * (len(shape) - 2))
        x[spec.name] = (torch.rand(shape, generator=g) + 0.5) * mask
        lengths[spec.name] = length
    return {"x": x, "lengths": lengths, "label": torch.zeros(n, dtype=torch.long), "sample_id": list(map(str, range(n)))}


def test_groups_split_camera_from_wearables():
    assert split_groups(DEMO) == {"visual": ["rgb_cam1", "rgb_cam2"],
                                  "non_visual": ["acc_phone", "acc_watch", "gyro", "orientation"]}
    # UTD-MHAD: skeleton comes from the depth camera, so it is visual; the inertial sensor is not
    assert split_groups(select_modalities("utd_mhad", "depth,skeleton,inertial")) == {
        "visual": ["depth", "skeleton"], "non_visual": ["inertial"]}


def test_drop_zeroes_exactly_the_chosen_group():
    batch = make_batch()
    before = {name: x.clone() for name, x in batch["x"].items()}
    noisy, groups = corrupt_batch(batch, DEMO, "drop", 1.0, torch.Generator().manual_seed(0))
    members = split_groups(DEMO)
    assert 10 < groups.count("visual") < 54  # a fair coin over 64 samples
    for b, group in enumerate(groups):
        for name, clean in before.items():
            if name in members[group]:
                assert not noisy["x"][name][b].any(), (b, name)
            else:
                assert torch.equal(noisy["x"][name][b], clean[b]), (b, name)
    assert noisy["lengths"] is batch["lengths"]  # still present: noise, not a missing modality
    for name, clean in before.items():  # the input batch itself is not modified
        assert torch.equal(batch["x"][name], clean), name


def test_partial_drop_and_gaussian_touch_only_valid_steps():
    batch = make_batch()
    groups = ["non_visual"] * 64
    for mode, level in (("drop", 0.5), ("gaussian", 0.7)):
        noisy, _ = corrupt_batch(batch, DEMO, mode, level, torch.Generator().manual_seed(0), groups=groups)
        for name in ("gyro", "acc_phone"):
            length = batch["lengths"][name]
            valid = torch.arange(6)[None, :] < length[:, None]  # (B, S)
            changed = (noisy["x"][name] != batch["x"][name]).flatten(2).any(-1)  # (B, S)
            assert not (changed & ~valid).any()  # padding stays zero
            fraction = changed[valid].float().mean().item()
            assert (0.3 < fraction < 0.7) if mode == "drop" else fraction == 1.0
        assert torch.equal(noisy["x"]["rgb_cam1"], batch["x"]["rgb_cam1"])


def test_mean_sets_the_chosen_steps_to_the_training_mean_and_hits_what_drop_hits():
    batch = make_batch()
    fills = {spec.name: torch.full((2048,) if spec.visual else (spec.channels,), 0.25) for spec in DEMO}
    dropped, groups = corrupt_batch(batch, DEMO, "drop", 0.5, torch.Generator().manual_seed(0))
    filled, same_groups = corrupt_batch(batch, DEMO, "mean", 0.5, torch.Generator().manual_seed(0), fills=fills)
    assert same_groups == groups
    for name, clean in batch["x"].items():
        hit = (dropped["x"][name] != clean).flatten(2).any(-1)  # (B, S) the steps drop zeroed
        steps = filled["x"][name].flatten(2)  # (B, S, F)
        assert (steps[hit] == 0.25).all()
        assert torch.equal(filled["x"][name][~hit], clean[~hit])  # every other step, padding included
    with pytest.raises(MumuError, match="needs the training means"):
        corrupt_batch(batch, DEMO, "mean", 1.0, torch.Generator().manual_seed(0))


def test_same_seed_same_corruption_and_level_zero_is_clean():
    batch = make_batch()
    a, ga = corrupt_batch(batch, DEMO, "gaussian", 0.5, torch.Generator().manual_seed(3))
    b, gb = corrupt_batch(batch, DEMO, "gaussian", 0.5, torch.Generator().manual_seed(3))
    assert ga == gb and all(torch.equal(a["x"][k], b["x"][k]) for k in a["x"])
    clean, _ = corrupt_batch(batch, DEMO, "gaussian", 0.0, torch.Generator().manual_seed(3))
    assert all(torch.allclose(clean["x"][k], batch["x"][k]) for k in batch["x"])


@pytest.mark.parametrize("mode, level, message", [("blur", 0.5, "unknown noise mode 'blur'; choose one of drop"),
                                                  ("drop", 1.5, r"noise level must lie in \[0, 1\], got 1.5")])
def test_bad_settings_are_user_errors(mode, level, message):
    with pytest.raises(MumuError, match=message):
        corrupt_batch(make_batch(4), DEMO, mode, level, torch.Generator().manual_seed(0))


def test_shift_delays_the_chosen_group_and_holds_its_first_step():
    batch = make_batch()
    groups = ["visual" if b % 2 else "non_visual" for b in range(64)]
    noisy, _ = corrupt_batch(batch, DEMO, "shift", 0.5, torch.Generator().manual_seed(0), groups=groups)
    members = split_groups(DEMO)
    for b, group in enumerate(groups):
        for name, clean in batch["x"].items():
            n = int(batch["lengths"][name][b])
            if name not in members[group] or n == 0:
                assert torch.equal(noisy["x"][name][b], clean[b]), (b, name)
                continue
            delay = min(round(0.5 * n), n - 1)
            expected = [clean[b, 0]] * delay + [clean[b, t] for t in range(n - delay)]
            assert torch.equal(noisy["x"][name][b, :n], torch.stack(expected)), (b, name, n)
            assert torch.equal(noisy["x"][name][b, n:], clean[b, n:])  # padding stays padding
    assert noisy["lengths"] is batch["lengths"]


def test_shift_needs_a_level_below_one():
    with pytest.raises(MumuError, match="below 1"):
        corrupt_batch(make_batch(), DEMO, "shift", 1.0, torch.Generator().manual_seed(0))


def test_evaluate_refuses_a_whole_duration_shift_before_reading_the_run(tmp_path):
    from click.testing import CliRunner

    from mumu.evaluate import evaluate_command

    result = CliRunner().invoke(evaluate_command, [str(tmp_path / "no-run"), "--params", "none", "--noise", "shift"])
    assert "level must be below 1" in result.output
    assert result.exit_code == 2  # a user error (MumuError): its message, no traceback
