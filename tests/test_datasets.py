"""Adapters on fixtures laid out like the real releases, the real UTD-MHAD copy, tables, and `cli.py index`."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pipeline.datasets import build_index
from pipeline.errors import MumuError
from pipeline.index import read_index, write_index
from pipeline.tables import load_table, table_path
from tests.fixtures import UCSD_CHANNELS, mmact_csv, ucsd_csv, write_mmact, write_ucsd_mit, write_utd_mhad


def by_id(result) -> dict:
    return {s.sample_id: s for s in result.samples}


# ---------------------------------------------------------------------------------- MMAct

@pytest.fixture(scope="module")
def mmact_root(tmp_path_factory) -> Path:
    return write_mmact(tmp_path_factory.mktemp("mmact"))


def test_mmact_one_sample_per_subject_scene_session_action(mmact_root):
    result = build_index("mmact", mmact_root)
    # 2 subjects x 2 sessions x (3 scene-1 + 3 scene-3 actions)
    assert len(result.samples) == 24
    assert Counter(s.scene for s in result.samples) == {1: 12, 3: 12}


def test_mmact_capital_c_stem_is_the_same_class(mmact_root):
    samples = by_id(build_index("mmact", mmact_root))
    quirky = samples["subject1_scene1_session1_carrying_light"]
    assert quirky.activity == "carrying_light" and quirky.activity_id == 36
    assert quirky.paths["rgb_cam1"].endswith("/Carrying_light.mp4")
    assert all(quirky.paths[m] for m in ("rgb_cam1", "rgb_cam3", "acc_phone", "acc_watch", "gyro", "orientation"))
    assert samples["subject2_scene1_session1_carrying_light"].activity_id == 36


def test_mmact_desk_remap_gives_separate_classes_in_scene_3(mmact_root):
    samples = by_id(build_index("mmact", mmact_root))
    desk = samples["subject1_scene3_session2_using_phone_desk"]
    assert (desk.activity, desk.activity_id, desk.group) == ("using_phone_desk", 34, "desk")
    assert desk.paths["gyro"].endswith("scene3/session2/using_phone.csv")  # the file keeps its stem
    assert samples["subject1_scene3_session2_talking_on_phone_desk"].activity_id == 32
    plain = samples["subject1_scene1_session2_using_phone"]
    assert (plain.activity_id, plain.group) == (23, "simple")


def test_mmact_views_and_missing_modalities_are_recorded(mmact_root):
    samples = by_id(build_index("mmact", mmact_root))
    full = samples["subject1_scene1_session2_walking"]
    assert full.views == ["cam1", "cam3"] and full.missing() == ["rgb_cam2", "rgb_cam4"]
    walking = samples["subject2_scene1_session2_walking"]  # empty gyro CSV, no cam3 video
    assert walking.views == ["cam1"]
    assert set(walking.missing()) == {"rgb_cam2", "rgb_cam3", "rgb_cam4", "gyro"}
    using_pc = samples["subject2_scene3_session1_using_pc"]  # orientation absent, cam1 not an MP4
    assert using_pc.views == ["cam3"] and {"orientation", "rgb_cam1"} <= set(using_pc.missing())


def test_mmact_bad_files_are_skipped_with_the_reason(mmact_root):
    result = build_index("mmact", mmact_root)
    reasons = {Path(s.path).relative_to(mmact_root).as_posix(): s.reason for s in result.skipped}
    assert reasons == {
        "Sensor_trimmed/gyro_clip/subject2/scene1/session2/walking.csv": "empty file",
        "Video_trimmed/subject2/cam1/scene3/session1/using_pc.mp4": "not an MP4 file (no MP4 box at the start)",
    }


def test_mmact_unknown_files_are_ignored_and_counted(mmact_root):
    result = build_index("mmact", mmact_root)
    assert sorted(Path(p).name for p in result.unknown) == [".DS_Store", "README.md", "notes.txt"]


def test_mmact_strict_stops_at_the_first_bad_file_naming_it(mmact_root):
    with pytest.raises(MumuError, match=r"gyro_clip/subject2/scene1/session2/walking\.csv: empty file"):
        build_index("mmact", mmact_root, strict=True)


def test_mmact_malformed_csv_row_is_described(tmp_path):
    root = write_mmact(tmp_path)
    bad = root / "Sensor_trimmed/acc_watch_clip/subject1/scene1/session1/walking.csv"
    bad.write_text("time,x,y,z\n1,2,3,4\n")
    result = build_index("mmact", root)
    (reason,) = [s.reason for s in result.skipped if s.path == str(bad)]
    assert "not timestamp,x,y,z" in reason


def test_mmact_second_copy_of_a_clip_is_a_recorded_duplicate(tmp_path):
    root = write_mmact(tmp_path)
    copy = root / "trimmed/video/cross_view/trainval/subject1/cam3/scene1/session2/walking.mp4"
    copy.parent.mkdir(parents=True)
    shutil.copy(root / "Video_trimmed/subject1/cam3/scene1/session2/walking.mp4", copy)
    result = build_index("mmact", root)
    assert len(result.samples) == 24
    (duplicate,) = [s for s in result.skipped if s.path == str(copy)]
    assert duplicate.reason.startswith("duplicate rgb_cam3 file for subject1_scene1_session2_walking (kept ")
    assert by_id(result)["subject1_scene1_session2_walking"].paths["rgb_cam3"].endswith("Video_trimmed/subject1/cam3/scene1/session2/walking.mp4")


def test_index_csv_round_trip_keeps_missing_as_empty(mmact_root, tmp_path):
    result = build_index("mmact", mmact_root)
    write_index(result.samples, tmp_path / "index.csv", result.modalities)
    assert read_index(tmp_path / "index.csv") == result.samples
    row = next(line for line in (tmp_path / "index.csv").read_text().splitlines() if "subject2_scene1_session2_walking" in line)
    assert ",cam1," in row and ",," in row  # views, then empty cells for the missing modalities


def test_demo_is_indexed_by_the_mmact_adapter(tmp_path):
    from pipeline.demo import write_demo_dataset

    root = write_demo_dataset(tmp_path, n_subjects=2, n_sessions=1, n_frames=4, frame_size=16)
    result = build_index("demo", root)
    assert len(result.samples) == 12 and not result.skipped
    assert all(not s.missing() and s.views == ["cam1", "cam2"] for s in result.samples)
    assert by_id(result)["subject1_scene1_session1_carrying_light"].paths["acc_phone"].endswith("Carrying_light.csv")
    assert [Path(p).name for p in result.unknown] == ["demo.json"]


# ------------------------------------------------------------------------------- UTD-MHAD

def test_utd_fixture_absent_sequence_non_data_file_and_rgb(tmp_path):
    root = write_utd_mhad(tmp_path, rgb=True)
    result = build_index("utd_mhad", root)
    samples = by_id(result)
    assert len(samples) == 3 * 2 * 4 - 1 and "a8_s1_t4" not in samples
    sample = samples["a27_s2_t3"]
    assert (sample.activity, sample.activity_id, sample.group, sample.subject, sample.trial) == \
        ("squat", 26, "training_exercise", 2, 3)
    assert not sample.missing() and sample.paths["rgb"].endswith("RGB/a27_s2_t3_color.avi")
    assert [Path(p).name for p in result.unknown] == ["Skeleton_joint_order.txt"]


def test_utd_corrupt_and_mislabelled_mat_files(tmp_path):
    root = write_utd_mhad(tmp_path, actions=(1,), subjects=(1,), trials=(1, 2, 3))
    depth = root / "Depth/a1_s1_t1_depth.mat"
    depth.write_bytes(depth.read_bytes()[:300])  # truncated download
    (root / "Inertial/a1_s1_t2_inertial.mat").write_bytes(b"")
    shutil.copy(root / "Skeleton/a1_s1_t3_skeleton.mat", root / "Inertial/a1_s1_t3_inertial.mat")  # wrong content
    result = build_index("utd_mhad", root)
    reasons = {Path(s.path).name: s.reason for s in result.skipped}
    assert reasons["a1_s1_t1_depth.mat"].startswith("truncated MATLAB file")
    assert reasons["a1_s1_t2_inertial.mat"] == "empty file"
    assert reasons["a1_s1_t3_inertial.mat"] == "MATLAB variable is 'd_skel', expected 'd_iner'"
    samples = by_id(result)
    assert samples["a1_s1_t1"].missing() == ["rgb", "depth"]
    assert samples["a1_s1_t3"].missing() == ["rgb", "inertial"]
    with pytest.raises(MumuError, match="a1_s1_t1_depth.mat: truncated MATLAB file"):
        build_index("utd_mhad", root, strict=True)


def test_utd_real_copy(utd_root):
    result = build_index("utd_mhad", utd_root)
    samples = by_id(result)
    assert len(samples) == 861 and not result.skipped
    assert {"a8_s1_t4", "a23_s6_t4", "a27_s8_t4"}.isdisjoint(samples)
    assert len({s.activity for s in result.samples}) == 27
    assert sorted({s.subject for s in result.samples}) == list(range(1, 9))
    activities_per_group = Counter(a.group for a in load_table("utd_mhad").activities)
    assert activities_per_group == {"hand_gesture": 9, "sports": 9, "daily": 5, "training_exercise": 4}
    assert result.counts()["missing"] == {"rgb": 861, "depth": 0, "skeleton": 0, "inertial": 0}
    assert sorted(Path(p).name for p in result.unknown) == ["README.md", "Skeleton_joint_order.txt"]
    assert samples["a27_s8_t3"].paths["inertial"].endswith("Inertial/a27_s8_t3_inertial.mat")


# ------------------------------------------------------------------------------- UCSD-MIT

def test_ucsd_mit_layout_with_a_missing_and_a_malformed_stream(tmp_path):
    root = write_ucsd_mit(tmp_path)
    (root / "subject2/walk/trial1/emg.csv").unlink()
    ucsd_csv(root / "subject3/attach/trial2/imu.csv", channels=UCSD_CHANNELS["imu"] - 1)
    (root / "subject1/Attach/trial3").mkdir(parents=True)  # folder names match case-insensitively
    ucsd_csv(root / "subject1/Attach/trial3/mocap.csv", channels=60)
    result = build_index("ucsd_mit", root)
    samples = by_id(result)
    assert len(samples) == 3 * 3 * 2 + 1
    assert samples["subject2_walk_trial1"].missing() == ["emg"]
    assert samples["subject3_attach_trial2"].missing() == ["imu"]
    assert samples["subject1_attach_trial3"].missing() == ["emg", "imu"]
    assert (samples["subject1_palmar_grasp_trial1"].group, samples["subject1_attach_trial1"].group) == ("fine", "gross")
    (skipped,) = result.skipped
    assert skipped.path.endswith("subject3/attach/trial2/imu.csv") and "11 columns" in skipped.reason


# --------------------------------------------------------------------------------- tables

# The shipped tables' facts, from the datasets' documentation, written out here.
# MMAct: the paper's 37 classes in MMTSA's order (= activity_id) with their group. The release's 35 file
# stems are the names without _desk: scene 3's using_phone / talking_on_phone files are the two *_desk classes.
MMACT_CLASSES = [
    ("carrying", "complex"), ("checking_time", "simple"), ("closing", "complex"), ("crouching", "simple"),
    ("entering", "complex"), ("exiting", "complex"), ("fall", "complex"), ("jumping", "simple"),
    ("kicking", "simple"), ("loitering", "complex"), ("looking_around", "complex"), ("opening", "complex"),
    ("picking_up", "complex"), ("pointing", "simple"), ("pulling", "complex"), ("pushing", "complex"),
    ("running", "simple"), ("setting_down", "complex"), ("standing", "simple"), ("talking", "complex"),
    ("talking_on_phone", "simple"), ("throwing", "simple"), ("transferring_object", "complex"),
    ("using_phone", "simple"), ("walking", "simple"), ("waving_hand", "simple"), ("drinking", "desk"),
    ("pocket_in", "desk"), ("pocket_out", "desk"), ("sitting", "desk"), ("sitting_down", "desk"),
    ("standing_up", "desk"), ("talking_on_phone_desk", "desk"), ("using_pc", "desk"), ("using_phone_desk", "desk"),
    ("carrying_heavy", "complex"), ("carrying_light", "complex"),
]
# UTD-MHAD: actions a1..a27 in the official order with the 9/9/5/4 groups.
UTD_MHAD_ACTIONS = [
    ("swipe_left", "hand_gesture"), ("swipe_right", "hand_gesture"), ("wave", "hand_gesture"), ("clap", "hand_gesture"),
    ("throw", "sports"), ("arm_cross", "hand_gesture"), ("basketball_shoot", "sports"), ("draw_x", "hand_gesture"),
    ("draw_circle_CW", "hand_gesture"), ("draw_circle_CCW", "hand_gesture"), ("draw_triangle", "hand_gesture"),
    ("bowling", "sports"), ("boxing", "sports"), ("baseball_swing", "sports"), ("tennis_swing", "sports"),
    ("arm_curl", "training_exercise"), ("tennis_serve", "sports"), ("push", "daily"), ("knock", "daily"),
    ("catch", "sports"), ("pickup_throw", "sports"), ("jog", "training_exercise"), ("walk", "daily"),
    ("sit2stand", "daily"), ("stand2sit", "daily"), ("lunge", "training_exercise"), ("squat", "training_exercise"),
]
# UCSD-MIT: the authors' gross / fine activities; the folder name is the class name.
UCSD_MIT_ACTIVITIES = [
    ("receive", "gross"), ("walk", "gross"), ("attach", "gross"), ("scan", "gross"), ("thumb_2_grasp", "fine"),
    ("thumb_3_grasp", "fine"), ("ulnar_pinch_grasp", "fine"), ("palmar_grasp", "fine"), ("pincer_grasp", "fine"),
]


def test_mmact_table_gives_every_release_stem_its_class_and_group(tmp_path):
    """Every one of the release's 35 file stems, and scene 3's two phone stems, is indexed as its own class
    (activity_id, name, group), so a misspelt or swapped file_label in mmact.csv cannot silently skip or
    mislabel every clip of a class on a real copy."""
    stems = [name for name, _ in MMACT_CLASSES if not name.endswith("_desk")]
    assert len(stems) == 35
    for stem in stems:
        mmact_csv(tmp_path / f"acc_phone_clip/subject1/scene1/session1/{stem}.csv")
    for stem in ("using_phone", "talking_on_phone"):
        mmact_csv(tmp_path / f"acc_phone_clip/subject1/scene3/session1/{stem}.csv")
    result = build_index("mmact", tmp_path)
    assert not result.skipped
    indexed = {(s.scene, Path(s.paths["acc_phone"]).stem): (s.activity_id, s.activity, s.group) for s in result.samples}
    classes = {name: (activity_id, name, group) for activity_id, (name, group) in enumerate(MMACT_CLASSES)}
    assert indexed == {**{(1, stem): classes[stem] for stem in stems},
                       (3, "using_phone"): classes["using_phone_desk"],
                       (3, "talking_on_phone"): classes["talking_on_phone_desk"]}
    assert load_table("mmact").activity_names == [name for name, _ in MMACT_CLASSES]  # 37 classes, no extra


def test_utd_mhad_table_names_each_action_number_as_the_release_does(tmp_path):
    """a1..a27 index as the official action names in order (a1 swipe_left, a2 swipe_right, ...) with their
    groups: a swap of two rows' file_labels would train with every such sample mislabelled."""
    root = write_utd_mhad(tmp_path, actions=range(1, 28), subjects=(1,), trials=(1,), absent=())
    samples = by_id(build_index("utd_mhad", root))
    indexed = [(samples[f"a{a}_s1_t1"].activity_id, samples[f"a{a}_s1_t1"].activity, samples[f"a{a}_s1_t1"].group)
               for a in range(1, 28)]
    assert indexed == [(i, name, group) for i, (name, group) in enumerate(UTD_MHAD_ACTIONS)]
    assert load_table("utd_mhad").activity_names == [name for name, _ in UTD_MHAD_ACTIONS]


def test_ucsd_mit_table_has_the_four_gross_and_five_fine_activities(tmp_path):
    """The 9 activity folders index as their class, in table order, with the gross / fine group."""
    root = write_ucsd_mit(tmp_path, subjects=(1,), activities=[name for name, _ in UCSD_MIT_ACTIVITIES], trials=(1,))
    samples = {s.activity: (s.activity_id, s.group) for s in build_index("ucsd_mit", root).samples}
    assert samples == {name: (i, group) for i, (name, group) in enumerate(UCSD_MIT_ACTIVITIES)}
    assert load_table("ucsd_mit").activity_names == [name for name, _ in UCSD_MIT_ACTIVITIES]


def test_editing_the_table_changes_the_groups_without_code(tmp_path):
    root = write_utd_mhad(tmp_path / "utd", actions=(1, 27), subjects=(1,), trials=(1,))
    edited = tmp_path / "utd_mhad.csv"
    edited.write_text(table_path("utd_mhad").read_text().replace(
        "26,squat,3,training_exercise", "26,squat,0,hand_gesture"))
    samples = by_id(build_index("utd_mhad", root, table=edited))
    assert (samples["a27_s1_t1"].group, samples["a27_s1_t1"].group_id) == ("hand_gesture", 0)


def test_a_broken_table_is_reported_with_its_path(tmp_path):
    bad = tmp_path / "demo.csv"
    bad.write_text(table_path("demo").read_text().replace("5,drinking,2,desk", "5,drinking,2,complex"))
    with pytest.raises(MumuError, match=r"demo\.csv: group_id 2 is named both"):
        load_table("demo", bad)


@pytest.mark.parametrize("edit, cells", [(lambda row: row.rsplit(",", 2)[0], 5),  # the last two cells lost
                                          (lambda row: row + ",extra", 8)])
def test_a_row_with_the_wrong_number_of_cells_names_its_line(tmp_path, mmact_root, edit, cells):
    """A hand-edited table or index with a short or long row: an error naming file and line, for both readers."""
    table = tmp_path / "demo.csv"
    lines = table_path("demo").read_text().splitlines()
    lines[3] = edit(lines[3])
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(MumuError, match=rf"demo\.csv:4: {cells} cells where the header has 7"):
        load_table("demo", table)
    result = build_index("mmact", mmact_root)
    write_index(result.samples, tmp_path / "index.csv", result.modalities)
    lines = (tmp_path / "index.csv").read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0]
    (tmp_path / "index.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(MumuError, match=r"index\.csv:3: \d+ cells where the header has \d+"):
        read_index(tmp_path / "index.csv")


def test_a_label_missing_from_the_table_skips_its_files(tmp_path):
    root = write_utd_mhad(tmp_path / "utd", actions=(1, 27), subjects=(1,), trials=(1,))
    trimmed = tmp_path / "utd_mhad.csv"
    trimmed.write_text("".join(line for line in table_path("utd_mhad").read_text().splitlines(keepends=True)
                               if not line.startswith("26,")))
    result = build_index("utd_mhad", root, table=trimmed)
    assert [s.sample_id for s in result.samples] == ["a1_s1_t1"]
    assert len(result.skipped) == 3 and all("a27 is not in the activity table" in s.reason for s in result.skipped)


def test_empty_root_is_an_error(tmp_path):
    with pytest.raises(MumuError, match="no utd_mhad samples found"):
        build_index("utd_mhad", tmp_path)


# ------------------------------------------------------------------------------------ CLI

def run_cli(repo_root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(repo_root / "cli.py"), *args], capture_output=True, text=True, timeout=120)


def test_cli_index_writes_index_report_and_summary(repo_root, mmact_root, tmp_path):
    out = tmp_path / "idx" / "index.csv"
    result = run_cli(repo_root, "index", "--dataset", "mmact", "--data-root", str(mmact_root), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert len(read_index(out)) == 24
    report = json.loads((tmp_path / "idx" / "index_report.json").read_text())
    assert report["samples"] == 24 and report["per_group"] == {"complex": 4, "simple": 8, "desk": 12}
    assert report["unknown_files"] == 3 and len(report["skipped_files"]) == 2
    assert report["per_subject"] == {"1": 12, "2": 12}
    assert {a: n for a, n in report["per_activity"].items() if n} == {
        "carrying_light": 4, "walking": 4, "using_phone": 4, "using_phone_desk": 4, "talking_on_phone_desk": 4,
        "using_pc": 4}
    assert len(report["per_activity"]) == 37  # every activity of the table, in its order, zeros too
    assert "per subject:  1: 12, 2: 12" in result.stdout
    assert "24 mmact samples" in result.stdout
    assert "gyro 1/24" in result.stdout  # missing modalities
    assert "walking.csv: empty file" in result.stdout
    assert "unknown files ignored: 3" in result.stdout


def test_an_index_killed_while_writing_its_report_is_not_left_beside_the_earlier_report(repo_root, mmact_root,
                                                                                         tmp_path):
    """extract takes the files indexing skipped from the report beside the index: a new index left beside the report
    of an earlier indexing had it name a mended file as skipped (and --strict refuse it). The rerun finishes both."""
    from tests.test_cli import run_cli_killed_at

    root, out = shutil.copytree(mmact_root, tmp_path / "mmact"), tmp_path / "idx" / "index.csv"
    report = out.with_name("index_report.json")
    args = ("index", "--dataset", "mmact", "--data-root", str(root), "--out", str(out))
    assert run_cli(repo_root, *args).returncode == 0
    mended = mmact_csv(root / "Sensor_trimmed/gyro_clip/subject2/scene1/session2/walking.csv")

    def skipped() -> set[str]:
        return {s["path"] for s in json.loads(report.read_text())["skipped_files"]}

    run_cli_killed_at(report.name, *args)
    assert not out.exists() or str(mended) not in skipped()
    assert run_cli(repo_root, *args).returncode == 0
    assert str(mended) not in skipped() and len(skipped()) == 1
    assert str(mended) in {s.paths["gyro"] for s in read_index(out)}


def test_cli_index_strict_is_one_line_error(repo_root, mmact_root, tmp_path):
    result = run_cli(repo_root, "index", "--dataset", "mmact", "--data-root", str(mmact_root),
                     "--out", str(tmp_path / "i.csv"), "--strict")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    # Files are checked in sorted path order: Sensor_trimmed/ comes before Video_trimmed/.
    assert result.stderr.strip().count("\n") == 0
    assert "gyro_clip/subject2/scene1/session2/walking.csv: empty file" in result.stderr
    assert not (tmp_path / "i.csv").exists()


def test_cli_index_table_option_labels_with_the_given_table(repo_root, tmp_path):
    """`index --table` groups the samples by the given table (index and report), and a table that cannot be read is
    a one-line error naming it, with no index written."""
    root = write_utd_mhad(tmp_path / "utd", actions=(26, 27), subjects=(1,), trials=(1,))
    edited = tmp_path / "edited.csv"
    edited.write_text(table_path("utd_mhad").read_text().replace("26,squat,3,training_exercise",
                                                                 "26,squat,0,hand_gesture"))
    out = tmp_path / "idx" / "index.csv"
    result = run_cli(repo_root, "index", "--dataset", "utd_mhad", "--data-root", str(root), "--out", str(out),
                     "--table", str(edited))
    assert result.returncode == 0, result.stderr
    assert {s.sample_id: s.group for s in read_index(out)} == {"a26_s1_t1": "training_exercise",
                                                              "a27_s1_t1": "hand_gesture"}
    report = json.loads((tmp_path / "idx" / "index_report.json").read_text())
    assert {g: n for g, n in report["per_group"].items() if n} == {"training_exercise": 1, "hand_gesture": 1}

    missing = tmp_path / "no_such_table.csv"
    result = run_cli(repo_root, "index", "--dataset", "utd_mhad", "--data-root", str(root),
                     "--out", str(tmp_path / "other" / "index.csv"), "--table", str(missing))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "no_such_table.csv" in result.stderr and result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "other" / "index.csv").exists()

    result = run_cli(repo_root, "index", "--dataset", "utd_mhad", "--data-root", str(root),
                     "--out", str(tmp_path / "other" / "index.csv"), "--table", str(table_path("demo")))
    assert result.returncode != 0 and "Traceback" not in result.stderr  # another dataset's table: says why
    assert "is not in the activity table" in result.stderr and "demo.csv" in result.stderr
    assert not (tmp_path / "other" / "index.csv").exists()
