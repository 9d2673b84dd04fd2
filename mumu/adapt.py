"""Test-time BatchNorm adaptation to a new subject (AdaBN; Li et al., "Revisiting batch normalization for
practical domain adaptation", 2016).

A model trained on some subjects meets a new subject whose inputs are shifted (another body size, another
way of wearing the sensor). AdaBN replaces every BatchNorm layer's running mean and variance, estimated on
the training subjects, by those of the new subject's own inputs, and changes no weight. It reads the
subject's test inputs, never their labels, and every subject is adapted to on its own samples only, so a
prediction depends on the other samples of the same subject (transductive), not on any other subject.
"""
from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager, nullcontext
from typing import Any, Iterable, Iterator

import torch
from pytorch_lightning.utilities import move_data_to_device
from torch import Tensor, nn

from mumu.data import is_empty, valid_steps
from pipeline.index import Sample

BatchNormState = dict[str, tuple[Tensor, Tensor, Tensor]]  # layer name -> running mean, var, batches tracked


def by_subject(samples: list[Sample]) -> list[list[Sample]]:
    """The samples split by subject, subjects in ascending order, each subject's samples in the given order."""
    groups: dict[int, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.subject].append(sample)
    return [groups[subject] for subject in sorted(groups)]


def _batchnorm_layers(module: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    return {name: m for name, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def batchnorm_state(module: nn.Module) -> BatchNormState:
    """A copy of every BatchNorm layer's running statistics."""
    return {name: (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
            for name, m in _batchnorm_layers(module).items()}


def load_batchnorm_state(module: nn.Module, state: BatchNormState) -> None:
    for name, m in _batchnorm_layers(module).items():
        for buffer, value in zip((m.running_mean, m.running_var, m.num_batches_tracked), state[name]):
            buffer.copy_(value)


def _train_mode_if_fed(layer: nn.Module, args: tuple) -> None:
    layer.train(args[0].numel() > 0)


@torch.no_grad()
def subject_batchnorm_state(module: nn.Module, batches: Iterable[dict]) -> BatchNormState:
    """The BatchNorm statistics of `module` re-estimated on `batches` (one subject's inputs, labels unused):
    the plain average over the batches of each layer's batch mean and variance. The module is left as it was.

    `module(batch)` must run the model (as `mumu.module.MumuModule` does); the module runs in evaluation mode but
    for its BatchNorm layers, so dropout and modality dropout stay off. A layer that sees no input in these
    batches (its modality missing from every sample) keeps its trained statistics."""
    layers = _batchnorm_layers(module)
    trained = batchnorm_state(module)
    momenta = {name: m.momentum for name, m in layers.items()}
    was_training = module.training
    module.eval()
    for m in layers.values():
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    # An encoder whose modality is missing from a whole batch passes BatchNorm an empty input; in training mode
    # that would still count as a batch of the average. Such a call runs in evaluation mode instead.
    hooks = [m.register_forward_pre_hook(_train_mode_if_fed) for m in layers.values()]
    try:
        device = next(module.parameters()).device
        for batch in batches:
            if not is_empty(batch):
                module(move_data_to_device(batch, device))
        adapted = batchnorm_state(module)
    finally:
        for hook in hooks:
            hook.remove()
        for name, m in layers.items():
            m.momentum = momenta[name]
        module.train(was_training)
        load_batchnorm_state(module, trained)
    return {name: adapted[name] if adapted[name][2] > 0 else trained[name] for name in layers}


@contextmanager
def adapted_batchnorm(module: nn.Module, batches: Iterable[dict]) -> Iterator[None]:
    """Within the block, `module` uses BatchNorm statistics re-estimated on `batches`; restored afterwards."""
    trained = batchnorm_state(module)
    load_batchnorm_state(module, subject_batchnorm_state(module, batches))
    try:
        yield
    finally:
        load_batchnorm_state(module, trained)


def silent_streams(batch: dict) -> Tensor:
    """(B, M) bool, modalities in sorted order: the streams that carry no signal, every value the same over
    the sample's two or more valid steps (a dead sensor, or the noise study's dropped features)."""
    flags = []
    for name in sorted(batch["x"]):
        x, lengths = batch["x"][name], batch["lengths"][name]
        valid = valid_steps(x, lengths)[..., None]  # (B, S, 1)
        flat = x.flatten(2).float()  # (B, S, F)
        highest = flat.masked_fill(~valid, float("-inf")).amax(1)  # (B, F)
        lowest = flat.masked_fill(~valid, float("inf")).amin(1)
        flags.append((lengths >= 2) & (highest == lowest).all(1))
    return torch.stack(flags, dim=1)


def _select_rows(batch: Any, keep: Tensor) -> Any:
    """The rows `keep` (B,) bool of every tensor and list in a (nested) batch dict."""
    if isinstance(batch, dict):
        return {key: _select_rows(value, keep) for key, value in batch.items()}
    if isinstance(batch, Tensor):
        return batch[keep.to(batch.device)]
    return [item for item, kept in zip(batch, keep.tolist()) if kept]


def split_by_condition(batches: list[dict]) -> list[list[dict]]:
    """One subject's batches regrouped by which of their streams are silent (`silent_streams`), one list of
    batches per pattern. Adapting to each list on its own keeps a dead stream's samples out of the statistics
    that the same subject's live samples are normalised with, and gives the dead ones statistics of their own."""
    groups: dict[tuple[bool, ...], list[dict]] = defaultdict(list)
    for batch in batches:
        silent = silent_streams(batch)  # (B, M)
        for pattern in torch.unique(silent, dim=0):
            groups[tuple(pattern.tolist())].append(_select_rows(batch, (silent == pattern).all(1)))
    return [groups[pattern] for pattern in sorted(groups)]


@torch.no_grad()
def predict_by_subject(module: nn.Module, subjects: Iterable[list[dict]], adapt: bool) -> Iterator[tuple[dict, Any]]:
    """(batch, module(batch)) for every batch of every subject (`subjects` yields one list of batches per
    subject), each subject's with BatchNorm statistics of its own batches when `adapt`. Batches come back on
    the module's device."""
    device = next(module.parameters()).device
    for batches in subjects:
        batches = [move_data_to_device(batch, device) for batch in batches if not is_empty(batch)]
        with adapted_batchnorm(module, batches) if adapt else nullcontext():
            outputs = [(batch, module(batch)) for batch in batches]
        yield from outputs
