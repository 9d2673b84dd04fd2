#!/usr/bin/env bash
# Every Depth + Skeleton + Inertial row of docs/results.md: real UTD-MHAD, the four models, LOSO (seeds 0-9)
# and odd_even (seeds 0-9). Depth: random-init ResNet-50 features (64 px, every 6th frame) with a LayerNorm
# on each depth step. MuMu with params/utd_mhad_depth_headline.yaml; B1, B2 and B3 with the recipe's depth
# file and the same smoothing, LayerNorm and test-time adaptation. Then the noise study of every run (the
# corrupted group zeroed, and set to its training mean), the result files under docs/results/depth/ and
# the significance tests and a comparison figure (docs/results/rows.sh).
#
#   bash docs/results/depth.sh     # 40 LOSO runs (~11 min each, two side by side on a 2-core CPU: ~4 h)
#                                  # and 40 odd_even runs (~2 min each)
#   LOSO_SEEDS="0 1" ODD_EVEN_SEEDS="0 1" JOBS=1 bash docs/results/depth.sh
#
# Interrupted, run it again: finished folds are kept, an unfinished one resumes from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
LOSO_SEEDS=${LOSO_SEEDS:-0 1 2 3 4 5 6 7 8 9}
ODD_EVEN_SEEDS=${ODD_EVEN_SEEDS:-0 1 2 3 4 5 6 7 8 9}
source docs/results/rows.sh
extract_cache cache/utd_mhad_dsi_w1.zarr depth,skeleton,inertial --image-size 64 --frame-stride 6

baseline="--params params/utd_mhad_depth.yaml --label-smoothing 0.2 --adapt-bn --visual-norm"
declare -A options=([mumu]="--params params/utd_mhad_depth_headline.yaml"
                    [b1]="$baseline --model b1 --lstm-layers 1" [b2]="$baseline --model b2" [b3]="$baseline --model b3")
declare -A runs=([mumu]=kl1h4-vnorm-mumu-dsi [b1]=vnorm-b1-dsi [b2]=vnorm-b2-dsi [b3]=vnorm-b3-dsi)
declare -A seeds=([loso]="$LOSO_SEEDS" [odd_even]="$ODD_EVEN_SEEDS")
FOLDER=depth KIND=dsi PARAMS=params/utd_mhad_depth.yaml
EVALS="drop mean"  # the corrupted group zeroed (the paper's), and set to its training mean
train_rows
report_rows
