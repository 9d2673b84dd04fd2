#!/usr/bin/env bash
# The GPU checks in one go, on a machine with a CUDA GPU (at most 9 minutes; 8.7 were used on an H200):
#   1. tests/test_gpu.py: GPU extraction and training agree with the CPU path, resume, evaluate;
#   2. benchmarks/bench_extract.py at GPU sizes (1080p H.264, 224 px, batch 256);
#   3. benchmarks/bench_train.py at GPU sizes, with spawned loader workers and without;
#   4. the whole test suite on the GPU machine (in parallel where pytest-xdist is installed; the DVC pipeline
#      tests and the dask tests are left out where DVC or dask.distributed cannot be imported).
# Usage: bash benchmarks/gpu_check.sh [LOG_DIR]   (default gpu-check/); each step is capped in time.
set -u
log_dir=${1:-gpu-check}
mkdir -p "$log_dir"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."

{ nvidia-smi; python3 -c "import torch, torchvision, pytorch_lightning as pl; print('torch', torch.__version__,
'torchvision', torchvision.__version__, 'lightning', pl.__version__, 'cuda', torch.version.cuda,
'gpu', torch.cuda.get_device_name(0))"; nproc; } >"$log_dir/machine.txt" 2>&1
cat "$log_dir/machine.txt"

step() {  # step NAME SECONDS COMMAND...: run, capped, logged to LOG_DIR/NAME.log
    local name=$1 seconds=$2
    shift 2
    echo "=== $name (at most $seconds s): $*"
    local start=$SECONDS
    timeout "$seconds" "$@" >"$log_dir/$name.log" 2>&1
    echo "=== $name: exit $? after $((SECONDS - start)) s"
    tail -n 25 "$log_dir/$name.log"
}

step test_gpu 110 python3 -m pytest tests/test_gpu.py -v -s -p no:cacheprovider
step bench_extract 130 python3 benchmarks/bench_extract.py --device cuda --clips 16 --repeat 3 --width 1920 \
    --height 1080 --image-size 224 --batch-size 256
for workers in 2 0; do  # spawned loader workers, then loading in the main process: which keeps up with the GPU?
    step bench_train_workers$workers $((workers ? 90 : 60)) python3 benchmarks/bench_train.py --device cuda \
        --subjects 12 --frames 36 --image-size 112 --batch-size 32 --workers $workers --work /tmp/mumu-bench-train-gpu
done

deselect=()
python3 -c "import dvc.repo" 2>/dev/null || deselect+=(--ignore tests/test_dvc_pipeline.py)
python3 -c "import distributed" 2>/dev/null || deselect+=(-k "not dask")
parallel=()
python3 -c "import xdist" 2>/dev/null && parallel=(-n 12)
step test_all 150 python3 -m pytest -q -p no:cacheprovider "${parallel[@]}" "${deselect[@]}" tests
