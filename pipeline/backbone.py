"""The frozen visual backbone: torchvision ResNet-50, global-average-pooled to 2048-d per frame.

``Backbone(weights, device)`` maps uint8 frames (N, H, W, 3) to float32 features (N, 2048).
Weights: ``imagenet`` (torchvision IMAGENET1K_V2 from torch's cache; there is no download here,
so a missing file is a clear error that says where to put it), ``random`` (a fixed seed, for
tests and smoke runs) or a path to a ResNet-50 ``state_dict``. `weights_hash` identifies the
weights actually loaded; the cache records it.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import torch
import torchvision

from pipeline.errors import MumuError
from pipeline.modalities import FEATURE_DIM

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_WEIGHTS = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
RANDOM_SEED = 0


def imagenet_weights_file() -> Path:
    """Where torchvision looks for the ImageNet ResNet-50 weights (torch hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(IMAGENET_WEIGHTS.url).name


def _weights_file(weights: str) -> Path:
    """The file ``imagenet`` or a PATH names (random weights have none)."""
    return imagenet_weights_file() if weights == "imagenet" else Path(weights)


def load_state_dict(weights: str) -> dict[str, torch.Tensor]:
    """``imagenet`` | ``random`` | PATH -> a ResNet-50 state_dict (with or without ``fc.*``)."""
    if weights == "random":
        return _random_state_dict()
    path = _weights_file(weights)
    if not path.is_file():
        if weights == "imagenet":
            raise MumuError(
                f"ImageNet ResNet-50 weights not found at {path} and this machine cannot download them; "
                f"copy {IMAGENET_WEIGHTS.url} to that path (or pass --weights PATH to a state_dict file)")
        raise MumuError(f"weights {weights} (--weights, or extract.weights in the params file): no such file (expected "
                        "imagenet, random or a ResNet-50 state_dict path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MumuError(f"{path}: cannot load a state_dict ({e})") from None
    if isinstance(state, dict) and "state_dict" in state:  # a training checkpoint
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise MumuError(f"{path}: expected a state_dict (dict of tensors), got {type(state).__name__}")
    _check_resnet50(state, weights)
    return state


def weights_available(weights: str) -> bool:
    """Whether `load_state_dict(weights)` finds its file on this machine (random weights need none)."""
    return weights == "random" or _weights_file(weights).is_file()


def hash_weights(weights: str) -> str:
    """`state_dict_hash` of the weights `weights` names: what a cache records as its weights_hash."""
    return state_dict_hash(load_state_dict(weights))


def _used(name: str) -> bool:
    """A tensor the features depend on: not the unused classifier, nor BatchNorm's batch counter (older exports,
    torchvision's own ImageNet files among them, lack it, and loading fills it in)."""
    return not name.startswith("fc.") and not name.endswith("num_batches_tracked")


def _check_resnet50(state: dict, weights: str) -> None:
    """MumuError unless `state` holds a ResNet-50's tensors, so a wrong file fails before a cache is made."""
    with torch.device("meta"):  # shapes only, no memory
        expected = {k: tuple(v.shape) for k, v in torchvision.models.resnet50(weights=None).state_dict().items()
                    if _used(k)}
    given = {k: tuple(getattr(v, "shape", ())) for k, v in state.items() if _used(k)}
    problems = [f"{what} {names[:3]}" for what, names in (
        ("missing", sorted(expected.keys() - given.keys())), ("unexpected", sorted(given.keys() - expected.keys())),
        ("other shapes", sorted(k for k in expected.keys() & given.keys() if given[k] != expected[k]))) if names]
    if problems:
        raise MumuError(f"weights {weights}: not a ResNet-50 state_dict ({'; '.join(problems)})")


@functools.lru_cache(maxsize=1)
def _random_state_dict() -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):  # the same random weights in every process
        torch.manual_seed(RANDOM_SEED)
        return torchvision.models.resnet50(weights=None).state_dict()


def state_dict_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over parameter names and values (fc excluded: it is not used), first 16 hex digits."""
    digest = hashlib.sha256()
    for name in sorted(state):
        if name.startswith("fc."):
            continue
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class Backbone:
    """Frozen ResNet-50 feature extractor: uint8 (N, H, W, 3) -> float32 (N, 2048).

    On CUDA the forward runs in bf16 autocast with channels_last; on CPU in float32. Frames are
    processed in chunks of ``batch_size``; the result depends only on the frames and the chunking.
    """

    def __init__(self, weights: str = "random", device: str = "cpu", batch_size: int = 32):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise MumuError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        self.batch_size = batch_size
        state = load_state_dict(weights)
        self.weights_hash = state_dict_hash(state)
        with torch.device("meta"):  # no random init: every tensor comes from the state_dict
            model = torchvision.models.resnet50(weights=None)
        model.fc = torch.nn.Identity()  # keep the 2048-d global-average-pooled vector
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, assign=True)  # checked
        model.eval().requires_grad_(False)
        self.gpu = self.device.type == "cuda"
        # GPU features differ from CPU ones by ~1% (relative L2; measured on an H200): each part records which
        self.arithmetic = f"bfloat16 on {self.device}" if self.gpu else "float32 on cpu"
        if self.gpu:
            model = model.to(self.device, memory_format=torch.channels_last)
        self.model = model
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 (N, 2048)."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected frames (N, H, W, 3), got {frames.shape}")
        outputs = []
        for start in range(0, len(frames), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(frames[start:start + self.batch_size]))
            if self.gpu:
                batch = batch.pin_memory().to(self.device, non_blocking=True)
            x = batch.permute(0, 3, 1, 2).float().div_(255)  # (B, 3, H, W)
            x = (x - self.mean) / self.std
            if self.gpu:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    y = self.model(x.contiguous(memory_format=torch.channels_last))
            else:
                y = self.model(x)
            outputs.append(y.float().cpu().numpy())  # (B, 2048)
        if not outputs:
            return np.zeros((0, FEATURE_DIM), np.float32)
        return np.concatenate(outputs)
