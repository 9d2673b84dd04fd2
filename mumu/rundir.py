"""Reading a finished training run, for evaluation, studies and retesting: its splits (`run_splits`, `read_split`,
`split_dir`, `finished_folds`), its trained modules (`load_module`) and `load_run`, which gives a fold's model, data
and split together. Checkpoints that cannot be read, or that hold a model this version no longer builds, are one
clear MumuError (also when training resumes from one).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mumu.config import TrainConfig, load_config
from mumu.model import ModelOutput
from mumu.module import MumuModule
from mumu.rundata import RunData, prepare_data
from pipeline.errors import MumuError
from pipeline.files import read_json
from pipeline.index import Sample


@dataclass
class LoadedRun:
    """A trained run: `predict(batch)` runs the model as in testing (inputs standardised); `loader(part)`
    batches a part of its split ("train", "val" or "test")."""

    module: MumuModule  # eval mode; `module.encoder_inputs(batch)` turns a raw batch into encoder inputs
    config: TrainConfig
    data: RunData
    split: dict[str, list[str]]  # part -> sample ids
    run_dir: Path

    def samples(self, part: str = "test") -> list[Sample]:
        by_id = {s.sample_id: s for s in self.data.samples}
        lost = [i for i in self.split[part] if i not in by_id]
        if lost:
            source = self.config.cache_path if self.config.source == "cache" else self.config.data_root
            raise MumuError(f"{self.run_dir / 'split.json'}: {len(lost)} of its {part} samples ({', '.join(lost[:3])}"
                            f"{', ...' if len(lost) > 3 else ''}) are not in {source} any more; was it rebuilt or "
                            f"changed since training? Extract it again with the run's settings, or train again")
        return [by_id[i] for i in self.split[part]]

    def loader(self, part: str) -> DataLoader:
        return self.data.loader(self.samples(part))

    @torch.no_grad()
    def predict(self, batch: dict) -> ModelOutput:
        return self.module(batch)


def run_splits(run_dir: str | Path) -> list[str | None]:
    """The splits a training RUN_DIR has written: [None] for one split (split.json in RUN_DIR itself),
    else its fold folders with a split.json (LOSO's fold_s1...); [] before any split has started."""
    run_dir = Path(run_dir)
    if (run_dir / "split.json").is_file():
        return [None]
    return sorted(p.parent.name for p in run_dir.glob("*/split.json"))


def read_split(fold_dir: Path) -> dict[str, list[str]]:
    """A split's split.json (its train / val / test sample ids), or a MumuError naming a damaged file."""
    path = fold_dir / "split.json"
    split = read_json(path, "train the run again (--overwrite)")
    if not isinstance(split, dict) or not all(isinstance(split.get(part), list) for part in ("train", "val", "test")):
        raise MumuError(f"{path}: not a split (lists of train, val and test sample ids); train the run again "
                        f"(--overwrite)")
    return split


def split_dir(run_dir: Path, split: str | None) -> Path:
    """Where a split's files are (`run_splits` names the splits): RUN_DIR itself for a one-split run (None),
    else RUN_DIR/<split>."""
    return run_dir if split is None else run_dir / split


def finished_folds(run_dir: str | Path) -> list[str]:
    """The fold folders of a multi-split RUN_DIR (e.g. LOSO's fold_s1...) that have finished: written their
    metrics.json, the marker training itself skips on. A fold still training (it has a best.ckpt already,
    from an early epoch) is left out."""
    return [fold for fold in run_splits(run_dir)
            if fold is not None and (Path(run_dir) / fold / "metrics.json").is_file()]


def load_module(ckpt: Path) -> MumuModule:
    """The trained module of a checkpoint; one that does not fit the model this code builds (trained by an
    earlier version whose layers differ) is a clear error, not a state-dict traceback."""
    return module_from(read_trained(ckpt), ckpt)


def read_trained(ckpt: Path) -> dict:
    """A finished run's checkpoint (unreadable: a clear error), for testing or evaluating it."""
    return read_checkpoint(ckpt, "cannot read", "train the run again, with --overwrite")


def module_from(state: dict, ckpt: Path) -> MumuModule:
    module = MumuModule(**state["hyper_parameters"])
    if not layers_match(state["state_dict"], module):
        raise from_earlier_version(ckpt)
    module.load_state_dict(state["state_dict"])
    return module


def load_run(run_dir: str | Path, fold: str | None = None) -> LoadedRun:
    """Load RUN_DIR (or RUN_DIR/<fold> for loso; default: the first fold) with its best checkpoint."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    splits = run_splits(run_dir)
    if not splits:
        raise MumuError(f"{run_dir} is not a finished training run (no split.json)")
    fold_dir = split_dir(run_dir, None if splits == [None] else fold or splits[0])
    ckpt = fold_dir / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        raise MumuError(f"{ckpt} does not exist; has `python cli.py train --out {run_dir}` finished?")
    split = read_split(fold_dir)
    if cfg.source == "cache" and not cfg.cache_path.exists():
        raise MumuError(f"{run_dir} was trained on the feature cache {cfg.cache_path}, which does not exist (any "
                        f"more); extract it again with the run's settings ({run_dir / 'config.yaml'}: extract:)")
    module = load_module(ckpt).eval()
    data = prepare_data(cfg)
    return LoadedRun(module, cfg, data, split, fold_dir)


def read_checkpoint(path: str | Path, failure: str, advice: str) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else ""
        raise MumuError(f"{failure} {path} ({type(e).__name__}: {reason}); {advice}") from None


def layers_match(state_dict: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    """True when the saved tensors are exactly the module's, by name and shape."""
    own = module.state_dict()
    return set(state_dict) == set(own) and all(state_dict[k].shape == own[k].shape for k in own)


def from_earlier_version(ckpt: str | Path) -> MumuError:
    """The one error for a checkpoint whose layers differ from the model this code builds, on load or resume."""
    return MumuError(f"{ckpt} holds a model whose layers differ from the one this version of mumu builds (it was "
                     f"trained by an earlier version); train the run again, with --overwrite")
