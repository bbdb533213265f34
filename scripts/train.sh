#!/usr/bin/env bash
# The main job: installs what is missing, builds the examples, and trains a D-CHAG model on the
# built-in weather data. Extra arguments go to the training program (see train_dchag --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
cmake --preset serial > /dev/null
cmake --build --preset serial --target train_dchag
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-$(nproc)}"
echo "threads: OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS"
mkdir -p runs
exec build/serial/examples/train_dchag --csv runs/train_metrics.csv "$@"
