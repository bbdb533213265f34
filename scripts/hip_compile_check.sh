#!/usr/bin/env bash
# Compiles every test, example and benchmark for HIP with Debian's hipcc against Kokkos 3.4.1
# built by scripts/build_kokkos.sh hip. Nothing runs (there is no AMD GPU here): the point is
# that code which cannot run on a GPU (host-only calls in kernels, std:: math in device code)
# fails to build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh hip
bash scripts/build_kokkos.sh hip
export HIP_PLATFORM=amd
mkdir -p build
cmake --preset hip > build/hip-configure.log 2>&1 || { cat build/hip-configure.log; exit 1; }
cmake --build --preset hip
echo "hip compile check: every test, example and benchmark built for HIP"
