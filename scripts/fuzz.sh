#!/usr/bin/env bash
# Fuzz the safetensors reader and the checkpoint loader (tests/fuzz/fuzz_checkpoint.cpp) with
# libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer.
#
#   scripts/fuzz.sh [SECONDS] [extra libFuzzer args...]     (default 60 seconds)
#
# Installs what is missing (scripts/install_deps.sh fuzz), builds build/fuzz/fuzz_checkpoint
# with clang++ against Debian's Kokkos and OpenMPI when a source or header is newer than it,
# adds the seeds of tests/fuzz/corpus to the working corpus build/fuzz/corpus (which keeps what
# earlier runs found; the seeds in the repository are never touched), fuzzes for SECONDS and
# prints a one-line summary. Reproducers (crash-*, timeout-*, oom-*) go to build/fuzz/; the exit
# status is non-zero when libFuzzer found one.
#
#   build/fuzz/fuzz_checkpoint build/fuzz/crash-...          replays one input
#   build/fuzz/fuzz_checkpoint --write-seeds tests/fuzz/corpus   regenerates the seed corpus
#
# FUZZ_CXX picks the compiler (default clang++); FUZZ_FRESH=1 starts from the seeds alone.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
duration=60
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
  duration=$1
  shift
fi

bash "$root/scripts/install_deps.sh" fuzz

cxx=${FUZZ_CXX:-clang++}
command -v "$cxx" >/dev/null 2>&1 || cxx=clang++-14
out="$root/build/fuzz"
bin="$out/fuzz_checkpoint"
src="$root/tests/fuzz/fuzz_checkpoint.cpp"
mkdir -p "$out"

multiarch=$(gcc -print-multiarch 2>/dev/null || true)
libdir="/usr/lib/${multiarch:-x86_64-linux-gnu}"
if [[ ! -e "$libdir/libtrilinos_kokkoscore.so" ]]; then
  echo "fuzz.sh: Debian's Kokkos libraries are not in $libdir" >&2
  exit 1
fi

stale=1
if [[ -x "$bin" ]]; then
  stale=$(find "$src" "$root/include" "$root/scripts/fuzz.sh" -newer "$bin" \
            \( -name '*.hpp' -o -name '*.cpp' -o -name '*.sh' \) -print -quit | wc -l)
fi
if ((stale)); then
  echo "fuzz.sh: building $bin"
  read -r -a mpi_compile <<<"$(mpicxx --showme:compile)"
  read -r -a mpi_link <<<"$(mpicxx --showme:link)"
  # The Kokkos Kernels library calls BLAS/LAPACK (its BLAS TPL), which it links itself; the
  # executable needs only the three Kokkos libraries it calls into, and MPI.
  "$cxx" -std=c++17 -O1 -g -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root/include" -isystem /usr/include/trilinos "${mpi_compile[@]}" \
    "$src" -o "$bin.tmp" \
    -L"$libdir" -Wl,-rpath,"$libdir" \
    -ltrilinos_kokkoskernels -ltrilinos_kokkoscontainers -ltrilinos_kokkoscore \
    "${mpi_link[@]}"
  mv -f "$bin.tmp" "$bin"
fi

corpus="$out/corpus"
[[ "${FUZZ_FRESH:-0}" == 1 ]] && rm -rf "$corpus"
mkdir -p "$corpus"
seeds=("$root"/tests/fuzz/corpus/*)
if [[ ! -e "${seeds[0]}" ]]; then
  echo "fuzz.sh: no seeds in tests/fuzz/corpus" \
       "($bin --write-seeds tests/fuzz/corpus makes them)" >&2
  exit 1
fi
cp -n "${seeds[@]}" "$corpus"/

# OpenMPI's initialisation leaks by design; everything else the sanitizers report is fatal.
export ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
log="$out/fuzz.log"
marker="$out/.run_started"
touch "$marker"
echo "fuzz.sh: fuzzing for ${duration}s (log: $log)"
set +e
(cd "$out" && "$bin" -max_total_time="$duration" -rss_limit_mb=2048 -timeout=10 \
   -print_final_stats=1 -artifact_prefix="$out/" "$@" "$corpus") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

final_stat() {
  local v
  v=$(sed -n "s/^stat::$1: *//p" "$log" | tail -n 1)
  echo "${v:-?}"
}
mapfile -t found < <(find "$out" -maxdepth 1 -newer "$marker" \
                       \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' \
                          -o -name 'leak-*' -o -name 'slow-unit-*' \) -print | sort)
echo "fuzz.sh: ${duration}s, executed $(final_stat number_of_executed_units) inputs" \
     "($(final_stat average_exec_per_sec) exec/s), new units $(final_stat new_units_added)," \
     "peak RSS $(final_stat peak_rss_mb) MB, corpus $(find "$corpus" -type f | wc -l) files," \
     "${#found[@]} reproducer(s)${found[*]:+: ${found[*]}}, libFuzzer exit $rc"
if ((rc != 0)) || ((${#found[@]} > 0)); then
  exit 1
fi
