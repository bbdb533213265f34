#!/usr/bin/env bash
# The main job on a small WeatherBench-layout netCDF data set, on 2 ranks with D-CHAG: it must
# train (the loss falls), evaluate on the Test year, write the per-variable statistics on the
# first run and read them on the second, and refuse a variable that is not there on every rank.
#   train_weatherbench.sh <mpiexec> <make_weatherbench> <train_dchag> <workdir>
set -euo pipefail
mpiexec="$1" make="$2" exe="$3" work="$4"
rm -rf "$work"
mkdir -p "$work"
"$make" "$work/data" 16 32 3 64 6 > /dev/null
vars=2m_temperature,geopotential_500,temperature_850,specific_humidity_850
run() {
  local name="$1"; shift
  "$mpiexec" -np 2 --oversubscribe "$exe" --policy dchag --data "$work/data" --variables "$vars" \
    --height 16 --width 32 --patch 4 --dim 32 --depth 1 --heads 2 --groups 2 --batch 4 \
    --lead-hours 12 --lr 1e-2 --run-dir "$work/$name" "$@" > "$work/$name.log" 2>&1 \
    || { echo "FAILED: $name"; cat "$work/$name.log"; exit 1; }
}
run first --steps 60
grep -q "statistics computed into $work/data/dchag_statistics.csv" "$work/first.log" \
  || { echo "FAILED: the first run did not compute the statistics"; cat "$work/first.log"; exit 1; }
grep -q "parallel: D-CHAG.* reads channels \[0, 2)" "$work/first.log" \
  || { echo "FAILED: rank 0 does not own half the channels"; cat "$work/first.log"; exit 1; }
grep -q "held-out lat-weighted RMSE" "$work/first.log" || { echo "FAILED: no evaluation"; exit 1; }
ratio=$(sed -n 's/.*(ratio \([0-9.]*\)).*/\1/p' "$work/first.log")
awk -v r="$ratio" 'BEGIN { exit !(r != "" && r < 0.8) }' \
  || { echo "FAILED: the loss did not fall (last/first ratio '$ratio')"; cat "$work/first.log"
       exit 1; }
[ "$(wc -l < "$work/data/dchag_statistics.csv")" -eq 6 ] \
  || { echo "FAILED: statistics file"; cat "$work/data/dchag_statistics.csv"; exit 1; }
run second --steps 2
grep -q "statistics read from" "$work/second.log" \
  || { echo "FAILED: the second run did not reuse the statistics"; cat "$work/second.log"; exit 1; }
set +e
"$mpiexec" -np 2 --oversubscribe "$exe" --data "$work/data" --groups 2 \
  --variables 2m_temperature,vorticity_500,temperature_850,specific_humidity_850 \
  --height 16 --width 32 --steps 2 --run-dir "$work/bad" > "$work/bad.log" 2>&1
rc=$?
set -e
n=$(grep -c "no folder for variable 'vorticity_500'" "$work/bad.log" || true)
if [ "$rc" -ne 2 ] || [ "$n" -lt 2 ]; then
  echo "FAILED: a missing variable should end both ranks with status 2 (rc $rc, $n messages)"
  cat "$work/bad.log"; exit 1
fi
echo "trained on a WeatherBench-layout data set on 2 ranks (loss ratio $ratio); statistics reused;"
echo "a missing variable ends both ranks with status 2"
