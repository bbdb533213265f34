#!/usr/bin/env bash
# The pre-training example on a scene in ENVI format, on 2 ranks under D-CHAG: a small
# band-interleaved-by-line, big-endian int16 cube written here (smooth spectra of three
# materials mixed by smooth abundance maps), then a truncated copy, which must end the job with
# an error that names the file on every rank.
#   envi_pretrain.sh <mpiexec> <pretrain_hyperspectral> <python3> <workdir>
set -euo pipefail
mpiexec="$1" exe="$2" python="$3" work="$4"
rm -rf "$work"
mkdir -p "$work"
"$python" - "$work" <<'PY'
import math, struct, sys
work = sys.argv[1]
bands, lines, samples = 24, 128, 160
def spectrum(e, b):
    x = b / (bands - 1)
    return 0.2 + 0.6 * (0.5 + 0.5 * math.sin(2.5 * x + 2.1 * e)) * (1 - 0.3 * e * x)
def abundance(r, c):
    a = [math.exp(1.5 * math.sin(r / 11 + 1.3 * e) * math.cos(c / 13 - 0.7 * e)) for e in range(3)]
    s = sum(a)
    return [v / s for v in a]
out = bytearray()
for r in range(lines):
    ab = [abundance(r, c) for c in range(samples)]
    for b in range(bands):
        for c in range(samples):
            v = sum(ab[c][e] * spectrum(e, b) for e in range(3))
            out += struct.pack(">h", int(round(10000 * v)))  # reflectance x 10^4, as AVIRIS
open(f"{work}/scene.img", "wb").write(bytes(out))
waves = ", ".join(str(400 + 80 * b) for b in range(bands))
open(f"{work}/scene.hdr", "w").write(
    f"ENVI\nsamples = {samples}\nlines = {lines}\nbands = {bands}\nheader offset = 0\n"
    f"data type = 2\ninterleave = bil\nbyte order = 1\nwavelength units = Nanometers\n"
    f"wavelength = {{{waves}}}\n")
PY
"$mpiexec" -np 2 --oversubscribe "$exe" --data "$work/scene.hdr" --groups 4 --steps 40 \
  --batch 4 --dim 32 --depth 1 --decoder-dim 32 --decoder-depth 1 --run-dir "$work/run" \
  > "$work/train.log" 2>&1 || { echo "FAILED: training on the ENVI scene"; cat "$work/train.log"; exit 1; }
grep -q "data: 1 ENVI scene(s), 24 bands, 16 Train and 4 Test tiles of 32x32" "$work/train.log" || {
  echo "FAILED: the data line"; cat "$work/train.log"; exit 1; }
grep -q "reads bands \[0, 12)" "$work/train.log" || {
  echo "FAILED: rank 0 does not own bands [0, 12)"; cat "$work/train.log"; exit 1; }
grep -q "held-out masked MSE" "$work/train.log" || { echo "FAILED: no held-out score"; exit 1; }
# The loss falls: the last logged steps below the first ones.
"$python" - "$work/run/pretrain_metrics.csv" <<'PY'
import csv, sys
loss = [float(r["loss"]) for r in csv.DictReader(open(sys.argv[1]))]
first, last = sum(loss[:5]) / 5, sum(loss[-5:]) / 5
print(f"masked MSE: first 5 steps {first:.4f}, last 5 steps {last:.4f}")
sys.exit(0 if last < 0.9 * first else f"FAILED: the loss does not fall ({first} -> {last})")
PY
cp "$work/scene.hdr" "$work/short.hdr"
head -c 100000 "$work/scene.img" > "$work/short.img"
if "$mpiexec" -np 2 --oversubscribe "$exe" --data "$work/short.hdr" --groups 4 --steps 40 \
     --run-dir "$work/short_run" > "$work/short.log" 2>&1; then
  echo "FAILED: a truncated scene was accepted"; cat "$work/short.log"; exit 1
fi
n="$(grep -c "short.img: 100000 bytes, but its header" "$work/short.log" || true)"
[ "$n" -ge 2 ] || { echo "FAILED: not every rank names the truncated file"; cat "$work/short.log"; exit 1; }
echo "trained on an ENVI scene on 2 ranks; a truncated scene is refused on every rank"
