#!/usr/bin/env bash
# Every row of docs/results.md "Headline": real UTD-MHAD, Skeleton + Inertial, LOSO and odd_even, seeds 0-9.
# MuMu with params/utd_mhad_headline.yaml; B1, B2 and B3 with the recipe (params/utd_mhad.yaml) and the same
# label smoothing and test-time adaptation. Then the noise study of every run (zeroed, training mean, and
# delayed by a quarter and a half of the duration), the result files under
# docs/results/headline/, the significance tests and a comparison figure (docs/results/rows.sh).
#
#   bash docs/results/headline.sh        # all of it: 40 LOSO runs (~6 min each, two side by side on a
#                                         # 2-core CPU: ~2 h) and 40 odd_even runs (~1 min each)
#   SEEDS="0 1 2" JOBS=1 bash docs/results/headline.sh
#   DATA_ROOT=/data/utd_mhad bash docs/results/headline.sh   # the dataset elsewhere than ../shared/data/utd_mhad
#
# Interrupted, run it again: finished folds are kept, an unfinished one resumes from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
SEEDS=${SEEDS:-0 1 2 3 4 5 6 7 8 9}
source docs/results/rows.sh
extract_cache cache/utd_mhad_w1.zarr skeleton,inertial

# MuMu, then B1, B2, B3 with the recipe and the same test procedure (docs/results/rows.sh runs them)
declare -A options=([mumu]="--params params/utd_mhad_headline.yaml"
                    [b1]="--params params/utd_mhad.yaml --label-smoothing 0.2 --adapt-bn --model b1 --lstm-layers 1"
                    [b2]="--params params/utd_mhad.yaml --label-smoothing 0.2 --adapt-bn --model b2"
                    [b3]="--params params/utd_mhad.yaml --label-smoothing 0.2 --adapt-bn --model b3")
declare -A runs=([mumu]=kl1h4-mumu [b1]=b1 [b2]=b2 [b3]=b3)
declare -A seeds=([loso]="$SEEDS" [odd_even]="$SEEDS")
FOLDER=headline KIND=si PARAMS=params/utd_mhad.yaml
EVALS="drop mean shift25 shift50"  # a group zeroed (the paper's), set to its training mean, delayed by 1/4 and 1/2
train_rows
report_rows
