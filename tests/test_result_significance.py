"""docs/results/significance.py, the script behind docs/results.md's comparisons: the interval it prints for A - B
must count the test subjects as drawn, not only the seeds, so that "level" and "ahead" mean the same to a reader."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "results" / "significance.py"


@pytest.fixture(scope="module")
def significance():
    spec = importlib.util.spec_from_file_location("significance", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_result(path: Path, per_seed_subject_accuracy: list[dict[str, float]]) -> str:
    """A LOSO result file as summarise.py writes it: one run per seed, one fold per test subject."""
    runs = {f"runs/seed{seed}": {"accuracy": {f"fold_s{s}": acc for s, acc in subjects.items()},
                                 "per_subject_accuracy": subjects}
            for seed, subjects in enumerate(per_seed_subject_accuracy)}
    path.write_text(json.dumps({"runs": runs}))
    return str(path.with_suffix(""))


def seeds_of(accuracy_per_subject: dict[str, float], seeds: int = 5, spread: float = 0.0) -> list[dict[str, float]]:
    return [{s: acc + spread * (seed - seeds // 2) for s, acc in accuracy_per_subject.items()} for seed in range(seeds)]


def test_a_lead_on_every_subject_and_seed_is_exact_and_one_subject_alone_is_not_enough(significance, tmp_path, capsys):
    subjects = {str(s): 0.90 + 0.01 * s for s in range(1, 9)}
    b = write_result(tmp_path / "b.json", seeds_of(subjects))
    everywhere = write_result(tmp_path / "everywhere.json", seeds_of({s: acc + 0.01 for s, acc in subjects.items()}))
    # 8 points ahead on subject 1 only: the same mean lead, resting on one subject of eight
    one_subject = write_result(tmp_path / "one.json", seeds_of({**subjects, "1": subjects["1"] + 0.08}))

    significance.main(str(tmp_path / "out"), [everywhere, one_subject, b])
    pairs = json.loads((tmp_path / "out.json").read_text())["difference_interval"]["pairs"]
    assert pairs[f"{everywhere} vs {b}"] == {"subjects": 8, "seeds": [5, 5], "mean_difference_points": 1.0,
                                             "interval_95_points": [1.0, 1.0]}
    low, high = pairs[f"{one_subject} vs {b}"]["interval_95_points"]
    assert pairs[f"{one_subject} vs {b}"]["mean_difference_points"] == 1.0
    assert low == 0.0 and high > 2.0  # subject 1 is left out of about a third of the draws
    assert f"{everywhere} vs {b}: +1.00 [+1.00, +1.00]" in capsys.readouterr().out


def test_seed_noise_widens_the_interval_around_a_tie(significance, tmp_path):
    subjects = {str(s): 0.95 for s in range(1, 9)}
    a = write_result(tmp_path / "a.json", seeds_of(subjects, spread=0.01))
    b = write_result(tmp_path / "b.json", seeds_of(subjects))
    significance.main(str(tmp_path / "out"), [a, b])
    interval = json.loads((tmp_path / "out.json").read_text())["difference_interval"]["pairs"][f"{a} vs {b}"]
    low, high = interval["interval_95_points"]
    assert interval["mean_difference_points"] == 0.0 and low < -0.5 and high > 0.5
