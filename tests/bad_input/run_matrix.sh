#!/usr/bin/env bash
# The main job fed bad input, one case per line of cases.txt: every case must end the job
# cleanly, on every rank, with a message that says what is wrong.
#   run_matrix.sh <mpiexec> <train_dchag> <workdir> <ranks>
# Environment: CASE=name runs that case only (and prints its whole output);
#              BAD_INPUT_TIMEOUT=seconds per case (default 20; a case takes a few seconds).
#
# For each case the job runs as `mpiexec -np N --oversubscribe train_dchag <args>` (or, for a
# case with an `others:` field, `mpiexec -np 1 train_dchag <args> : -np N-1 train_dchag
# <others>`), in its own session under `timeout -s KILL`, with the case's run directory as the
# working directory. That run directory holds a copy of a good checkpoint, made once per
# harness run. A case passes when
#   - the job ends by itself (a timeout is reported as HANG) with exit status exactly 2;
#   - for every rank r in 0..N-1, stderr has a line `[rank r] error: ...`, and every expected
#     word of the case appears (case-insensitive, fixed string) in rank r's message;
#   - the good checkpoint and its copy in the run directory are unchanged (sha256);
#   - no `*.tmp.*` file is left behind in the case's directories;
#   - no process of the job outlives it.
set -uo pipefail

if [ $# -ne 4 ]; then
  echo "usage: $0 <mpiexec> <train_dchag> <workdir> <ranks>" >&2
  exit 64
fi
mpiexec="$1" exe="$(readlink -f "$2")" work="$3" ranks="$4"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
table="$here/cases.txt"
limit="${BAD_INPUT_TIMEOUT:-20}"
only="${CASE:-}"
label="bad_input_np$ranks"

case "$ranks" in '' | *[!0-9]* | 0*) echo "$label: <ranks> must be a positive integer" >&2; exit 64 ;; esac
[ -x "$exe" ] || { echo "$label: $exe is not an executable" >&2; exit 64; }
[ -f "$table" ] || { echo "$label: $table is missing" >&2; exit 64; }
for tool in setsid timeout sha256sum perl mkfifo; do
  command -v "$tool" > /dev/null || { echo "$label: needs $tool" >&2; exit 64; }
done
mkdir -p "$work" && work="$(cd "$work" && pwd)"
# Open MPI waits odls_base_sigkill_timeout (1 s) after a rank's non-zero exit before it ends
# the job, even when every rank has already exited; failing jobs are what this harness runs.
# (MPI_Finalize synchronises the ranks, so none has exited before all have reported.)
export OMPI_MCA_odls_base_sigkill_timeout="${OMPI_MCA_odls_base_sigkill_timeout:-0}"

# ---------------------------------------------------------------------------------------------
# Running one job in its own session, and making sure nothing of it survives.

# The live processes (pids, zombies left out) of session $1, read from /proc.
session_members() {
  local sid="$1" f s rest
  for f in /proc/[0-9]*/stat; do
    s="$(cat "$f" 2> /dev/null)" || continue
    rest="${s##*) }"  # after the command name: state ppid pgrp session ...
    set -- $rest
    [ "${4:-}" = "$sid" ] && [ "${1:-}" != Z ] && { f="${f#/proc/}"; echo "${f%/stat}"; }
  done
}

# launch <logdir> <command...>: runs the command in a new session, under timeout -s KILL, with
# stdout/stderr in <logdir>/stdout, <logdir>/stderr. Sets job_rc, job_seconds, job_orphans.
launch() {
  local dir="$1"; shift
  local sidfile="$dir/.sid" t0 t1 pids
  rm -f "$sidfile"
  t0="$(date +%s%N)"
  # (In a subshell, so that bash's "Killed" notice after a timeout stays out of the report.)
  ( setsid --wait bash -c 'echo $$ > "$0"; exec timeout -s KILL "$@"' "$sidfile" "$limit" "$@" \
      < /dev/null > "$dir/stdout" 2> "$dir/stderr" ) 2> /dev/null
  job_rc=$?
  t1="$(date +%s%N)"
  job_seconds="$(( (t1 - t0) / 1000000 ))"
  job_orphans=""
  local sid
  sid="$(cat "$sidfile" 2> /dev/null)"
  rm -f "$sidfile"
  [ -n "$sid" ] || return 0
  pids="$(session_members "$sid")"
  if [ -n "$pids" ]; then  # give a finishing job a moment, then kill what is left, by pid
    sleep 1
    pids="$(session_members "$sid")"
    if [ -n "$pids" ]; then
      job_orphans="$(echo $pids)"
      kill -KILL $pids 2> /dev/null
    fi
  fi
}

# ---------------------------------------------------------------------------------------------
# The good checkpoint: a tiny model, 2 steps, 1 rank (loadable on any grid).

good_dir="$work/good"
good="$good_dir/checkpoint.safetensors"
pristine="$work/good.pristine.safetensors"
rm -rf "$good_dir" "$pristine"
mkdir -p "$good_dir"
launch "$work" "$mpiexec" -np 1 --oversubscribe "$exe" --steps 2 --batch 4 --dim 32 --depth 1 \
  --channels 8 --groups 2 --run-dir "$good_dir"
if [ "$job_rc" -ne 0 ] || [ ! -s "$good" ]; then
  echo "$label: could not make the good checkpoint (exit status $job_rc):" >&2
  tail -n 20 "$work/stderr" >&2
  echo "$label: 0 passed, 1 failed"
  exit 1
fi
cp "$good" "$pristine"
good_sha="$(sha256sum < "$good" | cut -d' ' -f1)"

# ---------------------------------------------------------------------------------------------
# Setup hooks: setup_<name> prepares files for a case. Variables: RUN (the case's run dir, with
# checkpoint.safetensors), TMP (a scratch dir), GOOD (the good checkpoint).

# perl -e helpers on the safetensors layout: 8-byte little-endian header length, JSON header,
# data. Usage: st_perl '<code using $h (header), $d (data)>' in out
st_perl() {
  perl -e '
    use strict; use warnings;
    my ($code, $in, $out) = @ARGV;
    open(my $f, "<:raw", $in) or die "$in: $!"; local $/; my $all = <$f>; close $f;
    my $n = unpack("Q<", substr($all, 0, 8));
    our $h = substr($all, 8, $n); our $d = substr($all, 8 + $n);
    eval $code; die $@ if $@;
    $h =~ s/ +$//; $h .= " " x ((8 - length($h) % 8) % 8);
    open(my $o, ">:raw", $out) or die "$out: $!"; print $o pack("Q<", length $h), $h, $d; close $o;
  ' "$@"
}
# The byte offset where the data starts, and the data length.
st_data_offset() { perl -e 'open(my $f,"<:raw",$ARGV[0]) or die; read($f,my $b,8); print 8+unpack("Q<",$b)' "$1"; }

flip_byte_at() {  # flip_byte_at FILE OFFSET: that byte inverted
  perl -e 'open(my $f,"+<:raw",$ARGV[0]) or die; seek($f,$ARGV[1],0); read($f,my $b,1);
           seek($f,$ARGV[1],0); print $f chr(ord($b) ^ 0xFF); close $f' "$1" "$2"
}
setup_flip_byte() {  # one data byte inverted, in the middle of the data (an optimizer moment)
  local off size
  off="$(st_data_offset "$GOOD")"; size="$(stat -c %s "$GOOD")"
  cp "$GOOD" "$TMP/flipped.safetensors"
  flip_byte_at "$TMP/flipped.safetensors" "$(( off + (size - off) / 2 ))"
}
setup_flip_weight_byte() {  # one byte of the last tensor inverted (var_query, a model weight)
  cp "$GOOD" "$TMP/flipped.safetensors"
  flip_byte_at "$TMP/flipped.safetensors" "$(( $(stat -c %s "$GOOD") - 3 ))"
}
setup_truncate() {  # cut in the middle of the data
  local off size
  off="$(st_data_offset "$GOOD")"; size="$(stat -c %s "$GOOD")"
  head -c "$(( off + (size - off) / 2 ))" "$GOOD" > "$TMP/short.safetensors"
}
setup_truncate_header() {  # cut inside the JSON header
  head -c 100 "$GOOD" > "$TMP/short_header.safetensors"
}
setup_huge_channels() {  # metadata says config.channels=2147483647 (and out_channels)
  st_perl '$h =~ s/"config\.channels":"8"/"config.channels":"2147483647"/ or die "no channels";
           $h =~ s/"config\.out_channels":"8"/"config.out_channels":"2147483647"/;
           $h =~ s/"config":"C=8 out=8 /"config":"C=2147483647 out=2147483647 /;' \
    "$GOOD" "$TMP/huge_channels.safetensors"
}
setup_patch_zero() {  # metadata says config.patch=0
  st_perl '$h =~ s/"config\.patch":"4"/"config.patch":"0"/ or die "no patch";
           $h =~ s/ patch=4 / patch=0 /;' "$GOOD" "$TMP/patch_zero.safetensors"
}
setup_nan_weight() {  # the first element of var_embed is a NaN
  st_perl '$h =~ /"var_embed":\{[^}]*"data_offsets":\[(\d+),/ or die "no var_embed";
           substr($d, $1, 4) = pack("V", 0x7fc00000);' "$GOOD" "$TMP/nan.safetensors"
}
setup_huge_header_length() {  # header length 2^64 - 1
  { printf '\377\377\377\377\377\377\377\377'; tail -c +9 "$GOOD"; } > "$TMP/huge_header.safetensors"
}
setup_bad_json() {  # the header is not JSON
  cp "$GOOD" "$TMP/bad_json.safetensors"
  printf 'x' | dd of="$TMP/bad_json.safetensors" bs=1 seek=8 conv=notrunc status=none
}
setup_random_bytes() {  # 4096 pseudo-random bytes (fixed seed)
  perl -e 'srand(20240601); binmode STDOUT; print map { chr(int(rand(256))) } 1..4096' \
    > "$TMP/random.safetensors"
}
setup_random_header() {  # a plausible header length (200), then pseudo-random bytes
  perl -e 'srand(7); binmode STDOUT; print pack("Q<", 200), map { chr(int(rand(256))) } 1..4096' \
    > "$TMP/random_header.safetensors"
}
setup_empty_file() { : > "$TMP/empty.safetensors"; }
setup_fifo() { mkfifo "$TMP/fifo.safetensors"; }
setup_csv_dir() { mkdir -p "$TMP/csvdir"; }
setup_plain_file() { echo "not a directory" > "$TMP/plainfile"; }

# ---------------------------------------------------------------------------------------------
# The table.

trim() { local s="$1"; s="${s#"${s%%[![:space:]]*}"}"; s="${s%"${s##*[![:space:]]}"}"; printf '%s' "$s"; }

# split_args <string> <array name>: shell words of the string (quotes allowed), with @RUN@,
# @GOOD@, @TMP@ and @N@ substituted in each word. The table may not use $ ` ; & < > ( ).
split_args() {
  local str="$1" name="$2" w
  case "$str" in *['$`;&<>()']*)
    echo "$label: $table: characters \$ \` ; & < > ( ) are not allowed in args: $str" >&2
    return 1 ;;
  esac
  local -a words=()
  eval "words=($str)"
  local -a out=()
  for w in "${words[@]+"${words[@]}"}"; do
    w="${w//@RUN@/$RUN}"; w="${w//@GOOD@/$GOOD}"; w="${w//@TMP@/$TMP}"; w="${w//@N@/$ranks}"
    out+=("$w")
  done
  eval "$name=(\"\${out[@]+\"\${out[@]}\"}\")"
}

# Does an argument list name --run-dir or --eval? (Otherwise the harness adds --run-dir @RUN@.)
names_run_dir() {
  local a
  for a in "$@"; do [ "$a" = "--run-dir" ] || [ "$a" = "--eval" ] && return 0; done
  return 1
}

# The message of each rank: the text after `[rank r] error:` and the indented lines that follow.
rank_messages() {  # stderr file -> lines "r<TAB>message"
  awk '
    match($0, /\[rank [0-9]+\] error:/) {
      head = substr($0, RSTART, RLENGTH); sub(/^\[rank /, "", head); sub(/\].*/, "", head)
      cur = head; msg[cur] = msg[cur] " " substr($0, RSTART + RLENGTH); seen[cur] = 1; next
    }
    /^[ \t]/ && cur != "" { msg[cur] = msg[cur] " " $0; next }
    { cur = "" }
    END { for (r in seen) printf "%s\t%s\n", r, msg[r] }
  ' "$1"
}

names=() ; results=() ; details=()
passed=0 failed=0 skipped=0 found=0
start_all="$(date +%s)"

while IFS= read -r line || [ -n "$line" ]; do
  line="${line%%#*}"
  [ -n "$(trim "$line")" ] || continue
  IFS='|' read -r -a fields <<< "$line"
  name="$(trim "${fields[0]:-}")"
  words_field="$(trim "${fields[1]:-}")"
  args_field="$(trim "${fields[2]:-}")"
  others_field="" others_given=0 setup="" np_field=""
  for ((k = 3; k < ${#fields[@]}; ++k)); do
    f="$(trim "${fields[k]}")"
    case "$f" in
      others:*) others_field="$(trim "${f#others:}")"; others_given=1 ;;
      setup:*) setup="$(trim "${f#setup:}")" ;;
      np:*) np_field="$(trim "${f#np:}")" ;;
      '') ;;
      *) echo "$label: $table: case $name: unknown field '$f'" >&2; exit 64 ;;
    esac
  done
  if [ -z "$name" ] || [ -z "$words_field" ]; then
    echo "$label: $table: a case needs a name and expected words: $line" >&2; exit 64
  fi
  if [ -n "$only" ] && [ "$name" != "$only" ]; then continue; fi
  found=1

  skip=""
  if [ "$others_given" = 1 ] && [ "$ranks" -lt 2 ]; then
    skip="ranks disagree: needs 2 or more ranks"
  elif [ -n "$np_field" ] && [[ ",${np_field// /}," != *",$ranks,"* ]]; then
    skip="runs at np $np_field only"
  fi
  if [ -n "$skip" ]; then
    names+=("$name"); results+=("SKIP"); details+=("$skip"); skipped=$((skipped + 1))
    continue
  fi

  dir="$work/cases/$name"
  rm -rf "$dir"
  mkdir -p "$dir/run" "$dir/tmp"
  RUN="$dir/run" TMP="$dir/tmp" GOOD="$good"
  cp "$pristine" "$RUN/checkpoint.safetensors"
  reasons=()
  if [ -n "$setup" ]; then
    if ! declare -F "setup_$setup" > /dev/null; then
      echo "$label: $table: case $name: no setup hook '$setup'" >&2; exit 64
    fi
    "setup_$setup" > "$dir/setup.log" 2>&1 || reasons+=("setup $setup failed: $(tail -n 1 "$dir/setup.log")")
  fi
  split_args "$args_field" args0 || exit 64
  names_run_dir "${args0[@]+"${args0[@]}"}" || args0=(--run-dir "$RUN" "${args0[@]+"${args0[@]}"}")
  if [ "$others_given" = 1 ]; then
    split_args "$others_field" args1 || exit 64
    names_run_dir "${args1[@]+"${args1[@]}"}" || args1=(--run-dir "$RUN" "${args1[@]+"${args1[@]}"}")
    cmd=("$mpiexec" --oversubscribe -np 1 "$exe" "${args0[@]}" : -np "$((ranks - 1))" "$exe" "${args1[@]}")
  else
    cmd=("$mpiexec" -np "$ranks" --oversubscribe "$exe" "${args0[@]}")
  fi
  printf '%q ' "${cmd[@]}" > "$dir/command"; echo >> "$dir/command"

  if [ "${#reasons[@]}" -eq 0 ]; then
    (cd "$RUN" && launch "$dir" "${cmd[@]}"; echo "$job_rc $job_seconds $job_orphans" > "$dir/.job")
    read -r job_rc job_seconds job_orphans < "$dir/.job"; rm -f "$dir/.job"
    status=""
    if { [ "$job_rc" -eq 137 ] || [ "$job_rc" -eq 124 ]; } && [ "$job_seconds" -ge $(( limit * 1000 - 500 )) ]; then
      status="HANG"
      reasons+=("no exit within ${limit} s (killed)")
    elif [ "$job_rc" -ne 2 ]; then
      reasons+=("exit status $job_rc, not 2")
    fi
    if [ -n "$job_orphans" ]; then  # after a timeout, the ranks outlive the killed mpiexec
      if [ "$status" = HANG ]; then
        reasons+=("then killed the ranks left: $job_orphans")
      else
        reasons+=("processes outlived the job: $job_orphans (killed)")
      fi
    fi

    declare -A msg=()
    while IFS=$'\t' read -r r m; do msg[$r]="$m"; done < <(rank_messages "$dir/stderr")
    missing_ranks=()
    declare -A lacking=()  # expected word -> the ranks whose message lacks it
    IFS=',' read -r -a expected <<< "$words_field"
    for ((r = 0; r < ranks; ++r)); do
      if [ -z "${msg[$r]+set}" ]; then missing_ranks+=("$r"); continue; fi
      lower="${msg[$r],,}"
      for w in "${expected[@]}"; do
        w="$(trim "$w")"; [ -n "$w" ] || continue
        ok=0 alts="$w"
        while :; do  # alternatives: "a or b"
          alt="$(trim "${alts%% or *}")"
          alt="${alt//@RUN@/$RUN}"; alt="${alt//@TMP@/$TMP}"; alt="${alt//@GOOD@/$GOOD}"
          [[ "$lower" == *"${alt,,}"* ]] && { ok=1; break; }
          [[ "$alts" == *" or "* ]] || break
          alts="${alts#* or }"
        done
        [ "$ok" = 1 ] || lacking[$w]="${lacking[$w]:+${lacking[$w]} }$r"
      done
    done
    unset msg
    [ "${#missing_ranks[@]}" -eq 0 ] || reasons+=("no '[rank r] error:' line for rank(s) ${missing_ranks[*]}")
    for w in "${expected[@]}"; do
      w="$(trim "$w")"
      [ -n "$w" ] && [ -n "${lacking[$w]:-}" ] || continue
      reasons+=("the message of rank(s) ${lacking[$w]} lacks '$w'")
    done
    unset lacking
    [ "$(sha256sum < "$RUN/checkpoint.safetensors" 2> /dev/null | cut -d' ' -f1)" = "$good_sha" ] ||
      reasons+=("the run dir's good checkpoint changed")
    if [ "$(sha256sum < "$good" 2> /dev/null | cut -d' ' -f1)" != "$good_sha" ]; then
      reasons+=("the good checkpoint @GOOD@ changed")
      cp "$pristine" "$good"
    fi
    leftovers="$(find "$dir" "$good_dir" -name '*.tmp.*' 2> /dev/null | sed "s|^$work/||" | head -n 3)"
    [ -z "$leftovers" ] || reasons+=("left temporary files: $(echo $leftovers)")
  else
    status="" job_seconds=0
  fi

  names+=("$name")
  if [ "${#reasons[@]}" -eq 0 ]; then
    results+=("PASS"); passed=$((passed + 1))
    details+=("$(printf '%d.%01d s' $((job_seconds / 1000)) $(( (job_seconds % 1000) / 100 )))")
  else
    results+=("${status:-FAIL}"); failed=$((failed + 1))
    details+=("$(printf '%d.%01d s: %s' $((job_seconds / 1000)) $(( (job_seconds % 1000) / 100 )) "$(printf '%s; ' "${reasons[@]}" | sed 's/; $//')")")
  fi
  if [ -n "$only" ]; then
    echo "== $name: $(cat "$dir/command")"
    echo "-- stdout:"; cat "$dir/stdout"
    echo "-- stderr:"; cat "$dir/stderr"
    echo "--"
  fi
  echo "$label: ${results[-1]} $name" >&2
done < "$table"

if [ -n "$only" ] && [ "$found" = 0 ]; then
  echo "$label: no case named '$only' in $table" >&2
  exit 64
fi

# ---------------------------------------------------------------------------------------------
# The report.

echo
echo "$label: bad-input matrix, $ranks rank(s), timeout ${limit} s per case, logs in $work/cases"
printf '%-34s %-5s %s\n' "case" "" "details"
for i in "${!names[@]}"; do
  printf '%-34s %-5s %s\n' "${names[i]}" "${results[i]}" "${details[i]}"
done
echo
for i in "${!names[@]}"; do
  case "${results[i]}" in PASS | SKIP) continue ;; esac
  echo "--- ${names[i]}: $(cat "$work/cases/${names[i]}/command")"
  grep -v -e '^\[[^]]*:[0-9]*\] ' "$work/cases/${names[i]}/stderr" 2> /dev/null |
    grep -v -e '^-*$' | head -n 4 | cut -c1-240 | sed 's/^/    /'
done
[ "$skipped" -eq 0 ] || echo "$label: $skipped skipped (see the table)"
echo "$label: total $(( $(date +%s) - start_all )) s"
echo "$label: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
