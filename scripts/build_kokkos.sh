#!/usr/bin/env bash
# Build Kokkos 3.4.1 + Kokkos Kernels 3.4.1 from Debian's own `trilinos` source package, or
# Kokkos 4.6.01 + Kokkos Kernels 4.6.02 from their release archives, into a cached prefix
# (DESIGN.md section 4), or reuse the prefix when it was already built.
#
#   scripts/build_kokkos.sh <openmp|hip|kokkos4-openmp|kokkos4-cuda> [prefix]
#
#   default prefix: ${DCHAG_DEPS_PREFIX:-$HOME/.cache/dchag}/kokkos-3.4.1-<backend>,
#     .../kokkos-4.6.01-openmp for kokkos4-openmp, .../kokkos-4.6.01-cuda for kokkos4-cuda
#   stdout: the prefix (only); progress goes to stderr. A consumer then passes
#     -DKokkos_DIR=<prefix>/lib/cmake/Kokkos -DKokkosKernels_DIR=<prefix>/lib/cmake/KokkosKernels
#   (or -DCMAKE_PREFIX_PATH=<prefix>); targets Kokkos::kokkos and Kokkos::kokkoskernels.
#
#   openmp: Kokkos Serial+OpenMP (g++), Kokkos Kernels without ETI, BLAS TPL = OpenBLAS.
#   hip:    Kokkos Serial+HIP with Debian's hipcc (HIP_PLATFORM=amd, Kokkos_ARCH_VEGA908),
#           Kokkos Kernels without ETI and without TPLs.
#   kokkos4-openmp: Kokkos 4.6.01 with OpenMP only (no Serial, as many cluster installs are) and
#           without deprecated code, Kokkos Kernels 4.6.02 without ETI, BLAS TPL = OpenBLAS.
#           The archives kokkos-4.6.01.tar.xz and kokkos-kernels-4.6.02.tar.xz are taken from
#           $DCHAG_KOKKOS_ARCHIVES, else from ../shared/deps beside the repository; nothing is
#           downloaded.
#   kokkos4-cuda: Kokkos 4.6.01 with Serial+CUDA (Kokkos_ARCH_HOPPER90, nvcc through Kokkos'
#           nvcc_wrapper, installed as <prefix>/bin/nvcc_wrapper) and without deprecated code,
#           Kokkos Kernels 4.6.02 without ETI, only its BLAS and batched components, TPL =
#           cuBLAS. Same archives, plus kokkos-4.6.01-cuda13.patch beside them (Kokkos 4.6.01
#           calls CUDA runtime functions whose signatures CUDA 13 changed). Needs a CUDA
#           toolkit: nvcc on PATH, else $CUDA_HOME/bin or /usr/local/cuda/bin. Compile-only
#           use works without a GPU.
#
# Environment: DCHAG_DEPS_PREFIX (cache root), DCHAG_BLAS_LIBRARY (BLAS library to use instead
# of OpenBLAS, full path), DCHAG_KOKKOS_ARCH (HIP arch option, default Kokkos_ARCH_VEGA908),
# DCHAG_KOKKOS_ARCHIVES (folder holding the 4.x release archives), DCHAG_CUDA_ARCH (CUDA arch
# option for kokkos4-cuda, default Kokkos_ARCH_HOPPER90, with DCHAG_CUDA_SM its nvcc -arch,
# default sm_90), JOBS (parallel build jobs, default nproc).
# The 3.4.1 source is fetched once with `apt-get source --download-only trilinos`; when the machine
# has no deb-src entry, one is derived from its Debian deb entries and written to
# /etc/apt/sources.list.d/dchag-src.sources (or .list). Needs root or sudo for that only.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

KOKKOS_VERSION=3.4.1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
msg() { echo "build_kokkos.sh: $*" >&2; }
die() { msg "error: $*"; exit 1; }

backend=${1:-}
case "$backend" in
  openmp|hip) ;;
  kokkos4-openmp|kokkos4-cuda) KOKKOS_VERSION=4.6.01; KK_VERSION=4.6.02 ;;
  -h|--help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "usage: $0 <openmp|hip|kokkos4-openmp|kokkos4-cuda> [prefix]" ;;
esac
KK_VERSION=${KK_VERSION:-$KOKKOS_VERSION}
flavour=${backend#kokkos4-}
cache=${DCHAG_DEPS_PREFIX:-$HOME/.cache/dchag}
prefix=${2:-$cache/kokkos-$KOKKOS_VERSION-$flavour}
prefix=$(realpath -m "$prefix")
stamp=$prefix/.dchag-kokkos-stamp
hip_arch=${DCHAG_KOKKOS_ARCH:-Kokkos_ARCH_VEGA908}
cuda_arch=${DCHAG_CUDA_ARCH:-Kokkos_ARCH_HOPPER90}
cuda_sm=${DCHAG_CUDA_SM:-sm_90}
stamp_text="kokkos=$KOKKOS_VERSION kokkoskernels=$KK_VERSION backend=$backend"
[[ $backend == hip ]] && stamp_text+=" arch=$hip_arch"
[[ $backend == kokkos4-cuda ]] && stamp_text+=" arch=$cuda_arch nvcc-arch=$cuda_sm"

if [[ -f $stamp && "$(head -n1 "$stamp")" == "$stamp_text" ]]; then
  echo "$prefix"
  exit 0
fi

t_start=$SECONDS
jobs=${JOBS:-$(nproc)}
srcroot=$cache/src
buildroot=$cache/build/kokkos-$KOKKOS_VERSION-$flavour
mkdir -p "$srcroot" "$buildroot"

# --- packages ---------------------------------------------------------------------------------
groups=(source)
[[ $backend == hip ]] && groups+=(hip)
[[ $backend == kokkos4-cuda ]] && groups+=(cuda)
"$here/install_deps.sh" "${groups[@]}" >&2

if ((EUID == 0)); then SUDO=(); elif command -v sudo >/dev/null 2>&1; then SUDO=(sudo);
else SUDO=(false); fi

# --- deb-src entry derived from the machine's Debian entries ---------------------------------
# Is `uri suite` a Debian archive? Yes when its Release file says Origin: Debian or it is signed
# by the Debian archive keyring.
is_debian_entry() {  # uri suite signed_by
  local uri=${1%/} suite=$2 signed=${3:-} f
  [[ $signed == *debian-archive-keyring* ]] && return 0
  f=${uri#*://}; f=${f//\//_}
  for r in /var/lib/apt/lists/"${f}"_dists_"${suite//\//_}"_{InRelease,Release}; do
    [[ -f $r ]] && grep -q '^Origin: Debian$' "$r" && return 0
  done
  return 1
}

# deb822 stanzas with Types: deb from the Debian archive -> the same stanzas with Types: deb-src
derive_deb822() {  # file...
  local f
  for f in "$@"; do
    awk -v RS='' -v ORS='\n\n' '{ print }' "$f"
  done | awk -v RS='' '
    {
      n = split($0, L, "\n"); disabled = 0; types = ""; out = ""; uris = ""; suites = ""; signed = ""
      for (i = 1; i <= n; i++) {
        line = L[i]
        if (line ~ /^#/) continue
        if (line ~ /^[ \t]/) { if (keep) out = out line "\n"; continue }
        key = tolower(substr(line, 1, index(line, ":") - 1))
        val = substr(line, index(line, ":") + 1); gsub(/^[ \t]+|[ \t]+$/, "", val)
        keep = 1
        if (key == "types") { types = val; keep = 0; continue }
        if (key == "uris") uris = val
        if (key == "suites") suites = val
        if (key == "signed-by") signed = val
        if (key == "enabled" && tolower(val) == "no") disabled = 1
        out = out line "\n"
      }
      if (disabled || (" " types " ") !~ / deb /) next
      gsub(/\n/, "\\n", out)
      print uris "\037" suites "\037" signed "\037" out
    }' | while IFS=$'\037' read -r uris suites signed body; do
      local u s ok=0
      for u in $uris; do for s in $suites; do
        is_debian_entry "$u" "$s" "$signed" && ok=1
      done; done
      ((ok)) || continue
      printf 'Types: deb-src\n%b\n' "$body"
    done
}

# one-line "deb [opts] uri suite comp..." -> "deb-src [opts] uri suite comp..."
derive_oneline() {  # file...
  local line opts uri suite
  cat "$@" 2>/dev/null | sed -n 's/^[ \t]*deb[ \t]\+//p' | while read -r line; do
    opts=""
    if [[ $line == \[* ]]; then opts="${line%%]*}]"; line=${line#*]}; line=${line# }; fi
    read -r uri suite _ <<<"$line"
    [[ -n ${suite:-} ]] || continue
    signed=""; [[ $opts =~ signed-by=([^ \]]*) ]] && signed=${BASH_REMATCH[1]}
    is_debian_entry "$uri" "$suite" "$signed" || continue
    echo "deb-src ${opts:+$opts }$line"
  done
}

have_trilinos_src() { apt-cache showsrc trilinos 2>/dev/null | grep -q '^Package: trilinos$'; }

ensure_deb_src() {
  have_trilinos_src && return 0
  local d=/etc/apt/sources.list.d own text=""
  shopt -s nullglob
  local s822=() sone=()
  for f in "$d"/*.sources; do [[ $f == "$d/dchag-src.sources" ]] || s822+=("$f"); done
  [[ -f /etc/apt/sources.list ]] && sone+=(/etc/apt/sources.list)
  for f in "$d"/*.list; do [[ $f == "$d/dchag-src.list" ]] || sone+=("$f"); done
  shopt -u nullglob
  if ((${#s822[@]})); then text=$(derive_deb822 "${s822[@]}"); own=$d/dchag-src.sources; fi
  if [[ -z $text ]] && ((${#sone[@]})); then text=$(derive_oneline "${sone[@]}"); own=$d/dchag-src.list; fi
  [[ -n $text ]] || die "found no Debian 'deb' entry in /etc/apt to derive a deb-src entry from; add one for trilinos by hand"
  msg "adding deb-src entry $own"
  printf '# written by dchag scripts/build_kokkos.sh: deb-src twin of the Debian entries\n%s\n' \
    "$text" | "${SUDO[@]}" tee "$own" >/dev/null || die "cannot write $own (need root or sudo)"
  msg "apt-get update (deb-src only)"
  local log=$buildroot/apt-update.log
  # update only the new source entry; leave the other lists as they are
  if ! "${SUDO[@]}" apt-get update -q -o Dir::Etc::SourceList="$own" -o Dir::Etc::SourceParts=- \
        -o APT::Get::List-Cleanup=0 >"$log" 2>&1; then
    tail -n 30 "$log" >&2; die "apt-get update failed (log: $log)"
  fi
  have_trilinos_src || die "apt-cache showsrc trilinos finds nothing after adding $own"
}

# --- source: release archives (4.x) ----------------------------------------------------------
# Pinned by sha256: a different file under the same name is refused, not built.
declare -A archive_sha256=(
  [kokkos-4.6.01.tar.xz]=dcca5cc450575f8790f53bddbfdef19fc8dd1c17cc3d2e1fc6a6923387703cf5
  [kokkos-kernels-4.6.02.tar.xz]=8920a29171245842daebf7ea9daca2bb24fe69b47bc9a5af0dd63aa651f3e263
  [kokkos-4.6.01-cuda13.patch]=a62f8a4ed6edcaf730e279344587d9da37296c27d18db52778dc190e6f5760b6
)
cuda_patch=kokkos-$KOKKOS_VERSION-cuda13.patch
unpack_archives() {
  local dir=${DCHAG_KOKKOS_ARCHIVES:-} fallback a sum
  fallback=$(dirname "$(dirname "$here")")/shared/deps
  if [[ -z $dir && -d $fallback ]]; then dir=$fallback; fi
  [[ -n $dir ]] || die "Kokkos $KOKKOS_VERSION needs kokkos-$KOKKOS_VERSION.tar.xz and \
kokkos-kernels-$KK_VERSION.tar.xz (the GitHub release archives of kokkos/kokkos and \
kokkos/kokkos-kernels); put them in $fallback, or in a folder named by DCHAG_KOKKOS_ARCHIVES \
(nothing is downloaded)"
  for a in kokkos-$KOKKOS_VERSION.tar.xz kokkos-kernels-$KK_VERSION.tar.xz; do
    [[ -f $dir/$a ]] || die "$dir/$a not found (set DCHAG_KOKKOS_ARCHIVES to the folder holding it)"
    sum=$(sha256sum "$dir/$a" | cut -d' ' -f1)
    [[ $sum == "${archive_sha256[$a]}" ]] ||
      die "$dir/$a: sha256 $sum, expected ${archive_sha256[$a]}"
    local out=$srcroot/${a%.tar.xz}
    if [[ ! -f $out/.dchag-extracted ]]; then
      msg "extracting $a"
      rm -rf "$out" "$out.tmp" && mkdir -p "$out.tmp"
      tar -xf "$dir/$a" -C "$out.tmp" --strip-components=1
      mv "$out.tmp" "$out" && touch "$out/.dchag-extracted"
    fi
  done
  ksrc=$srcroot/kokkos-$KOKKOS_VERSION
  kksrc=$srcroot/kokkos-kernels-$KK_VERSION
  orig="kokkos-$KOKKOS_VERSION.tar.xz, kokkos-kernels-$KK_VERSION.tar.xz"
  [[ $backend == kokkos4-cuda ]] || return 0
  # The patched tree lives beside the pristine one, which the other flavours keep building from.
  [[ -f $dir/$cuda_patch ]] || die "$dir/$cuda_patch not found: Kokkos $KOKKOS_VERSION does not \
build with CUDA 13 without it (it adapts the calls to cudaGraphAddDependencies, cudaMemAdvise and \
cudaMemPrefetchAsync); put it beside the archives"
  sum=$(sha256sum "$dir/$cuda_patch" | cut -d' ' -f1)
  [[ $sum == "${archive_sha256[$cuda_patch]}" ]] ||
    die "$dir/$cuda_patch: sha256 $sum, expected ${archive_sha256[$cuda_patch]}"
  local out=$srcroot/kokkos-$KOKKOS_VERSION-cuda13
  if [[ ! -f $out/.dchag-extracted ]]; then
    msg "extracting kokkos-$KOKKOS_VERSION.tar.xz and applying $cuda_patch"
    rm -rf "$out" "$out.tmp" && mkdir -p "$out.tmp"
    tar -xf "$dir/kokkos-$KOKKOS_VERSION.tar.xz" -C "$out.tmp" --strip-components=1
    patch -p1 -s -d "$out.tmp" <"$dir/$cuda_patch" || die "$cuda_patch does not apply"
    mv "$out.tmp" "$out" && touch "$out/.dchag-extracted"
  fi
  ksrc=$out
  orig+=", $cuda_patch"
}

# --- source: Debian's trilinos (3.4.1) --------------------------------------------------------
unpack_trilinos() {
  find_orig() {
    compgen -G "$srcroot/trilinos_*.orig.tar.*" | grep -v '\.asc$' | sort -V | tail -n1 || true
  }
  orig=$(find_orig)
  if [[ -z $orig ]]; then
    ensure_deb_src
    msg "apt-get source --download-only trilinos -> $srcroot"
    log=$buildroot/apt-source.log
    if ! (cd "$srcroot" && apt-get source -q --download-only trilinos) >"$log" 2>&1; then
      tail -n 30 "$log" >&2; die "apt-get source failed (log: $log)"
    fi
    orig=$(find_orig)
    [[ -n $orig ]] || die "no trilinos_*.orig.tar.* in $srcroot after apt-get source"
  fi
  src=$srcroot/$(basename "${orig%.orig.tar.*}" | tr _ -)
  if [[ ! -f $src/.dchag-extracted ]]; then
    msg "extracting packages/kokkos and packages/kokkos-kernels from $(basename "$orig")"
    rm -rf "$src.tmp" && mkdir -p "$src.tmp"
    tar -xf "$orig" -C "$src.tmp" --strip-components=1 --wildcards \
        '*/packages/kokkos' '*/packages/kokkos-kernels'
    rm -rf "$src" && mv "$src.tmp" "$src" && touch "$src/.dchag-extracted"
  fi
  ksrc=$src/packages/kokkos
  kksrc=$src/packages/kokkos-kernels
  ver=$(sed -n 's/^ *set *( *Kokkos_VERSION_\(MAJOR\|MINOR\|PATCH\) \+\([0-9]\+\).*/\2/ip' \
          "$ksrc/CMakeLists.txt" | sed 's/^0*\([0-9]\)/\1/' | paste -sd.)   # 3.4.01 -> 3.4.1
  [[ $ver == "$KOKKOS_VERSION" ]] || die "trilinos source carries Kokkos '$ver', expected $KOKKOS_VERSION"
  orig=$(basename "$orig")
}

if [[ $backend == kokkos4-* ]]; then unpack_archives; else unpack_trilinos; fi

# --- build ------------------------------------------------------------------------------------
# Run a step quietly into $buildroot/<name>.log; on failure print the log's tail and stop.
step() {  # name cmd...
  local name=$1 log=$buildroot/$1.log; shift
  msg "$name"
  if ! "$@" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "$name failed (full log: $log)"
  fi
}

# Only wipe a prefix this script created itself (marker written below), never a user's directory.
if [[ -e $prefix/.dchag-kokkos-partial ]]; then rm -rf "$prefix"; fi
if [[ ! -e $prefix ]] || [[ -z "$(ls -A "$prefix")" ]]; then
  mkdir -p "$prefix" && touch "$prefix/.dchag-kokkos-partial"
fi
rm -rf "$buildroot/kokkos" "$buildroot/kokkos-kernels"

common=(-DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_STANDARD=17
        -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib
        -DBUILD_SHARED_LIBS=OFF -DCMAKE_POSITION_INDEPENDENT_CODE=ON)
# No explicit template instantiation: kernels are instantiated in the code that calls them.
no_eti=(-DKokkosKernels_ADD_DEFAULT_ETI=OFF -DKokkosKernels_ETI_ONLY=OFF
        -DKokkosKernels_INST_DOUBLE=OFF -DKokkosKernels_INST_FLOAT=OFF
        -DKokkosKernels_INST_COMPLEX_DOUBLE=OFF -DKokkosKernels_INST_COMPLEX_FLOAT=OFF
        -DKokkosKernels_INST_LAYOUTLEFT=OFF -DKokkosKernels_INST_LAYOUTRIGHT=OFF
        -DKokkosKernels_INST_ORDINAL_INT=OFF -DKokkosKernels_INST_ORDINAL_INT64_T=OFF
        -DKokkosKernels_INST_OFFSET_INT=OFF -DKokkosKernels_INST_OFFSET_SIZE_T=OFF
        -DKokkosKernels_ENABLE_TESTS=OFF -DKokkosKernels_ENABLE_EXAMPLES=OFF)

case "$backend" in
  openmp|kokkos4-openmp)
    if [[ $backend == openmp ]]; then
      kokkos_opts=(-DCMAKE_CXX_COMPILER="${CXX:-g++}" -DKokkos_ENABLE_SERIAL=ON
                   -DKokkos_ENABLE_OPENMP=ON)
    else
      # OpenMP alone proves the library assumes no Serial; without deprecated code, that it
      # uses no name 4.x is about to remove.
      kokkos_opts=(-DCMAKE_CXX_COMPILER="${CXX:-g++}" -DKokkos_ENABLE_SERIAL=OFF
                   -DKokkos_ENABLE_OPENMP=ON -DKokkos_ENABLE_DEPRECATED_CODE_4=OFF)
    fi
    # BLAS/LAPACK TPL = OpenBLAS (KokkosBlas::gemm -> sgemm_/dgemm_). OpenBLAS has LAPACK inside.
    blas=${DCHAG_BLAS_LIBRARY:-}
    if [[ -z $blas ]]; then
      ma=$(gcc -print-multiarch 2>/dev/null || true)
      for d in /usr/lib/$ma/openblas-pthread /usr/lib/$ma/openblas-openmp /usr/lib/$ma/openblas-serial \
               /usr/lib/$ma /usr/lib64 /usr/lib /usr/local/lib; do
        if [[ -e $d/libopenblas.so ]]; then blas=$d/libopenblas.so; break; fi
      done
      [[ -n $blas ]] || die "no libopenblas.so found (scripts/install_deps.sh source installs it)"
    fi
    [[ -e $blas ]] || die "DCHAG_BLAS_LIBRARY=$blas does not exist"
    bname=$(basename "$blas"); bname=${bname#lib}; bname=${bname%%.so*}; bname=${bname%.a}
    kk_opts=(-DKokkosKernels_ENABLE_TPL_BLAS=ON -DKokkosKernels_ENABLE_TPL_LAPACK=ON
             -DBLAS_LIBRARIES="$bname" -DBLAS_LIBRARY_DIRS="$(dirname "$blas")"
             -DLAPACK_LIBRARIES="$bname" -DLAPACK_LIBRARY_DIRS="$(dirname "$blas")"
             # gfortran-style symbols (dgemm_); saves KokkosKernels enabling Fortran to find out
             -DF77_BLAS_MANGLE="(name,NAME) name ## _")
    ;;
  kokkos4-cuda)
    if ! command -v nvcc >/dev/null; then
      for d in ${CUDA_HOME:+"$CUDA_HOME/bin"} /usr/local/cuda/bin; do
        if [[ -x $d/nvcc ]]; then export PATH=$d:$PATH; break; fi
      done
    fi
    command -v nvcc >/dev/null || die "nvcc not found on PATH, in \$CUDA_HOME/bin or in \
/usr/local/cuda/bin: kokkos4-cuda needs a CUDA toolkit (NVIDIA's cuda-toolkit package)"
    msg "nvcc: $(command -v nvcc) ($(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'))"
    # nvcc_wrapper's default sm_70 is rejected by nvcc 13, and CMake's compiler probe runs before
    # Kokkos adds its own -arch: the architecture goes into CMAKE_CXX_FLAGS as well.
    # Serial as the host space: the cheapest one to compile, and what the test harness expects.
    kokkos_opts=(-DCMAKE_CXX_COMPILER="$ksrc/bin/nvcc_wrapper" -DCMAKE_CXX_FLAGS="-arch=$cuda_sm"
                 -DKokkos_ENABLE_SERIAL=ON -DKokkos_ENABLE_CUDA=ON "-D$cuda_arch=ON"
                 -DKokkos_ENABLE_DEPRECATED_CODE_4=OFF)
    # dchag calls KokkosBlas::gemm (cuBLAS on device views); batched is for attention's GEMMs.
    # Sparse, graph, LAPACK and ODE are not used: their TPLs (cuSPARSE, cuSOLVER) stay off too.
    kk_opts=(-DCMAKE_CXX_FLAGS="-arch=$cuda_sm"
             -DKokkosKernels_ENABLE_ALL_COMPONENTS=OFF -DKokkosKernels_ENABLE_COMPONENT_BLAS=ON
             -DKokkosKernels_ENABLE_COMPONENT_BATCHED=ON
             -DKokkosKernels_ENABLE_TPL_CUBLAS=ON -DKokkosKernels_ENABLE_TPL_CUSPARSE=OFF
             -DKokkosKernels_ENABLE_TPL_CUSOLVER=OFF
             -DKokkosKernels_ENABLE_TPL_BLAS=OFF -DKokkosKernels_ENABLE_TPL_LAPACK=OFF)
    ;;
  hip)
    export HIP_PLATFORM=amd
    command -v hipcc >/dev/null || die "hipcc not found (scripts/install_deps.sh hip)"
    kokkos_opts=(-DCMAKE_CXX_COMPILER="$(command -v hipcc)" -DKokkos_ENABLE_SERIAL=ON
                 -DKokkos_ENABLE_HIP=ON "-D$hip_arch=ON")
    kk_opts=(-DKokkosKernels_ENABLE_TPL_BLAS=OFF -DKokkosKernels_ENABLE_TPL_LAPACK=OFF)
    ;;
esac

step kokkos-configure cmake -S "$ksrc" -B "$buildroot/kokkos" "${common[@]}" "${kokkos_opts[@]}" \
  -DKokkos_ENABLE_TESTS=OFF -DKokkos_ENABLE_EXAMPLES=OFF
step kokkos-build cmake --build "$buildroot/kokkos" -j "$jobs"
step kokkos-install cmake --install "$buildroot/kokkos"
step kokkoskernels-configure cmake -S "$kksrc" -B "$buildroot/kokkos-kernels" "${common[@]}" \
  -DCMAKE_CXX_COMPILER="$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$buildroot/kokkos/CMakeCache.txt")" \
  -DKokkos_DIR="$prefix/lib/cmake/Kokkos" "${no_eti[@]}" "${kk_opts[@]}"
step kokkoskernels-build cmake --build "$buildroot/kokkos-kernels" -j "$jobs"
step kokkoskernels-install cmake --install "$buildroot/kokkos-kernels"

{ echo "$stamp_text"
  echo "source: $orig"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - t_start)) s"
  echo "Kokkos_DIR=$prefix/lib/cmake/Kokkos"
  echo "KokkosKernels_DIR=$prefix/lib/cmake/KokkosKernels"
} >"$stamp"
rm -f "$prefix/.dchag-kokkos-partial"
msg "Kokkos $KOKKOS_VERSION ($backend) + Kokkos Kernels installed in $prefix ($((SECONDS - t_start)) s)"
echo "$prefix"
