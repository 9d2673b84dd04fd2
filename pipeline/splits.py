"""Evaluation protocols: which samples train, which select the model (validation), which test.

| dataset  | protocol      | train / test                                                   |
|----------|---------------|----------------------------------------------------------------|
| mmact    | cross_subject | subjects 1-16 / 17-20                                          |
| mmact    | cross_session | sessions 1-4 / 5                                               |
| utd_mhad | odd_even      | subjects 1, 3, 5, 7 / 2, 4, 6, 8                               |
| utd_mhad | loso          | one fold per subject: all others / that subject                |
| ucsd_mit | loso          | as above                                                       |
| demo     | cross_subject | the lowest 2/3 of the subject ids / the rest (6 subjects: 1-4 / 5-6) |
| demo     | cross_session | all sessions but the last / the last                           |

Validation always comes out of the training part, so test samples never inform model selection:
- subject protocols hold out whole training subjects, ``max(1, round(val_fraction * n))`` of them
  (LOSO: the training subjects that follow the test subject in cyclic order, so each subject
  validates once; otherwise chosen with ``seed``). With a single training subject there is no
  subject to spare, and a stratified ``val_fraction`` of its samples is held out instead;
- cross_session tests every subject by design, so it holds out a random ``val_fraction`` of the
  training samples, stratified by activity (``seed``).
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from pipeline.errors import MumuError
from pipeline.index import Sample


@dataclass(frozen=True)
class Split:
    name: str  # "cross_subject", or "fold_s3" for the LOSO fold testing subject 3
    train: list[str]  # sample ids
    val: list[str]
    test: list[str]


PROTOCOLS: dict[str, tuple[str, ...]] = {
    "mmact": ("cross_subject", "cross_session"),
    "demo": ("cross_subject", "cross_session"),
    "utd_mhad": ("odd_even", "loso"),
    "ucsd_mit": ("loso",),
}


def make_splits(samples: list[Sample], dataset: str, protocol: str, val_fraction: float = 0.15, seed: int = 0) -> list[Split]:
    """The protocol's splits (one per fold for ``loso``); MumuError for an unknown protocol or an empty part."""
    if dataset not in PROTOCOLS:
        raise MumuError(f"no evaluation protocols for dataset {dataset!r}; datasets: {', '.join(PROTOCOLS)}")
    if protocol not in PROTOCOLS[dataset]:
        raise MumuError(f"unknown protocol {protocol!r} for {dataset}; choose one of {', '.join(PROTOCOLS[dataset])}")
    if not 0 < val_fraction < 1:
        raise MumuError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    samples = [s for s in samples if s.dataset == dataset]
    subjects = sorted({s.subject for s in samples})
    rng = random.Random(seed)

    if protocol == "loso":
        splits = []
        for i, test_subject in enumerate(subjects):
            others = subjects[i + 1:] + subjects[:i]  # cyclic order after the test subject
            n_val = _n_val_subjects(len(others), val_fraction)
            splits.append(_by_subject(f"fold_s{test_subject}", samples, {test_subject}, others[:n_val], val_fraction, rng))
        if not splits:
            raise MumuError(f"protocol loso on {dataset}: no samples, so no folds")
    elif protocol == "cross_session":
        sessions = sorted({s.session for s in samples if s.session is not None})
        test_sessions = {5} if dataset == "mmact" else set(sessions[-1:])
        train_sessions = {1, 2, 3, 4} if dataset == "mmact" else set(sessions[:-1])
        train = [s for s in samples if s.session in train_sessions]
        train, val = _hold_out_samples(train, val_fraction, rng)
        splits = [Split(protocol, _ids(train), _ids(val), _ids([s for s in samples if s.session in test_sessions]))]
    else:
        if protocol == "odd_even":
            test_subjects = {s for s in subjects if s % 2 == 0}
            train_subjects = [s for s in subjects if s % 2 == 1]
        elif dataset == "mmact":  # cross_subject
            test_subjects = set(range(17, 21))
            train_subjects = [s for s in subjects if 1 <= s <= 16]
        else:  # demo cross_subject: the lowest 2/3 of the subjects train
            n_train = max(1, round(len(subjects) * 2 / 3)) if len(subjects) > 1 else 0
            test_subjects, train_subjects = set(subjects[n_train:]), subjects[:n_train]
        val_subjects = rng.sample(train_subjects, _n_val_subjects(len(train_subjects), val_fraction))
        splits = [_by_subject(protocol, samples, test_subjects, val_subjects, val_fraction, rng, train_subjects)]

    for split in splits:
        for part in ("train", "val", "test"):
            if not getattr(split, part):
                raise MumuError(
                    f"protocol {protocol} on {dataset}, split {split.name}: the {part} set is empty "
                    f"({len(samples)} samples, subjects {subjects}); check the data root or the protocol"
                )
    return splits


def _n_val_subjects(n_train_subjects: int, val_fraction: float) -> int:
    """Whole validation subjects to hold out; 0 when there is only one training subject."""
    if n_train_subjects < 2:
        return 0
    return min(n_train_subjects - 1, max(1, round(val_fraction * n_train_subjects)))


def _by_subject(name: str, samples: list[Sample], test_subjects: set[int], val_subjects: list[int],
                val_fraction: float, rng: random.Random, train_subjects: list[int] | None = None) -> Split:
    """Test = ``test_subjects``; val = ``val_subjects`` (or a stratified sample fraction when none);
    train = the rest of ``train_subjects`` (default: every subject not tested)."""
    allowed = set(train_subjects) if train_subjects is not None else {s.subject for s in samples} - test_subjects
    train = [s for s in samples if s.subject in allowed and s.subject not in val_subjects]
    val = [s for s in samples if s.subject in val_subjects]
    if not val_subjects:
        train, val = _hold_out_samples(train, val_fraction, rng)
    return Split(name, _ids(train), _ids(val), _ids([s for s in samples if s.subject in test_subjects]))


def _hold_out_samples(samples: list[Sample], fraction: float, rng: random.Random) -> tuple[list[Sample], list[Sample]]:
    """Split off ``fraction`` of the samples of every activity (at least one sample overall)."""
    by_activity: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_activity[s.activity_id].append(s)
    held: set[str] = set()
    for activity in sorted(by_activity):
        group = by_activity[activity]
        held.update(s.sample_id for s in rng.sample(group, round(fraction * len(group))))
    if not held and len(samples) > 1:
        held.add(rng.choice(samples).sample_id)
    return [s for s in samples if s.sample_id not in held], [s for s in samples if s.sample_id in held]


def _ids(samples: list[Sample]) -> list[str]:
    return [s.sample_id for s in samples]
