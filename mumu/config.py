"""The training configuration: one typed object resolved from params.yaml and the command line.

Precedence, lowest first: the dataclass defaults, params.yaml (the shared top-level keys `dataset`,
`data_root`, `protocol`, `modalities`; the `train:` block; the `extract:` block, whose settings a cache must
match and the raw path applies), then explicit overrides (CLI options). Every value's type and range are
checked here, before anything is written, and an error names the file (or the command line) and the key.
The resolved object is written to RUN_DIR/config.yaml, and `load_config` reads it back, so a run directory
says exactly how it was made.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from mumu.fusion import GM_GATES, GM_MERGES
from mumu.model import (ARCHS, FUSION_INITS, FUSION_NORMS, MODALITY_DROPOUT_AS, MODALITY_DROPOUT_MODES,
                        SENSOR_ENCODERS, check_model_options)
from mumu.transforms import SensorTransform
from pipeline.errors import MumuError
from pipeline.extract import ExtractSettings  # the settings a cache is built with; raw mode applies them
from pipeline.files import write_text
from pipeline.modalities import select_modalities
from pipeline.params import DEFAULT_PARAMS, SHARED, check_types, extract_settings, read_params, reject_unknown

SELECTIONS = ("macro_f1", "nll", "last")  # the keys of mumu.train.SELECTION_METRICS


@dataclass(frozen=True)
class TrainConfig:
    # data
    dataset: str = "demo"
    data_root: str = "data/demo"
    cache: str | None = None  # None -> cache/<dataset>.zarr
    source: str = "cache"  # cache | raw
    modalities: str = "all"  # comma-separated subset, or all
    activity_table: str | None = None  # activity names and groups (CSV); None -> pipeline/tables/<dataset>.csv
    protocol: str = "cross_subject"
    val_fraction: float = 0.15
    max_steps_visual: int = 32  # segments per visual modality after sampling/padding
    max_steps_sensor: int = 64  # windows per sensor modality after sampling/padding
    transforms: dict = field(default_factory=dict)  # mumu.transforms: skeleton body frame, augmentation
    time_crop: float = 0.0  # training step sampling: 0 = random step per bin; > 0 = random crop (mumu.data)
    extract: ExtractSettings = field(default_factory=ExtractSettings)
    # model and optimisation
    model: str = "mumu"
    embed_dim: int = 128
    sensor_encoder: str = "window"  # window | sequence (mumu.encoders)
    conv_channels: int = 64  # sensor encoder's conv width
    kernel_size: int = 3  # sensor encoder's temporal kernel (odd for "sequence": it keeps every step)
    lstm_layers: int = 1  # per modality; 0 = none (pooling reads the step embeddings)
    max_pools: int = 0  # "sequence" encoder: max-pools by 2 along the steps after the first 0-2 conv blocks
    motion: bool = False  # "sequence" encoder: step-to-step differences of the input as extra channels
    visual_norm: bool = False  # LayerNorm over each visual step's 2048 features before the encoder's projection
    modality_dropout: float = 0.0  # training: chance that a multimodal sample loses modalities (see the mode)
    modality_dropout_mode: str = "one"  # one | down_to_one: it loses 1 to n-1 of its n modalities
    modality_dropout_as: str = "missing"  # missing: length 0 | zeros / mean: present, inputs as noise drop / mean
    gm_heads: int = 1  # MuMu's GM-Fusion attention heads; 1 = eq. (7)
    gm_gate: str = "softmax"  # eq. (7)'s sigma: softmax over modalities | sigmoid, one gate per modality
    gm_merge: str = "sum"  # GM-Fusion output: sum of the weighted values (eq. 7) | concat, one slot per modality
    fusion_init: str = "torch"  # MuMu's GM-Fusion projections and W_f: torch's default | xavier (keeps the scale)
    fusion_norm: str = "convex"  # eqs. 2, 7 | count: X_aux and X_c times the number of present modalities
    fusion_kl: float = 0.0  # MuMu: weight of a loss term pulling its fusion weights toward equal (or target) weights
    fusion_targets: str | None = None  # MuMu: CSV of per-sample target fusion weights for it (mumu.fusion_targets)
    unimodal_aux: float = 0.0  # weight of the mean activity loss of per-modality classifiers (not in the paper)
    mixup: float = 0.0  # training: > 0 = mixup, each batch mixed with weight ~ Beta(mixup, mixup) (mumu.mixup)
    dropout: float = 0.2
    beta_aux: float = 0.5
    lr: float = 1e-3  # AdamW; the peak of the one-cycle schedule when warmup > 0
    weight_decay: float = 0.01
    warmup: float = 0.0  # fraction of the steps spent warming up to lr (one cycle); 0 = cosine from lr
    label_smoothing: float = 0.0  # on the activity losses (L_t and the unimodal_aux heads')
    ema_decay: float = 0.0  # > 0: validate, select and test an exponential moving average of the weights
    select: str = "macro_f1"  # the tested checkpoint: best val macro_f1 (first of ties) | lowest val nll | last
    adapt_bn: bool = False  # test: BatchNorm statistics re-estimated on each test subject's inputs (mumu.adapt)
    validate_adapted: bool = False  # validation (and so `select`): each validation subject adapted to the same way
    subject_batches: bool = False  # training: every batch holds one subject's samples (mumu.data)
    max_epochs: int = 30
    batch_size: int = 32
    seed: int = 0
    # machinery
    num_workers: int = 2  # DataLoader workers (spawned); 0 = load in the main process
    cpu_threads: int = 1  # torch intra-op threads when training on CPU (see mumu.train.train_once)
    accelerator: str = "auto"
    devices: str = "auto"  # passed to Lightning: "auto", "1", "2", "0,1", ...
    num_nodes: int = 1
    strategy: str = "auto"
    out: str | None = None  # None -> runs/<dataset>-<model>-<protocol>-seed<N>

    @property
    def cache_path(self) -> Path:
        return Path(self.cache) if self.cache else Path("cache") / f"{self.dataset}.zarr"

    @property
    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        return Path("runs") / f"{self.dataset}-{self.model}-{self.protocol}-seed{self.seed}"

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_settings(self) -> dict[str, Any]:
        """What decides the trained weights: two runs agreeing here may resume each other."""
        d = self.to_dict()
        for machinery in ("num_workers", "cpu_threads", "accelerator", "devices", "num_nodes", "strategy", "out", "cache"):
            d.pop(machinery)
        for machinery in ("batch_size", "part_size", "decode_timeout_s"):  # how, not what, the cache computed
            d["extract"].pop(machinery)
        if d["source"] == "cache":  # the cache holds the data; where its raw files lie says nothing more
            d.pop("data_root")
        return d


_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)} - {"extract"}
_EXTRACT_KEYS = {f.name for f in dataclasses.fields(ExtractSettings)}
_COMMAND_LINE = "command line"  # the origin named for options (overrides), as a params file's path names its values

# One setting's allowed values. Settings that must agree with others are checked in `_validate`, once all
# sources are merged.
_CHOICES = {"model": ARCHS, "source": ("cache", "raw"), "sensor_encoder": SENSOR_ENCODERS, "gm_gate": GM_GATES,
            "gm_merge": GM_MERGES, "fusion_init": FUSION_INITS, "fusion_norm": FUSION_NORMS,
            "modality_dropout_mode": MODALITY_DROPOUT_MODES, "modality_dropout_as": MODALITY_DROPOUT_AS,
            "select": SELECTIONS}
# A setting's allowed range: (test, what the message says of it).
_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{name: (lambda v: v >= 1, "must be >= 1") for name in (
        "max_epochs", "batch_size", "max_steps_visual", "max_steps_sensor", "embed_dim", "conv_channels",
        "kernel_size", "num_nodes", "cpu_threads")},
    "lstm_layers": (lambda v: v >= 0, "must be >= 0 (0 = no LSTM)"),
    "num_workers": (lambda v: v >= 0, "must be >= 0 (0 = load in the main process)"),
    "max_pools": (lambda v: 0 <= v <= 2, "must be 0, 1 or 2"),
    "lr": (lambda v: v >= 0, "must be >= 0"),  # what AdamW accepts
    "weight_decay": (lambda v: v >= 0, "must be >= 0"),
    "dropout": (lambda v: 0 <= v < 1, "is a probability in [0, 1)"),
    "fusion_kl": (lambda v: v >= 0, "is a loss weight, >= 0"),
    "unimodal_aux": (lambda v: v >= 0, "is a loss weight, >= 0"),
    "mixup": (lambda v: v >= 0, "is the Beta distribution's alpha, >= 0 (0 = no mixup)"),
    "modality_dropout": (lambda v: 0 <= v < 1, "is a probability in [0, 1)"),
    "warmup": (lambda v: 0 <= v < 1, "is a fraction of the training steps, in [0, 1)"),
    "label_smoothing": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "ema_decay": (lambda v: 0 <= v < 1, "is the per-step decay of the weight average, in [0, 1)"),
    "time_crop": (lambda v: 0 <= v < 0.5, "is the fraction cut at most at each end, in [0, 0.5)"),
    "val_fraction": (lambda v: 0 < v < 1, "must be between 0 and 1"),
    "devices": (lambda v: re.fullmatch(r"auto|\d+(,\d+)*,?", v),
                "is 'auto', a device count (2) or device ids separated by commas (0,1)"),
}


def _checked(values: dict[str, Any], origin: str, prefix: str = "") -> dict[str, Any]:
    """One source's training settings (`prefix`: where the keys sit in it, e.g. "train."): names, types and each
    value's own range checked, so that an error names the source (`origin`) and the key."""
    reject_unknown(values, _TRAIN_KEYS, f"{origin}: unknown training setting(s)")
    values = dict(values)
    if isinstance(values.get("devices"), (int, list)):  # YAML's 1 or [0, 1] mean what "1" or "0,1" do
        devices = values["devices"]
        values["devices"] = ",".join(map(str, devices)) if isinstance(devices, list) else str(devices)
    values = check_types(values, TrainConfig, origin, prefix)
    for key, value in values.items():
        if key in _CHOICES and value not in _CHOICES[key]:
            raise MumuError(f"{origin}: unknown {prefix}{key} {value!r}; choose one of {', '.join(_CHOICES[key])}")
        test, allowed = _RANGES.get(key, (None, ""))
        if test and not test(value):
            raise MumuError(f"{origin}: {prefix}{key} {allowed}, got {value!r}")
    return values


def _validate(cfg: TrainConfig) -> TrainConfig:
    """The checks of settings that must agree with each other."""
    SensorTransform.from_params(cfg.transforms).check_against(select_modalities(cfg.dataset, "all"), cfg.dataset)
    if cfg.model == "b1" and cfg.lstm_layers == 0:  # B1 is defined by its last-LSTM-state pooling
        raise MumuError("B1 (non-attention) pools the last LSTM state; with lstm_layers 0 it would read only the "
                        "last step's embedding. Set lstm_layers >= 1 (--lstm-layers 1) for b1")
    check_model_options(cfg.model, cfg.embed_dim, gm_heads=cfg.gm_heads, motion=cfg.motion,
                        sensor_encoder=cfg.sensor_encoder, kernel_size=cfg.kernel_size)
    if cfg.fusion_kl > 0 and cfg.gm_gate != "softmax":
        raise MumuError("fusion_kl pulls MuMu's fusion weights, a softmax over the modalities, toward equal (or "
                        "target) weights; gm_gate sigmoid gives GM-Fusion no softmax (use gm_gate: softmax, or "
                        "fusion_kl: 0)")
    if cfg.fusion_targets and (cfg.model != "mumu" or cfg.fusion_kl <= 0):
        raise MumuError("fusion_targets are the weights MuMu's fusion_kl term pulls its fusion weights toward; "
                        f"they need model mumu and fusion_kl > 0 (got model {cfg.model}, fusion_kl {cfg.fusion_kl})")
    if cfg.mixup > 0 and cfg.fusion_targets:
        raise MumuError("mixup blends two samples, whose fusion_targets would have to be blended too; use one of "
                        "mixup and fusion_targets")
    return cfg


def config_from_dict(values: dict[str, Any], origin: str = "settings") -> TrainConfig:
    """Build a config from a flat dict of train keys plus an optional `extract` dict."""
    extract = values.get("extract") or {}
    if not isinstance(extract, dict):
        raise MumuError(f"{origin}: extract must be a mapping of settings, got {extract!r}")
    reject_unknown(extract, _EXTRACT_KEYS, f"{origin}: unknown extract setting(s)")
    flat = _checked({k: v for k, v in values.items() if k != "extract"}, origin)
    cfg = TrainConfig(**flat, extract=extract_settings(extract, origin))
    try:
        return _validate(cfg)
    except MumuError as e:
        raise MumuError(f"{origin}: {e.message}") from None


def resolve_config(params_path: str | Path | None = DEFAULT_PARAMS, **overrides: Any) -> TrainConfig:
    """params.yaml (pipeline.params.read_params: `base` chains, the default file may be absent) + overrides
    (None values are ignored, so unset CLI options fall through). The file's values and the overrides are
    checked each on their own first, so that an error names the file or the command line, and the key."""
    values: dict[str, Any] = {}
    origins = []
    params = read_params(params_path) if params_path is not None else {}
    if params:
        origins.append(str(params_path))
        values.update(_checked({k: params[k] for k in SHARED if k in params}, origins[0]))
        values.update(_checked(params.get("train") or {}, origins[0], "train."))
        values["extract"] = {k: v for k, v in (params.get("extract") or {}).items() if k in _EXTRACT_KEYS}
    given = {k: v for k, v in overrides.items() if v is not None and k != "extract"}
    if given or overrides.get("extract"):
        origins.append(_COMMAND_LINE)
        values.update(_checked(given, _COMMAND_LINE))
    if overrides.get("extract"):
        values["extract"] = {**values.get("extract", {}), **overrides["extract"]}
    return config_from_dict(values, origin=" + ".join(origins) or "settings")


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise MumuError(f"{path} does not exist; is this a training run directory?")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        values = None
    if not isinstance(values, dict) or not set(values) & _TRAIN_KEYS:  # another tool's file, not a damaged run
        raise MumuError(f"{path} is not a mumu run config (it holds no training settings), so {path.parent} is not "
                        f"a training run directory")
    return config_from_dict(values, origin=str(path))
