"""The data a training run reads: its modalities, label tables and samples (from the feature cache or the raw
dataset), checked against its config, and the protocol's splits of those samples.

`prepare_data(cfg)` -> RunData; `split_samples(data)` -> one SampleSplit per fold. Samples that hold none of the
chosen modalities are left out here (`RunData.left_out`, with why); training reports them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import click
import torch
from torch.utils.data import DataLoader

from mumu.config import TrainConfig
from mumu.data import CacheDataset, PadCollate, RawDataset, StepDataset, make_loader, max_steps_for
from mumu.transforms import SensorTransform
from pipeline.errors import MumuError
from pipeline.extract import weights_kind
from pipeline.index import Sample
from pipeline.modalities import FEATURE_DIM, ModalitySpec, select_modalities, stored_modalities
from pipeline.tables import ActivityTable, load_table


@dataclass
class RunData:
    """Everything a run needs about its data: modalities, labels, the samples and how to load them."""

    cfg: TrainConfig
    specs: list[ModalitySpec]
    activity_names: list[str]
    group_names: list[str]
    samples: list[Sample]
    problems_dir: Path | None = None  # raw training: where unusable inputs are recorded (RawDataset)
    left_out: dict[str, str] = field(default_factory=dict)  # sample id -> why: none of the chosen modalities
    skipped_files: list[dict] = field(default_factory=list)  # raw training: files its indexing skipped

    @property
    def max_steps(self) -> dict[str, int]:
        return {s.name: max_steps_for(s, self.cfg.max_steps_visual, self.cfg.max_steps_sensor) for s in self.specs}

    def step_shape(self, spec: ModalitySpec) -> tuple[int, ...]:
        if spec.visual:
            size = self.cfg.extract.image_size
            return (size, size, 3) if self.cfg.source == "raw" else (FEATURE_DIM,)
        return (self.cfg.extract.sensor_window, spec.channels)

    def collate(self) -> PadCollate:
        raw = self.cfg.source == "raw"
        return PadCollate({s.name: self.step_shape(s) for s in self.specs}, self.max_steps,
                          {s.name: torch.uint8 for s in self.specs if s.visual and raw})

    def make_dataset(self, samples: list[Sample], train: bool) -> StepDataset:
        transform = SensorTransform.from_params(self.cfg.transforms)  # skeleton frame; augmentation if train
        if self.cfg.source == "raw":
            return RawDataset(samples, self.specs, self.max_steps, train, self.cfg.seed, self.cfg.extract, transform,
                              self.cfg.time_crop, self.problems_dir)
        return CacheDataset(self.cfg.cache_path, samples, self.specs, self.max_steps, train, self.cfg.seed, transform,
                            self.cfg.time_crop)

    def loader(self, samples: list[Sample], batch_size: int | None = None, num_workers: int = 0) -> DataLoader:
        """An evaluation DataLoader (deterministic sampling, in order) over `samples`."""
        return make_loader(self.make_dataset(samples, train=False), self.collate(), batch_size or self.cfg.batch_size,
                           shuffle=False, seed=self.cfg.seed, num_workers=num_workers)


def prepare_data(cfg: TrainConfig) -> RunData:
    """Open the cache (or the raw index), check it against the config, and load the label tables."""
    specs = select_modalities(cfg.dataset, cfg.modalities)
    table = load_table(cfg.dataset, cfg.activity_table)
    skipped_files = []
    if cfg.source == "cache":
        samples, left_out = _cache_samples(cfg, specs)
    else:
        samples, left_out, skipped_files = _raw_samples(cfg, specs)
    return RunData(cfg, specs, table.activity_names, table.group_names, regroup(samples, table),
                   left_out=left_out, skipped_files=skipped_files)


def regroup(samples: list[Sample], table: ActivityTable) -> list[Sample]:
    """Give every sample its activity group from `table`, so that a cache indexed with one table trains
    with the groups of another (the auxiliary task's labels) without re-extraction. The activities must
    be the same: a sample whose activity id names another activity in the table is an error."""
    regrouped = []
    for sample in samples:
        known = sample.activity_id < len(table.activities)
        activity = table.activities[sample.activity_id] if known else None
        if activity is None or activity.activity != sample.activity:
            raise MumuError(f"activity table {table.path}: sample {sample.sample_id} is activity {sample.activity_id} "
                            f"({sample.activity!r}) in the index or cache, but the table "
                            + (f"names that id {activity.activity!r}" if activity else "has no such id")
                            + "; the table and the index must list the dataset's activities with the same ids")
        regrouped.append(replace(sample, group=activity.group, group_id=activity.group_id))
    return regrouped


def _cache_samples(cfg: TrainConfig, specs: list[ModalitySpec]) -> tuple[list[Sample], dict[str, str]]:
    """The cache's usable samples, and those left out for holding none of the chosen modalities (with why)."""
    from pipeline.cache import FeatureCache
    path = cfg.cache_path
    if not path.exists():
        raise MumuError(f"feature cache {path} does not exist; build it with `python cli.py extract --params P` "
                        f"(P: the params file this training reads; extract writes to its train.cache) or, for a "
                        f"--cache given here, `python cli.py extract --params P --cache {path}`")
    cache = FeatureCache(path)
    _check_fingerprint(path, cache.fingerprint, cfg)  # first: another dataset's cache is named as such
    have = {m.name for m in cache.modalities}
    missing = list(dict.fromkeys(s.stored_as + (f" (which holds {s.name})" if s.part_of else "")
                                 for s in specs if s.stored_as not in have))
    if missing:
        raise MumuError(f"feature cache {path} has no modality {', '.join(missing)} (it has "
                        f"{', '.join(sorted(have))}); choose --modalities from those or re-extract")
    if not cache.samples:
        raise MumuError(f"feature cache {path} holds no usable sample"
                        + (f": extraction failed for all {len(cache.failures)}; `python cli.py cache-info {path}` "
                           f"lists why" if cache.failures else ""))
    names = [s.name for s in stored_modalities(cfg.dataset, specs)]  # a part is in its modality's stored steps
    left_out = {sample_id: f"no {' or '.join(names)} in the cache: {cache.failures.get(sample_id, 'no such input')}"
                for sample_id in cache.lacking(names)}
    # samples extraction could use no file of: the cache offers them to no reader, so they are named here
    left_out.update({sample_id: f"nothing usable in the cache: {cache.failures.get(sample_id, 'no input')}"
                     for attrs in cache.parts.values() for sample_id in attrs["unusable"]})
    return [s for s in cache.samples if s.sample_id not in left_out], left_out


def _check_fingerprint(path: Path, fingerprint: dict, cfg: TrainConfig) -> None:
    """The cache must have been extracted with the settings this run asks for (params.yaml extract:)."""
    from pipeline.backbone import hash_weights, weights_available  # torchvision: only where a cache is checked

    wanted = asdict(cfg.extract)
    wanted["dataset"] = cfg.dataset
    weights = wanted.pop("weights")
    differing = [key for key, value in wanted.items() if key in fingerprint and str(fingerprint[key]) != str(value)
                 and not _same_number(fingerprint[key], value)]
    found = [f"{k}={fingerprint[k]!r} (requested {wanted[k]!r})" for k in differing]
    kind = weights_kind(weights)
    if kind != "random" and weights_available(weights):
        # the tensors must match, not the names: a user's file may hold ImageNet's weights, or a renamed copy
        requested_hash = hash_weights(weights)
        if requested_hash != fingerprint.get("weights_hash"):
            differing.append("weights")
            found.append(f"weights {fingerprint.get('weights')!r} with hash {fingerprint.get('weights_hash')!r} "
                         f"(requested {weights}, hash {requested_hash!r})")
    else:
        if kind == "file":  # extracted on another machine, maybe: only the kind can be checked
            click.echo(f"warning: weights file {weights} (extract.weights) is not here, so feature cache {path} "
                       f"can only be checked to come from a weights file, not from this one", err=True)
        if kind != fingerprint.get("weights", kind):
            differing.append("weights")
            found.append(f"weights={fingerprint['weights']!r} (requested {kind!r})")
    if differing:
        # the settings may come from no file at all (--params none): the advice names the option, not a file
        in_block = [f"{k}: {fingerprint[k]}" for k in differing  # dataset is top-level; a file has no name here
                    if k != "dataset" and not (k == "weights" and fingerprint[k] == "file")]
        raise MumuError(f"feature cache {path} was extracted with {', '.join(found)}; "
                        f"re-extract it with these settings"
                        + (f", or train with a --params file whose extract: block matches the cache "
                           f"({', '.join(in_block)})" if in_block else ""))


def _same_number(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def _raw_samples(cfg: TrainConfig, specs: list[ModalitySpec]) -> tuple[list[Sample], dict[str, str], list[dict]]:
    """The data root's samples, those left out for having no file of the chosen modalities (with why), and the
    files indexing skipped (unreadable or malformed: their samples lack that modality)."""
    from pipeline.datasets import build_index
    if not Path(cfg.data_root).is_dir():
        raise MumuError(f"--from-raw: data root {cfg.data_root} does not exist (set --data-root or params.yaml "
                        f"data_root)")
    index = build_index(cfg.dataset, cfg.data_root)
    names = [s.name for s in stored_modalities(cfg.dataset, specs)]
    left_out = {s.sample_id: f"no {' or '.join(names)} file in {cfg.data_root} (or indexing skipped it)"
                for s in index.samples if not any(s.paths.get(name) for name in names)}
    samples = [s for s in index.samples if s.sample_id not in left_out]
    return samples, left_out, index.report(None)["skipped_files"]


@dataclass
class SampleSplit:
    name: str
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]


def split_samples(data: RunData) -> list[SampleSplit]:
    """The protocol's splits (pipeline/splits.py), as Samples; an empty part is a MumuError there."""
    from pipeline.splits import make_splits
    cfg = data.cfg
    by_id = {s.sample_id: s for s in data.samples}
    try:
        splits = make_splits(data.samples, cfg.dataset, cfg.protocol, cfg.val_fraction, cfg.seed)
    except MumuError as e:
        if not data.left_out:
            raise
        raise MumuError(f"{e.message} ({len(data.left_out)} samples were left out for lacking the chosen "
                        f"modalities)") from None
    return [SampleSplit(split.name, *([by_id[i] for i in getattr(split, part)] for part in ("train", "val", "test")))
            for split in splits]
