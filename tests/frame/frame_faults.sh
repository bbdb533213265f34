#!/usr/bin/env bash
# The examples' frame ends every rank, whichever rank fails and however (see frame_fault.cpp):
# the status is 2, each case ends well before its time limit, and the ranks that can still
# speak say why.
#   frame_faults.sh <mpiexec> <frame_fault> <ranks>
set -uo pipefail
mpiexec="$1" exe="$2" np="$3"
failed=0
check() {
  local name="$1" expect_status="$2" limit="$3" words="$4"; shift 4
  local out t0 status
  out=$(mktemp)
  t0=$SECONDS
  timeout -s KILL "$limit" "$mpiexec" -np "$np" --oversubscribe "$exe" "$@" > "$out" 2>&1
  status=$?
  local took=$((SECONDS - t0))
  if [ "$status" -ne "$expect_status" ] || { [ -n "$words" ] && ! grep -q -- "$words" "$out"; }; then
    echo "FAILED: $name: status $status (expected $expect_status) after $took s, output:"
    sed 's/^/  | /' "$out" | head -20
    failed=1
  else
    echo "ok: $name: status $status after $took s"
  fi
  rm -f "$out"
}
check ok 0 60 "" ok
if [ "$np" -gt 1 ]; then
  check "one rank fails while the others wait in a collective" 2 60 \
    "did not end with this error" lonely
  check "one rank fails after the others finished" 2 60 \
    "\[rank 0\] error: rank $((np - 1)) failed: frame_fault: this rank failed at the end" late
  check "one rank stalls (watchdog)" 2 60 "\[rank 0\] error: no progress" stall 2
else
  check "the only rank fails" 2 60 "\[rank 0\] error: frame_fault: this rank failed alone" lonely
fi
exit $failed
