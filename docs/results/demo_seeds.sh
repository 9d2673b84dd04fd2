#!/usr/bin/env bash
# The demo's seed range that README.md and params.yaml quote: `dvc repro`'s training (params.yaml) on its
# cache, seeds 0-3, with the weight average (ema_decay 0.9, the committed setting) and without it (0).
#
#   bash docs/results/demo_seeds.sh        # builds cache/demo.zarr first if needed (dvc repro extract);
#                                          # 8 runs, ~3.5 min in all on a 2-core CPU, under runs/demo-seeds/
#
# Interrupted, run it again: finished runs are kept.
set -euo pipefail
cd "$(dirname "$0")/../.."
dvc repro extract >/dev/null
for ema in 0.9 0; do
  for seed in 0 1 2 3; do
    out=runs/demo-seeds/ema${ema}-seed${seed}
    python cli.py train --from-cache --cache cache/demo.zarr --seed "$seed" --ema-decay "$ema" --out "$out" \
      --restart-if-changed >/dev/null 2>&1 || { echo "training $out failed: rerun it to see why" >&2; exit 1; }
  done
done
python - <<'PY'
import json
for ema in ("0.9", "0"):
    scores = [100 * json.load(open(f"runs/demo-seeds/ema{ema}-seed{seed}/metrics.json"))["macro_f1"] for seed in range(4)]
    print(f"ema_decay {ema:3s}: test macro-F1 by seed 0-3: {', '.join(f'{s:.1f}' for s in scores)} % "
          f"(range {min(scores):.0f}-{max(scores):.0f} %)")
PY
