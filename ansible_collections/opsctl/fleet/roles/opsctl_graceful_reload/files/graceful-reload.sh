#!/usr/bin/env bash
# managed by opsctl (role opsctl_graceful_reload): test, signal, and prove a graceful reload.
# One script, one SSH round trip: a rolling reload runs it on every host while the sale is live.
# Environment: SERVICE=php-fpm|nginx ACTION=test|reload|restart TIMEOUT=seconds SMOKE_URL=url
# Exit: 0 done, 3 config test failed (nothing signalled), 4 not verified in time.
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

workers() { pgrep -P "$1" | tr '\n' ' ' || true; }

# Poll every 0.2 s for at most TIMEOUT seconds until "$@" succeeds.
wait_for() {
  local tries=$(( TIMEOUT * 5 ))
  until "$@"; do
    tries=$(( tries - 1 ))
    [ "$tries" -gt 0 ] || return 1
    sleep 0.2
  done
}

replaced() {
  local master now old
  master=$(cat "$pidfile" 2>/dev/null) && kill -0 "$master" 2>/dev/null || return 1
  now=$(workers "$master"); [ -n "$now" ] || return 1
  for old in $old_workers; do kill -0 "$old" 2>/dev/null && return 1; done
  new_master=$master new_workers=$now
}

# python3 is on every host Ansible manages; curl is not.
smoke() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$SMOKE_URL" 2>/dev/null; }
master_gone() { ! kill -0 "$old_master" 2>/dev/null; }

detect
config_test
[ "$ACTION" = test ] && { echo "config ok"; exit 0; }

old_master=$(cat "$pidfile")
old_workers=$(workers "$old_master")
started=$(date +%s%N)
if [ "$ACTION" = restart ]; then
  # SIGQUIT: workers finish (up to process_control_timeout), the master exits; never SIGTERM.
  kill -QUIT "$old_master"
  wait_for master_gone || { echo "master $old_master still running after ${TIMEOUT}s; not forcing it" >&2; exit 4; }
  service "$svc" start >/dev/null
else
  kill -"$signal" "$old_master"
fi
wait_for replaced || { echo "old workers ($old_workers) still running or no new worker after ${TIMEOUT}s" >&2; exit 4; }
wait_for smoke || { echo "$SMOKE_URL did not answer 2xx after the $ACTION" >&2; exit 4; }
elapsed_ms=$(( ($(date +%s%N) - started) / 1000000 ))
echo "$ACTION: master $old_master -> $new_master, workers [${old_workers% }] -> [${new_workers% }], ${elapsed_ms} ms"
