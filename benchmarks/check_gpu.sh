#!/usr/bin/env bash
# Everything a GPU machine checks, in one call: the scan's GPU path and the models on CUDA against float64 on the
# CPU (check_gpu.py), inference throughput against timm (bench_models_gpu.sh), a training step's throughput
# (bench_train.py), `mambaout train` on one GPU and under torchrun, detection training steps (bench_dense.py) and the
# study's digits and selective-copying tasks on CUDA. Each step has its own time limit; a failed step does not stop
# the others, and the limits add up to 8.5 minutes, so a call limited to 10 minutes always ends with the summary. Five
# files go to OUTDIR while the steps run (check_gpu.log: every step's output as it comes; check_gpu.json; gpu.csv;
# summary.txt; study.json, the study's results); the runs' folders go to a temporary folder. Runs the package from
# this checkout's src/ (no install needed beside its dependencies). On one H200 (torch 2.11, 2026-12-04) every step
# passed in 5.3 min; the numbers are in docs/ssm.md, models.md, training.md, dense.md and study.md.
# Usage: bash benchmarks/check_gpu.sh [OUTDIR]
#
# On a lent machine whose Python lacks some of the dependencies (the H200 image lent here, Python 3.12, had torch and
# numba but not pycocotools, and a timm of unknown version), bring them as wheels for its Python from here, ignored by
# git:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl timm==1.0.31 pycocotools==2.0.11
# and there (carrying .whl; a symlink to a venv's python would lose the venv, hence the wrapper):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
#   mkdir -p /tmp/bin && printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" >/tmp/bin/python
#   chmod +x /tmp/bin/python && PATH=/tmp/bin:$PATH bash benchmarks/check_gpu.sh "$OUT"
set -uo pipefail
out=$(realpath -m "${1:-gpu_check}")
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
work=$(mktemp -d)
mkdir -p "$out"
: >"$out/check_gpu.log"
export PYTHONUNBUFFERED=1
summary=()

step() {
  local name=$1 limit=$2 start rc first
  shift 2
  echo "== $name: $*" | tee -a "$out/check_gpu.log"
  first=$(($(wc -l <"$out/check_gpu.log") + 1))
  start=$(date +%s)
  timeout -k 5 "$limit" "$@" >>"$out/check_gpu.log" 2>&1
  rc=$?
  tail -n +"$first" "$out/check_gpu.log" | tail -n 12
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
cp "$work/study/results.json" "$out/study.json" 2>/dev/null
cat "$out/summary.txt"
