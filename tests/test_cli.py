"""The command line as a user meets it: help everywhere, one-line errors, no tracebacks."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def run_cli_killed_at(name: str, *args: str) -> subprocess.CompletedProcess:
    """`cli.py ARGS`, killed (SIGKILL) as it renames its written file NAME into place: what a kill at that moment
    leaves behind, for the rerun to finish."""
    killed = ("import os, pathlib, runpy, signal, sys\n"
              "replace = pathlib.Path.replace\n"
              "def killed_at(self, target):\n"
              f"    if pathlib.Path(target).name == {name!r}:\n"
              "        os.kill(os.getpid(), signal.SIGKILL)\n"
              "    return replace(self, target)\n"
              "pathlib.Path.replace = killed_at\n"
              f"sys.argv[0] = {str(ROOT / 'cli.py')!r}\n"
              "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", killed, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == -signal.SIGKILL, f"not killed at {name}: {result.stderr}"
    return result


def test_top_level_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    listed = result.stdout.split("Commands:")[1].splitlines()
    assert [line.split()[0] for line in listed if line.strip()] == sorted(COMMANDS)


def with_subcommands(command: click.Command, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The words that call `command` and, for a click group, those of each of its subcommands, at any depth."""
    if not isinstance(command, click.Group):
        return [path]
    context = click.Context(command)
    return [path, *(words for name in command.list_commands(context)
                    for words in with_subcommands(command.get_command(context, name), (*path, name)))]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name):
    """`--help` works for every command and for each subcommand of a group (`study noise`, ...), found by walking
    the click groups so that a subcommand added later is covered too."""
    for words in with_subcommands(main.get_command(click.Context(main), name), (name,)):
        result = run_cli(*words, "--help")
        assert result.returncode == 0, (words, result.stderr)
        assert f"Usage: cli.py {' '.join(words)} " in result.stdout, words


def test_train_help_shows_the_value_an_option_left_out_takes():
    """A user reading `train --help` sees the built-in value behind the params file, e.g. that num_workers is
    2 without one (params.yaml says 0)."""
    from click.testing import CliRunner

    from mumu.train import train_command

    help_text = " ".join(CliRunner().invoke(train_command, ["--help"], terminal_width=1000).output.split())
    for option, default in (("--num-workers", "2"), ("--select", "macro_f1"), ("--lr", "0.001"),
                            ("--adapt-bn / --no-adapt-bn", "false"), ("--max-epochs", "30")):
        assert re.search(rf"{re.escape(option)} .*?\[default: \(params, else {re.escape(default)}\)", help_text), option


@pytest.mark.parametrize("name", ["demo-data", "index", "extract", "cache-info", "study"])
def test_help_of_commands_that_need_no_model_does_not_load_torch(name):
    # -X importtime lists every module imported; torch alone takes seconds to import
    result = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "cli.py"), name, "--help"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "torch" not in imported


def test_an_output_path_that_cannot_be_written_is_named(tmp_path):
    """A file where a folder should be came out as a bare FileExistsError / NotADirectoryError, and an index
    written under an unwritable folder named the hidden temporary file beside it."""
    from tests.fixtures import write_utd_mhad

    (tmp_path / "a_file").write_text("")
    root = write_utd_mhad(tmp_path / "utd", actions=(1,), subjects=(1,), trials=(1,))
    for args in (("demo-data", "--out", str(tmp_path / "a_file" / "demo")),
                 ("index", "--dataset", "utd_mhad", "--data-root", str(root), "--out",
                  str(tmp_path / "a_file" / "i.csv"))):
        result = run_cli(*args)
        assert result.returncode != 0 and str(tmp_path / "a_file") in result.stderr, result.stderr
        assert not any(raw in result.stderr for raw in ("Traceback", "FileExistsError", "NotADirectoryError"))


def test_user_error_is_one_line_without_traceback(tmp_path):
    result = run_cli("cache-info", str(tmp_path / "no-such-cache.zarr"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "no-such-cache.zarr" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_ctrl_c_inside_a_command_says_how_to_resume(tmp_path):
    """Ctrl-C while a command runs (here: while `train` loads torch) ends with the resume hint, no traceback."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "train", "--params", "none", "--dataset", "demo",
                             "--cache", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "run")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline and "libtorch" not in maps.read_text():
        time.sleep(0.01)  # torch's library is mapped: the command is being loaded inside the CLI
    assert proc.poll() is None, "the command ended before it could be interrupted"
    assert "libtorch" in maps.read_text(), "the command never started loading torch"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted: rerun the same command to resume" in stderr
    assert "Traceback" not in stderr


def test_an_error_inside_a_loader_worker_is_one_line_without_its_traceback(tmp_path):
    """torch re-raises a DataLoader worker's error with the worker's traceback inside the message; the CLI
    prints the error's own text only (a damaged cache part, say, met first in a worker)."""
    script = tmp_path / "worker_error.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import click, torch
import cli
from pipeline.errors import MumuError

class Broken(torch.utils.data.Dataset):
    def __len__(self):
        return 1
    def __getitem__(self, i):
        raise MumuError("cache/x.zarr/parts/part-000001: gyro cannot be read")

@click.command()
def load():
    list(torch.utils.data.DataLoader(Broken(), num_workers=1))

cli.COMMANDS["load"] = ("__main__:load", "iterate a loader whose worker fails")
cli.run()
""")
    result = subprocess.run([sys.executable, str(script), "load"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: cache/x.zarr/parts/part-000001: gyro cannot be read"


def test_an_unexpected_error_is_one_line_and_its_traceback_is_one_variable_away(tmp_path):
    """A bug (not a user error) still ends in one line, exit 1, naming the error and MUMU_DEBUG; with
    MUMU_DEBUG=1 the full traceback is shown."""
    script = tmp_path / "bug.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import click
import cli

@click.command()
def bug():
    {{}}["missing"]

cli.COMMANDS["bug"] = ("__main__:bug", "a command with a bug")
cli.run()
""")
    result = subprocess.run([sys.executable, str(script), "bug"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: KeyError: 'missing' (set MUMU_DEBUG=1 for the traceback)"
    debug = subprocess.run([sys.executable, str(script), "bug"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "MUMU_DEBUG": "1"})
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and "KeyError: 'missing'" in debug.stderr


@pytest.mark.parametrize("args, option", [(("extract", "--limit", "-5"), "--limit"),
                                          (("extract", "--decode-timeout", "0"), "--decode-timeout"),
                                          (("cache-info", "x.zarr", "--failures", "-1"), "--failures"),
                                          (("train", "--max-epochs", "0"), "--max-epochs")])
def test_a_number_out_of_range_is_refused_before_any_work(args, option):
    result = run_cli(*args)
    assert result.returncode == 2
    assert f"Invalid value for '{option}'" in result.stderr and "Traceback" not in result.stderr
