#!/usr/bin/env bash
# managed by opsctl (role opsctl_graceful_reload): test, signal, and prove a graceful reload.
# One script, one SSH round trip: a rolling reload runs it on every host while the sale is live.
# Environment: SERVICE=php-fpm|nginx ACTION=test|reload|restart TIMEOUT=seconds SMOKE_URL=url
# Exit: 0 done, 3 config test failed (nothing signalled), 4 not verified in time.
# Runs after signal-wait.sh (the collection's one signal-and-wait rule) and discover.sh (what runs
# here, the readiness probe's own discovery), which the task sends first.
set -euo pipefail

# The running masters of $SERVICE as discover.sh finds them (sent in front of this script): their
# binary, configuration, pid file and what starts them. Several (PHP versions side by side) are
# all handled: every one is tested before any is signalled.
detect() {
  # discover.sh is POSIX sh that expects failed reads (an exited process, no unit): not under -eu.
  mapfile -t masters < <(set +eu +o pipefail; discover | awk -v k="$SERVICE" '$1 == k && $2 == "running"')
  case "$SERVICE" in php-fpm) signal=USR2 ;; nginx) signal=HUP ;; *) echo "unknown service $SERVICE" >&2; exit 2 ;; esac
  [ ${#masters[@]} -gt 0 ] || { echo "no $SERVICE master runs on this host" >&2; exit 2; }
}

# use LINE: pid, bin, conf, prefix, pidfile, start_cmd, test_cmd of one discovered master.
use() {
  local words key
  read -r _ _ pid bin conf prefix words <<<"$1"
  unit=-; scripts=-; pidfile=-
  for key in $words; do
    case $key in unit=*) unit=${key#unit=} ;; scripts=*) scripts=${key#scripts=} ;; pidfile=*) pidfile=${key#pidfile=} ;; esac
  done
  if [ "$SERVICE" = php-fpm ]; then
    test_cmd=("$bin" -t --fpm-config "$conf"); start_cmd=("$bin" --fpm-config "$conf")
  else
    test_cmd=("$bin" -t -q -c "$conf"); start_cmd=("$bin" -c "$conf")
    [ "$prefix" = - ] || { test_cmd+=(-p "$prefix"); start_cmd+=(-p "$prefix"); }
  fi
  # A restart starts it as it was started: its init script, its unit where systemd runs, else the binary.
  if [ "$scripts" != - ]; then start_cmd=("${scripts%%,*}" start)
  elif [ "$unit" != - ] && [ -d /run/systemd/system ]; then start_cmd=(systemctl start "$unit"); fi
}

config_test() {
  local out
  if ! out=$("${test_cmd[@]}" 2>&1); then
    echo "$SERVICE config test failed, nothing was signalled: $(grep -m 1 -E 'ERROR|emerg|error' <<<"$out" || echo "$out")" >&2
    exit 3
  fi
}

# A rolling reload proves the old workers finished: it waits for every one of them.
# shellcheck disable=SC2034  # read by signal-wait.sh
OPSCTL_WAIT_OLD=1

# python3 is on every host Ansible manages; curl is not.
smoke() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$SMOKE_URL" 2>/dev/null; }
master_gone() { opsctl_gone "$old_master"; }

detect
for line in "${masters[@]}"; do use "$line"; config_test; done
[ "$ACTION" = test ] && { echo "config ok (${#masters[@]} master(s))"; exit 0; }

started=$(date +%s%N)
not_replaced() { echo "master $old_master: old workers (${OPSCTL_OLD_WORKERS% }) still running or no new worker after ${TIMEOUT}s" >&2; exit 4; }
summary=""
for line in "${masters[@]}"; do
  use "$line"
  old_master=$pid
  if [ "$pidfile" = - ] || [ "$(cat "$pidfile" 2>/dev/null)" != "$pid" ]; then
    [ "$ACTION" = restart ] && { echo "master $pid: no pid file names it, so a restart could not be proven; not stopping it" >&2; exit 2; }
    # A reload keeps the master's PID: its own pid file is all signal-wait.sh needs.
    pidfile=$(mktemp); echo "$pid" >"$pidfile"; trap 'rm -f "$pidfile"' EXIT
  fi
  if [ "$ACTION" = restart ]; then
    # SIGQUIT: workers finish (up to process_control_timeout), the master exits; never SIGTERM.
    OPSCTL_OLD_WORKERS=$(opsctl_workers "$old_master")
    kill -QUIT "$old_master"
    opsctl_wait_for "$TIMEOUT" master_gone || { echo "master $old_master still running after ${TIMEOUT}s; not forcing it" >&2; exit 4; }
    "${start_cmd[@]}" >/dev/null
    opsctl_wait_for "$TIMEOUT" opsctl_reloaded "$pidfile" || not_replaced
    OPSCTL_NEW_WORKERS=$(opsctl_new_workers "$(cat "$pidfile")")
  else
    opsctl_signal_and_wait "$signal" "$pidfile" "$TIMEOUT" || not_replaced
  fi
  summary="${summary:+$summary; }master $old_master -> $(cat "$pidfile"), workers [${OPSCTL_OLD_WORKERS% }] -> [${OPSCTL_NEW_WORKERS% }]"
done
opsctl_wait_for "$TIMEOUT" smoke || { echo "$SMOKE_URL did not answer 2xx after the $ACTION" >&2; exit 4; }
elapsed_ms=$(( ($(date +%s%N) - started) / 1000000 ))
echo "$ACTION: $summary, ${elapsed_ms} ms"
