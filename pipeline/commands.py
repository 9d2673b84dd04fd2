"""`cli.py demo-data` and `cli.py index`."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("demo-data")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("data/demo"), show_default=True,
              help="Folder to write the demo dataset into (MMAct layout).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--subjects", "n_subjects", type=click.IntRange(1), default=6, show_default=True)
@click.option("--sessions", "n_sessions", type=click.IntRange(1), default=2, show_default=True)
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
