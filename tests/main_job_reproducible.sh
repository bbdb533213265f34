#!/usr/bin/env bash
# The main job twice with the same seed, on 2 ranks: the losses must agree bit for bit, and
# a different seed must give different losses.
#   main_job_reproducible.sh <mpiexec> <train_dchag> <workdir>
set -euo pipefail
mpiexec="$1" exe="$2" work="$3"
mkdir -p "$work"
run() {
  "$mpiexec" -np 2 --oversubscribe "$exe" --steps 20 --batch 4 --dim 32 --depth 1 \
    --channels 8 --groups 2 --seed "$1" --csv "$work/$2.csv" > "$work/$2.log"
  cut -d, -f1,2 "$work/$2.csv"
}
a="$(run 7 first)"
b="$(run 7 second)"
c="$(run 8 third)"
if [ "$a" != "$b" ]; then
  echo "FAILED: the same seed gave different losses"; diff <(echo "$a") <(echo "$b") | head; exit 1
fi
if [ "$a" = "$c" ]; then
  echo "FAILED: a different seed gave the same losses"; exit 1
fi
echo "losses identical across reruns ($(echo "$a" | wc -l) lines), different for another seed"
