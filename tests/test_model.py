"""MuMu and baselines: shapes, masking of padding and missing modalities, gradients, and learning."""
from __future__ import annotations

import math

import pytest
import torch

from mumu.fusion import GMFusion, ModalitySelfAttention, SMFusion, kl_to_target
from mumu.model import ARCHS, build_model, lost_modalities
from pipeline.errors import MumuError
from pipeline.modalities import ModalitySpec

INPUTS = {
    "rgb": ModalitySpec("rgb", "video"),
    "skeleton": ModalitySpec("skeleton", "sensor", 4, 3),
    "acc": ModalitySpec("acc", "sensor", 1, 3),
}
STEPS = {"rgb": 6, "skeleton": 7, "acc": 8}
# Sample 0 has everything; 1 misses rgb; 2 has only rgb; 3 misses skeleton. Several are padded.
LENGTHS = {"rgb": [6, 0, 3, 1], "skeleton": [7, 2, 0, 0], "acc": [1, 8, 0, 5]}
SMALL = dict(embed_dim=16, dropout=0.2, conv_channels=8)
# The sensor encoder variants: the paper's window encoder, and the sequence encoder with and without its LSTM,
# its max-pools and its motion channels.
ENCODERS = {"window": dict(sensor_encoder="window"), "sequence": dict(sensor_encoder="sequence"),
            "sequence-no-lstm": dict(sensor_encoder="sequence", lstm_layers=0),
            "sequence-pooled": dict(sensor_encoder="sequence", lstm_layers=0, max_pools=2),
            "sequence-motion": dict(sensor_encoder="sequence", lstm_layers=0, max_pools=2, motion=True)}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run ~10x faster on one thread than on two oversubscribed ones (shared CPUs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_batch(seed: int = 0, batch: int = 4, lengths=LENGTHS, window: int = 5):
    g = torch.Generator().manual_seed(seed)
    x = {"rgb": torch.randn(batch, STEPS["rgb"], 2048, generator=g).half(),  # the cache stores float16
         "skeleton": torch.randn(batch, STEPS["skeleton"], window, 12, generator=g),
         "acc": torch.randn(batch, STEPS["acc"], window, 3, generator=g)}
    return x, {name: torch.tensor(v) for name, v in lengths.items()}


def both_heads(out) -> torch.Tensor:
    """A scalar that depends on every output head."""
    return out.logits.sum() + (out.group_logits.sum() if out.group_logits is not None else 0)


def model(arch: str, seed: int = 0, **options):
    torch.manual_seed(seed)
    return build_model(arch, INPUTS, num_classes=5, num_groups=2, **{**SMALL, **options}).eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_output_shapes(arch):
    x, lengths = make_batch()
    out = model(arch)(x, lengths)
    assert out.logits.shape == (4, 5)
    assert out.unimodal.shape == (4, 3, 16) and out.fused.shape == (4, 16)
    assert (out.group_logits.shape == (4, 2)) if arch == "mumu" else out.group_logits is None
    expected = {f"temporal:{n}" for n in INPUTS} if arch != "b1" else set()
    expected |= {"mumu": {"sm", "gm"}, "b3": {"gm"}}.get(arch, set())
    assert set(out.attention) == expected
    for name in INPUTS:
        if arch != "b1":
            assert out.attention[f"temporal:{name}"].shape == (4, STEPS[name])
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("arch", ["mumu", "b2", "b3"])
def test_padded_steps_get_zero_temporal_weight(arch):
    x, lengths = make_batch()
    out = model(arch)(x, lengths)
    for name in INPUTS:
        w = out.attention[f"temporal:{name}"]
        valid = torch.arange(STEPS[name])[None, :] < lengths[name][:, None]
        assert (w[~valid] == 0).all()
        present = lengths[name] > 0
        torch.testing.assert_close(w[present].sum(1), torch.ones(int(present.sum())))
        assert (w[~present] == 0).all()


def junk_outside_lengths(x: dict, lengths: dict) -> dict:
    """The batch with every padded step and missing modality replaced by huge values (NaN for acc)."""
    noisy = {}
    for name, t in x.items():
        valid = torch.arange(t.shape[1])[None, :] < lengths[name][:, None]  # (B, S)
        junk = torch.full_like(t, 1e4) if name != "acc" else torch.full_like(t, float("nan"))
        noisy[name] = torch.where(valid.view(*valid.shape, *[1] * (t.dim() - 2)), t, junk)
    return noisy


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("arch", ARCHS)
def test_padding_and_missing_modality_values_do_not_change_output(arch, encoder):
    x, lengths = make_batch()
    net = model(arch, **ENCODERS[encoder])
    ref = net(x, lengths)
    noisy = junk_outside_lengths(x, lengths)
    assert not torch.equal(noisy["rgb"], x["rgb"])  # the batch really has padding and missing samples
    out = net(noisy, lengths)
    torch.testing.assert_close(out.logits, ref.logits)
    torch.testing.assert_close(out.fused, ref.fused)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_padding_does_not_change_output_in_training_mode(encoder):
    """BatchNorm sees only valid steps, so padding cannot shift its batch statistics."""
    x, lengths = make_batch()
    net = model("mumu", dropout=0.0, **ENCODERS[encoder]).train()
    ref = net(x, lengths).logits
    padded = {n: torch.cat([t, torch.randn_like(t) * 50], dim=1) for n, t in x.items()}
    torch.testing.assert_close(net(padded, lengths).logits, ref)


def test_sm_fusion_alpha_sums_to_one_over_present_modalities():
    x, lengths = make_batch()
    out = model("mumu")(x, lengths)
    present = torch.stack([lengths[n] > 0 for n in INPUTS], dim=1)
    for key in ("sm", "gm"):
        w = out.attention[key]
        torch.testing.assert_close(w.sum(1), torch.ones(4))
        assert (w[~present] == 0).all() and (w[present] > 0).all()
    assert out.attention["sm"][2].tolist() == [1.0, 0.0, 0.0]  # only rgb present


def test_sm_fusion_mixes_the_features_with_the_weights_it_reports():
    torch.manual_seed(0)
    xu = torch.randn(2, 3, 16)
    xu[1, 1:] = 0  # sample 1 has modality 0 only; a missing modality's feature is zero
    present = torch.tensor([[True, True, True], [True, False, False]])
    x_aux, alpha = SMFusion(16)(xu, present)
    torch.testing.assert_close(x_aux[1], xu[1, 0])  # one present modality: X_aux is its feature
    torch.testing.assert_close(x_aux, torch.einsum("bm,bmd->bd", alpha, xu))  # eq. (3)


def test_the_auxiliary_representation_guides_the_target_task():
    """Eqs. (4)-(9): the group head reads X_aux, and X_aux is GM-Fusion's query. Only SM-Fusion changes here (the
    unimodal features are held fixed), so everything downstream of X_aux must move with it, and GM-Fusion's weights
    too: a query taken from the unimodal features instead would leave them as they were."""
    torch.manual_seed(0)
    net = model("mumu")
    xu = torch.randn(4, len(INPUTS), SMALL["embed_dim"])  # (B, M, D)
    present = torch.ones(4, len(INPUTS), dtype=torch.bool)
    with torch.no_grad():
        before = net.fuse(xu, present)
        net.sm_fusion.score.weight.mul_(-3.0)  # other SM-Fusion weights -> another X_aux
        after = net.fuse(xu, present)
    assert not torch.allclose(before.attention["sm"], after.attention["sm"])
    assert not torch.allclose(before.group_logits, after.group_logits)  # eq. (4): F_aux(X_aux)
    assert not torch.allclose(before.attention["gm"], after.attention["gm"])  # eqs. (5)-(7): Q = W_q X_aux
    assert not torch.allclose(before.logits, after.logits)


def test_b3_fusion_weights_ignore_missing_modalities():
    x, lengths = make_batch()
    out = model("b3")(x, lengths)
    present = torch.stack([lengths[n] > 0 for n in INPUTS], dim=1)
    torch.testing.assert_close(out.attention["gm"].sum(1), torch.ones(4))
    assert (out.attention["gm"][~present] == 0).all()


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_reach_every_encoder(arch, encoder):
    x, lengths = make_batch()
    net = model(arch, **ENCODERS[encoder]).train()
    both_heads(net(x, lengths)).backward()
    for name, module in net.encoders.items():
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("arch", ARCHS)
def test_a_training_batch_of_one_one_step_sample_trains(arch, encoder):
    """One value per BatchNorm channel (the epoch's last batch holding one short sample, window = kernel)."""
    x, lengths = make_batch(batch=1, lengths={name: [1] for name in INPUTS}, window=3)
    net = model(arch, window=3, kernel_size=3, **ENCODERS[encoder]).train()
    out = net(x, lengths)
    both_heads(out).backward()
    assert torch.isfinite(out.logits).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("arch", ARCHS)
def test_modality_missing_in_whole_batch(arch, encoder):
    """Every parameter still gets a gradient (DDP needs it), and the missing encoder's is zero."""
    x, lengths = make_batch()
    lengths["skeleton"] = torch.zeros(4, dtype=torch.long)
    net = model(arch, **ENCODERS[encoder]).train()
    out = net(x, lengths)
    assert (out.unimodal[:, 1] == 0).all()
    both_heads(out).backward()
    assert all(p.grad is not None for p in net.parameters())
    assert all((p.grad == 0).all() for p in net.encoders["skeleton"].parameters())


def test_all_missing_sample_is_a_clear_error():
    x, lengths = make_batch(lengths={"rgb": [6, 0, 3, 0], "skeleton": [7, 2, 0, 0], "acc": [1, 8, 0, 0]})
    with pytest.raises(ValueError, match=r"positions \[3\]"):
        model("mumu")(x, lengths)


def test_bad_inputs_are_clear_errors():
    x, lengths = make_batch()
    with pytest.raises(ValueError, match="lacks modality acc"):
        model("b2")({k: v for k, v in x.items() if k != "acc"}, lengths)
    with pytest.raises(ValueError, match="'skeleton'.*ending in \\(5, 12\\)"):
        model("b2")({**x, "skeleton": x["skeleton"][:, :, :4]}, lengths)
    with pytest.raises(ValueError, match=r"'acc': lengths must be .* \[0, S=8\]"):
        model("b1")(x, {**lengths, "acc": torch.tensor([1, 9, 0, 5])})
    with pytest.raises(MumuError, match="unknown model"):
        build_model("b4", INPUTS, 5, 2)
    with pytest.raises(MumuError, match="unknown sensor encoder 'lstm'"):
        build_model("mumu", INPUTS, 5, 2, sensor_encoder="lstm")


def test_window_shorter_than_kernel():
    x, lengths = make_batch(window=2)
    out = model("mumu", window=2, kernel_size=3)(x, lengths)
    assert out.logits.shape == (4, 5)


def test_modality_order_is_the_inputs_order():
    net = build_model("mumu", dict(reversed(INPUTS.items())), 5, 2, **SMALL)
    assert net.modalities == ["acc", "skeleton", "rgb"]


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("arch", ARCHS)
def test_learns_label_carried_by_one_sensor(arch, encoder):
    """Labels depend only on the sign of the acc stream's mean; rgb and skeleton are noise."""
    torch.manual_seed(0)
    batch = 16
    x, _ = make_batch(seed=1, batch=batch, lengths={})
    labels = torch.arange(batch) % 2
    x["acc"] = x["acc"] * 0.5 + (labels.float() * 2 - 1).view(-1, 1, 1, 1)
    lengths = {n: torch.full((batch,), STEPS[n]) for n in INPUTS}
    net = build_model(arch, INPUTS, num_classes=2, num_groups=2, embed_dim=16, dropout=0.0, conv_channels=8,
                      **ENCODERS[encoder])
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(25):
        out = net(x, lengths)
        loss = torch.nn.functional.cross_entropy(out.logits, labels)
        if out.group_logits is not None:
            loss = loss + 0.5 * torch.nn.functional.cross_entropy(out.group_logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(x, lengths).logits.argmax(1) == labels).float().mean().item()
    assert accuracy == 1.0, f"{arch}: accuracy {accuracy:.2f}, final loss {loss.item():.3f}"


def test_sequence_encoder_mixes_neighbouring_steps_only_within_its_kernel():
    """A change at one step reaches the steps a 3-layer, kernel-3 conv stack covers (±3), no further:
    the sequence encoder really convolves along time, and the window encoder does not."""
    x, lengths = make_batch(lengths={"rgb": [6] * 4, "skeleton": [7] * 4, "acc": [8] * 4})
    changed = {**x, "acc": x["acc"].clone()}
    changed["acc"][:, 0] += 5.0
    for sensor_encoder, reach in (("sequence", 3), ("window", 0)):
        embed = model("mumu", sensor_encoder=sensor_encoder).encoders["acc"].embed
        mask = torch.ones(4, 8, dtype=torch.bool)
        moved = (embed(changed["acc"], mask)[0] - embed(x["acc"], mask)[0]).abs().sum((0, 2)) > 0  # (S,)
        assert moved.tolist() == [s <= reach for s in range(8)], sensor_encoder


def test_max_pools_quarter_the_temporal_weights_and_keep_padding_out():
    """Two max-pools: S steps -> ceil(S / 4) pooled steps; a pooled step is valid if any of its steps is."""
    x, lengths = make_batch()
    out = model("mumu", sensor_encoder="sequence", lstm_layers=0, max_pools=2)(x, lengths)
    w = out.attention["temporal:acc"]  # acc: 8 steps, lengths [1, 8, 0, 5]
    assert w.shape == (4, 2)
    assert (w[0, 1] == 0) and (w[1] > 0).all() and (w[2] == 0).all() and (w[3] > 0).all()


def test_modality_dropout_drops_one_modality_per_sample_and_never_the_last():
    _, lengths = make_batch(batch=4)
    present = torch.stack([lengths[n] > 0 for n in INPUTS], dim=1)  # (B, M); samples 0, 1, 3 have >= 2
    assert not lost_modalities(present, 0.0).any()
    for seed in range(5):
        torch.manual_seed(seed)
        lost = lost_modalities(present, 0.999)  # (B, M)
        assert (lost <= present).all()
        assert lost.sum(1).tolist() == [1 if n >= 2 else 0 for n in present.sum(1).tolist()]
    torch.manual_seed(0)  # and the lost one is drawn among all present, not always the same
    lost = lost_modalities(torch.ones(64, 3, dtype=torch.bool), 0.999)
    assert (lost.sum(0) > 10).all(), lost.sum(0)  # each about a third of the time


def test_modality_dropout_down_to_one_shows_every_stream_alone_and_never_empties_a_sample():
    present = torch.ones(64, len(INPUTS), dtype=torch.bool)  # every sample has all three modalities
    kept = {}
    for mode in ("one", "down_to_one"):
        torch.manual_seed(0)
        kept[mode] = present & ~lost_modalities(present, 0.999, mode)  # (B, M)
    alone = kept["down_to_one"][kept["down_to_one"].sum(1) == 1].float().sum(0)  # (M,) times each is left alone
    assert (alone > 0).all()
    assert kept["one"].sum(1).tolist() == [2] * 64
    assert set(kept["down_to_one"].sum(1).tolist()) == {1, 2}
    with pytest.raises(MumuError, match="unknown modality_dropout_mode 'all'"):
        lost_modalities(present, 0.5, "all")


@pytest.mark.parametrize("gm_heads", [1, 4])
def test_gm_fusion_weights_sum_to_one_over_present_modalities(gm_heads):
    x, lengths = make_batch()
    gm = model("mumu", gm_heads=gm_heads)(x, lengths).attention["gm"]  # (B, M), averaged over heads
    present = torch.stack([lengths[n] > 0 for n in INPUTS], dim=1)
    assert (gm[~present] == 0).all()
    torch.testing.assert_close(gm.sum(1), torch.ones(4))


def test_gm_fusion_sigmoid_gates_ignore_missing_modalities_and_are_not_normalised():
    x, lengths = make_batch()
    net = model("mumu", gm_gate="sigmoid", gm_heads=4)
    ref = net(x, lengths)
    present = torch.stack([lengths[n] > 0 for n in INPUTS], dim=1)
    gm = ref.attention["gm"]  # (B, M), averaged over heads
    assert (gm[~present] == 0).all() and ((gm[present] > 0) & (gm[present] < 1)).all()
    assert gm[0].sum() > 1.2  # three present modalities, each gated on its own: no convex mixture
    torch.testing.assert_close(net(junk_outside_lengths(x, lengths), lengths).logits, ref.logits)


def test_gm_fusion_concat_merge_tells_the_modalities_apart():
    """Eq. (7)'s sum shares W^V, so swapping two modalities' features (keys and values) cannot change X_c;
    the concat merge gives each modality its own slot of W^O, so it can."""
    torch.manual_seed(0)
    x_aux, xu, present = torch.randn(4, 16), torch.randn(4, 3, 16), torch.ones(4, 3, dtype=torch.bool)
    swapped = xu[:, [1, 0, 2]]
    for merge, changes in (("sum", False), ("concat", True)):
        fusion = GMFusion(16, heads=2, merge=merge, num_modalities=3)
        moved = (fusion(x_aux, xu, present)[0] - fusion(x_aux, swapped, present)[0]).abs().max()
        assert (moved > 1e-3) == changes, f"{merge}: {moved:.2e}"


@pytest.mark.parametrize("gm_gate", ["softmax", "sigmoid"])
def test_gm_fusion_concat_merge_ignores_padding_and_missing_modalities(gm_gate):
    x, lengths = make_batch()
    net = model("mumu", gm_merge="concat", gm_gate=gm_gate, gm_heads=4)
    ref = net(x, lengths)
    assert ref.logits.shape == (4, 5) and ref.fused.shape == (4, 16)
    torch.testing.assert_close(net(junk_outside_lengths(x, lengths), lengths).logits, ref.logits)


def test_xavier_fusion_init_keeps_the_scale_through_mumus_linear_chain():
    """At init, torch's default passes about a third of the unimodal features' sample-to-sample spread
    through W^V, W^O and W_f to X_f; Xavier passes about all of it (same encoders, same seed)."""
    x, lengths = make_batch(batch=8, lengths={name: [steps] * 8 for name, steps in STEPS.items()})
    kept = {}
    for init in ("torch", "xavier"):
        out = model("mumu", fusion_init=init, embed_dim=64)(x, lengths)
        kept[init] = (out.fused.std(0).mean() / out.unimodal.std(0).mean()).item()  # spread over samples
    assert kept["torch"] < 0.5 and kept["xavier"] > 0.7, kept


def test_count_fusion_norm_changes_only_samples_with_several_modalities():
    """Weights that sum to the number of present modalities: a one-modality sample is unchanged, every
    sample with two or more is not, and missing or padded values still change nothing."""
    x, lengths = make_batch()  # sample 2 has only rgb
    convex = model("mumu", fusion_norm="convex")(x, lengths).logits
    net = model("mumu", fusion_norm="count")
    count = net(x, lengths).logits
    moved = (count - convex).abs().amax(1)
    assert moved[2] == 0 and (moved[[0, 1, 3]] > 1e-4).all(), moved
    torch.testing.assert_close(net(junk_outside_lengths(x, lengths), lengths).logits, count)


def test_fusion_kl_is_zero_for_equal_weights_and_log_n_for_one_modality():
    x, lengths = make_batch()
    assert model("b2")(x, lengths).fusion_kl is None  # only MuMu has fusion weights
    net = model("mumu", gm_heads=2)
    assert net(x, lengths).fusion_kl > 0
    for layer in (net.sm_fusion.score, net.gm_fusion.q):  # zero scores: equal weights over the present modalities
        torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(net.sm_fusion.score.bias)
    assert net(x, lengths).fusion_kl.item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():  # SM-Fusion still equal, GM-Fusion's heads far from it: the term counts them too
        net.gm_fusion.q.weight.normal_().mul_(100)
    assert net(x, lengths).fusion_kl > 1e-4
    with torch.no_grad():  # two identical heads: the term takes their mean KL, as one head's (not twice it)
        for layer in (net.gm_fusion.q, net.gm_fusion.k):
            half = layer.weight.shape[0] // 2
            layer.weight[half:] = layer.weight[:half]
    out = net(x, lengths)
    expected = kl_to_target(out.attention["gm"], out.present).mean()
    assert expected > 1e-3 and out.fusion_kl.item() == pytest.approx(expected.item(), rel=1e-4)
    one_hot = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    present = torch.tensor([[True, True, True], [True, True, False]])
    torch.testing.assert_close(kl_to_target(one_hot, present), torch.tensor([math.log(3), math.log(2)]))


def test_fusion_kl_to_given_targets_renormalised_over_the_present_modalities():
    present = torch.tensor([[True, True, True], [True, True, False]])
    target = torch.tensor([[2.0, 1.0, 1.0], [3.0, 1.0, 9.0]])  # sample 1's third modality is missing: 9 is ignored
    weights = torch.tensor([[0.5, 0.25, 0.25], [0.75, 0.25, 0.0]])
    torch.testing.assert_close(kl_to_target(weights, present, target), torch.zeros(2))
    equal = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    expected = torch.tensor([math.log(1 / 3 / 0.5) / 3 + 2 * math.log(1 / 3 / 0.25) / 3,
                             0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)])
    torch.testing.assert_close(kl_to_target(equal, present, target), expected)
    heads = torch.stack([weights, equal], dim=1)  # (B, H=2, M): GM-Fusion's per-head weights, one target per sample
    torch.testing.assert_close(kl_to_target(heads, present[:, None, :], target[:, None, :]),
                               torch.stack([torch.zeros(2), expected], dim=1))


def test_fusion_kl_keeps_the_fusion_weights_near_equal_while_mumu_learns():
    """Labels carried by the acc stream alone: with the paper's loss the fusion weights move far from equal;
    with a heavy KL term they stay equal, and the model still learns the labels."""
    batch = 16
    x, _ = make_batch(seed=1, batch=batch, lengths={})
    labels = torch.arange(batch) % 2
    x["acc"] = x["acc"] * 0.5 + (labels.float() * 2 - 1).view(-1, 1, 1, 1)
    lengths = {n: torch.full((batch,), STEPS[n]) for n in INPUTS}
    kl, accuracy = {}, {}
    for weight in (0.0, 5.0):
        torch.manual_seed(0)
        net = build_model("mumu", INPUTS, num_classes=2, num_groups=2, embed_dim=16, dropout=0.0, conv_channels=8)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(40):
            out = net(x, lengths)
            loss = (torch.nn.functional.cross_entropy(out.logits, labels) + weight * out.fusion_kl
                    + 0.5 * torch.nn.functional.cross_entropy(out.group_logits, labels))  # groups = labels here
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            out = net(x, lengths)
        kl[weight] = out.fusion_kl.item()
        accuracy[weight] = (out.logits.argmax(1) == labels).float().mean().item()
    assert kl[0.0] > 0.3 and kl[5.0] < 0.01, kl
    assert accuracy == {0.0: 1.0, 5.0: 1.0}


def test_fusion_kl_with_targets_teaches_each_sample_its_own_fusion_weights():
    """Each sample's target favours one modality (chosen per sample): with a heavy KL term toward the targets,
    SM-Fusion learns to put most weight there, sample by sample; toward equal weights it does not."""
    batch = 16
    x, _ = make_batch(seed=2, batch=batch, lengths={})
    lengths = {n: torch.full((batch,), STEPS[n]) for n in INPUTS}
    favoured = torch.arange(batch) % 3  # (B,) the modality each sample's target favours
    target = torch.nn.functional.one_hot(favoured, 3).float() * 0.9 + 0.05  # (B, M)
    labels = torch.arange(batch) % 2
    share = {}
    for name, given in (("equal", None), ("targets", target)):
        torch.manual_seed(0)
        net = build_model("mumu", INPUTS, num_classes=2, num_groups=2, embed_dim=16, dropout=0.0, conv_channels=8)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(60):
            out = net(x, lengths, given)
            loss = torch.nn.functional.cross_entropy(out.logits, labels) + 5.0 * out.fusion_kl
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            alpha = net(x, lengths).attention["sm"]  # (B, M); no targets needed at test time
        share[name] = alpha[torch.arange(batch), favoured].mean().item()
    assert share["equal"] < 0.4 and share["targets"] > 0.7, share


def test_visual_norm_gives_a_step_far_out_of_range_the_scale_of_any_other():
    x, lengths = make_batch()
    far = dict(x, rgb=x["rgb"].float() * 40 - 20)  # every visual step 40x wider and shifted far off
    for norm, same in ((False, False), (True, True)):
        net = model("mumu", visual_norm=norm)
        rgb = list(INPUTS).index("rgb")
        a, b = net(x, lengths).unimodal[:, rgb], net(far, lengths).unimodal[:, rgb]  # (B, D)
        assert torch.allclose(a, b, atol=1e-3) == same


def test_bad_pooling_and_dropout_options_are_clear_errors():
    with pytest.raises(MumuError, match="max_pools must be 0, 1 or 2"):
        model("mumu", sensor_encoder="sequence", max_pools=3)
    with pytest.raises(MumuError, match="motion channels need the sequence sensor encoder"):
        model("mumu", sensor_encoder="window", motion=True)
    with pytest.raises(MumuError, match="gm_heads must be >= 1 and divide embed_dim"):
        model("mumu", gm_heads=3)
    with pytest.raises(MumuError, match="unknown gm_gate 'relu'; choose one of softmax, sigmoid"):
        model("mumu", gm_gate="relu")
    with pytest.raises(MumuError, match="unknown gm_merge 'mean'; choose one of sum, concat"):
        model("mumu", gm_merge="mean")
    with pytest.raises(MumuError, match="unknown fusion_init 'zeros'; choose one of torch, xavier"):
        model("mumu", fusion_init="zeros")
    with pytest.raises(MumuError, match="unknown fusion_norm 'sum'; choose one of convex, count"):
        model("mumu", fusion_norm="sum")


def test_b3_fusion_is_not_ruled_by_a_stream_of_a_larger_scale():
    """B3 normalises each modality's tokens (as HAMLET does) before its self-attention: a stream whose
    features are 100x larger (a 2048-d depth stream's, say) gets the same weights and output in training."""
    torch.manual_seed(0)
    fusion = ModalitySelfAttention(dim=16, heads=2, dropout=0.0, num_modalities=3).train()
    xu = torch.randn(8, 3, 16)  # (B, M, D)
    present = torch.ones(8, 3, dtype=torch.bool)
    louder = xu.clone()
    louder[:, 0] *= 100
    merged, weights = fusion(xu, present)
    merged_louder, weights_louder = fusion(louder, present)
    torch.testing.assert_close(weights_louder, weights, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(merged_louder, merged, atol=1e-4, rtol=1e-3)
