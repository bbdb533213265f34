#!/usr/bin/env bash
# The main job, saving every step on 2 ranks, is killed with SIGKILL at random moments (during
# start-up, during a step, while a checkpoint is being written), the whole job or one rank.
# After each kill
#   (1) every checkpoint*.safetensors in the run directory must load (--eval on 1 rank), and
#   (2) once the main job has started again in that directory (resuming from the newest
#       checkpoint, or a short fresh run when there is none) and finished, no temporary file
#       (*.tmp.*) of a killed process may be left.
# The kill points come from a fixed seed (CRASH_SAFETY_SEED, default 1) and are placed by the
# run's progress (the checkpoints it has written) rather than by the clock alone, so a loaded
# machine shifts them little.
#   crash_safety.sh <mpiexec> <train_dchag> <workdir> [trials]
set -euo pipefail
mpiexec="$1" exe="$2" work="$3" trials="${4:-8}"
steps=40
model=(--batch 4 --dim 32 --depth 1 --channels 8 --groups 2)
RANDOM="${CRASH_SAFETY_SEED:-1}"
rm -rf "$work"
mkdir -p "$work"

now_ms() { date +%s%3N; }
sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }

# The job in a session of its own (setsid does not fork here: a background child of a
# non-interactive shell is no group leader). Open MPI puts every rank in a process group of its
# own, so a signal to mpiexec's group would miss them, but they stay in mpiexec's session: the
# session id (mpiexec's pid) finds every process of the job.
job_pid=""
start_job() {
  local log="$1"; shift
  setsid "$mpiexec" -np 2 --oversubscribe "$exe" "$@" > "$log" 2>&1 &
  job_pid=$!
  # Until the child has called setsid() it is still in ours.
  local i
  for ((i = 0; i < 500; ++i)); do
    [ "$(ps -o sid= -p "$job_pid" | tr -d ' ')" = "$job_pid" ] && return 0
    sleep 0.002
  done
  echo "FAILED: mpiexec (pid $job_pid) does not lead a session of its own"; exit 1
}

# Not exited (a zombie has: it only waits to be reaped).
running() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }

# Waits while the job runs until the glob $1 matches something; false if the job ended first.
await() {
  while running "$job_pid"; do
    compgen -G "$1" > /dev/null && return 0
    sleep 0.002
  done
  return 1
}

# SIGKILL to every process of session $1 at once (one kill(1), before any can react).
kill_session() {
  local pids
  pids=$(pgrep -s "$1") || return 1
  kill -9 $pids 2> /dev/null
}

# Waits for the job started last, at most $1 seconds (then kills its session and fails); sets
# job_rc to its exit status.
job_rc=0
wait_job() {
  local limit="$1" flag="$work/.overdue.$job_pid" dog
  ( sleep "$limit" && touch "$flag" && kill_session "$job_pid" ) < /dev/null > /dev/null 2>&1 &
  dog=$!
  job_rc=0
  # Braces: bash's own "Killed" notice goes to this redirection, not into the test's output.
  { wait "$job_pid" || job_rc=$?; } 2> /dev/null
  kill $(pgrep -P "$dog") "$dog" 2> /dev/null || true
  wait "$dog" 2> /dev/null || true
  if [ -e "$flag" ]; then
    echo "FAILED: the job (mpiexec pid $job_pid) was still running $limit s after it should" \
      "have ended"
    exit 1
  fi
}

# Waits up to $2 seconds for the processes of session $1 to be gone, then kills what is left
# (and counts an orphan). Fails when anything survives that.
orphans=0
reap_session() {
  local sid="$1" patience="$2" i
  for ((i = 0; i < patience * 10; ++i)); do
    pgrep -s "$sid" > /dev/null || return 0
    sleep 0.1
  done
  echo "  processes of the job still running $patience s after mpiexec ended:"
  ps -o pid=,args= -s "$sid" | sed 's/^/    /' || true
  orphans=$((orphans + 1))
  kill_session "$sid" || true
  sleep 0.5
  ! pgrep -s "$sid" > /dev/null
}

# Sets victims (the pids to kill) and what (in words): one of the ranks of the running job when
# target is 1 and there are ranks yet (pick chooses which), else every process of the job.
choose_victims() {
  local ranks=()
  mapfile -t ranks < <(pgrep -s "$job_pid" -x "$(basename "$exe" | cut -c1-15)" || true)
  if [ "$target" = 1 ] && [ "${#ranks[@]}" -gt 0 ]; then
    victims="${ranks[pick % ${#ranks[@]}]}"
    what="one rank (pid $victims)"
  else
    victims="$(pgrep -s "$job_pid" | tr '\n' ' ')" || true
    what="the whole job"
  fi
}

# --eval of checkpoint $1 on 1 rank; its output and exit status go to log $2.
evaluate() {
  local rc=0
  "$mpiexec" -np 1 "$exe" --eval "$1" --batch 4 > "$2" 2>&1 || rc=$?
  echo "exit status $rc" >> "$2"
}

# A reference run, uninterrupted, gives the time scales: start-up (until the first checkpoint)
# and one step with its save.
t0=$(now_ms)
start_job "$work/reference.log" --steps "$steps" "${model[@]}" --save-every 1 --run-dir "$work/reference"
await "$work/reference/checkpoint_step1.safetensors" || true
startup_ms=$(( $(now_ms) - t0 ))
wait_job 600
if [ "$job_rc" != 0 ]; then
  echo "FAILED: the reference run exited with $job_rc"; cat "$work/reference.log"; exit 1
fi
total_ms=$(( $(now_ms) - t0 ))
step_ms=$(( (total_ms - startup_ms) / (steps - 1) + 1 ))
echo "reference run: $steps steps saving every step in $total_ms ms (start-up $startup_ms ms," \
  "then $step_ms ms a step)"

loaded=0 unloadable=0 temps_after_kill=0 temps_left=0 restart_failures=0
failed_load=() failed_temps=()
for ((trial = 1; trial <= trials; ++trial)); do
  dir="$work/trial$trial"
  # Every draw up front, so that what happens in one trial does not shift the next's.
  phase=$(( RANDOM % 3 ))             # 0: start-up, 1: within a step, 2: while saving
  step=$(( 1 + RANDOM % (steps - 1) ))  # the checkpoint written before the kill
  permille=$(( RANDOM % 1000 ))
  target=$(( RANDOM % 2 ))            # 0: the whole job, 1: one rank
  pick=$RANDOM
  start_job "$dir.log" --steps "$steps" "${model[@]}" --save-every 1 --run-dir "$dir"
  # The victims are chosen before the wait where timing matters, so that the signal follows
  # a temporary's appearance at once.
  victims=""
  case "$phase" in
    0) when="during start-up, at $(( startup_ms * permille / 1000 )) ms"
       sleep_ms $(( startup_ms * permille / 1000 )) ;;
    1) when="$(( step_ms * permille / 1000 )) ms after checkpoint $step"
       await "$dir/checkpoint_step$step.safetensors" || when="$when (never written)"
       sleep_ms $(( step_ms * permille / 1000 )) ;;
    2) when="while writing the checkpoint after $step"
       if await "$dir/checkpoint_step$step.safetensors"; then
         choose_victims
         await "$dir/*.tmp.*" || when="after checkpoint $step (no temporary seen)"
       else
         when="$when (never got there)"
       fi ;;
  esac
  [ -n "$victims" ] || choose_victims
  # shellcheck disable=SC2086
  kill -9 $victims 2> /dev/null || what="$what (already finished)"
  # mpiexec takes down the other ranks itself when one dies; that must not take long.
  wait_job 60
  rc="$job_rc"
  reap_session "$job_pid" 10 || { echo "FAILED: processes of trial $trial survived SIGKILL"; exit 1; }

  # (1) Every checkpoint under its final name loads.
  shopt -s nullglob
  files=("$dir"/checkpoint*.safetensors)
  temps=("$dir"/*.tmp.*)
  shopt -u nullglob
  # Two at a time: the test's 2 cores, and most of an evaluation is start-up.
  mkdir -p "$dir.eval"
  evals=()
  for f in "${files[@]}"; do
    evaluate "$f" "$dir.eval/$(basename "$f").log" &
    evals+=($!)
    if [ "${#evals[@]}" -ge 2 ]; then
      wait "${evals[0]}" || true
      evals=("${evals[@]:1}")
    fi
  done
  for p in "${evals[@]}"; do wait "$p" || true; done
  n_ok=0
  for f in "${files[@]}"; do
    log="$dir.eval/$(basename "$f").log"
    if grep -qx "exit status 0" "$log" && grep -q "held-out lat-weighted RMSE" "$log"; then
      n_ok=$((n_ok + 1))
    else
      unloadable=$((unloadable + 1))
      failed_load+=("$f")
      echo "  check (1) FAILED: $f does not load:"
      tail -n 6 "$log" | sed 's/^/    /'
    fi
  done
  loaded=$((loaded + n_ok))
  temps_after_kill=$((temps_after_kill + ${#temps[@]}))

  # (2) The next start of the main job in this directory clears the temporaries of the dead.
  newest="" newest_step=-1
  for f in "${files[@]}"; do
    name="$(basename "$f" .safetensors)"
    s="${name#checkpoint_step}"
    [ "$name" = checkpoint ] && s="$steps"
    if [ "$s" -gt "$newest_step" ]; then newest="$f" newest_step="$s"; fi
  done
  if [ -n "$newest" ]; then
    restart=(--resume "$newest" --steps $((newest_step + 1)) --batch 4)
  else
    restart=(--steps 2 "${model[@]}")
  fi
  start_job "$dir.restart.log" "${restart[@]}" --no-save --run-dir "$dir"
  wait_job 300
  restart_rc="$job_rc"
  reap_session "$job_pid" 10 || { echo "FAILED: the restart of trial $trial left processes"; exit 1; }
  if [ "$restart_rc" != 0 ]; then
    restart_failures=$((restart_failures + 1))
    echo "  the restart (${restart[*]}) FAILED with exit status $restart_rc:"
    tail -n 6 "$dir.restart.log" | sed 's/^/    /'
  fi
  shopt -s nullglob
  left=("$dir"/*.tmp.*)
  shopt -u nullglob
  temps_left=$((temps_left + ${#left[@]}))
  for f in "${left[@]}"; do failed_temps+=("$f"); done

  echo "trial $trial: killed $what $when (mpiexec exit $rc): $n_ok/${#files[@]}" \
    "checkpoints load, ${#temps[@]} temporaries after the kill, ${#left[@]} after the restart"
done

echo "crash_safety: $trials trials, $loaded checkpoints loaded, $unloadable unloadable," \
  "$temps_after_kill temporaries after the kills, $temps_left temporaries left," \
  "$orphans jobs with ranks outliving mpiexec"
status=0
if [ "$unloadable" -gt 0 ]; then
  echo "FAILED check (1): checkpoints that do not load after a kill:"
  printf '  %s\n' "${failed_load[@]}"
  status=1
fi
if [ "$restart_failures" -gt 0 ]; then
  echo "FAILED: $restart_failures of the restarts after a kill did not complete"
  status=1
fi
if [ "$temps_left" -gt 0 ]; then
  echo "FAILED check (2): temporaries of killed processes are left after the main job started" \
    "again in their run directory:"
  printf '  %s\n' "${failed_temps[@]}"
  status=1
fi
if [ "$orphans" -gt 0 ]; then
  echo "FAILED: in $orphans trials ranks kept running after mpiexec had ended"
  status=1
fi
exit "$status"
