#!/usr/bin/env bash
# GPU check for the model library, on a machine with a GPU: AMP + channels-last throughput of
# femto/tiny/base against timm with identical weights, in one run, with the achieved fraction of the dense bf16 peak.
# Usage: bash benchmarks/bench_models_gpu.sh [PEAK_TFLOPS]   (H100 SXM bf16 dense: 989; H200: 989)
set -euo pipefail
peak=${1:-989}
for m in mambaout_femto mambaout_tiny mambaout_base; do
  python -m mambaout bench --model "$m" --device cuda --dtype bf16 --channels-last --batch-size 256 \
    --warmup 10 --repeats 30 --compare-timm --peak-tflops "$peak"
done
