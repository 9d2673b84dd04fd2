#!/usr/bin/env bash
# Every row of docs/results.md "Headline": real UTD-MHAD, Skeleton + Inertial, LOSO and odd_even, seeds 0-9.
# MuMu with params/utd_mhad_headline.yaml; B1, B2 and B3 with the recipe (params/utd_mhad.yaml) and the same
# label smoothing and test-time adaptation. Then the noise study of every run (zeroed, training mean, and
# delayed by a quarter and a half of the duration), the result files under
# docs/results/headline/, the significance tests and a comparison figure.
#
#   bash docs/results/headline.sh        # all of it: 40 LOSO runs (~6 min each, two side by side on a
#                                         # 2-core CPU: ~2 h) and 40 odd_even runs (~1 min each)
#   SEEDS="0 1 2" JOBS=1 bash docs/results/headline.sh
#
# Interrupted, run it again: finished folds are kept, an unfinished one resumes from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
SEEDS=${SEEDS:-0 1 2 3 4 5 6 7 8 9}
JOBS=${JOBS:-2}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one thread per run: runs side by side do not fight for cores

if [ ! -f cache/utd_mhad/index.csv ]; then
  python cli.py index --dataset utd_mhad --data-root ../shared/data/utd_mhad --out cache/utd_mhad/index.csv
fi
python cli.py extract --dataset utd_mhad --index cache/utd_mhad/index.csv --cache cache/utd_mhad_w1.zarr \
  --modalities skeleton,inertial --sensor-rate 50 --sensor-window 1 --sensor-stride 1 --workers 0 --rebuild-if-changed

# one line of `cli.py train` options per run: MuMu, then B1, B2, B3 with the recipe and the same test procedure
declare -A options=([mumu]="--params params/utd_mhad_headline.yaml"
                    [b1]="--params params/utd_mhad.yaml --label-smoothing 0.2 --adapt-bn --model b1 --lstm-layers 1"
                    [b2]="--params params/utd_mhad.yaml --label-smoothing 0.2 --adapt-bn --model b2"
                    [b3]="--params params/utd_mhad.yaml --label-smoothing 0.2 --adapt-bn --model b3")
declare -A runs=([mumu]=kl1h4-mumu [b1]=b1 [b2]=b2 [b3]=b3)
for protocol in loso odd_even; do  # odd_even: ~1 min per run
  for seed in $SEEDS; do
    for model in mumu b1 b2 b3; do
      echo "${options[$model]} --protocol $protocol --seed $seed --out runs/ls2-${runs[$model]}-$protocol-seed$seed"
    done
  done
done | xargs -P "$JOBS" -L 1 python cli.py train

for protocol in loso odd_even; do
  for model in mumu b1 b2 b3; do
    dirs=()
    for seed in $SEEDS; do dirs+=("runs/ls2-${runs[$model]}-$protocol-seed$seed"); done
    for dir in "${dirs[@]}"; do  # noise study, adapted per subject and per pattern of silent streams (16 s each):
      # the corrupted group zeroed (drop, the paper's), and set to its training mean (mean)
      [ -f "$dir/eval/metrics.json" ] || python cli.py evaluate "$dir" --params params/utd_mhad.yaml --tsne-samples 100
      [ -f "$dir/eval-mean/metrics.json" ] || python cli.py evaluate "$dir" --params params/utd_mhad.yaml \
        --tsne-samples 100 --noise mean --out "$dir/eval-mean"
      for level in 25 50; do  # the group delayed by a quarter / half of each sample's duration (shift)
        [ -f "$dir/eval-shift$level/metrics.json" ] || python cli.py evaluate "$dir" --params params/utd_mhad.yaml \
          --tsne-samples 100 --noise shift --noise-level "0.$level" --out "$dir/eval-shift$level"
      done
    done
    python docs/results/summarise.py "headline/${model}_si_${protocol}_adabn" "${dirs[@]}"
  done
  python docs/results/significance.py "headline/aso_si_${protocol}_adabn" "headline/mumu_si_${protocol}_adabn" \
    "headline/b1_si_${protocol}_adabn" "headline/b2_si_${protocol}_adabn" "headline/b3_si_${protocol}_adabn"
  python docs/results/compare.py "headline/comparison_si_${protocol}_adabn" "headline/mumu_si_${protocol}_adabn" \
    "headline/b2_si_${protocol}_adabn" "headline/b3_si_${protocol}_adabn" "headline/b1_si_${protocol}_adabn"
done
