#!/usr/bin/env bash
# On the GPU machine: keeps the carried part(s) of onnxruntime's CUDA provider (made by
# `bash scripts/gpu/pack.sh --cuda`) in $SLICESERVE_GPU_STAGE (default /var/tmp/sliceserve-gpu)
# so that the next command on the same, still warm, machine finds them. One device command per
# part, each carrying only `.gpu-cuda/part-NN-of-MM`, then `bash scripts/gpu-check.sh` carrying
# `.gpu-carry`. See docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/gpu/lib.sh
. scripts/gpu/lib.sh
stage_cuda_parts
cuda_parts_status || true
df -h "$STAGE" | tail -1
