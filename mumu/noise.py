"""Input corruption for the noise-robustness study (paper §5.3, Table 6) and the noisy attention plots.

For every test sample we pick, with probability 0.5 each, either its *visual* or its *non-visual*
modality group and corrupt the raw (cached) features of every modality in that group:

- ``drop``: each valid time step (segment / window) of the group is set to **zero** with probability
  ``level``; ``level=1`` zeroes the whole group, which is the paper's "dropped raw features".
  Lengths are left unchanged on purpose: the model still sees the modality as present, so the fusion
  has to learn from the features that they carry no signal. (Length 0 would mean "missing", which
  the model masks out of the fusion by construction and so tests nothing.)
- ``mean``: as ``drop``, but a hit step is set to the training set's mean of each feature (the value the
  model's input standardisation maps to 0) instead of zero. The stream still carries no signal, and its
  values stay inside the range seen in training. Zero is not such a value for every stream: averaged
  ResNet-50 features are positive, and with random-init weights their spread is so small that a zeroed
  step lies ~19 standard deviations from the training data in every one of the 2048 features (UTD-MHAD
  depth, docs/results.md), which tests an out-of-range input more than a dropped stream.
- ``shift``: the group's valid steps are delayed by ``round(level * n)`` of the sample's n steps, its first
  step held until then, as if its clock ran late against the other group's (the paper's "misaligned" data,
  which it shows in attention plots but does not measure). Deterministic; ``level`` must be below 1.
- ``gaussian``: ``x <- (1 - level) * x + level * std(x) * N(0, 1)`` on the valid steps, where std(x)
  is the feature's standard deviation over that sample's valid steps, so one level means the same
  signal-to-noise ratio for ResNet features and for accelerometer values in m/s^2.

Camera-derived streams (video, depth, and skeleton / motion capture, which are computed from a depth
camera or optical markers) form the visual group; wearable sensors (IMU, EMG) the non-visual group.
"""
from __future__ import annotations

import torch

from mumu.data import valid_steps
from mumu.noise_modes import NOISE_MODES, NoiseMode
from pipeline.errors import MumuError
from pipeline.modalities import CAMERA_SENSORS, ModalitySpec

GROUPS = ("visual", "non_visual")


def modality_group(spec: ModalitySpec) -> str:
    """"visual" for camera-derived modalities, "non_visual" for wearable sensors."""
    return "visual" if spec.visual or spec.stored_as in CAMERA_SENSORS else "non_visual"


def split_groups(specs: list[ModalitySpec]) -> dict[str, list[str]]:
    """{"visual": [names], "non_visual": [names]} in the order given."""
    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    for spec in specs:
        groups[modality_group(spec)].append(spec.name)
    return groups


def choose_groups(num_samples: int, generator: torch.Generator) -> list[str]:
    """One group per sample, visual or non-visual with probability 0.5 each."""
    coin = torch.rand(num_samples, generator=generator) < 0.5
    return ["visual" if c else "non_visual" for c in coin.tolist()]


def blank_steps(x: torch.Tensor, hit: torch.Tensor, mode: NoiseMode, fill: torch.Tensor | None = None
                ) -> torch.Tensor:
    """A copy of x with the steps ``hit`` ((B, S) bool) set to zero ("drop") or to ``fill``, the training
    mean of each feature ("mean"). No randomness: modality dropout uses it to blank whole streams."""
    out = x.clone()
    out[hit] = 0 if mode == "drop" else fill.to(device=x.device, dtype=x.dtype)
    return out


def check_noise(mode: str, level: float) -> None:
    """A clear error for an unknown mode or a level outside what the mode accepts."""
    if mode not in NOISE_MODES:
        raise MumuError(f"unknown noise mode {mode!r}; choose one of {', '.join(NOISE_MODES)}")
    if not 0.0 <= level <= 1.0:
        raise MumuError(f"noise level must lie in [0, 1], got {level}")
    if mode == "shift" and level >= 1.0:
        raise MumuError(f"noise 'shift' delays a stream by a fraction of its duration; the level must be below 1 "
                        f"(e.g. --noise-level 0.25), got {level}")


def corrupt_tensor(
    x: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor, mode: NoiseMode, level: float,
    generator: torch.Generator, fill: torch.Tensor | None = None,
) -> torch.Tensor:
    """Corrupt the valid steps of the samples ``rows`` (bool (B,)) of one padded modality tensor.

    x: (B, S, ...) padded features; lengths: (B,) valid steps; fill: mode "mean" only, the training mean
    per feature (last axis of x). Returns a new tensor, x untouched.
    """
    check_noise(mode, level)
    if mode == "mean" and fill is None:
        raise MumuError("noise mode 'mean' needs the training means of the features (fill)")
    if mode in ("drop", "mean"):
        valid = valid_steps(x, lengths, rows)  # (B, S)
        hit = valid & (torch.rand(valid.shape, generator=generator).to(x.device) < level)
        return blank_steps(x, hit, mode, fill)
    if mode == "shift":
        return delayed(x, lengths, rows, level)
    out = x.clone()
    for b in torch.nonzero(rows).flatten().tolist():
        n = int(lengths[b])
        if n == 0:
            continue  # missing modality: nothing to corrupt
        clean = x[b, :n].float()
        # per-feature spread over time; a single step has none, so use its spread over features
        std = clean.std(dim=0, keepdim=True, unbiased=False) if n > 1 else clean.std(unbiased=False)
        noise = torch.randn(clean.shape, generator=generator).to(x.device) * std
        noisy = (1 - level) * clean + level * noise
        out[b, :n] = noisy.to(x.dtype)
    return out


def delayed(x: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor, fraction: float) -> torch.Tensor:
    """x (B, S, ...) with the valid steps of the samples ``rows`` delayed by round(fraction * length) steps (at
    most length - 1), the first step repeated before them; padding and other samples as they were."""
    lengths = lengths.to(x.device)
    delay = (fraction * lengths.double()).round().long().clamp(max=(lengths - 1).clamp(min=0))  # (B,)
    delay = delay * rows.to(x.device)
    steps = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, S)
    source = torch.where(steps < lengths[:, None], (steps - delay[:, None]).clamp(min=0), steps)  # (B, S)
    return x[torch.arange(len(x), device=x.device)[:, None], source]


def corrupt_batch(
    batch: dict, specs: list[ModalitySpec], mode: NoiseMode, level: float, generator: torch.Generator,
    groups: list[str] | None = None, fills: dict[str, torch.Tensor] | None = None,
) -> tuple[dict, list[str]]:
    """Corrupt one modality group per sample of a batch.

    batch: the training batch format, dict(x={name: (B, S, ...)}, lengths={name: (B,)}, ...).
    groups: the group to corrupt per sample; None draws them with p=0.5 (see `choose_groups`).
    fills: mode "mean" only, {modality: training mean per feature}.
    Returns (new batch with corrupted copies of x, the group corrupted per sample).
    """
    num = len(next(iter(batch["lengths"].values())))
    groups = choose_groups(num, generator) if groups is None else groups
    members = split_groups(specs)
    x = dict(batch["x"])
    for group, names in members.items():
        rows = torch.tensor([g == group for g in groups], dtype=torch.bool)
        if not rows.any():
            continue
        for name in names:
            if name in x:
                x[name] = corrupt_tensor(x[name], batch["lengths"][name], rows, mode, level, generator,
                                         (fills or {}).get(name))
    return {**batch, "x": x}, groups
