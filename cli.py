"""mumu command line. Every command lives in its own module and is imported only when used,
so `python cli.py --help` is instant and a broken optional dependency breaks one command only."""
from __future__ import annotations

import importlib
import os
import sys

import click

from mumu.ddp import end_with_launcher

# command name -> ("module:attribute" of a click.Command, one-line help shown by `--help`)
COMMANDS = {
    "demo-data": ("pipeline.commands:demo_data", "Write the synthetic demo dataset (MMAct layout)."),
    "index": ("pipeline.commands:index", "Index a raw dataset folder into a sample index CSV."),
    "extract": ("pipeline.extract:extract_command", "Build the zarr feature cache from a sample index."),
    "cache-info": ("pipeline.cache:cache_info_command", "Summarise a feature cache."),
    "train": ("mumu.train:train_command", "Train MuMu or a baseline (from the cache or raw inputs)."),
    "retest": ("mumu.train:retest_command", "Test a trained run again with other test-time settings (AdaBN)."),
    "evaluate": ("mumu.evaluate:evaluate_command", "Metrics and plots for a training run."),
    "study": ("mumu.studies:study_command", "The paper's studies: noise, modalities, ablation."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing must not import every command (torch, dask, ...): use the static help lines.
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """mumu: reproduce and extend MuMu (Islam & Iqbal, AAAI 2022) for multimodal activity recognition.

    Typical flow: demo-data -> index -> extract -> train -> evaluate (or just `dvc repro`).
    """


def _without_worker_traceback(message: str) -> str:
    """An error raised in a DataLoader worker comes back with its traceback inside the message ("Caught X in
    DataLoader worker process 0.\nOriginal Traceback ..."): keep the error's own text, from its last line."""
    _, marker, traceback = message.partition("Original Traceback (most recent call last):")
    if not marker:
        return message
    last = traceback.rstrip().splitlines()[-1]  # "pipeline.errors.MumuError: the message"
    return last.partition(": ")[2] or last


def run() -> None:
    """Entry point: user errors (MumuError) print one line; anything unexpected prints one line too,
    with the traceback only when MUMU_DEBUG=1."""
    end_with_launcher()  # first thing: a DDP rank must not outlive its launcher, even mid-import
    try:
        main(standalone_mode=False)
    except click.ClickException as e:
        e.message = _without_worker_traceback(e.message)
        e.show()
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C inside a command into Abort
        click.echo("interrupted: rerun the same command to resume", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the last line of defence against raw tracebacks
        if os.environ.get("MUMU_DEBUG"):
            raise
        if isinstance(e, OSError) and e.filename:  # a path that cannot be read or written: name it (them)
            paths = f"{e.filename} -> {e.filename2}" if e.filename2 else e.filename
            click.echo(f"Error: {paths}: {e.strerror} (set MUMU_DEBUG=1 for the traceback)", err=True)
        else:
            click.echo(f"Error: {type(e).__name__}: {_without_worker_traceback(str(e))} (set MUMU_DEBUG=1 for the "
                       "traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    run()
