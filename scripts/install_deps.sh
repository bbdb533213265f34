#!/usr/bin/env bash
# Install the Debian packages dchag needs (see DESIGN.md section 4).
#
#   scripts/install_deps.sh [group...]
#
# Groups (the base group is always installed):
#   base    cmake g++ Kokkos/KokkosKernels (Debian, Serial) Eigen doctest OpenMPI OpenBLAS
#           netCDF (optional for the build: the WeatherBench reader and its tests need it)
#   source  what scripts/build_kokkos.sh needs to fetch and build trilinos' Kokkos from source
#           (dpkg-dev for apt-get source, xz-utils, OpenBLAS headers/link library)
#   hip     Debian's hipcc (ROCm 5.2) and what it needs to compile Kokkos for HIP
#   cuda    what the Kokkos CUDA build needs besides NVIDIA's CUDA toolkit, which Debian does not
#           ship in a version Kokkos 4.6 supports and which must already be installed (patch)
#   torch   Debian's PyTorch for /usr/bin/python3 (the PyTorch interoperability tests; they are
#           skipped at configure time when `/usr/bin/python3 -c "import torch"` fails)
#   fuzz    clang with libFuzzer and the sanitizer runtimes (scripts/fuzz.sh)
#   plot    matplotlib for /usr/bin/python3 (scripts/plot_run.py and its test, which is skipped
#           at configure time when `/usr/bin/python3 -c "import matplotlib"` fails)
#
# Only missing packages are installed; `apt-get update` runs only when something is missing.
# Needs root or sudo when something is missing. Prints one line when all is present.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }

pkgs_base=(cmake g++ libtrilinos-kokkos-dev libtrilinos-kokkos-kernels-dev libeigen3-dev
           doctest-dev libopenmpi-dev openmpi-bin libopenblas0-pthread libnetcdf-dev)
# libopenblas-pthread-dev gives an unversioned libopenblas.so to link KokkosKernels' BLAS TPL
# against OpenBLAS directly (without it, -lblas resolves to the reference BLAS at link time).
pkgs_source=(dpkg-dev xz-utils tar make libopenblas-pthread-dev libopenblas-dev)
pkgs_hip=(hipcc libamdhip64-dev rocm-device-libs rocminfo)
pkgs_cuda=(patch)
# Debian ships no python3-safetensors (bookworm): the tests read and write the format themselves.
pkgs_torch=(python3-torch python3-numpy)
pkgs_fuzz=(clang libclang-rt-14-dev)
pkgs_plot=(python3-matplotlib python3-numpy)

want=("${pkgs_base[@]}")
for g in "$@"; do
  case "$g" in
    base) ;;
    source) want+=("${pkgs_source[@]}") ;;
    hip) want+=("${pkgs_hip[@]}") ;;
    cuda) want+=("${pkgs_cuda[@]}") ;;
    torch) want+=("${pkgs_torch[@]}") ;;
    fuzz) want+=("${pkgs_fuzz[@]}") ;;
    plot) want+=("${pkgs_plot[@]}") ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install_deps.sh: unknown group '$g' (known: base source hip cuda torch fuzz plot)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${want[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ "$st" == installed ]] || missing+=("$p")
done
# de-duplicate (a package may appear in several groups)
if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
fi

if ((${#missing[@]} == 0)); then
  echo "install_deps.sh: all ${#want[@]} packages present (groups: base${*:+ $*})"
  exit 0
fi

if ((EUID == 0)); then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo DEBIAN_FRONTEND=noninteractive)
else
  echo "install_deps.sh: missing packages (${missing[*]}) and not root and no sudo" >&2
  exit 1
fi

echo "install_deps.sh: installing ${missing[*]}"
log=$(mktemp "${TMPDIR:-/tmp}/dchag-install-deps.XXXXXX.log")
if ! { "${SUDO[@]}" apt-get update -q &&
       "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "install_deps.sh: apt-get failed, full log: $log" >&2
  exit 1
fi
rm -f "$log"
echo "install_deps.sh: done"
