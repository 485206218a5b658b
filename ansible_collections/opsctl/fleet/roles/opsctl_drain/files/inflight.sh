#!/usr/bin/env bash
# managed by opsctl (role opsctl_drain): wait until no request is in flight on this backend:
# no connection from the balancers to PORT and none held by php-fpm. nginx does not keep
# upstream FastCGI connections alive by default, so both reach 0 when the host is idle.
# Polls every 0.2 s for at most TIMEOUT seconds; exit 4 if still busy then.
# Environment: PORT PEERS (the balancers' addresses; * counts a connection from any address) TIMEOUT
set -euo pipefail
set -f   # PEERS may hold *: a word, never a file name pattern
inflight() {
  local http=0 fpm=0 peer sock n
  for peer in $PEERS; do
    if [ "$peer" = "*" ]; then
      n=$(ss -Htn state established "( sport = :$PORT )" | wc -l)
    else
      n=$(ss -Htn state established "( sport = :$PORT )" dst "$peer" | wc -l)
    fi
    http=$((http + n))
  done
  for sock in $(ss -Hlx | awk '$5 ~ /php.*fpm.*\.sock$/ {print $5}'); do
    n=$(ss -Hx state established | awk -v s="$sock" '$5 == s' | wc -l)
    fpm=$((fpm + n))
  done
  echo "$http $fpm"
}
started=$(date +%s%N)
for _ in $(seq $(( TIMEOUT * 5 ))); do
  now=$(inflight)
  if [ "$now" = "0 0" ]; then
    echo "idle after $(( ($(date +%s%N) - started) / 1000000 )) ms"
    exit 0
  fi
  sleep 0.2
done
echo "still in flight after ${TIMEOUT}s (balancer connections, php-fpm connections): $now" >&2
exit 4
