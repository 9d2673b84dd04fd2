#!/usr/bin/env bash
# Every Depth + Skeleton + Inertial row of docs/results.md: real UTD-MHAD, the four models, LOSO (seeds 0-7)
# and odd_even (seeds 0-9). Depth: random-init ResNet-50 features (64 px, every 6th frame) with a LayerNorm
# on each depth step. MuMu with params/utd_mhad_depth_headline.yaml; B1, B2 and B3 with the recipe's depth
# file and the same smoothing, LayerNorm and test-time adaptation. Then the noise study of every run (the
# corrupted group zeroed, and set to its training mean), the result files under docs/results/depth/ and
# the significance tests.
#
#   bash docs/results/depth.sh     # 32 LOSO runs (~11 min each, two side by side on a 2-core CPU: ~3 h)
#                                  # and 40 odd_even runs (~2 min each)
#   LOSO_SEEDS="0 1" ODD_EVEN_SEEDS="0 1" JOBS=1 bash docs/results/depth.sh
#
# Interrupted, run it again: finished folds are kept, an unfinished one resumes from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
LOSO_SEEDS=${LOSO_SEEDS:-0 1 2 3 4 5 6 7}
ODD_EVEN_SEEDS=${ODD_EVEN_SEEDS:-0 1 2 3 4 5 6 7 8 9}
JOBS=${JOBS:-2}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one thread per run: runs side by side do not fight for cores

if [ ! -f cache/utd_mhad/index.csv ]; then
  python cli.py index --dataset utd_mhad --data-root ../shared/data/utd_mhad --out cache/utd_mhad/index.csv
fi
python cli.py extract --dataset utd_mhad --index cache/utd_mhad/index.csv --cache cache/utd_mhad_dsi_w1.zarr \
  --modalities depth,skeleton,inertial --image-size 64 --frame-stride 6 --sensor-rate 50 --sensor-window 1 \
  --sensor-stride 1 --workers 0 --rebuild-if-changed

baseline="--params params/utd_mhad_depth.yaml --label-smoothing 0.2 --adapt-bn --visual-norm"
declare -A options=([mumu]="--params params/utd_mhad_depth_headline.yaml"
                    [b1]="$baseline --model b1 --lstm-layers 1" [b2]="$baseline --model b2" [b3]="$baseline --model b3")
declare -A runs=([mumu]=kl1h4-vnorm-mumu [b1]=vnorm-b1 [b2]=vnorm-b2 [b3]=vnorm-b3)
declare -A seeds=([loso]="$LOSO_SEEDS" [odd_even]="$ODD_EVEN_SEEDS")
for protocol in odd_even loso; do
  for seed in ${seeds[$protocol]}; do
    for model in mumu b1 b2 b3; do
      echo "${options[$model]} --protocol $protocol --seed $seed --out runs/ls2-${runs[$model]}-dsi-$protocol-seed$seed"
    done
  done
done | xargs -P "$JOBS" -L 1 python cli.py train

for protocol in odd_even loso; do
  for model in mumu b1 b2 b3; do
    dirs=()
    for seed in ${seeds[$protocol]}; do dirs+=("runs/ls2-${runs[$model]}-dsi-$protocol-seed$seed"); done
    for dir in "${dirs[@]}"; do  # noise study, adapted per subject and per pattern of silent streams
      [ -f "$dir/eval/metrics.json" ] || python cli.py evaluate "$dir" --params params/utd_mhad_depth.yaml \
        --tsne-samples 100
      [ -f "$dir/eval-mean/metrics.json" ] || python cli.py evaluate "$dir" --params params/utd_mhad_depth.yaml \
        --tsne-samples 100 --noise mean --out "$dir/eval-mean"
    done
    python docs/results/summarise.py "depth/${model}_dsi_${protocol}_adabn" "${dirs[@]}"
  done
  python docs/results/significance.py "depth/aso_dsi_${protocol}_adabn" "depth/mumu_dsi_${protocol}_adabn" \
    "depth/b1_dsi_${protocol}_adabn" "depth/b2_dsi_${protocol}_adabn" "depth/b3_dsi_${protocol}_adabn"
done
