#!/usr/bin/env bash
# The main job twice with the same seed, on 2 ranks: the losses must agree bit for bit, a
# different seed must give different losses, a run resumed from a mid-run checkpoint must
# continue with the uninterrupted run's losses, and --eval must load the final checkpoint.
#   main_job_reproducible.sh <mpiexec> <train_dchag> <workdir>
set -euo pipefail
mpiexec="$1" exe="$2" work="$3"
mkdir -p "$work"
run() {
  local seed="$1" name="$2"; shift 2
  "$mpiexec" -np 2 --oversubscribe "$exe" --steps 20 --batch 4 --dim 32 --depth 1 \
    --channels 8 --groups 2 --seed "$seed" --run-dir "$work/$name" "$@" > "$work/$name.log"
  cut -d, -f1,2 "$work/$name/train_metrics.csv" | tail -n +2
}
a="$(run 7 first --save-every 10)"
b="$(run 7 second)"
c="$(run 8 third)"
r="$(run 7 resumed --resume "$work/first/checkpoint_step10.safetensors")"
if [ "$a" != "$b" ]; then
  echo "FAILED: the same seed gave different losses"; diff <(echo "$a") <(echo "$b") | head; exit 1
fi
if [ "$a" = "$c" ]; then
  echo "FAILED: a different seed gave the same losses"; exit 1
fi
if [ "$r" != "$(echo "$a" | tail -n 10)" ]; then
  echo "FAILED: the resumed run's losses differ from the uninterrupted run's"
  diff <(echo "$a" | tail -n 10) <(echo "$r") | head; exit 1
fi
"$mpiexec" -np 1 "$exe" --eval "$work/first/checkpoint.safetensors" > "$work/eval.log"
grep -q "held-out lat-weighted RMSE" "$work/eval.log" || { echo "FAILED: --eval"; cat "$work/eval.log"; exit 1; }
echo "resumed run continues with the same losses; --eval on 1 rank loads a 2-rank checkpoint"
echo "losses identical across reruns ($(echo "$a" | wc -l) lines), different for another seed"
