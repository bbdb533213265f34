#!/usr/bin/env bash
# Installs what is missing, then configures, builds and runs the test suite.
#   scripts/test.sh            Debian's Kokkos (Serial backend)
#   scripts/test.sh openmp     Kokkos with OpenMP, built on first use into ~/.cache/dchag
#   scripts/test.sh kokkos4-openmp
#                              Kokkos 4.6 with OpenMP only, built on first use likewise (needs
#                              the release archives, see scripts/build_kokkos.sh)
#   scripts/test.sh asan       Debian's Kokkos, built with AddressSanitizer and UBSan
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-serial}"
case "$preset" in
  serial | openmp | kokkos4-openmp | asan) ;;
  *) echo "usage: scripts/test.sh [serial|openmp|kokkos4-openmp|asan]" >&2; exit 2 ;;
esac
bash scripts/install_deps.sh
if [ "$preset" = openmp ] || [ "$preset" = kokkos4-openmp ]; then
  bash scripts/build_kokkos.sh "$preset"
fi
cmake --workflow --preset "$preset"
