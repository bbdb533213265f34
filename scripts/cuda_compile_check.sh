#!/usr/bin/env bash
# Compiles, with nvcc for CUDA (sm_90) through Kokkos' nvcc_wrapper against Kokkos 4.6.01 built
# by scripts/build_kokkos.sh kokkos4-cuda: the explicit instantiations of the model types in
# tests/cuda (ChannelViT and ChannelMAE with float under TensorParallel,
# DistributedChannels<LinearAggregator> and DistributedChannels<CrossAttentionAggregator>, every
# member function, their trainers, AdamW, checkpoint save/load; ChannelViT<bf16> under D-CHAG with
# its trainer, checkpoints and the fp16 loss scaling) and the main job
# examples/train_dchag.cpp (all four policy/aggregator pairs it dispatches to), with the other
# job, examples/pretrain_hyperspectral.cpp (the MAE and the hyperspectral reader). Nothing runs and
# no GPU is needed: the point is that code which cannot run on a CUDA device (host-only calls in
# kernels, std:: math in device code, extended lambdas in private member functions) fails to
# build. nvcc reports a call from device code to a host function (#20011) or to a constexpr host
# function such as std::max (#20013) only as a warning, and the code then fails on the device:
# the preset passes --Werror=all-warnings. Not the test suite: nvcc takes up to half an hour per
# test executable on two cores.
# Prints how long each translation unit took to compile.
#
#   scripts/cuda_compile_check.sh        (JOBS: parallel compiles, default 2)
#
# Needs a CUDA toolkit (nvcc on PATH, else $CUDA_HOME/bin or /usr/local/cuda/bin) and the
# Kokkos archives scripts/build_kokkos.sh kokkos4-cuda names; fails with a message without them.
set -euo pipefail

# CMAKE_CXX_COMPILER_LAUNCHER: run one compile and append its time and object to the log.
if [[ ${1:-} == --time-compile ]]; then
  shift
  out=? prev=
  for a in "$@"; do [[ $prev == -o ]] && out=$a; prev=$a; done
  t0=$(date +%s%N)
  rc=0; "$@" || rc=$?
  printf '%6.1f s  %s%s\n' "$(( ($(date +%s%N) - t0) / 1000000 ))e-3" "${out##*/CMakeFiles/}" \
    "$( ((rc == 0)) || echo "  (failed)")" >>"${DCHAG_COMPILE_TIMES:?}"
  exit "$rc"
fi

cd "$(dirname "$0")/.."
root=$PWD
bash scripts/install_deps.sh cuda
prefix=$(bash scripts/build_kokkos.sh kokkos4-cuda)
if ! command -v nvcc >/dev/null; then
  for d in ${CUDA_HOME:+"$CUDA_HOME/bin"} /usr/local/cuda/bin; do
    if [[ -x $d/nvcc ]]; then export PATH=$d:$PATH; break; fi
  done
fi

mkdir -p build
export DCHAG_COMPILE_TIMES=$root/build/cuda-compile-times.txt
: >"$DCHAG_COMPILE_TIMES"
# The prefix build_kokkos.sh printed (DCHAG_DEPS_PREFIX may move it from the preset's default),
# and the architecture it was built for (DCHAG_CUDA_SM, as there).
cmake --preset kokkos4-cuda -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_CXX_COMPILER="$prefix/bin/nvcc_wrapper" \
  -DCMAKE_CXX_FLAGS="-arch=${DCHAG_CUDA_SM:-sm_90} --Werror=all-warnings" \
  -DCMAKE_CXX_COMPILER_LAUNCHER="$root/scripts/cuda_compile_check.sh;--time-compile" \
  >build/kokkos4-cuda-configure.log 2>&1 || { cat build/kokkos4-cuda-configure.log; exit 1; }
t0=$SECONDS
status=0
cmake --build --preset kokkos4-cuda -j "${JOBS:-2}" --target dchag_cuda_compile_check || status=$?
echo
echo "cuda compile check: nvcc compile time per translation unit (wall, ${JOBS:-2} in parallel):"
sort -rn "$DCHAG_COMPILE_TIMES"
echo "cuda compile check: $((SECONDS - t0)) s in all (link included)"
((status == 0)) || { echo "cuda compile check: FAILED" >&2; exit "$status"; }
echo "cuda compile check: the model instantiations and both jobs built for CUDA"
