#!/usr/bin/env bash
# The library's training step against the project's PyTorch reference of the same model.
#
#   scripts/compare_pytorch.sh [--quick] [--threads "1 N"] [--configs "CONFIG/AGG ..."]
#                              [--steps N] [--reps N] [--preset serial|native|openmp] [--csv FILE]
#
# For each configuration and thread count, runs benchmarks/model_benchmark (fwd + bwd + AdamW,
# one rank) and benchmarks/torch_step.py (tests/python/climax_reference.py under
# torch.optim.AdamW) in turn, lib, torch, lib, torch, ... (--reps times each), so that a burst
# of other work on the machine hits both. Both start from the same weights (the checkpoint the
# C++ side writes before its first step) and the same batch shape. Each run times --steps
# steps after one warm-up and reports their median; the table gives the median over the runs,
# samples/s and the ratio dchag / PyTorch of the step times (below 1: dchag is faster).
#
# Configurations (CONFIG/AGG; AGG is baseline = ClimaX aggregation, dchag-l, dchag-c):
#   gemm-heavy      C=16, 32x64, patch 4, D=512, depth 4, 8 heads, B=8 (D-CHAG levels {4,1})
#   gemm-heavy-p2   the same at patch 2 (L = 512)
#   channel-heavy   C=256, 32x64, patch 4, D=128, depth 2, 4 heads, B=4 (D-CHAG levels {8,1})
# Default: gemm-heavy/{baseline,dchag-l} gemm-heavy-p2/{baseline,dchag-l}
#          channel-heavy/{baseline,dchag-l,dchag-c}; threads "1 $(nproc)"; 5 steps, 3 reps.
# --quick: gemm-heavy/baseline and channel-heavy/dchag-l, all cores only, 2 steps, 1 rep.
#
# Both programs get OMP_NUM_THREADS and OPENBLAS_NUM_THREADS = the thread count (and PyTorch
# torch.set_num_threads). OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are left as the environment
# has them: forcing a core on an OpenBLAS that does not know the CPU can give wrong results.
# The table is written as CSV to --csv (default runs/compare_pytorch.csv), every program's
# full output to the .log next to it. A benchmark, not a test: the numbers depend on the
# machine and on whatever else it runs.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; }

cores=$(env -u OMP_NUM_THREADS nproc)  # nproc obeys OMP_NUM_THREADS
quick=0
threads=""
configs=""
steps=""
reps=""
preset=serial
out=runs/compare_pytorch.csv
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --threads) threads="$2"; shift ;;
    --configs) configs="$2"; shift ;;
    --steps) steps="$2"; shift ;;
    --reps) reps="$2"; shift ;;
    --preset) preset="$2"; shift ;;
    --csv) out="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "compare_pytorch.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$quick" = 1 ]; then
  : "${threads:=$cores}" "${configs:=gemm-heavy/baseline channel-heavy/dchag-l}" \
    "${steps:=2}" "${reps:=1}"
else
  : "${threads:=1 $cores}" "${steps:=5}" "${reps:=3}"
  : "${configs:=gemm-heavy/baseline gemm-heavy/dchag-l gemm-heavy-p2/baseline gemm-heavy-p2/dchag-l channel-heavy/baseline channel-heavy/dchag-l channel-heavy/dchag-c}"
fi
for c in $configs; do
  case "$c" in
    gemm-heavy/* | gemm-heavy-p2/* | channel-heavy/*) ;;
    *) echo "compare_pytorch.sh: unknown configuration '$c' (see --help)" >&2; exit 2 ;;
  esac
  case "${c#*/}" in
    baseline | dchag-l | dchag-c) ;;
    *) echo "compare_pytorch.sh: unknown aggregation in '$c' (baseline, dchag-l, dchag-c)" >&2; exit 2 ;;
  esac
done
case "$preset" in
  serial | native | openmp | kokkos4-openmp) ;;
  *) echo "compare_pytorch.sh: --preset must be serial, native, openmp or kokkos4-openmp" >&2; exit 2 ;;
esac

bash scripts/install_deps.sh torch
case "$preset" in openmp | kokkos4-openmp) bash scripts/build_kokkos.sh "$preset" ;; esac
cmake --preset "$preset" > /dev/null
cmake --build --preset "$preset" --target model_benchmark
bin="build/$preset/benchmarks/model_benchmark"
# Debian's PyTorch is installed for the system interpreter, whatever python3 is first on PATH.
py=/usr/bin/python3

mkdir -p "$(dirname "$out")"
log="${out%.csv}.log"
: > "$log"
work="$(mktemp -d "${TMPDIR:-/tmp}/compare_pytorch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

field() {  # field NAME FILE: the value of NAME=... on the file's "result:" line
  sed -n "s/^result:.* $1=\([^ ]*\).*/\1/p" "$2" | tail -n 1
}
median() {  # median of the arguments
  printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "compare_pytorch: {$configs} x threads {$threads}; $steps steps x $reps reps each;" \
     "preset $preset; $cores cores" | tee -a "$log"
rows=()
failed=()
start=$SECONDS
for t in $threads; do
  for c in $configs; do
    config="${c%/*}" agg="${c#*/}"
    ckpt="$work/$config-$agg.safetensors"
    lib_ms=() torch_ms=() batch=""
    for r in $(seq "$reps"); do
      echo "--- $c, $t thread(s), rep $r/$reps: dchag" | tee -a "$log"
      extra=()
      [ -f "$ckpt" ] || extra=(--write-checkpoint "$ckpt")
      if ! OMP_NUM_THREADS="$t" OPENBLAS_NUM_THREADS="$t" timeout 1800 "$bin" \
             --config "$config" --aggregation "$agg" --steps "$steps" --csv "$work/lib.csv" \
             "${extra[@]}" > "$work/lib.out" 2>&1; then
        cat "$work/lib.out" >> "$log"
        failed+=("$c, $t threads: dchag")
        break
      fi
      cat "$work/lib.out" >> "$log"
      lib_ms+=("$(field median_ms "$work/lib.out")")
      batch="$(field batch "$work/lib.out")"
      echo "    dchag median $(field median_ms "$work/lib.out") ms" | tee -a "$log"

      echo "--- $c, $t thread(s), rep $r/$reps: PyTorch" | tee -a "$log"
      if ! OMP_NUM_THREADS="$t" OPENBLAS_NUM_THREADS="$t" timeout 1800 "$py" \
             benchmarks/torch_step.py --checkpoint "$ckpt" --batch "$batch" --steps "$steps" \
             --threads "$t" > "$work/torch.out" 2>&1; then
        cat "$work/torch.out" >> "$log"
        failed+=("$c, $t threads: PyTorch")
        break
      fi
      cat "$work/torch.out" >> "$log"
      torch_ms+=("$(field median_ms "$work/torch.out")")
      echo "    PyTorch median $(field median_ms "$work/torch.out") ms" | tee -a "$log"
    done
    if [ "${#lib_ms[@]}" -gt 0 ] && [ "${#torch_ms[@]}" -gt 0 ]; then
      lm="$(median "${lib_ms[@]}")" tm="$(median "${torch_ms[@]}")"
      rows+=("$(awk -v c="$config" -v a="$agg" -v t="$t" -v b="$batch" -v lm="$lm" -v tm="$tm" \
                    -v lr="$(IFS=';'; echo "${lib_ms[*]}")" -v tr="$(IFS=';'; echo "${torch_ms[*]}")" \
        'BEGIN { printf "%s,%s,%s,%s,%.2f,%.2f,%.2f,%.2f,%.3f,%s,%s", c, a, t, b, lm, tm,
                 1000 * b / lm, 1000 * b / tm, lm / tm, lr, tr }')")
    fi
    rm -f "$ckpt"
  done
done
echo "comparison took $((SECONDS - start)) s; full output in $log" | tee -a "$log"
echo

{
  echo "config,aggregation,threads,batch,dchag_ms,torch_ms,dchag_samples_per_s,torch_samples_per_s,dchag_over_torch,dchag_runs_ms,torch_runs_ms"
  printf '%s\n' "${rows[@]+"${rows[@]}"}"
} | sed '/^$/d' > "$out"
# The table: medians over the runs; ratio < 1 means dchag's step is faster.
awk -F, 'NR == 1 { printf "%-15s %-9s %7s %5s %10s %10s %9s %9s %12s\n", "config", "agg",
                   "threads", "batch", "dchag ms", "torch ms", "dchag/s", "torch/s", "dchag/torch"; next }
         { printf "%-15s %-9s %7s %5s %10s %10s %9s %9s %12s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }' \
  "$out" | tee -a "$log"
echo "wrote $out"
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
