#!/bin/bash
# managed by opsctl (role opsctl_drain, nginx driver): mark one upstream server down or up on
# this balancer, test the whole configuration, reload gracefully (HUP: old workers finish their
# requests). A failed test restores the file and exits 3: the balancer keeps its old config.
# Environment: UPSTREAM CONFIG (optional) ADDRESS PORT STATE=drained|serving
set -euo pipefail
file=${CONFIG:-$(grep -rlE "^\s*upstream\s+$UPSTREAM\s*\{" /etc/nginx/ | head -n 1)}
[ -n "$file" ] || { echo "no upstream $UPSTREAM under /etc/nginx" >&2; exit 2; }
addr=${ADDRESS//./\\.}
line="^\s*server\s+$addr(:$PORT)?[[:space:];]"
grep -qE "$line" "$file" || { echo "$ADDRESS:$PORT is not a server of upstream $UPSTREAM in $file" >&2; exit 2; }
backup=$(mktemp "$file.opsctl-XXXXXX~")   # "~": nginx includes and logrotate ignore it
cp -p "$file" "$backup"
if [ "$STATE" = drained ]; then
  sed -E -i "/$line/{/[[:space:]]down[[:space:];]/!s/[[:space:]]*;/ down;/}" "$file"
else
  sed -E -i "/$line/s/[[:space:]]+down([[:space:];])/\1/" "$file"
fi
if cmp -s "$file" "$backup"; then rm -f "$backup"; echo "unchanged"; exit 0; fi
if ! out=$(nginx -t 2>&1); then
  cp -p "$backup" "$file"; rm -f "$backup"
  echo "nginx -t failed after marking $ADDRESS $STATE, file restored: $(grep -m 1 emerg <<<"$out" || echo "$out")" >&2
  exit 3
fi
master=$(cat /run/nginx.pid)
old=$(pgrep -P "$master" | tr '\n' ' ')
kill -HUP "$master"
# The change is live once a new generation of workers runs (the old ones may still finish requests).
for _ in $(seq 50); do
  now=$(pgrep -P "$master" | tr '\n' ' ')
  for pid in $now; do case " $old " in *" $pid "*) ;; *) rm -f "$backup"; echo "changed"; exit 0 ;; esac; done
  sleep 0.1
done
echo "nginx on this balancer did not start new workers within 5 s" >&2
exit 4
