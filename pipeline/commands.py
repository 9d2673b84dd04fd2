"""`cli.py demo-data` and `cli.py index`."""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.files import write_json
from pipeline.modalities import DATASET_MODALITIES


@click.command("demo-data")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("data/demo"), show_default=True,
              help="Folder to write the demo dataset into (MMAct layout).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--subjects", "n_subjects", type=click.IntRange(1), default=6, show_default=True, help="Subjects to write.")
@click.option("--sessions", "n_sessions", type=click.IntRange(1), default=2, show_default=True, help="Sessions per subject.")
@click.option("--frames", "n_frames", type=click.IntRange(1), default=36, show_default=True, help="Frames per video (15 fps).")
@click.option("--frame-size", type=click.IntRange(16), default=112, show_default=True, help="Square frame side in pixels (even).")
def demo_data(out: Path, seed: int, n_subjects: int, n_sessions: int, n_frames: int, frame_size: int) -> None:
    """Write a small synthetic dataset in MMAct's trimmed layout (real H.264 videos, MMAct sensor CSVs).

    Activity groups are visible on camera; the activities inside a group look identical and differ only
    in the sensors, so recognising them needs fusion. Rerunning finishes an interrupted run.
    """
    from pipeline.demo import DEMO_ACTIVITIES, DemoConfig, write_demo_dataset

    write_demo_dataset(out, seed=seed, n_subjects=n_subjects, n_sessions=n_sessions, n_frames=n_frames,
                       frame_size=frame_size, progress=True)
    n = n_subjects * n_sessions * len(DEMO_ACTIVITIES)
    click.echo(f"demo dataset: {n} samples ({n_subjects} subjects x {n_sessions} sessions x "
               f"{len(DEMO_ACTIVITIES)} activities), {len(DemoConfig().views)} views, {n_frames} frames each -> {out}")
    click.echo(f"next: python cli.py index --dataset demo --data-root {out}")


@click.command("index")
@click.option("--dataset", required=True, type=click.Choice(sorted(DATASET_MODALITIES)),
              help="Which dataset layout to read at --data-root.")
@click.option("--data-root", required=True, type=click.Path(path_type=Path), help="The raw dataset folder.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Index CSV to write [default: cache/<dataset>/index.csv]; a JSON report goes beside it.")
@click.option("--table", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Activity table to label with [default: pipeline/tables/<dataset>.csv].")
@click.option("--strict", is_flag=True, help="Stop at the first unreadable or malformed file instead of skipping it.")
def index(dataset: str, data_root: Path, out: Path | None, table: Path | None, strict: bool) -> None:
    """Index a raw dataset folder: one row per sample with labels and the file of each modality.

    Prints samples per activity, group and subject, missing modalities, and skipped files with the reason.
    """
    from pipeline.datasets import build_index
    from pipeline.index import index_report_path, write_index

    result = build_index(dataset, data_root, strict=strict, table=table)
    out = out or Path("cache") / dataset / "index.csv"
    report = index_report_path(out)
    # extract reads the skipped files from the report beside the index: the index goes first and is written last,
    # so a kill in between leaves no index rather than a new one beside an earlier indexing's report
    if out.is_file():
        out.unlink()
    write_json(report, result.report(str(out)))
    write_index(result.samples, out, result.modalities)
    click.echo(_summary(result, result.counts(), report))
    click.echo(f"index:  {out}\nreport: {report}")


def _summary(result, counts: dict, report: Path) -> str:
    from pipeline.datasets.base import skipped_lines

    n = counts["samples"]
    lines = [f"{n} {result.dataset} samples under {result.data_root}",
             "per group:    " + ", ".join(f"{g} {c}" for g, c in counts["per_group"].items()),
             "per subject:  " + ", ".join(f"{s}: {c}" for s, c in counts["per_subject"].items()),
             "per activity:"]
    width = max(len(a) for a in counts["per_activity"])
    items = [f"{a:<{width}} {c:>5}" for a, c in counts["per_activity"].items()]
    lines += ["  " + "   ".join(items[i:i + 3]) for i in range(0, len(items), 3)]
    missing = [f"{m} {c}/{n}" for m, c in counts["missing"].items() if c]
    lines.append("missing modalities: " + (", ".join(missing) if missing else "none"))
    lines.append(f"skipped files: {len(result.skipped)}")
    lines += skipped_lines(result.report(None)["skipped_files"], report)
    examples = ", ".join(Path(p).name for p in result.unknown[:3])
    lines.append(f"unknown files ignored: {len(result.unknown)}" + (f" (e.g. {examples})" if examples else ""))
    return "\n".join(lines)
