"""Extraction throughput on the same clips: decode only, backbone only, end to end, and the ratio.

    python benchmarks/bench_extract.py                      # CPU defaults: 4 clips 640x480, 112 px
    python benchmarks/bench_extract.py --device cuda --clips 16 --repeat 3 --width 1920 --height 1080 \
        --image-size 224 --batch-size 256

Frames are counted after sampling (every ``--stride``-th frame): one frame = one backbone input.
- decode only: the extraction's decode pool (subprocess workers) over the clips, nothing else running;
- backbone only: the backbone on uint8 frames already in memory, at ``--batch-size``;
- end to end: `run_extract` in-process mode (decoding in worker processes overlapped with the
  backbone in this process) into a fresh cache, minus nothing: writing included.
efficiency = end to end / the slower of the two; the pipeline hides the faster stage when it is ~1.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.backbone import Backbone  # noqa: E402
from pipeline.extract import DecodePool, ExtractSettings, in_process_decoders, run_extract  # noqa: E402
from pipeline.index import Sample  # noqa: E402
from pipeline.modalities import select_modalities  # noqa: E402


def write_clip(path: Path, n_frames: int, width: int, height: int, seed: int) -> None:
    """H.264 clip with moving textured content (not flat colour, so decoding costs something)."""
    import av

    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 255, (height, width * 2, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i in range(n_frames):
            shift = (i * 7) % width
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(texture[:, shift:shift + width]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1,
                        help="samples per clip (decoded anew each time): many samples without writing many clips")
    parser.add_argument("--frames", type=int, default=180, help="source frames per clip")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--stride", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--part-size", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", default="random")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    started = time.monotonic()
    clips = [work / f"clip{i}.mp4" for i in range(args.clips)]
    for i, clip in enumerate(clips):
        write_clip(clip, args.frames, args.width, args.height, seed=i)
    samples = [Sample(f"clip{i}-{r}", "demo", subject=1, activity="a", activity_id=0, group="g", group_id=0,
                      paths={"rgb_cam1": str(clip)}) for r in range(args.repeat) for i, clip in enumerate(clips)]
    print(f"wrote {args.clips} clips of {args.frames} frames {args.width}x{args.height} in "
          f"{time.monotonic() - started:.1f} s ({work}); {len(samples)} samples")
    specs = select_modalities("demo", "rgb_cam1")
    settings = ExtractSettings(image_size=args.image_size, frame_stride=args.stride, batch_size=args.batch_size,
                               part_size=args.part_size, weights=args.weights)

    # decode only, with as many decode processes as the end-to-end run uses (they start inside the timing, as
    # they do in extract)
    decoders = in_process_decoders()
    started = time.monotonic()
    with DecodePool(specs, settings, decoders) as pool:
        decoded = [raw.inputs["rgb_cam1"] for raw in pool.stream(samples, lookahead=2 * decoders)]
    decode_s = time.monotonic() - started
    n_frames = sum(len(f) for f in decoded)
    decode_fps = n_frames / decode_s

    # backbone only, on the decoded frames, after one warm-up batch
    backbone = Backbone(args.weights, args.device, args.batch_size)
    frames = np.concatenate(decoded)  # (N, H, W, 3) uint8
    backbone(frames[: args.batch_size])
    if args.device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()
    started = time.monotonic()
    backbone(frames)
    backbone_s = time.monotonic() - started
    backbone_fps = n_frames / backbone_s

    # end to end into a fresh cache
    summary = run_extract(samples, "demo", specs, work / "cache.zarr", settings, device=args.device, workers=0,
                          show_progress=False)
    assert summary["frames"] == n_frames, (summary["frames"], n_frames)
    e2e_fps = n_frames / summary["seconds"]

    slower = min(decode_fps, backbone_fps)
    print(f"sampled frames: {n_frames} ({args.image_size}x{args.image_size}, stride {args.stride}), "
          f"device {args.device}, batch {args.batch_size}, {decoders} decode processes, "
          f"{os.cpu_count()} CPUs")
    print(f"decode only:   {decode_fps:8.1f} frames/s ({decode_s:.1f} s)")
    print(f"backbone only: {backbone_fps:8.1f} frames/s ({backbone_s:.1f} s)")
    print(f"end to end:    {e2e_fps:8.1f} frames/s ({summary['seconds']:.1f} s)")
    print(f"efficiency:    {e2e_fps / slower:8.2f} (end to end / slower stage = "
          f"{'backbone' if backbone_fps < decode_fps else 'decode'})")


if __name__ == "__main__":
    main()
