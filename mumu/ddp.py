"""Lightning's DDP launcher starts every other rank as a copy of the command; these tie their lives to it,
so that a killed `train` (a timeout, `dvc repro` interrupted) leaves no worker waiting for rank 0 for good."""
from __future__ import annotations

import ctypes
import os
import signal
import sys

LAUNCHER_ENV = "MUMU_DDP_LAUNCHER"  # the launching process's pid, inherited by the ranks it starts


def mark_launcher() -> None:
    """Called by the process that may start DDP ranks, before it does."""
    os.environ[LAUNCHER_ENV] = str(os.getpid())


def end_with_launcher() -> None:
    """In a rank the launcher started (Linux): ask to be killed when the launcher ends; exit if it already has."""
    launcher = os.environ.get(LAUNCHER_ENV)
    if not launcher or os.environ.get("LOCAL_RANK", "0") == "0" or not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1  # <linux/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != int(launcher):  # it ended before the request was made: no signal would come
        os._exit(1)
