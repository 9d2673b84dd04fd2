"""Per-subject BatchNorm statistics: test-time adaptation (AdaBN), `cli.py retest`, and one-subject training batches."""
from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from click.testing import CliRunner

from mumu.adapt import (adapted_batchnorm, by_subject, predict_by_subject, silent_streams, split_by_condition,
                        subject_batchnorm_state)
from mumu.data import SubjectBatchSampler
from mumu.evaluate import CONDITIONS, evaluate_command, infer, infer_conditions
from mumu.noise import corrupt_tensor
from mumu.metrics import headline
from mumu.rundir import load_run
from mumu.train import retest, retest_command, train_once
from pipeline.errors import MumuError


def test_probabilities(run_dir) -> dict[str, list[float]]:
    with open(run_dir / "predictions.csv", newline="") as f:
        return {row["sample_id"]: [float(v) for k, v in row.items() if k.startswith("p:")] for row in csv.DictReader(f)}


test_probabilities.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def trained(tiny_demo, tmp_path_factory):
    """A MuMu run on the tiny demo (cross_session: all 4 subjects are tested, so adaptation has 4 subjects)."""
    torch.set_num_threads(1)
    cfg = tiny_demo.config(tmp_path_factory.mktemp("runs") / "run", max_epochs=3, batch_size=4, lr=1e-2)
    train_once(cfg, progress=False)
    return cfg


@pytest.fixture(scope="module")
def trained_checkpoint_digest(trained) -> str:
    """The tested checkpoint's digest straight after training, before any retest links to it."""
    return hashlib.sha256((trained.run_dir / "checkpoints" / "best.ckpt").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def adapted(trained, trained_checkpoint_digest, tmp_path_factory):
    return retest(trained.run_dir, tmp_path_factory.mktemp("retest") / "adapted", progress=False, adapt_bn=True)


def test_retest_without_adaptation_reproduces_the_trained_run(trained, tmp_path):
    result = retest(trained.run_dir, tmp_path / "same", progress=False, adapt_bn=False)
    original = test_probabilities(trained.run_dir)
    again = test_probabilities(tmp_path / "same")
    assert again.keys() == original.keys()
    for sample_id, probs in original.items():
        assert again[sample_id] == pytest.approx(probs, abs=1e-6)
    trained_metrics = json.loads((trained.run_dir / "metrics.json").read_text())
    assert result.metrics["accuracy"] == pytest.approx(trained_metrics["accuracy"])
    assert result.metrics["selected_epoch"] == trained_metrics["selected_epoch"]
    assert "adapted_val_nll" not in result.metrics
    assert (tmp_path / "same" / "checkpoints" / "best.ckpt").is_file()  # a link to the trained run's
    # a training run's layout: also what code and data the tested weights came from
    assert (tmp_path / "same" / "inputs.json").read_bytes() == (trained.run_dir / "inputs.json").read_bytes()


def test_retest_command_writes_a_run_and_prints_its_numbers(trained, tmp_path):
    """`cli.py retest` as a user runs it: the last epoch instead of the selected one, without adaptation."""
    out = tmp_path / "last"
    result = CliRunner().invoke(retest_command, [str(trained.run_dir), "--out", str(out), "--no-adapt-bn",
                                                 "--select", "last"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selected_epoch"] == trained.max_epochs - 1 and metrics["adapt_bn"] is False
    assert result.output.strip().splitlines()[-1] == "test " + headline(metrics)
    assert set(test_probabilities(out)) == set(test_probabilities(trained.run_dir))  # the same test samples


def test_adapt_bn_predicts_each_subject_with_its_own_statistics_only(trained, adapted):
    out = adapted.run_dir
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["adapt_bn"] is True
    got = test_probabilities(out)
    run = load_run(trained.run_dir)
    subjects = by_subject(run.samples("test"))
    assert len(subjects) == 4
    for samples in subjects:  # each subject's statistics from its own samples, nobody else's
        batches = list(run.data.loader(samples))
        with adapted_batchnorm(run.module, batches):
            expected = torch.cat([run.predict(b).logits.softmax(-1) for b in batches])
        for sample, probs in zip(samples, expected.tolist()):
            assert got[sample.sample_id] == pytest.approx(probs, abs=1e-5)
    original = test_probabilities(trained.run_dir)
    change = max(abs(a - b) for i in original for a, b in zip(original[i], got[i]))
    assert change > 1e-3  # the statistics did change the predictions
    # the validation subjects' NLL and top-1 under the same adaptation are recorded, the evidence for using it
    nll, correct, count = 0.0, 0, 0
    for samples in by_subject(run.samples("val")):
        batches = list(run.data.loader(samples))
        with adapted_batchnorm(run.module, batches):
            for b in batches:
                logits = run.predict(b).logits
                nll += torch.nn.functional.cross_entropy(logits, b["label"], reduction="sum").item()
                correct += (logits.argmax(-1) == b["label"]).sum().item()
                count += len(b["label"])
    assert metrics["adapted_val_nll"] == pytest.approx(nll / count, rel=1e-5)
    assert metrics["adapted_val_accuracy"] == pytest.approx(correct / count)


def test_adaptation_leaves_the_checkpoint_and_the_model_as_trained(trained, trained_checkpoint_digest, adapted):
    ckpt = trained.run_dir / "checkpoints" / "best.ckpt"  # the retest's best.ckpt links to it
    run = load_run(trained.run_dir)
    batches = list(run.loader("test"))
    before = torch.cat([run.predict(b).logits for b in batches])
    with adapted_batchnorm(run.module, batches[:1]):
        pass
    after = torch.cat([run.predict(b).logits for b in batches])
    assert torch.equal(before, after)
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == trained_checkpoint_digest


def test_training_with_adapt_bn_matches_retesting_with_it(trained, adapted, tmp_path):
    train_once(trained.replace(out=str(tmp_path / "direct"), adapt_bn=True), progress=False)
    direct, retested = test_probabilities(tmp_path / "direct"), test_probabilities(adapted.run_dir)
    assert direct.keys() == retested.keys()
    for sample_id, probs in retested.items():
        assert direct[sample_id] == pytest.approx(probs, abs=1e-5)


def test_evaluate_adapts_as_the_test_did(adapted, tmp_path):
    result = CliRunner().invoke(evaluate_command, [str(adapted.run_dir), "--out", str(tmp_path / "eval"),
                                                   "--params", "none", "--tsne-samples", "40"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(adapted.metrics["accuracy"], abs=1e-6)
    assert metrics["macro_f1"] == pytest.approx(adapted.metrics["macro_f1"], abs=1e-6)
    # the short run predicts one class with or without adaptation, so the metrics cannot tell: evaluate's fused
    # features are those of each test subject's samples under that subject's own BatchNorm statistics
    run = load_run(adapted.run_dir)
    expected = {}
    for samples in by_subject(run.samples("test")):
        batches = list(run.data.loader(samples))
        with adapted_batchnorm(run.module, batches), torch.no_grad():
            for batch in batches:
                expected.update(zip(batch["sample_id"], run.predict(batch).fused.numpy()))
    clean = infer(run)
    np.testing.assert_allclose(clean.fused, np.stack([expected[i] for i in clean.sample_ids]), atol=1e-5)


def test_a_stream_with_one_constant_channel_is_not_silent():
    """Only a stream whose every channel is constant over the sample's valid steps is silent (a dead sensor, a
    zeroed group); a flat channel among live ones (a stuck axis, a ReLU'd feature) is not."""
    torch.manual_seed(0)
    x = torch.randn(3, 6, 5, 4)  # (B, S, W, C)
    x[..., 0] = 0.0  # one flat channel, the others live
    x[2] = 1.5  # sample 2: the whole stream flat
    batch = {"x": {"acc": x}, "lengths": {"acc": torch.tensor([6, 4, 6])}}
    assert silent_streams(batch)[:, 0].tolist() == [False, False, True]


def zeroed(batch: dict, name: str, rows: torch.Tensor) -> dict:
    """`batch` with modality `name` zeroed in the samples `rows` (B,) bool, as the noise study's drop does."""
    x = dict(batch["x"])
    x[name] = corrupt_tensor(x[name], batch["lengths"][name], rows, "drop", 1.0, torch.Generator().manual_seed(0))
    return {**batch, "x": x}


def test_adapting_by_silent_streams_keeps_zeroed_samples_out_of_the_live_samples_statistics(trained):
    run = load_run(trained.run_dir)
    batches = list(run.data.loader(by_subject(run.samples("test"))[0]))
    assert len(batches) >= 2
    # every other batch has its acceleration zeroed in every sample: the live batches are a subject of their own
    noisy = [zeroed(b, "acc_phone", torch.full((len(b["sample_id"]),), i % 2 == 1)) for i, b in enumerate(batches)]
    live, dead = noisy[0::2], noisy[1::2]
    got = {}
    for batch, out in predict_by_subject(run.module, split_by_condition(noisy), adapt=True):
        got.update(zip(batch["sample_id"], out.logits))
    assert len(got) == sum(len(b["sample_id"]) for b in batches)
    for group in (live, dead):  # each condition is predicted with statistics of its own samples only
        with adapted_batchnorm(run.module, group):
            for b in group:
                for sample_id, logits in zip(b["sample_id"], run.predict(b).logits):
                    assert torch.allclose(got[sample_id], logits, atol=1e-5)
    with adapted_batchnorm(run.module, noisy):  # adapting to the whole subject mixes the zeroed samples in
        mixed = torch.cat([run.predict(b).logits for b in live])
    assert not torch.allclose(mixed, torch.stack([got[i] for b in live for i in b["sample_id"]]), atol=1e-4)


def test_split_by_condition_regroups_mixed_batches_without_losing_or_mixing_rows(trained):
    run = load_run(trained.run_dir)
    batches = list(run.data.loader(run.samples("test")))
    noisy = [zeroed(b, "gyro", torch.arange(len(b["sample_id"])) % 2 == 0) for b in batches]
    rows = {i: (b["label"][j], b["x"]["gyro"][j]) for b in noisy for j, i in enumerate(b["sample_id"])}
    groups = split_by_condition(noisy)
    assert len(groups) == 2
    seen = []
    for group in groups:
        patterns = torch.cat([silent_streams(b) for b in group])
        assert (patterns == patterns[0]).all()  # one condition per group
        for b in group:
            for j, sample_id in enumerate(b["sample_id"]):
                label, gyro = rows[sample_id]
                assert b["label"][j] == label and torch.equal(b["x"]["gyro"][j], gyro)
                seen.append(sample_id)
    assert sorted(seen) == sorted(rows)
    gyro = sorted(noisy[0]["x"]).index("gyro")  # silent_streams orders modalities by name
    silent = {i for g in groups for b in g for i, flag in zip(b["sample_id"], silent_streams(b)[:, gyro]) if flag}
    assert silent == {i for b in noisy for j, i in enumerate(b["sample_id"]) if j % 2 == 0}


def test_evaluate_records_how_it_adapts_and_whole_group_noise_is_the_same_either_way(adapted, tmp_path):
    for mode in ("--adapt-by-condition", "--adapt-by-subject"):
        result = CliRunner().invoke(evaluate_command, [str(adapted.run_dir), "--out", str(tmp_path / mode),
                                                       "--params", "none", "--tsne-samples", "40", mode])
        assert result.exit_code == 0, result.output
    by_condition, by_subject_ = (json.loads((tmp_path / m / "metrics.json").read_text())
                                 for m in ("--adapt-by-condition", "--adapt-by-subject"))
    assert by_condition["adaptation"] == "subject and silent streams" and by_subject_["adaptation"] == "subject"
    for condition in ("noisy_visual", "noisy_non_visual"):
        assert by_condition[condition] == by_subject_[condition]
    assert by_condition["accuracy"] == by_subject_["accuracy"]
    # where each sample draws its corrupted group, the two modes adapt to different sets of samples
    run = load_run(adapted.run_dir)
    per_condition, per_subject = (infer(run, "random", adapt_by_condition=mode) for mode in (True, False))
    order = [per_subject.sample_ids.index(i) for i in per_condition.sample_ids]  # grouped differently
    assert sorted(per_condition.sample_ids) == sorted(per_subject.sample_ids)
    assert not np.allclose(per_condition.fused, per_subject.fused[order], atol=1e-4)


@pytest.mark.parametrize("run_name", ["trained", "adapted"])
def test_one_read_of_the_test_set_gives_each_condition_what_it_gives_alone(run_name, request):
    """evaluate reads the test set once for all its conditions: each condition gets the noise draws, adaptation
    and outputs that a pass of its own gives (per batch without adaptation, per subject and silent-stream pattern
    with it). Byte-identical metrics against the code that read once per condition: docs/performance.md."""
    run = load_run(request.getfixturevalue(run_name).run_dir)
    together = infer_conditions(run, CONDITIONS, noise="mean")
    for name, corrupt in CONDITIONS.items():
        alone = infer(run, corrupt, noise="mean")
        assert together[name].sample_ids == alone.sample_ids, name
        assert np.array_equal(together[name].preds, alone.preds), name
        assert np.array_equal(together[name].fused, alone.fused), name
    assert not np.allclose(together["clean"].fused, together["noisy"].fused)  # the conditions differ


def test_retesting_the_last_epoch_matches_training_with_select_last(trained, tmp_path):
    selected = json.loads((trained.run_dir / "metrics.json").read_text())["selected_epoch"]
    assert selected != trained.max_epochs - 1  # otherwise best and last are one checkpoint and this tests nothing
    train_once(trained.replace(out=str(tmp_path / "direct"), select="last"), progress=False)
    result = retest(trained.run_dir, tmp_path / "last", progress=False, select="last")
    direct, retested = test_probabilities(tmp_path / "direct"), test_probabilities(tmp_path / "last")
    assert direct.keys() == retested.keys()
    for sample_id, probs in retested.items():
        assert direct[sample_id] == pytest.approx(probs, abs=1e-6)
    assert result.metrics["selected_by"] == "last epoch" and result.metrics["selected_epoch"] == trained.max_epochs - 1
    # evaluate reads the tested checkpoint, not the one the run selected
    evaluated = CliRunner().invoke(evaluate_command, [str(tmp_path / "last"), "--out", str(tmp_path / "eval"),
                                                      "--params", "none", "--tsne-samples", "40"])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(result.metrics["accuracy"], abs=1e-6)


def test_a_retest_interrupted_mid_test_is_finished_by_the_rerun_and_then_not_redone(trained, adapted, tmp_path,
                                                                                    monkeypatch):
    """Ctrl-C while a retest tests is an interruption (cli.py says how to resume), leaving no metrics.json; the rerun
    gives the uninterrupted retest's numbers, and a rerun of a finished retest reads them back instead of testing."""
    from mumu import train
    from mumu.module import MumuModule

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    def tested_again(*args, **kwargs):
        raise AssertionError("a finished retest was tested again")

    out = tmp_path / "adapted"
    with monkeypatch.context() as patch:
        patch.setattr(MumuModule, "test_step", ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            retest(trained.run_dir, out, progress=False, adapt_bn=True)
    assert (out / "config.yaml").is_file() and not (out / "metrics.json").exists()
    assert retest(trained.run_dir, out, progress=False, adapt_bn=True).metrics == adapted.metrics
    assert test_probabilities(out) == test_probabilities(adapted.run_dir)
    monkeypatch.setattr(train, "_test_split", tested_again)
    assert retest(trained.run_dir, out, progress=False, adapt_bn=True).metrics == adapted.metrics


def test_retest_cannot_select_an_epoch_the_run_did_not_keep(trained, tmp_path):
    with pytest.raises(MumuError, match="training again"):
        retest(trained.run_dir, tmp_path / "out", progress=False, select="nll")


def test_retest_refuses_an_unfinished_run_and_its_own_directory(trained, tmp_path):
    with pytest.raises(MumuError, match="is the run itself"):
        retest(trained.run_dir, trained.run_dir, progress=False, adapt_bn=True)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("config.yaml", "split.json"):
        (unfinished / name).write_bytes((trained.run_dir / name).read_bytes())
    with pytest.raises(MumuError, match="has not finished training"):
        retest(unfinished, tmp_path / "out", progress=False, adapt_bn=True)
    (unfinished / "metrics.json").write_bytes((trained.run_dir / "metrics.json").read_bytes())  # no checkpoint
    with pytest.raises(MumuError, match=r"checkpoints/best.ckpt: no such checkpoint"):
        retest(unfinished, tmp_path / "out", progress=False, adapt_bn=True)
    assert not (tmp_path / "out").exists()  # refused before anything was written
    retest(trained.run_dir, tmp_path / "taken", progress=False, adapt_bn=False)
    with pytest.raises(MumuError, match="different settings") as other:  # another test, same OUT
        retest(trained.run_dir, tmp_path / "taken", progress=False, adapt_bn=True)
    assert "--overwrite" not in str(other.value)  # an option retest does not have


def test_subject_batches_hold_one_subject_and_cover_every_sample_once_per_epoch():
    subjects = [1] * 10 + [2] * 7 + [3] * 3
    sampler = SubjectBatchSampler(subjects, batch_size=4, seed=0)
    epochs = []
    for epoch in range(2):
        sampler.sampler.set_epoch(epoch)  # what Lightning calls through `.sampler`
        batches = [[i for i, e in batch if e == epoch] for batch in sampler]
        assert all(len(b) == len(batch) for b, batch in zip(batches, sampler))  # keys carry the epoch
        assert sorted(i for b in batches for i in b) == list(range(20))  # every sample, once
        assert all(len({subjects[i] for i in b}) == 1 and len(b) <= 4 for b in batches)
        assert len(batches) == 3 + 2 + 1  # ceil(n / 4) per subject, sizes near-equal (10 -> 4, 3, 3)
        epochs.append(batches)
    assert epochs[0] != epochs[1]
    sampler.sampler.set_epoch(1)
    assert [[i for i, _ in b] for b in sampler] == epochs[1]  # the same epoch, the same batches
    shares = [list(SubjectBatchSampler(subjects, 4, seed=0, rank=r, world_size=4)) for r in range(4)]
    assert len({len(s) for s in shares}) == 1  # every rank steps the same number of times
    assert {i for s in shares for b in s for i, _ in b} == set(range(20))


def test_training_with_subject_batches_feeds_one_subject_per_batch_and_reshuffles(tiny_demo, tmp_path):
    seen: list[tuple[int, set[int]]] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            subject_of = {s.sample_id: s.subject for s in trainer.datamodule.splits["train"]}
            seen.append((trainer.current_epoch, {subject_of[i] for i in batch["sample_id"]}))

    cfg = tiny_demo.config(tmp_path / "run", max_epochs=2, batch_size=4, subject_batches=True)
    train_once(cfg, progress=False, callbacks=[Record()])
    assert seen and all(len(subjects) == 1 for _, subjects in seen)
    order = [[next(iter(s)) for e, s in seen if e == epoch] for epoch in (0, 1)]
    assert order[0] != order[1]  # Lightning's epoch reaches the sampler: a new draw every epoch


def test_validating_adapted_selects_on_the_adapted_loss_and_leaves_training_alone(tiny_demo, tmp_path):
    final: dict[str, dict] = {}

    class FinalWeights(pl.Callback):  # runs after the EMA callback has put the average in: the trained model
        def on_train_end(self, trainer, module):
            final[str(trainer.default_root_dir)] = {k: v.clone() for k, v in module.state_dict().items()}

    settings = dict(max_epochs=3, batch_size=4, lr=1e-2, select="nll", ema_decay=0.9, adapt_bn=True)
    plain = train_once(tiny_demo.config(tmp_path / "plain", **settings), progress=False,
                       callbacks=[FinalWeights()]).metrics
    assert len(by_subject(load_run(tmp_path / "plain").samples("val"))) > 1  # one DataLoader per subject
    adapted = train_once(tiny_demo.config(tmp_path / "adapted", validate_adapted=True, **settings), progress=False,
                         callbacks=[FinalWeights()]).metrics
    # the epoch was selected on the validation NLL under adaptation: recomputed on the checkpoint, it agrees
    agreement = abs(adapted["selected_val_score"] - adapted["adapted_val_nll"])
    assert agreement < 1e-5
    assert abs(plain["selected_val_score"] - plain["adapted_val_nll"]) > 100 * agreement  # without, they differ
    # validation read the weights and changed none of them, BatchNorm statistics and weight average included
    (plain_weights, adapted_weights) = final.values()
    assert plain_weights.keys() == adapted_weights.keys()
    for name, value in plain_weights.items():
        assert torch.equal(value, adapted_weights[name]), name
    logged = (tmp_path / "adapted" / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val/nll" in logged  # one series, not one per validation subject


def test_a_batch_without_the_modality_does_not_count_in_its_adapted_statistics():
    """MMAct sensors are missing in whole batches at times: such a batch passes the modality's BatchNorm layers an
    empty input, which must neither dilute the subject's statistics nor replace the trained ones."""
    from mumu.encoders import MaskedConvBlock

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = MaskedConvBlock(2, 2, 3)

        def forward(self, batch: dict) -> torch.Tensor:
            return self.block(batch["x"], batch["mask"])

    encoder = Encoder().eval()
    encoder.block.norm.running_mean.fill_(5.0)  # trained statistics
    torch.manual_seed(0)
    missing = {"x": torch.zeros(4, 2, 6), "mask": torch.zeros(4, 6, dtype=torch.bool)}
    live = {"x": torch.randn(4, 2, 6) * 3 + 7, "mask": torch.ones(4, 6, dtype=torch.bool)}
    alone = subject_batchnorm_state(encoder, [live])["block.norm"]
    with_missing = subject_batchnorm_state(encoder, [missing, live, missing])["block.norm"]
    for a, b in zip(alone[:2], with_missing[:2]):
        torch.testing.assert_close(a, b)
    only_missing = subject_batchnorm_state(encoder, [missing])["block.norm"]
    assert torch.equal(only_missing[0], torch.full((2,), 5.0))  # never fed: the trained statistics stay


def test_adapted_statistics_average_every_batch_of_the_subject():
    """A subject's inputs come in several batches: the model must normalise with their average, not the last."""
    class Normaliser(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm1d(1)

        def forward(self, batch: dict) -> torch.Tensor:
            return self.norm(batch["x"])

    model = Normaliser().eval()
    first = {"x": torch.tensor([[-4.0], [-2.0], [-3.0]])}  # mean -3, unbiased variance 1
    second = {"x": torch.tensor([[1.0], [5.0], [3.0]])}  # mean 3, unbiased variance 4
    probe = torch.tensor([[0.0], [2.5]])
    with adapted_batchnorm(model, [first, second]):
        adapted = model({"x": probe})
    expected = (probe - 0.0) / torch.sqrt(torch.tensor(2.5) + model.norm.eps)  # mean of the means, of the variances
    torch.testing.assert_close(adapted, expected)
    torch.testing.assert_close(model({"x": probe}), probe / torch.sqrt(torch.tensor(1.0) + model.norm.eps))
