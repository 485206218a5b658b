#!/usr/bin/env bash
# managed by opsctl (role opsctl_graceful_reload): test, signal, and prove a graceful reload.
# One script, one SSH round trip: a rolling reload runs it on every host while the sale is live.
# Environment: SERVICE=php-fpm|nginx ACTION=test|reload|restart TIMEOUT=seconds SMOKE_URL=url
# Exit: 0 done, 3 config test failed (nothing signalled), 4 not verified in time.
# Runs after signal-wait.sh (the collection's one signal-and-wait rule), which the task sends first.
set -euo pipefail

detect() {
  case "$SERVICE" in
    php-fpm)
      bin=$(for f in /usr/sbin/php-fpm*; do [ -x "$f" ] && echo "$f"; done | sort -V | tail -n 1)
      [ -n "$bin" ] || { echo "no php-fpm binary in /usr/sbin" >&2; exit 2; }
      ver=${bin##*/php-fpm}
      if [ -n "$ver" ]; then pidfile=/run/php/php$ver-fpm.pid; svc=php$ver-fpm
      else pidfile=/run/php-fpm/php-fpm.pid; svc=php-fpm; fi
      test_cmd=("$bin" -t); signal=USR2 ;;
    nginx)
      pidfile=/run/nginx.pid; svc=nginx; test_cmd=(nginx -t); signal=HUP ;;
    *) echo "unknown service $SERVICE" >&2; exit 2 ;;
  esac
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
config_test
[ "$ACTION" = test ] && { echo "config ok"; exit 0; }

old_master=$(cat "$pidfile")
started=$(date +%s%N)
not_replaced() { echo "old workers (${OPSCTL_OLD_WORKERS% }) still running or no new worker after ${TIMEOUT}s" >&2; exit 4; }
if [ "$ACTION" = restart ]; then
  # SIGQUIT: workers finish (up to process_control_timeout), the master exits; never SIGTERM.
  OPSCTL_OLD_WORKERS=$(opsctl_workers "$old_master")
  kill -QUIT "$old_master"
  opsctl_wait_for "$TIMEOUT" master_gone || { echo "master $old_master still running after ${TIMEOUT}s; not forcing it" >&2; exit 4; }
  service "$svc" start >/dev/null
  opsctl_wait_for "$TIMEOUT" opsctl_reloaded "$pidfile" || not_replaced
  OPSCTL_NEW_WORKERS=$(opsctl_new_workers "$(cat "$pidfile")")
else
  opsctl_signal_and_wait "$signal" "$pidfile" "$TIMEOUT" || not_replaced
fi
new_master=$(cat "$pidfile")
opsctl_wait_for "$TIMEOUT" smoke || { echo "$SMOKE_URL did not answer 2xx after the $ACTION" >&2; exit 4; }
elapsed_ms=$(( ($(date +%s%N) - started) / 1000000 ))
echo "$ACTION: master $old_master -> $new_master, workers [${OPSCTL_OLD_WORKERS% }] -> [${OPSCTL_NEW_WORKERS% }], ${elapsed_ms} ms"
