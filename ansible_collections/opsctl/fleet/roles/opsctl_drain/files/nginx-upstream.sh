#!/usr/bin/env bash
# managed by opsctl (role opsctl_drain, nginx driver): mark one upstream server down or up on
# this balancer, test the whole configuration, reload gracefully (HUP: old workers finish their
# requests), then prove from `nginx -T` that the configuration nginx loads has the new state.
# The file edited is the one loaded file (per `nginx -T`) that defines `upstream UPSTREAM {`:
# a copy nginx never reads (a *~ or .bak next to it) is never taken for it.
# Nothing is written under /etc/nginx but that file: its previous version and the new one are
# staged in BACKUP_DIR (root only), so a killed run leaves nothing an include glob could read.
# Exit: 0 done, 2 bad input or no single loaded file (nothing changed), 3 nginx -t failed
# (file restored), 4 no new workers in time, 5 the reloaded configuration lacks the new state.
# Environment: UPSTREAM CONFIG (optional) ADDRESS PORT STATE=drained|serving BACKUP_DIR
# Runs after opsctl_graceful_reload/files/signal-wait.sh, which the task sends first.
set -euo pipefail
umask 077

fail() { echo "$2" >&2; exit "$1"; }

# Values reach awk and file names below: accept only what nginx names and addresses look like.
[[ $UPSTREAM =~ ^[A-Za-z0-9_.-]+$ ]] || fail 2 "invalid upstream name '$UPSTREAM', nothing changed"
[[ $ADDRESS =~ ^([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])$ ]] || fail 2 "invalid backend address '$ADDRESS', nothing changed"
[[ $PORT =~ ^[0-9]{1,5}$ ]] || fail 2 "invalid backend port '$PORT', nothing changed"
[[ $STATE == drained || $STATE == serving ]] || fail 2 "invalid state '$STATE' (drained or serving), nothing changed"
BACKUP_DIR=${BACKUP_DIR%/}
[[ $BACKUP_DIR == /?* && $BACKUP_DIR != /etc/* ]] || fail 2 "the backup directory must be absolute and outside /etc: '$BACKUP_DIR', nothing changed"

# In the block `upstream UPSTREAM {` (only in the section of file SECTION when reading a
# `nginx -T` dump): MODE=count prints "<servers> <down>" for the server lines of ADDRESS:PORT,
# MODE=drained / serving prints the input with those lines marked down / up.
upstream_awk() {
  awk -v mode="$1" -v section="${2-}" -v name="$UPSTREAM" -v addr="$ADDRESS" -v port="$PORT" '
    function code(s,   i) { i = index(s, "#"); return i ? substr(s, 1, i - 1) : s }
    function count(s, re,   t) { t = s; return gsub(re, "", t) }
    BEGIN { insection = (section == ""); header = name; gsub(/[.]/, "[.]", header)
            header = "^[ \t]*upstream[ \t]+" header "[ \t]*[{]" }
    section != "" && /^# configuration file .*:$/ {
      insection = (substr($0, 22, length($0) - 22) == section); depth = 0; inside = 0
    }
    {
      line = $0; c = code($0)
      if (insection && !inside && c ~ header) { inside = 1; top = depth }
      if (insection && inside && c ~ /^[ \t]*server[ \t]/ && index(c, ";")) {
        semi = index(c, ";"); args = substr(c, 1, semi - 1); sub(/^[ \t]+/, "", args)
        n = split(args, w, /[ \t]+/)
        if (w[2] == addr ":" port || (port == 80 && w[2] == addr)) {
          down = 0; for (i = 3; i <= n; i++) if (w[i] == "down") down = 1
          servers++; downs += down
          head = substr(line, 1, semi - 1); tail = substr(line, semi)
          if (mode == "drained" && !down) { sub(/[ \t]+$/, "", head); line = head " down" tail }
          if (mode == "serving" && down) {
            while (match(head, /[ \t]+down([ \t]|$)/)) {
              keep = substr(head, RSTART + RLENGTH - 1, 1) ~ /[ \t]/
              head = substr(head, 1, RSTART - 1) substr(head, RSTART + RLENGTH - keep)
            }
            line = head tail
          }
        }
      }
      if (insection) { depth += count(c, "[{]") - count(c, "[}]"); if (inside && depth <= top) inside = 0 }
      if (mode != "count") print line
    }
    END { if (mode == "count") print servers + 0, downs + 0 }'
}

nginx_error() { nginx -t 2>&1 | grep -m 1 -E 'emerg|error' || echo "nginx -t failed"; }

# Root's own directory: copies of configs are written there as root, so nobody else may own or
# write it or its parent (a planted link would redirect the write). Made only when needed.
root_only() { [ "$(stat -c %u -- "$1")" = 0 ] && [ -z "$(find "$1" -maxdepth 0 -perm /022)" ]; }
backup_dir_ready() {
  local parent=${BACKUP_DIR%/*}
  for dir in "${parent:-/}" "$BACKUP_DIR"; do
    [ ! -e "$dir" ] || root_only "$dir" || fail 2 "$dir is not root's alone (owner, or group/other write), nothing changed"
  done
  mkdir -p -- "$BACKUP_DIR" && chmod 0700 -- "$BACKUP_DIR"
}

# Temporary copies an earlier opsctl left next to the file when it was killed: an include glob
# reads them (a duplicate upstream breaks nginx -t). They are opsctl's own: moved out.
mapfile -t leftovers < <(find /etc/nginx -type f -name '*.opsctl-??????~' 2>/dev/null)
if [ "${#leftovers[@]}" -gt 0 ]; then
  backup_dir_ready
  for path in "${leftovers[@]}"; do
    mkdir -p -- "$BACKUP_DIR/leftover${path%/*}" && mv -- "$path" "$BACKUP_DIR/leftover$path"
    echo "moved an earlier opsctl temporary file out of nginx's tree: $path -> $BACKUP_DIR/leftover$path"
  done
fi

# What nginx really loads: every file `nginx -T` names (an include glob's matches included).
dump=$(nginx -T 2>/dev/null) || fail 2 "nginx -T failed, nothing changed: $(nginx_error)"
mapfile -t loaded < <(sed -n 's/^# configuration file \(.*\):$/\1/p' <<<"$dump" | sort -u)
defining=()
for path in "${loaded[@]}"; do
  grep -qE "^[[:space:]]*upstream[[:space:]]+${UPSTREAM//./\\.}[[:space:]]*[{]" -- "$path" 2>/dev/null && defining+=("$path")
done
[ "${#defining[@]}" -gt 0 ] || fail 2 "no file nginx loads defines upstream $UPSTREAM (nginx -T), nothing changed"
[ "${#defining[@]}" -eq 1 ] || fail 2 "upstream $UPSTREAM is defined in ${#defining[@]} files nginx loads (${defining[*]}), nothing changed"
section=${defining[0]}            # the path as nginx names it (a sites-enabled link, say)
file=$(readlink -f -- "$section") # the file to edit: a link stays a link
if [ -n "${CONFIG:-}" ]; then
  wanted=$(readlink -f -- "$CONFIG" || true)
  loaded_real=$(for path in "${loaded[@]}"; do readlink -f -- "$path"; done)
  grep -qxF -- "$wanted" <<<"$loaded_real" || fail 2 "config $CONFIG is not a file nginx loads (nginx -T), nothing changed"
  [ "$wanted" = "$file" ] || fail 2 "config $CONFIG does not define upstream $UPSTREAM ($section does), nothing changed"
fi
read -r servers _ < <(upstream_awk count <"$file")
[ "$servers" -gt 0 ] || fail 2 "$ADDRESS:$PORT is not a server of upstream $UPSTREAM in $file, nothing changed"

backup_dir_ready
mkdir -p -- "$BACKUP_DIR${file%/*}"
saved=$BACKUP_DIR$file            # the version before this edit, kept for the operator
new=$(mktemp "$saved.new-XXXXXX")
trap 'rm -f -- "$new"' EXIT
upstream_awk "$STATE" <"$file" >"$new"

master=$(cat /run/nginx.pid)
# A run killed between its edit and its reload leaves the file right and nginx on the old
# config: reload too when the file is not older than the youngest worker.
youngest=$(ps -o etimes= --ppid "$master" | awk 'NR == 1 || $1 < m { m = $1 } END { print m }')
stale=$(( $(stat -c %Y -- "$file") >= $(date +%s) - ${youngest:-0} ))
if cmp -s -- "$file" "$new"; then
  edited=
else
  edited=1
  cp -p -- "$file" "$saved"
  # Rewritten in place: the file keeps its inode, owner, mode and security label, and no
  # temporary file ever sits in a directory nginx includes.
  cat -- "$new" >"$file"
  if ! out=$(nginx -t 2>&1); then
    cat -- "$saved" >"$file"
    fail 3 "nginx -t failed after marking $ADDRESS $STATE, file restored: $(grep -m 1 emerg <<<"$out" || echo "$out")"
  fi
fi
if [ -n "$edited" ] || [ "$stale" = 1 ]; then
  # The change is live once a new generation of workers runs (the old ones may still finish
  # requests): the collection's one signal-and-wait rule (signal-wait.sh, sent before this script).
  opsctl_signal_and_wait HUP /run/nginx.pid 5 || fail 4 "nginx on this balancer did not start new workers within 5 s"
fi
# What the reloaded master read, file by file: the upstream's server lines must all say it.
dump=$(nginx -T 2>/dev/null) || fail 5 "nginx -T failed after the reload: $(nginx_error)"
read -r servers downs < <(upstream_awk count "$section" <<<"$dump")
if [ "$servers" -eq 0 ] || { [ "$STATE" = drained ] && [ "$downs" -ne "$servers" ]; } || { [ "$STATE" = serving ] && [ "$downs" -ne 0 ]; }; then
  fail 5 "nginx -T shows $downs of $servers server lines of $ADDRESS:$PORT down in upstream $UPSTREAM ($section), expected $STATE"
fi
if [ -n "$edited" ] || [ "$stale" = 1 ]; then echo "changed"; else echo "unchanged"; fi
