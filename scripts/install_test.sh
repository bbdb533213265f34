#!/usr/bin/env bash
# Installs the package from an already configured preset's build into a scratch prefix, then
# builds and runs a consumer project outside the source tree: once through find_package(dchag)
# and once through add_subdirectory.
#   scripts/install_test.sh [serial|openmp|kokkos4-openmp]
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-serial}"
src="$PWD"
build="$src/build/$preset"
[ -f "$build/CMakeCache.txt" ] || { echo "install_test: configure the '$preset' preset first" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
case "$preset" in
  openmp) kokkos="$HOME/.cache/dchag/kokkos-3.4.1-openmp" ;;
  kokkos4-openmp) kokkos="$HOME/.cache/dchag/kokkos-4.6.01-openmp" ;;
  *) kokkos="" ;;
esac
if [ -n "$kokkos" ]; then
  export CMAKE_PREFIX_PATH="$kokkos${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OMP_PROC_BIND=false

cmake --install "$build" --prefix "$work/prefix" > /dev/null
echo "== consumer through find_package(dchag) against $work/prefix"
cmake -S tests/install -B "$work/as_library" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$work/prefix${CMAKE_PREFIX_PATH:+;${CMAKE_PREFIX_PATH//:/;}}" > "$work/configure.log" \
  || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/as_library" -j2 > "$work/build.log" || { cat "$work/build.log"; exit 1; }
"$work/as_library/consumer"

echo "== consumer through add_subdirectory"
cmake -S tests/install -B "$work/as_subdirectory" -DCMAKE_BUILD_TYPE=Release \
      -DDCHAG_SOURCE_DIR="$src" > "$work/configure.log" || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/as_subdirectory" -j2 > "$work/build.log" || { cat "$work/build.log"; exit 1; }
"$work/as_subdirectory/consumer"
