"""Reference point outside the product: a plain 1-D CNN on UTD-MHAD Skeleton + Inertial (LOSO).

It diagnosed the product recipe in docs/results.md: on the same raw files and the same folds, a small
temporal CNN with global average pooling scored 94-100 % on the test subjects where MuMu's LSTM-based
encoders scored 84-92 %. The encoder variants below swap in what the product's encoders do:

- conv:     3 conv layers (kernel 5, two max-pools) -> global average pooling over time;
- lstm:     per-step 1x1 convs -> LSTM -> keyless attention (the paper's UFE shape, W = 1);
- convlstm: 2 conv layers (kernel 5, no pooling) -> LSTM -> keyless attention.

Data: each stream linearly resampled to --steps points over its whole duration (time normalisation);
skeleton hip-centred and divided by the mean hip -> shoulder-centre length; per-channel standardisation
on the training subjects. Training: random crop of up to 10 % at each end and amplitude x U(0.85, 1.15),
AdamW one-cycle to 3e-3, label smoothing 0.1, batch 32. Fold s: test subject s, validation subject
s mod 8 + 1 picks the epoch (ties: the later), the other 6 train. One torch thread.

    python benchmarks/reference_cnn_utd.py --folds 2,4 --variant conv     # ~50 s per fold on this CPU
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.interpolate import interp1d
from torch import nn

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "utd_mhad"
HIP, SHOULDER_CENTER = 3, 1  # 0-based Kinect v1 joints


def load(root: Path) -> dict:
    """Raw UTD-MHAD .mat files -> inertial (T, 6) and body-frame skeleton (T, 60) per sample."""
    import scipy.io

    pattern = re.compile(r"a(\d+)_s(\d+)_t(\d+)_inertial\.mat")
    inertial, skeleton, action, subject = [], [], [], []
    for f in sorted((root / "Inertial").glob("*.mat")):
        a, s, _ = map(int, pattern.match(f.name).groups())
        inertial.append(scipy.io.loadmat(f)["d_iner"].astype(np.float32))
        sk = scipy.io.loadmat(root / "Skeleton" / f.name.replace("inertial", "skeleton"))["d_skel"]
        sk = sk.transpose(2, 0, 1).astype(np.float32)  # (T, 20, 3)
        sk = sk - sk[:, HIP : HIP + 1]
        sk = sk / np.linalg.norm(sk[:, SHOULDER_CENTER], axis=-1).mean()
        skeleton.append(sk.reshape(len(sk), -1))
        action.append(a)
        subject.append(s)
    return dict(inertial=inertial, skeleton=skeleton, label=np.array(action) - 1, subject=np.array(subject))


def resample(x: np.ndarray, steps: int, start: float = 0.0, end: float = 1.0) -> np.ndarray:
    """(T, C) -> (steps, C), linear, over the [start, end] fraction of the sample."""
    return interp1d(np.linspace(0, 1, len(x)), x, axis=0)(np.linspace(start, end, steps)).astype(np.float32)


def conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv1d(c_in, c_out, 5, padding=2), nn.BatchNorm1d(c_out), nn.ReLU()]


class Encoder(nn.Module):
    """(B, T, C) -> (B, 128)."""

    def __init__(self, channels: int, variant: str):
        super().__init__()
        self.variant = variant
        if variant == "conv":
            self.net = nn.Sequential(*conv_block(channels, 64), nn.MaxPool1d(2), *conv_block(64, 64), nn.MaxPool1d(2),
                                     *conv_block(64, 128))
            return
        if variant == "lstm":
            self.net = nn.Sequential(nn.Conv1d(channels, 32, 1), nn.BatchNorm1d(32), nn.ReLU(),
                                     nn.Conv1d(32, 128, 1), nn.BatchNorm1d(128), nn.ReLU())
        else:  # convlstm
            self.net = nn.Sequential(*conv_block(channels, 64), *conv_block(64, 128))
        self.lstm = nn.LSTM(128, 128, batch_first=True)
        self.score = nn.Linear(128, 1)  # keyless attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x.transpose(1, 2))  # (B, 128, T')
        if self.variant == "conv":
            return h.mean(-1)
        h = self.lstm(h.transpose(1, 2))[0]  # (B, T, 128)
        return (torch.softmax(self.score(h), dim=1) * h).sum(1)


class Net(nn.Module):
    def __init__(self, variant: str, classes: int = 27):
        super().__init__()
        self.inertial, self.skeleton = Encoder(6, variant), Encoder(60, variant)
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(256, classes))

    def forward(self, inertial: torch.Tensor, skeleton: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.inertial(inertial), self.skeleton(skeleton)], dim=1))


def run_fold(data: dict, test: int, variant: str, steps: int, epochs: int, seed: int) -> dict:
    val = test % 8 + 1
    subjects, labels = data["subject"], data["label"]
    train = np.flatnonzero((subjects != test) & (subjects != val))
    fixed = {m: np.stack([resample(x, steps) for x in data[m]]) for m in ("inertial", "skeleton")}
    stats = {m: (v[train].reshape(-1, v.shape[-1]).mean(0), v[train].reshape(-1, v.shape[-1]).std(0) + 1e-6)
             for m, v in fixed.items()}
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)

    def batch(index: np.ndarray, augment: bool) -> list[torch.Tensor]:
        out = []
        for m in ("inertial", "skeleton"):
            rows = []
            for i in index:
                if augment:
                    start, end = rng.uniform(0, 0.1), 1 - rng.uniform(0, 0.1)
                    x = resample(data[m][i], steps, start, end) * rng.uniform(0.85, 1.15)
                else:
                    x = fixed[m][i]
                rows.append((x - stats[m][0]) / stats[m][1])
            out.append(torch.from_numpy(np.stack(rows)))
        return out

    net = Net(variant)
    optimizer = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.01)
    total = epochs * int(np.ceil(len(train) / 32))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=total)

    def accuracy(subject: int) -> float:
        index = np.flatnonzero(subjects == subject)
        net.eval()
        with torch.no_grad():
            return float((net(*batch(index, False)).argmax(1).numpy() == labels[index]).mean())

    best, start = (-1.0, 0, 0.0), time.time()
    for epoch in range(epochs):
        net.train()
        order = rng.permutation(train)
        for j in range(0, len(order), 32):
            index = order[j : j + 32]
            loss = F.cross_entropy(net(*batch(index, True)), torch.from_numpy(labels[index]), label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        val_acc = accuracy(val)
        if val_acc >= best[0]:
            best = (val_acc, epoch, accuracy(test))
    return dict(test_subject=test, val_acc=best[0], best_epoch=best[1], test_acc=best[2],
                last_epoch_test_acc=accuracy(test), wall_s=round(time.time() - start, 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folds", default="all", help="test subjects, e.g. 2,4 or all")
    p.add_argument("--variant", choices=["conv", "lstm", "convlstm"], default="conv")
    p.add_argument("--steps", type=int, default=64, help="time-normalised length of every stream")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", type=Path, default=DATA)
    args = p.parse_args()
    if not (args.data_root / "Inertial").is_dir():
        sys.exit(f"UTD-MHAD not found at {args.data_root} (expected Inertial/ and Skeleton/ folders)")
    torch.set_num_threads(1)
    data = load(args.data_root)
    folds = range(1, 9) if args.folds == "all" else [int(f) for f in args.folds.split(",")]
    results = []
    for test in folds:
        r = run_fold(data, test, args.variant, args.steps, args.epochs, args.seed)
        results.append(r)
        print(f"{args.variant} fold s{test}: val {r['val_acc']:.3f} (epoch {r['best_epoch']}) -> test "
              f"{r['test_acc']:.3f}; last epoch test {r['last_epoch_test_acc']:.3f}; {r['wall_s']} s", flush=True)
    accs = [r["test_acc"] for r in results]
    print(f"{args.variant}: mean test accuracy {100 * np.mean(accs):.2f} +- {100 * np.std(accs):.2f} % "
          f"over {len(accs)} fold(s)")


if __name__ == "__main__":
    main()
