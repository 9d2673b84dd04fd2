# Shared by docs/results/headline.sh and depth.sh (sourced, not run): train every row's runs, then evaluate,
# summarise, test and plot them. The sourcing script sets:
#   options[model]   `cli.py train` options of each model (mumu b1 b2 b3)
#   runs[model]      the run-name part of each model: runs/ls2-<runs[model]>-<protocol>-seed<N>
#   seeds[protocol]  the seeds of each protocol (loso, odd_even)
#   FOLDER KIND      result files go to docs/results/FOLDER/<model>_KIND_<protocol>_adabn.*
#   PARAMS           the params file `cli.py evaluate` reads
#   EVALS            the noise studies: drop mean [shift25 shift50]
#   JOBS             training runs side by side (default 2)
#   DATA_ROOT        the real UTD-MHAD (default ../shared/data/utd_mhad, beside the project)
JOBS=${JOBS:-2}
DATA_ROOT=${DATA_ROOT:-../shared/data/utd_mhad}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one thread per run: runs side by side do not fight for cores
MODELS=(mumu b1 b2 b3)
PROTOCOLS=(odd_even loso)  # odd_even first: ~1-2 min per run

extract_cache() {  # cache modalities [extract options]: the real UTD-MHAD's features (skipped when built)
  local cache=$1 modalities=$2
  shift 2
  if [ ! -f cache/utd_mhad/index.csv ]; then
    python cli.py index --dataset utd_mhad --data-root "$DATA_ROOT" --out cache/utd_mhad/index.csv
  fi
  python cli.py extract --dataset utd_mhad --index cache/utd_mhad/index.csv --cache "$cache" --modalities "$modalities" \
    --sensor-rate 50 --sensor-window 1 --sensor-stride 1 --workers 0 --rebuild-if-changed "$@"
}

run_dir() {  # model protocol seed
  echo "runs/ls2-${runs[$1]}-$2-seed$3"
}

train_rows() {  # every run that is not finished; an unfinished one resumes from its last checkpoint
  for protocol in "${PROTOCOLS[@]}"; do
    for seed in ${seeds[$protocol]}; do
      for model in "${MODELS[@]}"; do
        echo "${options[$model]} --protocol $protocol --seed $seed --out $(run_dir "$model" "$protocol" "$seed")"
      done
    done
  done | xargs -P "$JOBS" -L 1 python cli.py train
}

evaluate_run() {  # run_dir: each noise study of EVALS that has not run (adapted per subject and silent streams)
  local dir=$1 study
  for study in $EVALS; do
    local out="$dir/eval-$study" noise=(--noise "$study")
    case $study in
      drop) out="$dir/eval" ;;
      shift25 | shift50) noise=(--noise shift --noise-level "0.${study#shift}") ;;
    esac
    [ -f "$out/metrics.json" ] || python cli.py evaluate "$dir" --params "$PARAMS" --tsne-samples 100 "${noise[@]}" \
      --out "$out"
  done
}

result() {  # model protocol: a result file's name under docs/results, without its extension
  echo "$FOLDER/$1_${KIND}_$2_adabn"
}

report_rows() {  # noise studies, then per protocol: summaries, significance tests and the comparison figure
  local protocol model seed dirs
  for protocol in "${PROTOCOLS[@]}"; do
    for model in "${MODELS[@]}"; do
      dirs=()
      for seed in ${seeds[$protocol]}; do dirs+=("$(run_dir "$model" "$protocol" "$seed")"); done
      for dir in "${dirs[@]}"; do evaluate_run "$dir"; done
      python docs/results/summarise.py "$(result "$model" "$protocol")" "${dirs[@]}"
    done
    python docs/results/significance.py "$(result aso "$protocol")" "$(result mumu "$protocol")" \
      "$(result b1 "$protocol")" "$(result b2 "$protocol")" "$(result b3 "$protocol")"
    python docs/results/compare.py "$(result comparison "$protocol")" "$(result mumu "$protocol")" \
      "$(result b2 "$protocol")" "$(result b3 "$protocol")" "$(result b1 "$protocol")"
  done
}
