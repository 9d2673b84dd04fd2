"""mumu command line. Every command lives in its own module and is imported only when used,
so `python cli.py --help` is instant and a broken optional dependency breaks one command only."""
from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of a click.Command
COMMANDS = {
    "demo-data": "pipeline.commands:demo_data",
    "index": "pipeline.commands:index",
    "extract": "pipeline.extract:extract_command",
    "cache-info": "pipeline.cache:cache_info_command",
    "train": "mumu.train:train_command",
    "evaluate": "mumu.evaluate:evaluate_command",
    "study": "mumu.studies:study_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """mumu: reproduce and extend MuMu (Islam & Iqbal, AAAI 2022) for multimodal activity recognition.

    Typical flow: demo-data -> index -> extract -> train -> evaluate (or just `dvc repro`).
    """


if __name__ == "__main__":
    main()
