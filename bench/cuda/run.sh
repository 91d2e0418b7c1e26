#!/usr/bin/env bash
# The CUDA checks and benchmark in one command, on a machine with a pip PyTorch (CUDA) or Debian 13's
# libtorch-cuda-dev, cmake and g++ but no npm
# and no internet. Prepare on a machine with npm first:
#   npm install && npm run build && ../shared/tools/portable-node.sh .portable
# and bring the checkout with .portable/ and dist/. Then, from the repository root:
#   bash bench/cuda/run.sh [results-dir]
# It builds the addon against that PyTorch, runs the CUDA checks (bench/cuda/checks.js: GradMult multiply,
# RepOptSGD / RepOptAdamW steps CUDA vs CPU, foreach == reference, bf16 autocast + channels-last
# training steps, a one-process NCCL group, cudaMemory), then measures RepOpt-VGG-B1 training steps (224x224 batch
# 128, 32x32 batch 256; fp32 and bf16 + channels-last) from TypeScript, in PyTorch eager and with
# torch.compile, in one run, and prints ms/step, img/s, TFLOP/s, peak GPU memory and the ratios.
set -euo pipefail
out=${1:-${OUT:-/tmp/repopt-cuda-bench}}
mkdir -p "$out"
if [ -f .portable/activate.sh ]; then
  source .portable/activate.sh
else
  # Node and node_modules are here (a checkout after npm ci, e.g. inside scripts/debian13.sh's root).
  NAPI_INC="$(node -p "require('node-api-headers').include_dir");$(node -p "require('node-addon-api').include_dir")"
fi
build=/tmp/repopt-cuda-build
# A pip PyTorch ships libtorch's CMake files; Debian's python3-torch-cuda does not (its C++ side is the
# system libtorch-cuda-dev).
if python3 -c 'import os,sys,torch.utils as u; sys.exit(not os.path.exists(os.path.join(u.cmake_prefix_path, "Torch", "TorchConfig.cmake")))' 2>/dev/null; then
  torch=python prefix=$(python3 -c 'import torch.utils as u; print(u.cmake_prefix_path)')
else
  torch=system prefix=
fi
REPOPT_TORCH=$torch cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_JS_INC="$NAPI_INC" \
  ${prefix:+-DCMAKE_PREFIX_PATH="$prefix"} >"$out/cmake.log" 2>&1 || { tail -40 "$out/cmake.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" >>"$out/cmake.log" 2>&1 || { tail -40 "$out/cmake.log"; exit 1; }
mkdir -p build/Release && cp "$build/repopt.node" build/Release/
readelf -d build/Release/repopt.node | grep -q libtorch_cuda.so || { echo "the addon does not link libtorch_cuda.so" >&2; exit 1; }
node dist/cli.js info | tee "$out/info.txt"
node -e "process.exit(require('./dist').info().cuda ? 0 : 1)" || { echo "no CUDA device is visible to libtorch (see the CUDA line above): nothing to check or measure" >&2; exit 1; }
# Correctness first (device vs CPU, with tolerances; checks.json / checks.md), then speed.
checks=0
node bench/cuda/checks.js cuda "$out" || { checks=$?; echo "CUDA checks FAILED (see $out/checks.md)" >&2; }
node bench/cuda/train-step.js "$out"
exit $checks
