"""Evaluation protocols: the right subjects/sessions in each part, validation from training only, no leaks."""
from __future__ import annotations

import pytest

from pipeline.errors import MumuError
from pipeline.index import Sample
from pipeline.splits import make_splits


def make_samples(dataset: str, subjects, sessions=(None,), activities=range(4), trials=(1,)) -> list[Sample]:
    return [
        Sample(f"s{subject}_se{session}_a{activity}_t{trial}", dataset, subject, f"act{activity}", activity,
               "g", 0, session=session, trial=trial)
        for subject in subjects for session in sessions for activity in activities for trial in trials
    ]


def subjects_of(ids, samples) -> set[int]:
    subject = {s.sample_id: s.subject for s in samples}
    return {subject[i] for i in ids}


def check_disjoint_and_complete(split, expected_ids):
    train, val, test = set(split.train), set(split.val), set(split.test)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(expected_ids)


def test_mmact_cross_subject_tests_17_to_20_and_validates_on_whole_training_subjects():
    samples = make_samples("mmact", range(1, 21), sessions=(1, 2))
    (split,) = make_splits(samples, "mmact", "cross_subject", val_fraction=0.15, seed=0)
    check_disjoint_and_complete(split, [s.sample_id for s in samples])
    assert subjects_of(split.test, samples) == {17, 18, 19, 20}
    val_subjects = subjects_of(split.val, samples)
    assert len(val_subjects) == 2 and val_subjects <= set(range(1, 17))  # round(0.15 x 16) whole subjects
    assert subjects_of(split.train, samples) == set(range(1, 17)) - val_subjects


def test_the_seed_moves_validation_never_test():
    samples = make_samples("mmact", range(1, 21))
    chosen = {frozenset(subjects_of(make_splits(samples, "mmact", "cross_subject", seed=seed)[0].val, samples))
              for seed in range(6)}
    assert len(chosen) > 1
    for seed in range(6):
        assert subjects_of(make_splits(samples, "mmact", "cross_subject", seed=seed)[0].test, samples) == {17, 18, 19, 20}
    assert make_splits(samples, "mmact", "cross_subject", seed=3) == make_splits(samples, "mmact", "cross_subject", seed=3)


def test_mmact_cross_session_tests_session_5_and_stratifies_validation():
    samples = make_samples("mmact", range(1, 5), sessions=(1, 2, 3, 4, 5), activities=range(5))
    (split,) = make_splits(samples, "mmact", "cross_session", val_fraction=0.25)
    check_disjoint_and_complete(split, [s.sample_id for s in samples])
    session = {s.sample_id: s.session for s in samples}
    activity = {s.sample_id: s.activity_id for s in samples}
    assert {session[i] for i in split.test} == {5}
    assert {session[i] for i in split.train + split.val} == {1, 2, 3, 4}
    assert len(split.val) == 5 * 4  # a quarter of each activity's 16 training samples
    assert sorted(activity[i] for i in split.val) == sorted(list(range(5)) * 4)


def test_utd_odd_even():
    samples = make_samples("utd_mhad", range(1, 9), trials=(1, 2, 3, 4))
    (split,) = make_splits(samples, "utd_mhad", "odd_even")
    check_disjoint_and_complete(split, [s.sample_id for s in samples])
    assert subjects_of(split.test, samples) == {2, 4, 6, 8}
    (val_subject,) = subjects_of(split.val, samples)
    assert val_subject % 2 == 1
    assert subjects_of(split.train, samples) == {1, 3, 5, 7} - {val_subject}


@pytest.mark.parametrize("dataset", ["utd_mhad", "ucsd_mit"])
def test_loso_one_fold_per_subject_each_validating_once(dataset):
    samples = make_samples(dataset, range(1, 9), trials=(1, 2))
    splits = make_splits(samples, dataset, "loso")
    assert [s.name for s in splits] == [f"fold_s{i}" for i in range(1, 9)]
    validators = []
    for subject, split in zip(range(1, 9), splits):
        check_disjoint_and_complete(split, [s.sample_id for s in samples])
        assert subjects_of(split.test, samples) == {subject}
        (val_subject,) = subjects_of(split.val, samples)
        assert val_subject != subject
        validators.append(val_subject)
    assert sorted(validators) == list(range(1, 9))


def test_demo_protocols_fit_its_six_subjects_and_two_sessions():
    samples = make_samples("demo", range(1, 7), sessions=(1, 2), activities=range(6))
    (cross_subject,) = make_splits(samples, "demo", "cross_subject")
    assert subjects_of(cross_subject.test, samples) == {5, 6}
    assert len(subjects_of(cross_subject.val, samples)) == 1
    assert subjects_of(cross_subject.train + cross_subject.val, samples) == {1, 2, 3, 4}
    (cross_session,) = make_splits(samples, "demo", "cross_session")
    session = {s.sample_id: s.session for s in samples}
    assert {session[i] for i in cross_session.test} == {2}
    assert {session[i] for i in cross_session.train + cross_session.val} == {1}


def test_single_training_subject_falls_back_to_a_sample_fraction():
    samples = make_samples("demo", (1, 2), sessions=(1,), activities=range(6), trials=(1, 2, 3, 4))
    (split,) = make_splits(samples, "demo", "cross_subject", val_fraction=0.25)
    assert subjects_of(split.test, samples) == {2}
    assert subjects_of(split.train, samples) == subjects_of(split.val, samples) == {1}
    assert len(split.val) == 6  # one of the four samples of each activity


def test_unknown_protocol_lists_the_valid_ones():
    with pytest.raises(MumuError, match="unknown protocol 'cross_subject' for utd_mhad; choose one of odd_even, loso"):
        make_splits(make_samples("utd_mhad", range(1, 9)), "utd_mhad", "cross_subject")


def test_an_empty_part_is_an_error_naming_it():
    with pytest.raises(MumuError, match="the test set is empty"):
        make_splits(make_samples("mmact", range(1, 17)), "mmact", "cross_subject")
    with pytest.raises(MumuError, match="the train set is empty"):
        make_splits(make_samples("mmact", range(1, 5), sessions=(5,)), "mmact", "cross_session")
