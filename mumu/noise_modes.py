"""The noise study's modes (described in `mumu.noise`), kept apart from it so that command-line help
(`cli.py study --help`, which lists them) does not have to load torch."""
from __future__ import annotations

from typing import Literal

NoiseMode = Literal["drop", "mean", "gaussian"]
NOISE_MODES: tuple[str, ...] = ("drop", "mean", "gaussian")
