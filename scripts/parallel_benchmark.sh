#!/usr/bin/env bash
# How much memory and time D-CHAG saves against the tensor-parallel baseline.
#
#   scripts/parallel_benchmark.sh [--quick] [out.csv]      (default runs/parallel_benchmark.csv)
#
# Builds benchmarks/parallel_benchmark (build/serial) and runs, for tp in {2, 4} ranks and
# C in {64, 128, 256, 512} channels (--quick: C in {64, 256}), the baseline (TensorParallel,
# levels {1}), D-CHAG-L and D-CHAG-C (levels {G, 1}) on a channel-heavy model, then prints one
# table with the ratios to the baseline at the same tp and C and writes it to out.csv (the raw
# per-run output goes to out.log).
#
# Each configuration is its own `mpirun -np tp --oversubscribe` so that its peak RSS
# (ru_maxrss, which a process cannot reset) and its peak Kokkos memory belong to it alone.
#
# Environment overrides (defaults in brackets):
#   GRIDS ["1x1x2 1x1x4"]: process grids dp x fsdp x tp, e.g. "1x2x2 2x1x2" to compare model
#   sharding with data parallelism at tp = 2 (BATCH is then the global batch, split over dp x fsdp)
#   CHANNELS ["64 128 256 512"]  VARIANTS ["baseline dchag-l dchag-c"]
#   GROUP_COUNT [16: the same model definition at tp 2 and 4, whole groups per rank]
#   BATCH [4]  STEPS [3 timed steps after one warm-up]  BENCH_ARGS [extra program options,
#   e.g. "--dim 256 --height 32 --width 32"; "--overlap" overlaps the FSDP gathers and
#   reduce-scatters with compute]  OPENBLAS_NUM_THREADS [1]
#   ROUNDS [2: the whole sweep twice; the table keeps each configuration's fastest run, so that
#   a burst of other work on a shared machine does not decide a ratio]
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
out=runs/parallel_benchmark.csv
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "parallel_benchmark.sh: unknown option '$a'" >&2; exit 2 ;;
    *) out="$a" ;;
  esac
done

grids="${GRIDS:-1x1x2 1x1x4}"
default_channels="64 128 256 512"
[ "$quick" = 1 ] && default_channels="64 256"
channels="${CHANNELS:-$default_channels}"
variants="${VARIANTS:-baseline dchag-l dchag-c}"
groups="${GROUP_COUNT:-16}"  # not GROUPS: bash owns that name
batch="${BATCH:-4}"
steps="${STEPS:-3}"
rounds="${ROUNDS:-2}"
read -r -a extra <<< "${BENCH_ARGS:-}"

cmake --preset serial > /dev/null
cmake --build --preset serial --target parallel_benchmark
bin=build/serial/benchmarks/parallel_benchmark

# Ranks x threads must not exceed the cores, and 4 ranks already oversubscribe 2 of them.
cores=$(nproc)  # before OMP_NUM_THREADS is set: nproc obeys it
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

mkdir -p "$(dirname "$out")"
log="${out%.csv}.log"
raw="$(mktemp "${TMPDIR:-/tmp}/parallel_benchmark.XXXXXX.csv")"
trap 'rm -f "$raw"' EXIT
: > "$log"
echo "parallel_benchmark: grids {$grids} x C {$channels} x {$variants}; G=$groups batch=$batch" \
     "steps=$steps rounds=$rounds; $cores cores, OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS" \
  | tee -a "$log"

failed=()
start=$SECONDS
for round in $(seq "$rounds"); do
  for grid in $grids; do
    IFS=x read -r dp fsdp tp <<< "$grid"
    for c in $channels; do
      for v in $variants; do
        echo "--- round $round/$rounds: dp x fsdp x tp = $grid, C=$c $v" | tee -a "$log"
        # A hang in one configuration must not stall the sweep.
        if ! timeout 600 mpirun -np "$((dp * fsdp * tp))" --oversubscribe "$bin" --variant "$v" \
               --channels "$c" --groups "$groups" --batch "$batch" --steps "$steps" \
               --fsdp "$fsdp" --dp "$dp" "${extra[@]}" --csv "$raw" --append 2>&1 \
             | tee -a "$log" | sed -n '/^  \(loss\|Kokkos\|\[rank\)/p'
        then  # pipefail: a failing mpirun fails the pipeline
          failed+=("round $round: $grid C=$c $v")
        fi
      done
    done
  done
done
echo "sweep took $((SECONDS - start)) s; full output in $log"
echo

if [ -s "$raw" ]; then
  "$bin" --report "$raw" --csv "$out"
fi
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
