"""Training data-path benchmark: prints measured figures, asserts nothing.

In one run, on the same samples and the same model (MuMu, all demo modalities):
1. training samples/s fed from the zarr feature cache (DataLoader, spawned workers, pinned memory on GPU);
2. training samples/s fed from the same batches already in memory (no data path at all);
3. their ratio, the data path's efficiency (target >= 0.9), and the share of the cache epochs the training
   loop spent waiting for a batch (on a GPU, work queued on the device overlaps that wait, so the share is
   not the efficiency's complement);
4. the loader alone, in the main process: one pass reading every sample from zarr (ms per sample), then a
   pass served from the dataset's in-memory copy (samples/s);
5. on the CPU, one in-memory epoch with every core's torch threads against training's `cpu_threads`;
6. one training epoch from raw files (decode + windowing in the loader, frozen ResNet-50 in the step)
   vs one epoch from the cache: the cache's speed-up.

    python benchmarks/bench_train.py                      # builds a small demo + cache under --work
    python benchmarks/bench_train.py --device cuda --subjects 6 --frames 36 --image-size 112

The same training step (forward, L_t + beta_aux * L_aux, backward, AdamW) runs in every case; on
CUDA in bf16 autocast, on the CPU with training's thread count (`train.cpu_threads`). A warm-up epoch
starts the loader workers. Each worker keeps the samples it has read in memory, and the shuffled epochs
hand it different samples, so its zarr reads fall off over the first epochs (the per-epoch lines show
it): the cache rate is the mean over the measured epochs, as the first epochs of a training run see it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mumu.config import resolve_config  # noqa: E402
from mumu.data import make_loader  # noqa: E402
from mumu.module import MumuModule  # noqa: E402
from mumu.rundata import prepare_data  # noqa: E402


def build_demo(work: Path, subjects: int, frames: int, image_size: int) -> tuple[Path, Path]:
    """A demo dataset and its cache (both reused when they already exist)."""
    from pipeline.datasets import build_index
    from pipeline.demo import write_demo_dataset
    from pipeline.extract import ExtractSettings, run_extract
    from pipeline.modalities import dataset_modalities

    root = write_demo_dataset(work / f"demo-{subjects}x{frames}x{image_size}", n_subjects=subjects, n_sessions=2,
                              n_frames=frames, frame_size=image_size)
    cache = work / f"demo-{subjects}x{frames}x{image_size}.zarr"
    run_extract(build_index("demo", root).samples, "demo", dataset_modalities("demo"), cache,
                ExtractSettings(image_size=image_size, weights="random"), show_progress=True)
    return root, cache


def to_device(batch: dict, device: torch.device) -> dict:
    move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
    return {**batch, "x": {k: move(v) for k, v in batch["x"].items()},
            "lengths": {k: move(v) for k, v in batch["lengths"].items()},
            "label": move(batch["label"]), "group": move(batch["group"])}


def train_epoch(module: MumuModule, optimizer, batches, device: torch.device) -> tuple[int, float, float]:
    """One pass of training steps over `batches`; returns (samples, seconds, seconds spent waiting for data)."""
    module.train()
    n, waited, start = 0, 0.0, time.perf_counter()
    iterator = iter(batches)
    while True:
        asked = time.perf_counter()
        batch = next(iterator, None)
        waited += time.perf_counter() - asked
        if batch is None:
            break
        batch = to_device(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = module.loss(module(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n += len(batch["label"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n, time.perf_counter() - start, waited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/mumu-bench-train"))
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6, help="measured epochs of each (after one warm-up epoch)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)

    root, cache = build_demo(args.work, args.subjects, args.frames, args.image_size)
    common = dict(dataset="demo", data_root=str(root), cache=str(cache), modalities="all", batch_size=args.batch_size,
                  num_workers=args.workers, extract={"image_size": args.image_size, "weights": "random"})
    cfg = resolve_config(None, **common)
    data = prepare_data(cfg)
    samples = data.samples
    torch.manual_seed(0)
    module = MumuModule(cfg.to_dict(), [asdict(s) for s in data.specs], data.activity_names, data.group_names).to(device)
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=cfg.lr)
    if device.type == "cpu":
        torch.set_num_threads(cfg.cpu_threads)  # as training does (mumu.train)
    print(f"{len(samples)} samples, modalities {', '.join(s.name for s in data.specs)}, batch {cfg.batch_size}, "
          f"device {device}, {args.workers} loader workers, torch threads {torch.get_num_threads()}")

    # 1./2. from the cache through the real training loader (shuffled, jittered sampling, workers), and
    # the same batches already in memory; epochs interleaved so that both see the same machine load
    loader = make_loader(data.make_dataset(samples, train=True), data.collate(), cfg.batch_size, shuffle=True, seed=0,
                         num_workers=args.workers)
    in_memory = list(loader)  # epoch 0, also the warm-up (workers start)
    totals = {"cache": [0, 0.0, 0.0], "memory": [0, 0.0, 0.0]}
    for epoch in range(1, args.epochs + 1):
        loader.sampler.set_epoch(epoch)
        for name, batches in (("cache", loader), ("memory", in_memory)):
            n, seconds, waited = train_epoch(module, optimizer, batches, device)
            totals[name][0] += n
            totals[name][1] += seconds
            totals[name][2] += waited
            print(f"  epoch {epoch} from {name:6s}: {n / seconds:8.1f} samples/s ({seconds:.1f} s, "
                  f"{waited:.2f} s waiting for batches)")
    cache_rate = totals["cache"][0] / totals["cache"][1]
    memory_rate = totals["memory"][0] / totals["memory"][1]

    # 4. the loader alone in the main process: every sample read from zarr once, then again from memory
    dataset = data.make_dataset(samples, train=True)
    started = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    zarr_ms = 1000 * (time.perf_counter() - started) / len(dataset)
    alone = make_loader(dataset, data.collate(), cfg.batch_size, shuffle=True, seed=0, num_workers=0)
    started = time.perf_counter()
    alone_n = sum(len(batch["label"]) for batch in alone)
    alone_rate = alone_n / (time.perf_counter() - started)

    # 5. the thread count training pins on the CPU, against one torch thread per core
    threads = None
    if device.type == "cpu":
        threads = {}
        for count in (cfg.cpu_threads, os.cpu_count() or 1):
            torch.set_num_threads(count)
            n, seconds, _ = train_epoch(module, optimizer, in_memory, device)
            threads[count] = n / seconds
        torch.set_num_threads(cfg.cpu_threads)

    # 6. one epoch from raw files (decode + windowing in the loader; ResNet-50 in the step) vs one from the
    # cache, both loading in the main process so that neither includes worker start-up
    raw_cfg = resolve_config(None, **common, source="raw")
    raw_data = prepare_data(raw_cfg)
    raw_module = MumuModule(raw_cfg.to_dict(), [asdict(s) for s in raw_data.specs], raw_data.activity_names,
                            raw_data.group_names, raw_visual=True).to(device)
    raw_module.load_state_dict(module.state_dict())
    raw_module.backbone  # noqa: B018  (builds the frozen ResNet-50 now, outside the timed epoch)
    raw_optimizer = torch.optim.AdamW(raw_module.model.parameters(), lr=cfg.lr)
    by_id = {s.sample_id: s for s in raw_data.samples}
    raw_samples = [by_id[s.sample_id] for s in samples]
    raw_loader = make_loader(raw_data.make_dataset(raw_samples, train=True), raw_data.collate(), cfg.batch_size,
                             shuffle=True, seed=0, num_workers=0)
    raw_n, raw_seconds, _ = train_epoch(raw_module, raw_optimizer, raw_loader, device)
    cache_loader = make_loader(data.make_dataset(samples, train=True), data.collate(), cfg.batch_size, shuffle=True,
                               seed=0, num_workers=0)
    cache_n, cache_seconds, _ = train_epoch(module, optimizer, cache_loader, device)

    print()
    print(f"training from the cache:      {cache_rate:8.1f} samples/s")
    print(f"training from memory:         {memory_rate:8.1f} samples/s")
    print(f"data-path efficiency:         {cache_rate / memory_rate:8.2f}  (cache / in-memory; target >= 0.9)")
    print(f"  time waiting for a batch:    {totals['cache'][2] / totals['cache'][1]:8.1%} of the cache epochs")
    print(f"loader alone, zarr reads:     {zarr_ms:8.1f} ms per sample (main process)")
    print(f"loader alone, from memory:    {alone_rate:8.1f} samples/s (main process, batches collated)")
    if threads:
        cores = os.cpu_count() or 1
        print(f"in-memory epoch, torch threads: {threads[cfg.cpu_threads]:.1f} samples/s at {cfg.cpu_threads} "
              f"(training's), {threads[cores]:.1f} at {cores} ({threads[cfg.cpu_threads] / threads[cores]:.2f}x)")
    print(f"one epoch from raw files:     {raw_seconds:8.1f} s  ({raw_n / raw_seconds:.1f} samples/s)")
    print(f"one epoch from the cache:     {cache_seconds:8.1f} s  ({cache_n / cache_seconds:.1f} samples/s)")
    print(f"cache speed-up over raw:      {raw_seconds / cache_seconds:8.1f}x")


if __name__ == "__main__":
    main()
