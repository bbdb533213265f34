#!/usr/bin/env bash
# scripts/plot_run.py on a short run of the main job: it must draw the training curves, the
# held-out skill and the forecast maps, and a damaged maps file must end it with a message that
# names the file instead of a traceback.
#   plot_run.sh <mpiexec> <train_dchag> <python3> <plot_run.py> <workdir>
set -euo pipefail
mpiexec="$1" exe="$2" python="$3" script="$4" work="$5"
rm -rf "$work"
mkdir -p "$work"
"$mpiexec" -np 2 --oversubscribe "$exe" --steps 4 --batch 4 --dim 32 --depth 1 --channels 8 \
  --groups 2 --run-dir "$work/run" > "$work/train.log"
"$python" "$script" "$work/run" > "$work/plot.log"
for f in training skill maps; do
  png="$work/run/plots/$f.png"
  [ -s "$png" ] || { echo "FAILED: no $png"; cat "$work/plot.log"; exit 1; }
  # A PNG starts with its 8-byte signature; a figure of this size is far above 10 kB.
  [ "$(head -c 4 "$png" | tail -c 3)" = "PNG" ] || { echo "FAILED: $png is not a PNG"; exit 1; }
  [ "$(stat -c %s "$png")" -gt 10000 ] || { echo "FAILED: $png is nearly empty"; exit 1; }
done
head -c 100 "$work/run/forecast_maps.safetensors" > "$work/truncated.safetensors"
mkdir -p "$work/damaged"
cp "$work/truncated.safetensors" "$work/damaged/forecast_maps.safetensors"
if "$python" "$script" "$work/damaged" > "$work/damaged.log" 2>&1; then
  echo "FAILED: a truncated maps file was accepted"; cat "$work/damaged.log"; exit 1
fi
grep -q "forecast_maps.safetensors" "$work/damaged.log" || {
  echo "FAILED: the error does not name the file"; cat "$work/damaged.log"; exit 1; }
! grep -q Traceback "$work/damaged.log" || { echo "FAILED: a traceback"; cat "$work/damaged.log"; exit 1; }
echo "plot_run drew $(ls "$work/run/plots" | tr '\n' ' ')and refused a truncated maps file"
