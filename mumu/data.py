"""Batches for training and evaluation, from the feature cache or from the raw dataset.

Batch format (shared with evaluation):
    x:         dict[name, Tensor]  sensor (B, S, W, C) float32; visual (B, S, 2048) float32 from the
                                   cache, or (B, S, H, W, 3) uint8 frames from raw files, which
                                   `mumu.module.MumuModule` turns into features with the frozen ResNet-50
    lengths:   dict[name, LongTensor (B,)]  valid steps; 0 = modality missing for that sample
    label:     LongTensor (B,)  activity class
    group:     LongTensor (B,)  activity group
    sample_id: list[str]

Sequence length. Every modality is brought to a fixed number of steps S (`max_steps_visual`,
`max_steps_sensor`): a sequence with n <= S steps is kept whole and zero-padded; a longer one is
sampled down to S steps by splitting it into S equal bins and taking
- at evaluation, the centre step of each bin (deterministic, uniform);
- in training, one random step of each bin (jittered uniform sampling, as in temporal segment
  networks), so the whole clip is still covered but each epoch sees different segments.
The random draw depends only on (seed, epoch, sample), so a resumed run and a run with any number
of DataLoader workers see the same steps. An optional per-sample transform (mumu/transforms.py:
skeleton body frame, training-time augmentation) draws from the same generator.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mumu.encoders import step_mask
from pipeline.errors import MumuError
from pipeline.files import write_json
from pipeline.index import Sample
from pipeline.modalities import ModalitySpec

if TYPE_CHECKING:
    from pipeline.cache import FeatureCache
    from pipeline.extract import ExtractSettings

Transform = Callable[[dict, "np.random.Generator | None"], dict]  # one sample's windows -> transformed (mumu.transforms)

MEMO_BYTES = 512 * 2**20  # per CacheDataset (and per worker): samples kept in memory once read


def step_indices(n: int, length: int, rng: np.random.Generator | None,
                 span: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Which of n steps to keep (ascending), at most `length`, spread over the `span` fraction of the sample.

    rng None: the centre of each of `length` equal bins (evaluation); else one random step per bin. A span that
    holds no more than `length` steps is kept whole: every step in it."""
    low, high = span[0] * n, span[1] * n
    if high - low <= length:  # also a short sample's crop: the same share of it as of the others
        first = min(int(np.floor(low)), n - 1)
        return np.arange(first, max(min(int(np.ceil(high)), n), first + 1))
    edges = np.linspace(low, high, length + 1)  # S equal bins over the span
    if rng is None:
        return np.floor((edges[:-1] + edges[1:]) / 2).astype(np.int64)
    return np.floor(edges[:-1] + rng.random(length) * (edges[1:] - edges[:-1])).astype(np.int64)


def step_sampler(rng: np.random.Generator | None, time_crop: float) -> Callable[[int, int], np.ndarray]:
    """One sample's step choice, `(n, length) -> step_indices`, called once per modality.

    rng None: bin centres (evaluation), the same for every modality. time_crop 0: one random step per bin,
    drawn anew for each modality (jitter, so two streams on one time base see neighbouring, not identical,
    steps in training). time_crop > 0: bin centres over one random crop of the sample, the same crop for
    every modality, cutting up to `time_crop` at each end."""
    if rng is None or time_crop <= 0:
        return lambda n, length: step_indices(n, length, rng)
    cut = rng.uniform(0.0, time_crop, size=2)
    span = (float(cut[0]), float(1.0 - cut[1]))
    return lambda n, length: step_indices(n, length, None, span)


def max_steps_for(spec: ModalitySpec, max_steps_visual: int, max_steps_sensor: int) -> int:
    return max_steps_visual if spec.visual else max_steps_sensor


class StepDataset(Dataset):
    """Base for both sources: label lookup, per-(seed, epoch, sample) sampling, and the item format.

    Items are requested by `(index, epoch)` keys from `EpochSampler` (or a plain index, epoch 0), so the
    training-time sampling is reproducible in any worker. Subclasses implement `load(sample, choose)`,
    where `choose(name, n)` returns the step indices to keep for a modality with n steps.
    """

    def __init__(self, samples: Sequence[Sample], modalities: Sequence[ModalitySpec], max_steps: dict[str, int],
                 train: bool, seed: int, transform: Transform | None = None, time_crop: float = 0.0):
        self.samples = list(samples)
        self.modalities = list(modalities)
        self.max_steps = dict(max_steps)
        self.train = train
        self.seed = seed
        self.transform = transform  # mumu.transforms.SensorTransform: skeleton frame, train-time augmentation
        # Training-time step sampling: 0 = one random step per bin; > 0 = evenly spaced steps over a random
        # crop of the sample (up to this fraction at each end), the same crop for every modality.
        self.time_crop = time_crop

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        sample = self.samples[index]
        rng = np.random.default_rng([self.seed, epoch, index]) if self.train else None
        pick = step_sampler(rng, self.time_crop)

        def choose(name: str, n: int) -> np.ndarray:
            return pick(n, self.max_steps[name])

        x = self.load(sample, choose)
        if self.transform is not None:
            x = self.transform(x, rng)  # rng None at evaluation: no augmentation
        return {"x": x, "label": sample.activity_id, "group": sample.group_id, "sample_id": sample.sample_id}

    def load(self, sample: Sample, choose: Callable[[str, int], np.ndarray]) -> dict[str, torch.Tensor | None]:
        raise NotImplementedError

    def take_steps(self, arrays: dict[str, np.ndarray | None], choose: Callable[[str, int], np.ndarray],
                   dtype: type | None = None) -> dict[str, torch.Tensor | None]:
        """The chosen steps of each selected modality (a part: of its modality's) as tensors, from `arrays` by
        stored modality; absent or empty -> None (missing)."""
        x: dict[str, torch.Tensor | None] = {}
        for spec in self.modalities:
            values = arrays.get(spec.stored_as)
            if values is None or len(values) == 0:
                x[spec.name] = None
                continue
            steps = spec.steps_of(values[choose(spec.name, len(values))])
            x[spec.name] = torch.from_numpy(np.ascontiguousarray(steps, dtype=dtype))
        return x


class CacheDataset(StepDataset):
    """Reads one sample at a time from the zarr feature cache (through its offsets)."""

    def __init__(self, cache_path: str | Path, samples: Sequence[Sample], modalities: Sequence[ModalitySpec],
                 max_steps: dict[str, int], train: bool, seed: int, transform: Transform | None = None,
                 time_crop: float = 0.0):
        super().__init__(samples, modalities, max_steps, train, seed, transform, time_crop)
        self.cache_path = str(cache_path)
        self._cache = None  # opened lazily in each worker process: zarr handles are not fork-safe
        # Samples already read stay in memory up to MEMO_BYTES: a zarr read costs ~10 ms per sample on the
        # demo (bench_train.py), more than a small sensor model's step, and every epoch reads them again.
        self._memo: dict[str, dict] = {}
        self._memo_bytes = 0

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": None, "_memo": {}, "_memo_bytes": 0}

    def _read(self, sample_id: str) -> dict:
        if sample_id in self._memo:
            return self._memo[sample_id]
        arrays = self.cache.read(sample_id)
        size = sum(v.nbytes for v in arrays.values() if v is not None)
        if self._memo_bytes + size <= MEMO_BYTES:
            self._memo[sample_id] = arrays
            self._memo_bytes += size
        return arrays

    @property
    def cache(self) -> FeatureCache:
        if self._cache is None:
            from pipeline.cache import FeatureCache
            self._cache = FeatureCache(self.cache_path)
        return self._cache

    def load(self, sample: Sample, choose: Callable[[str, int], np.ndarray]) -> dict[str, torch.Tensor | None]:
        # visual (S, 2048) float16 -> float32; sensor (S, W, C) float32
        return self.take_steps(self._read(sample.sample_id), choose, dtype=np.float32)


class RawDataset(StepDataset):
    """Decodes and windows one sample from the raw files, exactly as extraction does
    (`pipeline.extract.load_raw_sample`); visual modalities come out as uint8 frames (S, H, W, 3) for
    the backbone in the model step.

    The sensor time base is the interval all of the sample's sensor streams cover, whichever of them are
    trained on (`load_raw_sample` reads them all, as extraction does); only the selected visual modalities
    are decoded.

    A selected modality whose file cannot be used is missing from the sample, as in a cache; with
    `problems_dir`, the reasons are written there once per sample (<sample_id>.json: {modality: reason}),
    from whichever process loads it, as extraction records them in the cache.
    """

    def __init__(self, samples: Sequence[Sample], modalities: Sequence[ModalitySpec], max_steps: dict[str, int],
                 train: bool, seed: int, settings: ExtractSettings, transform: Transform | None = None,
                 time_crop: float = 0.0, problems_dir: Path | None = None):
        super().__init__(samples, modalities, max_steps, train, seed, transform, time_crop)
        self.settings = settings
        self.problems_dir = problems_dir

    def load(self, sample: Sample, choose: Callable[[str, int], np.ndarray]) -> dict[str, torch.Tensor | None]:
        from pipeline.extract import load_raw_sample
        from pipeline.modalities import dataset_modalities

        selected = {spec.stored_as for spec in self.modalities}
        raw = load_raw_sample(sample, [s for s in dataset_modalities(sample.dataset) if s.name in selected],
                              self.settings)
        record = self.problems_dir / f"{sample.sample_id}.json" if self.problems_dir and raw.problems else None
        if record is not None and not record.exists():
            write_json(record, raw.problems, shared=True)  # loader workers and DDP ranks may meet the same sample
        # visual uint8 frames (S, H, W, 3); sensor (S, W, C) float32
        return self.take_steps(raw.inputs, choose)


def valid_steps(x: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """(B, S) bool: the valid (unpadded) steps of padded x (B, S, ...), of every sample or of the samples
    ``rows`` (bool (B,)) only."""
    valid = step_mask(lengths.to(x.device), x.shape[1])
    return valid if rows is None else valid & rows[:, None].to(x.device)


def is_empty(batch: dict) -> bool:
    """A batch whose every sample was left out for want of a usable input (PadCollate)."""
    return batch.get("sample_id") == []


class PadCollate:
    """Stacks items into a batch, zero-padding every modality to its configured number of steps."""

    def __init__(self, step_shapes: dict[str, tuple[int, ...]], max_steps: dict[str, int],
                 dtypes: dict[str, torch.dtype] | None = None):
        self.step_shapes = step_shapes  # name -> shape of one step: (2048,), (W, C) or (H, W, 3)
        self.max_steps = max_steps
        self.dtypes = dtypes or {}

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        # Raw training finds a sample's files unusable only when it loads them (RawDataset records why); one left
        # with none of the chosen modalities is left out here, as a cache's is before training. A batch may so
        # come out empty (`is_empty`): the steps that run the model skip it.
        items = [item for item in items if any(steps is not None for steps in item["x"].values())]
        batch_size = len(items)
        x, lengths = {}, {}
        for name, step_shape in self.step_shapes.items():
            dtype = self.dtypes.get(name, torch.float32)
            padded = torch.zeros((batch_size, self.max_steps[name], *step_shape), dtype=dtype)  # (B, S, ...)
            length = torch.zeros(batch_size, dtype=torch.long)
            for b, item in enumerate(items):
                steps = item["x"][name]
                if steps is None:
                    continue
                if tuple(steps.shape[1:]) != step_shape:
                    raise MumuError(f"sample {item['sample_id']}: {name} steps have shape {tuple(steps.shape[1:])}, "
                                    f"expected {step_shape}; was the cache built with other settings?")
                padded[b, : len(steps)] = steps
                length[b] = len(steps)
            x[name], lengths[name] = padded, length
        return {
            "x": x,
            "lengths": lengths,
            "label": torch.tensor([item["label"] for item in items], dtype=torch.long),
            "group": torch.tensor([item["group"] for item in items], dtype=torch.long),
            "sample_id": [item["sample_id"] for item in items],
        }


class EpochSampler(Sampler):
    """Yields `(index, epoch)` keys for this process's share of a dataset.

    Training: shuffled by a generator seeded with (seed, epoch), identical on every rank and after a
    resume, then split rank::world_size, wrapping around so every rank gets the same number of
    samples (DDP steps in lockstep). Evaluation: in order, split rank::world_size with no padding, so
    the ranks together see every sample exactly once.
    """

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1):
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at the start of every epoch
        self.epoch = epoch

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))[self.rank:: self.world_size]
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        per_rank = -(-self.size // self.world_size)
        order += order[: per_rank * self.world_size - self.size]
        return order[self.rank:: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(i, self.epoch) for i in self._order()])

    def __len__(self) -> int:
        return len(self._order())


class SubjectBatchSampler(Sampler):
    """Training batches that each hold one subject's samples, so that BatchNorm's batch statistics in
    training are per subject, as test-time adaptation (mumu.adapt) makes them at test.

    Every epoch each subject's samples are shuffled and cut into ceil(n / batch_size) batches of near-equal
    size (no sample left out), and the batches of all subjects are shuffled together; all drawn from
    (seed, epoch), so a resumed run sees the same batches. Batches are split rank::world_size, wrapping
    around so that every rank steps the same number of times. Lightning sets the epoch through
    `.sampler`, as it does for a BatchSampler."""

    def __init__(self, subjects: Sequence[int], batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.subjects, self.batch_size = list(subjects), batch_size
        self.sampler = EpochSampler(len(self.subjects), True, seed, rank, world_size)  # holds seed, epoch, rank

    def _batches(self) -> list[list[int]]:
        s = self.sampler
        generator = torch.Generator().manual_seed(s.seed * 100_003 + s.epoch)
        batches = []
        for subject in sorted(set(self.subjects)):
            members = [i for i, x in enumerate(self.subjects) if x == subject]
            order = [members[j] for j in torch.randperm(len(members), generator=generator).tolist()]
            n_batches = -(-len(order) // self.batch_size)
            batches += [chunk.tolist() for chunk in np.array_split(np.array(order), n_batches)]
        batches = [batches[j] for j in torch.randperm(len(batches), generator=generator).tolist()]
        per_rank = -(-len(batches) // s.world_size)
        batches += batches[: per_rank * s.world_size - len(batches)]
        return batches[s.rank:: s.world_size]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter([[(i, self.sampler.epoch) for i in batch] for batch in self._batches()])

    def __len__(self) -> int:
        return len(self._batches())


def make_loader(dataset: StepDataset, collate: PadCollate, batch_size: int, shuffle: bool, seed: int,
                num_workers: int, rank: int = 0, world_size: int = 1,
                subjects: Sequence[int] | None = None) -> DataLoader:
    """A DataLoader over this rank's share; workers are spawned (zarr is not fork-safe) and kept.

    subjects (training only): each sample's subject; batches then hold one subject each (SubjectBatchSampler)."""
    if subjects is not None and shuffle:
        batching = {"batch_sampler": SubjectBatchSampler(subjects, batch_size, seed, rank, world_size)}
    else:
        batching = {"batch_size": batch_size, "sampler": EpochSampler(len(dataset), shuffle, seed, rank, world_size)}
    return DataLoader(
        dataset,
        **batching,
        collate_fn=collate,
        num_workers=num_workers,
        multiprocessing_context="spawn" if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


class MumuDataModule(pl.LightningDataModule):
    """Train / val / test loaders for one split, from either source (`make_dataset` builds them).

    test_groups, val_groups: the test (validation) samples in groups, one DataLoader per group (the module
    learns which group a batch is from by its dataloader_idx: mumu.adapt adapts to each subject); None = one
    loader. subject_batches: every training batch holds one subject's samples."""

    def __init__(self, make_dataset: Callable[[list[Sample], bool], StepDataset], collate: PadCollate,
                 train: list[Sample], val: list[Sample], test: list[Sample], batch_size: int, seed: int,
                 num_workers: int, test_groups: list[list[Sample]] | None = None,
                 val_groups: list[list[Sample]] | None = None, subject_batches: bool = False):
        super().__init__()
        self.make_dataset, self.collate = make_dataset, collate
        self.splits = {"train": train, "val": val, "test": test}
        self.groups = {"val": val_groups, "test": test_groups}
        self.subject_batches = subject_batches  # training batches of one subject each (SubjectBatchSampler)
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers

    def _loader(self, samples: list[Sample], training: bool) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        subjects = [sample.subject for sample in samples] if training and self.subject_batches else None
        return make_loader(self.make_dataset(samples, training), self.collate, self.batch_size,
                           shuffle=training, seed=self.seed, num_workers=self.num_workers, rank=rank,
                           world_size=world, subjects=subjects)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.splits["train"], training=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._evaluation_loaders("val")

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._evaluation_loaders("test")

    def _evaluation_loaders(self, part: str) -> DataLoader | list[DataLoader]:
        if self.groups[part] is None:
            return self._loader(self.splits[part], training=False)
        loaders = [self._loader(group, training=False) for group in self.groups[part]]
        return loaders if len(loaders) > 1 else loaders[0]
