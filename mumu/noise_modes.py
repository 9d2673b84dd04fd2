"""The noise study's modes (described in `mumu.noise`), kept apart from it so that command-line help
(`cli.py study --help`, which lists them) does not have to load torch."""
from __future__ import annotations

from typing import Literal, get_args

NoiseMode = Literal["drop", "mean", "gaussian", "shift"]
NOISE_MODES: tuple[str, ...] = get_args(NoiseMode)
NOISE_HELP = ("drop: zero the inputs (black frames in a run trained from raw frames); mean: set them to the "
              "training mean; gaussian: mix in noise (pixels clipped to 0-255); "
              "shift: delay the group by a fraction of the sample's duration (misaligned clocks).")
LEVEL_HELP = "Fraction of steps dropped / noise weight / fraction of the duration shifted (below 1)."
