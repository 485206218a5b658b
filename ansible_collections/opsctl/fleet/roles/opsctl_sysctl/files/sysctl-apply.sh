# shellcheck shell=sh
# managed by opsctl: apply every key of FILE to the running kernel, once, and verify it.
# A value the kernel refuses (or silently changes) is removed from FILE so it is never
# persisted, and the script fails naming it; the other keys stay applied.
# usage: sh -c "$(cat sysctl-apply.sh)" sh FILE
file=$1
refused=""
detail=""
while IFS= read -r line; do
    case $line in ''|'#'*) continue ;; esac
    key=$(printf '%s' "${line%%=*}" | tr -d ' \t')
    value=$(printf '%s' "${line#*=}" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
    err=$(sysctl -q -w "$key=$value" 2>&1)
    now=$(sysctl -n "$key" 2>/dev/null | tr '\t' ' ' | tr -s ' ')
    if [ "$now" != "$value" ]; then
        refused="$refused $key"
        detail="$detail $key=$value (${err:-the kernel kept $now});"
    fi
done < "$file"
if [ -n "$refused" ]; then
    for key in $refused; do
        sed -i "/^[[:space:]]*$(printf '%s' "$key" | sed 's/\./\\./g')[[:space:]]*=/d" "$file"
    done
    echo "refused by the kernel, removed from $file:$detail" >&2
    exit 1
fi
echo "applied $file"
