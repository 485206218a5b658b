#!/usr/bin/env bash
# managed by opsctl (role opsctl_drain, command driver): run one of the user's balancer commands,
# bounded in time. The command gets the backend in its environment (OPSCTL_HOST, OPSCTL_ADDRESS,
# OPSCTL_PORT, OPSCTL_UPSTREAM, OPSCTL_STATE), never spliced into its text.
# MODE=run: run COMMAND once. MODE=wait: run COMMAND (it prints the number of sessions the
# balancer still has open to this backend) once a second until it prints 0, for at most
# WAIT_TIMEOUT seconds. Each run of COMMAND is stopped after STEP_TIMEOUT seconds.
# Exit: 0 done; 3 the command failed or hung; 4 sessions still open at the deadline. On failure
# the last line of stdout says why, in one line.
# Environment: MODE COMMAND STEP_TIMEOUT WAIT_TIMEOUT (wait) and the OPSCTL_* variables above.
set -uo pipefail

last_line() {  # the last line of $1 that is not blank
  printf '%s\n' "$1" | grep -v '^[[:space:]]*$' | tail -n 1
}

# "failed (exit N): <its last line of output>" or "hung: stopped after N s".
why() {
  local rc=$1 out=$2 last
  last=$(last_line "$out" | cut -c1-200)
  case $rc in
    124|137) echo "hung: stopped after ${STEP_TIMEOUT} s" ;;
    *) echo "failed (exit $rc)${last:+: $last}" ;;
  esac
}

run_once() {
  timeout -k 5 "$STEP_TIMEOUT" sh -c "$COMMAND" 2>&1 </dev/null
}

if [ "$MODE" = run ]; then
  out=$(run_once); rc=$?
  printf '%s\n' "$out"
  [ "$rc" -eq 0 ] && exit 0
  why "$rc" "$out"
  exit 3
fi

started=$(date +%s)
while :; do
  out=$(run_once); rc=$?
  if [ "$rc" -ne 0 ]; then
    why "$rc" "$out"
    exit 3
  fi
  open=$(last_line "$out" | tr -d '[:space:]')
  case $open in
    ''|*[!0-9]*) echo "printed '$(printf '%s' "$open" | cut -c1-60)', not a number of sessions"; exit 3 ;;
  esac
  elapsed=$(( $(date +%s) - started ))
  if [ "$open" -eq 0 ]; then
    echo "no session open after ${elapsed} s"
    exit 0
  fi
  if [ "$elapsed" -ge "$WAIT_TIMEOUT" ]; then
    echo "$open sessions still open after ${WAIT_TIMEOUT} s"
    exit 4
  fi
  sleep 1
done
