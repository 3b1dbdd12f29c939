#!/usr/bin/env bash
# Everything a GPU machine checks, in one call: the scan's GPU path and the models on
# CUDA against float64 on the CPU (check_gpu.py), inference throughput against timm (bench_models_gpu.sh), a training
# step's throughput (bench_train.py), `mambaout train` on one GPU and under torchrun, detection training steps
# (bench_dense.py) and the study's image tasks on CUDA. Each step has its own time limit; a failed step does not stop
# the others, and the limits add up to 8.5 minutes, so a call limited to 10 minutes always ends with the summary. Four
# files go to OUTDIR as each step ends (check_gpu.log: every step's output; check_gpu.json; gpu.csv; summary.txt);
# the runs' folders go to a temporary folder.
# Usage: bash benchmarks/check_gpu.sh [OUTDIR]
set -uo pipefail
out=${1:-gpu_check}
work=$(mktemp -d)
mkdir -p "$out"
: >"$out/check_gpu.log"
export PYTHONUNBUFFERED=1
summary=()

step() {
  local name=$1 limit=$2 start rc
  shift 2
  echo "== $name: $*"
  start=$(date +%s)
  timeout "$limit" "$@" >"$work/$name.log" 2>&1
  rc=$?
  { echo "== $name: $*"; cat "$work/$name.log"; } >>"$out/check_gpu.log"
  tail -n 12 "$work/$name.log"
  summary+=("$name rc=$rc $(($(date +%s) - start))s")
  printf '%s\n' "${summary[@]}" >"$out/summary.txt"
}

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv | tee "$out/gpu.csv"
step check 100 python benchmarks/check_gpu.py --json "$out/check_gpu.json"
step models 90 bash benchmarks/bench_models_gpu.sh 989
step train_tiny 60 python benchmarks/bench_train.py --model mambaout_tiny --batch-size 128 --amp bf16 --channels-last \
  --device cuda --steps 20 --json
step train_cli 40 python -m mambaout train --epochs 2 --device cuda --output "$work/train_run"
step torchrun 40 torchrun --standalone --nproc_per_node 1 -m mambaout train --epochs 1 --device cuda \
  --output "$work/torchrun_run"
step dense 60 python benchmarks/bench_dense.py --backbone mambaout_tiny --batch-size 2 --device cuda
step study 120 python -m mambaout study --device cuda --tasks digits,selective_copying --seeds 1 --no-sweep \
  --output "$work/study"
cat "$out/summary.txt"
