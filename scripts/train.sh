#!/usr/bin/env bash
# The main job: installs what is missing, builds the examples, and trains a D-CHAG model on the
# built-in weather data on 2 MPI ranks (tensor-parallel group of 2: each rank tokenizes and
# partially aggregates half of the channels). Extra arguments go to the training program
# (see the comment at the top of examples/train_dchag.cpp); DCHAG_RANKS changes the rank count.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
cmake --preset serial > /dev/null
cmake --build --preset serial --target train_dchag
ranks="${DCHAG_RANKS:-2}"
cores="$(nproc)"
threads=$(( cores / ranks > 0 ? cores / ranks : 1 ))
# ranks x threads must not exceed the cores: Kokkos OpenMP and OpenBLAS both spawn threads.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$threads}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-$threads}"
export OMP_PROC_BIND="${OMP_PROC_BIND:-false}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Debian's Kokkos is Serial-only, so the cores are used by ranks and by the BLAS threads of each
# rank (the GEMMs are most of a step); the line says how they are split.
echo "ranks: $ranks on $cores cores; Kokkos Serial backend, BLAS threads per rank: OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS (OMP_NUM_THREADS=$OMP_NUM_THREADS)"
mkdir -p runs
exec mpiexec -np "$ranks" --oversubscribe build/serial/examples/train_dchag \
  --run-dir runs/latest "$@"
