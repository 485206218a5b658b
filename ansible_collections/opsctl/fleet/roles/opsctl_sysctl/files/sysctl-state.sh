# shellcheck shell=sh
# shellcheck disable=SC3012  # string > in test: dash and bash (the /bin/sh of every target) compare bytes, as systemd orders sysctl.d
# managed by opsctl: OUR_FILE's state and each wanted sysctl key's state on this host, as one
# JSON object {"file": {...}, "keys": {key: {...}}}, so one command is all a converged run costs.
# usage: sh -c "$(cat sysctl-state.sh)" sh OUR_FILE key=value|key>=value ...
# file: as opsctl.fleet.file_state reports it (exists, checksum = SHA-1, owner, group, mode).
# status: same (running = wanted), apply (running differs, writable), higher (an at-least key
# already above), absent (no such key here, e.g. netdev_max_backlog in a network namespace),
# readonly (the key exists but is not writable here, e.g. a global key in a container).
# shadowed_by: a sysctl file read after ours that sets the same key (it wins at boot).
file=$1; shift
ours=$(basename "$file")
if [ -f "$file" ]; then
    meta=$(stat -L -c '%U %G %04a' "$file")   # owner group mode: names without spaces
    sum=$(sha1sum < "$file")
    rest=${meta#* }
    printf '{"file": {"exists": true, "checksum": "%s", "owner": "%s", "group": "%s", "mode": "%s"}, "keys": {' \
        "${sum%% *}" "${meta%% *}" "${rest%% *}" "${rest#* }"
else
    printf '{"file": {"exists": false}, "keys": {'
fi
later=""
for f in /etc/sysctl.d/*.conf /run/sysctl.d/*.conf /usr/local/lib/sysctl.d/*.conf /usr/lib/sysctl.d/*.conf \
         /lib/sysctl.d/*.conf; do
    [ -f "$f" ] && [ "$(basename "$f")" \> "$ours" ] && later="$later $f"
done
[ -f /etc/sysctl.conf ] && later="$later /etc/sysctl.conf"
sep=''
for arg in "$@"; do
    case $arg in
        *'>='*) key=${arg%%>=*}; want=${arg#*>=}; atleast=1 ;;
        *) key=${arg%%=*}; want=${arg#*=}; atleast=0 ;;
    esac
    path=/proc/sys/$(printf '%s' "$key" | tr . /)
    running=""
    if [ ! -e "$path" ]; then
        status=absent
    else
        running=$(tr '\t' ' ' < "$path" | tr -s ' ')
        if [ ! -w "$path" ]; then status="readonly"
        elif [ "$running" = "$want" ]; then status=same
        elif [ "$atleast" = 1 ] && [ "$running" -ge "$want" ] 2>/dev/null; then status=higher
        else status=apply
        fi
    fi
    shadow=""
    pattern="^[[:space:]]*-?$(printf '%s' "$key" | sed 's/\./[.\/]/g')[[:space:]]*="
    for f in $later; do
        grep -Eq "$pattern" "$f" 2>/dev/null && shadow=$f
    done
    printf '%s"%s": {"status": "%s", "running": "%s", "wanted": "%s", "shadowed_by": "%s"}' \
        "$sep" "$key" "$status" "$running" "$want" "$shadow"
    sep=', '
done
printf '}}\n'
