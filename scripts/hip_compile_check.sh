#!/usr/bin/env bash
# Compiles for HIP, with Debian's hipcc against Kokkos 3.4.1 built by scripts/build_kokkos.sh
# hip: the examples (the main job instantiates every policy, its trainer, AdamW and checkpoints),
# the benchmarks, and the tests of the layers a device runs (core, kernels, layers, aggregation,
# model: these hold kernels of their own and the float, bf16 and fp16 models). Nothing runs
# (there is no AMD GPU here): the point is that code which cannot run on a GPU (host-only calls
# in kernels, std:: math in device code) fails to build. The distributed, training and I/O test
# executables add no device code of their own and are left out to keep CI within its time
# limit; `cmake --build --preset hip` builds them too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh hip
bash scripts/build_kokkos.sh hip
export HIP_PLATFORM=amd
mkdir -p build
cmake --preset hip > build/hip-configure.log 2>&1 || { cat build/hip-configure.log; exit 1; }
targets=(train_dchag pretrain_hyperspectral dchag_plan kernel_benchmark model_benchmark
         parallel_benchmark test_core test_kernels test_layers test_aggregation test_model)
cmake --build --preset hip --target "${targets[@]}"
echo "hip compile check: built for HIP: ${targets[*]}"
