"""One exception type for problems a user can fix: the CLI prints its message, no traceback."""
from __future__ import annotations

import click


class MumuError(click.ClickException):
    """Bad input or configuration. The message names the file/setting and what is wrong."""

    exit_code = 2
