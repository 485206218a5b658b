#!/bin/sh
# opsctl readiness probe: reads a host's running state and prints it as one JSON object.
# It never changes anything on the host. Needs only /bin/sh, coreutils, sed, awk; uses ss
# (iproute2), ps (procps), nginx, php-fpm, cgi-fcgi when present. Each section is read on its
# own, with its own time limit, so one failing read never hides the others. Parsing is done
# by the caller (opsctl/probe/facts.py), so the same raw output serves opsctl and Ansible.
# Output: {"probe": 1, "sections": {"NAME": {"rc": N, "out": "..."}, ...}}
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH LC_ALL=C
ACCESS_LINES=${OPSCTL_PROBE_ACCESS_LINES:-20000}
SEP=""

# JSON string of stdin: drop control bytes but tab and CR; escape backslash, quote, tab, CR;
# join the lines with \n. One sed for the whole text: every fork counts, 20 hosts share 2 CPUs.
json_str() {
	tr -d '\000-\010\013\014\016-\037' |
		sed -e ':a' -e '$!N' -e '$!ba' -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/\\t/g' -e 's/\r/\\r/g' \
			-e 's/\n/\\n/g' -e 's/^/"/' -e 's/$/"/'
}

# section NAME SHELL-COMMAND: run it (bounded by timeout when available) and emit its output.
section() {
	name=$1
	shift
	if command -v timeout >/dev/null 2>&1; then
		out=$(timeout -k 1 4 sh -c "$1" 2>&1)
	else
		out=$(sh -c "$1" 2>&1)
	fi
	rc=$?
	printf '%s"%s": {"rc": %d, "out": ' "$SEP" "$name" "$rc"
	if [ -n "$out" ]; then printf '%s' "$out" | json_str; else printf '""'; fi
	printf '}'
	SEP=", "
}

printf '{"probe": 1, "sections": {'
SAMPLE='grep -E "^TcpExt:" /proc/net/netstat; head -n 1 /proc/stat; grep "^ctxt " /proc/stat; date +%s.%N'
section sample0 "$SAMPLE"
START=$(date +%s%N)

section meta '
echo "hostname=$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)"
echo "epoch=$(date +%s)"
echo "utc_offset=$(date +%z)"
tz=""
[ -r /etc/timezone ] && tz=$(cat /etc/timezone)
[ -z "$tz" ] && tz=$(readlink /etc/localtime 2>/dev/null | sed "s|.*zoneinfo/||")
echo "timezone=$tz"
echo "kernel=$(uname -r)"
echo "cpus=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo)"
[ -d /run/systemd/system ] && echo "systemd=1" || echo "systemd=0"
echo "uid=$(id -u)"
# The most open files a process may get: fs.nr_open, unless CAP_SYS_RESOURCE is missing from
# the bounding set (containers, the lab): then nothing can rise above the current hard limit.
capbnd=$(sed -n "s/^CapBnd:[[:space:]]*//p" /proc/self/status)
if [ $(( 0x${capbnd:-0} >> 24 & 1 )) = 1 ]; then echo "nofile_max=$(cat /proc/sys/fs/nr_open)"; else echo "nofile_max=$(ulimit -Hn)"; fi
command -v python3 >/dev/null && echo "python3=1" || echo "python3=0"'

section sysctl '
for k in net/core/somaxconn net/ipv4/tcp_max_syn_backlog net/ipv4/tcp_max_tw_buckets \
	net/ipv4/tcp_tw_reuse net/ipv4/tcp_tw_recycle net/core/netdev_max_backlog fs/file-max \
	net/ipv4/tcp_abort_on_overflow net/ipv4/ip_local_port_range; do
	if [ -r /proc/sys/$k ]; then echo "$(echo $k | tr / .)=$(cat /proc/sys/$k | tr "\t" " ")"; fi
done'

section listeners 'ss -Hlntxp 2>/dev/null || ss -lntxp'
section close_wait 'ss -Htn state close-wait 2>/dev/null || ss -tn state close-wait'
section meminfo 'grep -E "^(MemTotal|MemAvailable|SwapTotal|SwapFree):" /proc/meminfo'
section processes 'ps -eo pid=,ppid=,comm=,args= 2>/dev/null || for p in /proc/[0-9]*; do
	printf "%s 0 %s %s\n" "${p#/proc/}" "$(cat $p/comm 2>/dev/null)" "$(tr "\0" " " <$p/cmdline 2>/dev/null)"; done'
section limits '
# No fork per process: a fleet of busy hosts shares the controller and these CPUs.
for p in $(ps -eo pid=,comm= 2>/dev/null | awk "\$2 ~ /^(nginx|php-fpm)/ {print \$1}"); do
	read -r comm < /proc/$p/comm 2>/dev/null || continue
	while read -r w1 w2 w3 soft hard rest; do
		[ "$w1 $w2 $w3" = "Max open files" ] && echo "$p $comm $soft $hard"
	done < /proc/$p/limits
done
true'

# php-fpm -tt (the effective configuration) once: two sections read it, and PHP is slow to start.
FPM_TT=$(for bin in /usr/sbin/php-fpm* /usr/local/sbin/php-fpm*; do
	[ -x "$bin" ] || continue
	echo "### binary $bin"
	"$bin" -v 2>/dev/null | head -n 1
	timeout 4 "$bin" -tt 2>&1 | sed -e "s/^\[[^]]*\] NOTICE: //"
done)
export FPM_TT

section php_fpm_tt 'printf "%s\n" "$FPM_TT"'

section php_fpm_status '
if ! command -v cgi-fcgi >/dev/null 2>&1; then echo "skip: cgi-fcgi not installed (Debian: libfcgi-bin)"; exit 0; fi
printf "%s\n" "$FPM_TT" | awk "
		/^### binary / { pool = \"\" }
		/^\[/ { pool = \$0; gsub(/[\[\]]/, \"\", pool) }
		/^\tlisten = / { listen[pool] = \$3 }
		/^\tpm.status_path = / { path[pool] = \$3 }
		/^\tpm.status_listen = / { slisten[pool] = \$3 }
		END { for (p in path) if (path[p] != \"undefined\") {
			l = (slisten[p] != \"\" && slisten[p] != \"undefined\") ? slisten[p] : listen[p]
			print p, l, path[p] } }" | while read -r pool listen path; do
	echo "### pool $pool"
	SCRIPT_NAME=$path SCRIPT_FILENAME=$path REQUEST_METHOD=GET QUERY_STRING=json \
		timeout 2 cgi-fcgi -bind -connect "$listen" 2>&1 | tr -d "\r" | sed -n "/^{/p"
done'

section nginx_T 'command -v nginx >/dev/null || { echo "absent"; exit 3; }; nginx -T 2>&1'

section init_scripts '
for f in /etc/init.d/php*-fpm* /etc/init.d/nginx; do
	[ -f "$f" ] || continue
	echo "### file $f"
	grep -nE "^[A-Z_]*(TIMEOUT|SCHEDULE)=|^(GRACE|RELOAD_SIGNAL)=|--retry|killproc|--signal|kill -|QUIT|TERM" "$f"
done'

section systemd_units '
for d in /etc/systemd/system /run/systemd/system /usr/lib/systemd/system /lib/systemd/system; do
	for f in $d/php*-fpm*.service $d/nginx.service $d/logrotate.timer $d/php*-fpm*.service.d/*.conf \
		$d/nginx.service.d/*.conf $d/logrotate.timer.d/*.conf; do
		[ -f "$f" ] || continue
		echo "### file $f"
		grep -vE "^[[:space:]]*(#|;|$)" "$f"
	done
done'

section cron '
emit() { echo "### file $1 $2"; grep -vE "^[[:space:]]*(#|$)" "$1" 2>/dev/null; }
[ -f /etc/crontab ] && emit /etc/crontab system
for f in /etc/cron.d/*; do [ -f "$f" ] && emit "$f" system; done
for f in /var/spool/cron/crontabs/* /var/spool/cron/*; do [ -f "$f" ] && emit "$f" "user:$(basename $f)"; done
[ -f /etc/anacrontab ] && emit /etc/anacrontab anacron
for d in hourly daily weekly monthly; do
	for f in /etc/cron.$d/*; do
		[ -f "$f" ] || continue
		echo "### script $f $d"
		grep -nE "(php[0-9.]*-fpm|nginx|logrotate).*(restart|stop|reload|force-reload)|(restart|stop).*(php[0-9.]*-fpm|nginx)|killall|pkill|^exec|logrotate" "$f"
	done
done'

section logrotate '
for f in /etc/logrotate.conf /etc/logrotate.d/*; do
	[ -f "$f" ] || continue
	echo "### file $f"
	grep -vE "^[[:space:]]*(#|$)" "$f"
done'

section logs_due '
# Rotated logs (numbered, compressed or dated) older than a day: what pruning will delete.
find /var/log -xdev -type f \( -name "*.gz" -o -name "*.[0-9]" -o -name "*.[0-9].log" -o -name "*-20[0-9][0-9][0-9][0-9][0-9][0-9]*" \) \
	-mtime +1 -printf "%s\n" 2>/dev/null | awk "{ n++; s += \$1 } END { printf \"files=%d bytes=%d\n\", n, s }"
find /var/log -xdev -type f -printf "%s\n" 2>/dev/null | awk "{ s += \$1 } END { printf \"total_bytes=%d\n\", s }"'

section disk 'df -Pk /var/log /'

section clock '
if command -v timedatectl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	echo "timedatectl NTPSynchronized=$(timedatectl show -p NTPSynchronized --value 2>/dev/null)"
fi
if command -v chronyc >/dev/null 2>&1; then chronyc -n tracking 2>&1 | sed "s/^/chronyc /"; fi
if command -v ntpq >/dev/null 2>&1; then ntpq -pn 2>&1 | sed "s/^/ntpq /"; fi
true'

section access_log '
for f in /var/log/nginx/*access*.log; do
	[ -f "$f" ] || continue
	tail -n '"$ACCESS_LINES"' "$f" | awk -v f="$f" "
		{ for (i = 1; i <= NF; i++) if (\$i ~ /^\"(GET|POST|HEAD|PUT|DELETE|PATCH|OPTIONS)/) { s = \$(i + 3); break } }
		s ~ /^[0-9][0-9][0-9]\$/ { n++; c[s]++; if (s ~ /^5/) f5++ }
		END { printf \"file=%s lines=%d s499=%d s5xx=%d s502=%d s504=%d\n\", f, n, c[\"499\"], f5, c[\"502\"], c[\"504\"] }"
done'

# The second sample closes a ~1 s interval for iowait, context switches and listen drops.
NOW=$(date +%s%N)
REST=$(( 1000000000 - (NOW - START) ))
if [ "$REST" -gt 50000000 ]; then sleep "$(printf '0.%03d' $((REST / 1000000)))"; fi
section sample1 "$SAMPLE"
printf '}}\n'
