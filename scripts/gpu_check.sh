#!/usr/bin/env bash
# A verdict on an NVIDIA GPU in one command: builds Kokkos 4.6.01 + Kokkos Kernels 4.6.02 with
# CUDA for the GPU's architecture (scripts/build_kokkos.sh kokkos4-cuda), builds the test suite,
# the examples and the benchmarks with nvcc, runs ctest on the GPU (the MPI tests at 1, 2 and 4
# ranks share it), then the kernel benchmark and the model benchmark, and writes one report.
#
#   scripts/gpu_check.sh [all|build|run]     (default all)
#     build   Kokkos and the build tree only; needs nvcc, not a GPU, when DCHAG_CUDA_SM is set
#             (a machine with the toolkit and many cores can build, one with the GPU run)
#     run     ctest and the benchmarks from that build tree; needs the GPU
#
# The build tree is build/gpu-<sm>; the report build/gpu-<sm>/gpu_report.md holds the GPU and
# driver (nvidia-smi), the toolchain, the ctest summary and failures, and the benchmark tables
# (their CSVs beside it). Exit status: 0 when every test passed, 1 otherwise.
#
# Environment: DCHAG_CUDA_SM (sm_75, sm_80, sm_86, sm_87, sm_89, sm_90, sm_100, sm_120; default
# the first GPU's compute capability from nvidia-smi), DCHAG_KOKKOS_ARCHIVES (the folder with the
# Kokkos release archives and the CUDA 13 patch, see scripts/build_kokkos.sh), JOBS (parallel
# compiles, default nproc; nvcc needs about 3 GB per job on the largest test files),
# DCHAG_GPU_TEST_TIMEOUT (seconds per test, default 1200), DCHAG_GPU_AWARE_MPI=1 (hand device
# pointers to MPI; only with a CUDA-aware MPI).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode=${1:-all}
case "$mode" in
  all | build | run) ;;
  *) echo "usage: scripts/gpu_check.sh [all|build|run]" >&2; exit 2 ;;
esac
msg() { echo "gpu_check.sh: $*" >&2; }
die() { msg "error: $*"; exit 1; }

if ! command -v nvcc >/dev/null; then
  for d in ${CUDA_HOME:+"$CUDA_HOME/bin"} /usr/local/cuda/bin; do
    if [[ -x $d/nvcc ]]; then export PATH=$d:$PATH; break; fi
  done
fi

# The GPU's compute capability -> nvcc's -arch and Kokkos' architecture option. CUDA 13 no
# longer compiles for compute capabilities below 7.5.
sm=${DCHAG_CUDA_SM:-}
if [[ -z $sm ]]; then
  command -v nvidia-smi >/dev/null ||
    die "no nvidia-smi: no NVIDIA driver here. To build without a GPU, set DCHAG_CUDA_SM (e.g. sm_90)"
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' ')
  [[ $cap =~ ^[0-9]+\.[0-9]+$ ]] ||
    die "nvidia-smi reports no GPU compute capability ('$cap'); set DCHAG_CUDA_SM to build anyway"
  sm=sm_${cap/./}
fi
case "$sm" in
  sm_75) arch=TURING75 ;;
  sm_80) arch=AMPERE80 ;;
  sm_86) arch=AMPERE86 ;;
  sm_87) arch=AMPERE87 ;;
  sm_89) arch=ADA89 ;;
  sm_90) arch=HOPPER90 ;;
  sm_100) arch=BLACKWELL100 ;;
  sm_120) arch=BLACKWELL120 ;;
  *) die "no Kokkos architecture known for $sm (expected one of sm_75 sm_80 sm_86 sm_87 sm_89 sm_90 sm_100 sm_120)" ;;
esac

build=$root/build/gpu-$sm
prefix=${DCHAG_DEPS_PREFIX:-$HOME/.cache/dchag}/kokkos-4.6.01-cuda-$sm
report=$build/gpu_report.md
jobs=${JOBS:-$(nproc)}

if [[ $mode != run ]]; then
  command -v nvcc >/dev/null || die "nvcc not found on PATH, in \$CUDA_HOME/bin or in /usr/local/cuda/bin"
  bash scripts/install_deps.sh cuda
  msg "Kokkos for $sm (Kokkos_ARCH_$arch) into $prefix"
  DCHAG_CUDA_ARCH=Kokkos_ARCH_$arch DCHAG_CUDA_SM=$sm JOBS=$jobs \
    bash scripts/build_kokkos.sh kokkos4-cuda "$prefix" >/dev/null
  mpi_flags=
  [[ ${DCHAG_GPU_AWARE_MPI:-0} == 1 ]] && mpi_flags=-DDCHAG_GPU_AWARE_MPI
  msg "configuring $build"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_CXX_COMPILER="$prefix/bin/nvcc_wrapper" -DCMAKE_CXX_FLAGS="-arch=$sm $mpi_flags" \
    -DDCHAG_ENABLE_TESTS=ON -DDCHAG_ENABLE_EXAMPLES=ON -DDCHAG_ENABLE_BENCHMARKS=ON \
    -DDCHAG_TEST_TIMEOUT="${DCHAG_GPU_TEST_TIMEOUT:-1200}" >"$build.configure.log" 2>&1 ||
    { cat "$build.configure.log"; die "configure failed"; }
  msg "building with $jobs jobs (nvcc: tens of minutes for the test suite)"
  t0=$SECONDS
  if ! cmake --build "$build" -j "$jobs" >"$build.build.log" 2>&1; then
    grep -E -B 2 -A 12 "error" "$build.build.log" | head -n 80
    die "the build failed (whole log: $build.build.log)"
  fi
  echo "$((SECONDS - t0))" >"$build/build_seconds"
  msg "built in $((SECONDS - t0)) s"
fi
[[ $mode == build ]] && exit 0

[[ -d $build ]] || die "no build tree $build: run scripts/gpu_check.sh build first"
command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 ||
  die "no GPU visible (nvidia-smi -L fails): the build is in $build; run 'scripts/gpu_check.sh run' where the GPU is"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

msg "ctest"
status=0
ctest --test-dir "$build" -j 2 --output-on-failure >"$build/ctest.log" 2>&1 || status=1
bench_status=()
# run_bench <label> <program> [args]: the table in <label>.log, the CSV in <label>.csv.
run_bench() {
  local label=$1 program=$2; shift 2
  msg "$label"
  if ! timeout 900 "$build/benchmarks/$program" --csv "$build/$label.csv" "$@" \
       >"$build/$label.log" 2>&1; then
    bench_status+=("$label failed or timed out, see $build/$label.log")
  fi
}
benchmarks=(kernel_benchmark model_benchmark_gemm_heavy model_benchmark_channel_heavy)
run_bench kernel_benchmark kernel_benchmark
run_bench model_benchmark_gemm_heavy model_benchmark --config gemm-heavy --aggregation dchag-l --steps 10
run_bench model_benchmark_channel_heavy model_benchmark --config channel-heavy --aggregation dchag-l \
  --steps 10

{
  echo "# dchag on $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n 1)"
  echo
  echo "- architecture: $sm (Kokkos_ARCH_$arch), Kokkos 4.6.01 + Kokkos Kernels 4.6.02 from $prefix"
  echo "- nvcc: $(nvcc --version | tail -n 1)"
  echo "- commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  [[ -f $build/build_seconds ]] && echo "- build: $(cat "$build/build_seconds") s with $jobs jobs"
  echo
  echo "## Tests"
  echo
  echo '```'
  grep -E "tests passed|Test +#|Total Test time" "$build/ctest.log" || tail -n 40 "$build/ctest.log"
  echo '```'
  if ((status != 0)); then
    echo
    echo "Failures (the output of each, from ctest.log):"
    echo
    echo '```'
    grep -E -A 30 "\*\*\*Failed|\*\*\*Timeout|\*\*\*Exception" "$build/ctest.log" | head -n 300
    echo '```'
  fi
  for label in "${benchmarks[@]}"; do
    log=$build/$label.log
    [[ -f $log ]] || continue
    echo
    echo "## $label"
    echo
    echo '```'
    cat "$log"
    echo '```'
  done
  for b in "${bench_status[@]}"; do echo "- $b"; done
} >"$report"
msg "report: $report"
((status == 0)) || msg "some tests failed (see the report)"
exit "$status"
