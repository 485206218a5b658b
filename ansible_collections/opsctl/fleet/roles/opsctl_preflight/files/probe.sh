#!/bin/sh
# shellcheck disable=SC2016,SC2034  # section bodies are strings that run later, in a subshell: they expand there
# opsctl readiness probe: reads a host's running state and prints it as one JSON object.
# It never changes anything on the host. Needs only /bin/sh, coreutils, sed, awk; uses ss
# (iproute2), ps (procps), find, nginx, php-fpm, cgi-fcgi when present. Each section is read on
# its own (in a subshell; commands that can block run under `timeout`), so one failing read never
# hides the others. Parsing is done by the caller (plugins/plugin_utils/probe_facts.py), so the same raw output
# serves opsctl and Ansible.
# Output: {"probe": 1, "sections": {"NAME": {"out": "...", "rc": N}, ...}}
# Sent after discover.sh (what runs on the host, written once for the probe, the capacity role
# and the rolling reload), which defines discover().
#
# Every fork counts: twenty hosts may share two CPUs with the controller, so sections read /proc
# with shell builtins, one awk replaces a grep per file, and the JSON is encoded once, at the end.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH LC_ALL=C
ACCESS_LINES=${OPSCTL_PROBE_ACCESS_LINES:-20000}
SAMPLE_CS=${OPSCTL_PROBE_SAMPLE_CS:-100}   # the sampling interval, in 1/100 s
# Only these sections (names, blank-separated; empty: all). `capacity` names what the capacity
# model reads (the host's size and the masters it runs): the opsctl_capacity role and harden's plan
# read a host with this same probe, so discovery is written once.
SECTIONS=${OPSCTL_PROBE_SECTIONS:-}
[ "$SECTIONS" = capacity ] && SECTIONS="meta meminfo masters php_fpm_tt nginx_T haproxy"
MARK=$(printf '\036opsctl-')
# Prefixes that bound a command that can block (NFS, D-Bus, a stuck socket), where timeout exists.
T2="" T4=""
if command -v timeout >/dev/null 2>&1; then T2="timeout 2" T4="timeout -k 1 4"; fi

# section NAME BODY: frame BODY's output and exit status; BODY runs in a subshell of its own.
section() {
	wanted "$1" || return 0
	echo "${MARK}section $1"
	(eval "$2") 2>&1
	rc=$?
	echo
	echo "${MARK}rc $rc"
}

wanted() {
	[ -z "$SECTIONS" ] && return 0
	case " $SECTIONS " in *" $1 "*) return 0 ;; esac
	return 1
}

# Centiseconds since boot, from /proc/uptime, with no fork.
uptime_cs() {
	read -r up _ </proc/uptime
	echo "${up%.*}${up#*.}"
}

SAMPLE='awk "/^TcpExt:/ || /^cpu / || /^ctxt /" /proc/net/netstat /proc/stat
read -r up _ </proc/uptime
echo "$up"'

# HAProxy: the first haproxy process of this mount namespace whose parent is none (the -D daemon
# or the -W master); the files it was started with (-f; a directory: its *.cfg), `haproxy -c` of
# them, their text, and `show info` / `show stat` from the admin socket they name (python3, which
# every host Ansible manages has; none: no runtime figures).
haproxy_probe() {
	mnt=$(readlink /proc/self/ns/mnt)
	for d in /proc/[0-9]*; do
		read -r comm 2>/dev/null <"$d/comm" || continue
		[ "$comm" = haproxy ] || continue
		read -r _ _ _ ppid _ 2>/dev/null <"$d/stat"
		read -r parent 2>/dev/null <"/proc/$ppid/comm"
		[ "$parent" = haproxy ] && continue
		ns=$(readlink "$d/ns/mnt" 2>/dev/null)
		[ -n "$ns" ] && [ "$ns" != "$mnt" ] && continue
		exe=$(readlink "$d/exe" 2>/dev/null) || exe=haproxy
		files=""
		# shellcheck disable=SC2046  # the process's arguments, as words
		set -- $(tr '\0' ' ' <"$d/cmdline")
		while [ $# -gt 1 ]; do
			if [ "$1" = -f ]; then
				if [ -d "$2" ]; then
					for f in "$2"/*.cfg; do [ -f "$f" ] && files="$files $f"; done
				else
					files="$files $2"
				fi
				shift
			fi
			shift
		done
		echo "### process ${d#/proc/} ${exe% (deleted)}$files"
		args=""
		for f in $files; do args="$args -f $f"; done
		# shellcheck disable=SC2086  # -f FILE pairs
		out=$($T4 "${exe% (deleted)}" -c $args 2>&1)
		echo "### check $?"
		printf "%s\n" "$out" | grep -m 3 -E "ALERT|WARNING|valid"
		for f in $files; do echo "### file $f"; cat "$f"; echo; done
		# shellcheck disable=SC2086
		sock=$(awk '$1 == "stats" && $2 == "socket" && ($0 !~ / level / || $0 ~ / level admin/) { sub(/^unix@/, "", $3); print $3; exit }' $files)
		case $sock in /*) ;; *) return 0 ;; esac
		command -v python3 >/dev/null 2>&1 || return 0
		$T4 python3 - "$sock" <<"PY"
import socket, sys
for command in ("show info", "show stat"):
    conn = socket.socket(socket.AF_UNIX)
    conn.settimeout(2)
    try:
        conn.connect(sys.argv[1])
        conn.sendall(command.encode() + b"\n")
        print("### api " + command)
        print(b"".join(iter(lambda: conn.recv(65536), b"")).decode(errors="replace"))
    except OSError as exc:
        print("### api error " + str(exc))
    finally:
        conn.close()
PY
		return 0
	done
	echo absent
}

probe() {
	FOUND=$(discover)
	section masters 'printf "%s\n" "$FOUND"'
	section sample0 "$SAMPLE"
	START=$(uptime_cs)

	section meta '
read -r h </proc/sys/kernel/hostname
echo "hostname=$h"
date +"epoch=%s%nutc_offset=%z"
tz=""
[ -r /etc/timezone ] && read -r tz </etc/timezone
if [ -z "$tz" ] && [ -L /etc/localtime ]; then tz=$(readlink /etc/localtime); tz=${tz#*zoneinfo/}; fi
echo "timezone=$tz"
read -r k </proc/sys/kernel/osrelease
echo "kernel=$k"
echo "cpus=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo)"
[ -d /run/systemd/system ] && echo "systemd=1" || echo "systemd=0"
while read -r key value _; do
	case $key in Uid:) uid=$value ;; CapBnd:) capbnd=$value ;; esac
done </proc/self/status
echo "uid=$uid"
# The most open files a process may get: fs.nr_open, unless CAP_SYS_RESOURCE is missing from
# the bounding set (containers, the lab): then nothing can rise above the current hard limit.
if [ $(( 0x${capbnd:-0} >> 24 & 1 )) = 1 ]; then n=$(cat /proc/sys/fs/nr_open); else n=$(ulimit -Hn); fi
echo "nofile_max=$n"
command -v python3 >/dev/null && echo "python3=1" || echo "python3=0"'

	# One grep, not the read builtin: dash reads a byte at a time and /proc/sys integers answer
	# only a read from offset 0. Keys the host lacks (network namespaces) are left out.
	section sysctl '
cd /proc/sys && grep -Hs . net/core/somaxconn net/ipv4/tcp_max_syn_backlog net/ipv4/tcp_max_tw_buckets \
	net/ipv4/tcp_tw_reuse net/ipv4/tcp_tw_recycle net/core/netdev_max_backlog fs/file-max \
	net/ipv4/tcp_abort_on_overflow net/ipv4/ip_local_port_range
true'

	section listeners 'ss -Hlntxp 2>/dev/null || ss -lntxp'
	section close_wait 'ss -Htn state close-wait 2>/dev/null || ss -tn state close-wait'
	section meminfo '
while read -r key value _; do
	case $key in MemTotal:|MemAvailable:|SwapTotal:|SwapFree:) echo "$key $value kB" ;; esac
done </proc/meminfo'
	section processes 'ps -eo pid=,ppid=,comm=,args= 2>/dev/null || for p in /proc/[0-9]*; do
	printf "%s 0 %s %s\n" "${p#/proc/}" "$(cat $p/comm 2>/dev/null)" "$(tr "\0" " " <$p/cmdline 2>/dev/null)"; done'
	section limits '
for d in /proc/[0-9]*; do
	read -r comm 2>/dev/null <$d/comm || continue
	case $comm in nginx | php-fpm*) ;; *) continue ;; esac
	while read -r w1 w2 w3 soft hard _; do
		[ "$w1 $w2 $w3" = "Max open files" ] && echo "${d#/proc/} $comm $soft $hard"
	done <$d/limits 2>/dev/null
done
true'

	# php-fpm -tt (the effective configuration) once per master: two sections read it, and PHP is
	# slow to start. -v only where the binary's name does not carry the version.
	FPM_TT=$(wanted php_fpm_tt || wanted php_fpm_status || exit 0
	printf '%s\n' "$FOUND" | while read -r kind state pid exe conf _; do
		[ "$kind" = php-fpm ] || continue
		echo "### master $state $pid $exe $conf"
		if [ "$exe" = - ]; then
			echo "ERROR: the binary of master pid $pid is not readable (/proc/$pid/exe); probe as root"
			echo "### rc 1"
			continue
		fi
		case ${exe##*/} in *[0-9].[0-9]*) ;; *) "$exe" -v 2>/dev/null ;; esac
		# Which file defines each section: -tt does not say, and harden edits a pool in its own
		# file. The configuration and its include globs (relative ones: to the binary's prefix).
		[ "$conf" = - ] || { echo "$conf"; sed -n 's/^[[:space:]]*include[[:space:]]*=[[:space:]]*//p' "$conf" 2>/dev/null; } |
			while read -r pattern; do
				case $pattern in /*) ;; *) pattern=${exe%/sbin/*}/$pattern ;; esac
				for f in $pattern; do
					[ -f "$f" ] && sed -n "s|^[[:space:]]*\[\([^]]*\)\].*|### defines $f \1|p" "$f"
				done
			done
		if [ "$conf" = - ]; then $T4 "$exe" -tt 2>&1; else $T4 "$exe" -tt -y "$conf" 2>&1; fi
		echo "### rc $?"
	done)

	section php_fpm_tt 'printf "%s\n" "$FPM_TT"'

	section php_fpm_status '
if ! command -v cgi-fcgi >/dev/null 2>&1; then echo "skip: cgi-fcgi not installed (Debian: libfcgi-bin)"; exit 0; fi
printf "%s\n" "$FPM_TT" | awk "
		{ sub(/^\[[^]]*\] NOTICE: /, \"\") }
		/^### master / { m++; pool = \"\" }
		/^\[/ { name = \$0; gsub(/[\[\]]/, \"\", name); pool = m \" \" name }
		/^\tlisten = / { listen[pool] = \$3 }
		/^\tpm.status_path = / { path[pool] = \$3 }
		/^\tpm.status_listen = / { slisten[pool] = \$3 }
		END { for (p in path) if (path[p] != \"undefined\") {
			l = (slisten[p] != \"\" && slisten[p] != \"undefined\") ? slisten[p] : listen[p]
			split(p, key, \" \"); print l, path[p], key[2] } }" | while read -r listen path pool; do
	echo "### pool $listen $pool"
	SCRIPT_NAME=$path SCRIPT_FILENAME=$path REQUEST_METHOD=GET QUERY_STRING=json \
		$T2 cgi-fcgi -bind -connect "$listen" 2>&1
	echo
done'

	# nginx -T once, of the configuration the running master was started with (-p, -c): nginx_T
	# carries it, access_log reads the access logs it names. Its exit status ends it (### rc N).
	# shellcheck disable=SC2046  # the master's words: binary, configuration, prefix
	NGINX_T=$(wanted nginx_T || wanted access_log || exit 0
		set -- $(printf "%s\n" "$FOUND" | awk '$1 == "nginx" { print $4, $5, $6; exit }')
		[ $# = 3 ] || { echo "absent"; echo "### rc 3"; exit 0; }
		exe=$1; shift
		[ "$1" = - ] && set -- "" "$2"
		[ "$2" = - ] && set -- "$1" ""
		$T4 "$exe" ${2:+-p "$2"} ${1:+-c "$1"} -T 2>&1
		echo "### rc $?")
	section nginx_T 'printf "%s\n" "${NGINX_T%### rc *}"; exit "${NGINX_T##*### rc }"'
	section haproxy haproxy_probe

	section init_scripts '
set --
for f in /etc/init.d/php*-fpm* /etc/init.d/nginx $(printf "%s\n" "$FOUND" | sed -n "s/.* scripts=\([^ ]*\).*/\1/p" | tr , " "); do
	[ -f "$f" ] && [ -r "$f" ] && case " $* " in *" $f "*) ;; *) set -- "$@" "$f" ;; esac
done
[ $# = 0 ] || awk "FNR == 1 { print \"### file \" FILENAME }
	/^[A-Z_]*(TIMEOUT|SCHEDULE)=|^(GRACE|RELOAD_SIGNAL)=|--retry|killproc|--signal|kill -|opsctl_signal_and_wait|QUIT|TERM/ { print FNR \":\" \$0 }" "$@"'

	section systemd_units '
set --
for d in /etc/systemd/system /run/systemd/system /usr/lib/systemd/system /lib/systemd/system; do
	for f in $d/php*-fpm*.service $d/nginx.service $d/logrotate.timer $d/php*-fpm*.service.d/*.conf \
		$d/nginx.service.d/*.conf $d/logrotate.timer.d/*.conf; do
		[ -f "$f" ] && [ -r "$f" ] && set -- "$@" "$f"
	done
	for u in $(printf "%s\n" "$FOUND" | sed -n "s/.* unit=\([^ ]*\).*/\1/p"); do
		for f in "$d/$u" "$d/$u.d"/*.conf; do
			[ -f "$f" ] && [ -r "$f" ] && case " $* " in *" $f "*) ;; *) set -- "$@" "$f" ;; esac
		done
	done
done
[ $# = 0 ] || awk "FNR == 1 { print \"### file \" FILENAME } !/^[[:space:]]*(#|;|\$)/" "$@"'

	section cron '
set --
for f in /etc/crontab /etc/cron.d/* /var/spool/cron/crontabs/* /var/spool/cron/* /etc/anacrontab \
	/etc/cron.hourly/* /etc/cron.daily/* /etc/cron.weekly/* /etc/cron.monthly/*; do
	[ -f "$f" ] && [ -r "$f" ] && set -- "$@" "$f"
done
[ $# = 0 ] || awk "
	FNR == 1 {
		f = FILENAME; script = f ~ /^\/etc\/cron\.(hourly|daily|weekly|monthly)\//
		if (script) { p = f; sub(/^\/etc\/cron\./, \"\", p); sub(/\/.*/, \"\", p); print \"### script \" f \" \" p }
		else {
			kind = \"system\"
			if (f ~ /^\/var\/spool\/cron\//) { u = f; sub(/.*\//, \"\", u); kind = \"user:\" u }
			else if (f == \"/etc/anacrontab\") kind = \"anacron\"
			print \"### file \" f \" \" kind
		}
	}
	!script && !/^[[:space:]]*(#|\$)/ { print }
	script && /(php[0-9.]*-fpm|nginx|logrotate).*(restart|stop|reload|force-reload)|(restart|stop).*(php[0-9.]*-fpm|nginx)|killall|pkill|^exec|logrotate/ {
		print FNR \":\" \$0 }" "$@"'

	section logrotate '
set --
for f in /etc/logrotate.conf /etc/logrotate.d/*; do [ -f "$f" ] && [ -r "$f" ] && set -- "$@" "$f"; done
[ $# = 0 ] || awk "FNR == 1 { print \"### file \" FILENAME } !/^[[:space:]]*(#|\$)/" "$@"'

	# Rotated logs (numbered, compressed or dated) older than a day: what pruning will delete.
	section logs_due '
$T4 find /var/log -xdev -type f \( \( -name "*.gz" -o -name "*.[0-9]" -o -name "*.[0-9].log" \
	-o -name "*-20[0-9][0-9][0-9][0-9][0-9][0-9]*" \) -mtime +1 -printf "due %s\n" -o -true \) \
	-printf "all %s\n" 2>/dev/null |
	awk "\$1 == \"due\" { n++; s += \$2 } \$1 == \"all\" { t += \$2 }
		END { printf \"files=%d bytes=%d\ntotal_bytes=%d\n\", n, s, t }"'

	section disk '$T4 df -Pk /var/log /'

	section clock '
if command -v timedatectl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	echo "timedatectl NTPSynchronized=$($T4 timedatectl show -p NTPSynchronized --value 2>/dev/null)"
fi
if command -v chronyc >/dev/null 2>&1; then $T4 chronyc -n tracking 2>&1 | sed "s/^/chronyc /"; fi
if command -v ntpq >/dev/null 2>&1; then $T4 ntpq -pn 2>&1 | sed "s/^/ntpq /"; fi
true'

	section access_log '
seen=" "
for f in /var/log/nginx/*access*.log $(printf "%s\n" "$NGINX_T" |
	awk "\$1 == \"access_log\" && \$2 ~ /^\// { sub(/;\$/, \"\", \$2); print \$2 }"); do
	[ -f "$f" ] || continue
	case $seen in *" $f "*) continue ;; esac
	seen="$seen$f "
	tail -n '"$ACCESS_LINES"' "$f" | awk -v f="$f" "
		{ for (i = 1; i <= NF; i++) if (\$i ~ /^\"(GET|POST|HEAD|PUT|DELETE|PATCH|OPTIONS)/) { s = \$(i + 3); break } }
		s ~ /^[0-9][0-9][0-9]\$/ { n++; c[s]++; if (s ~ /^5/) f5++ }
		END { printf \"file=%s lines=%d s499=%d s5xx=%d s502=%d s504=%d\n\", f, n, c[\"499\"], f5, c[\"502\"], c[\"504\"] }"
done'

	# The second sample closes the interval for iowait, context switches and listen drops.
	wanted sample1 || return 0
	REST=$((SAMPLE_CS - ($(uptime_cs) - START)))
	[ "$REST" -gt 5 ] && sleep "$(printf '%d.%02d' $((REST / 100)) $((REST % 100)))"
	section sample1 "$SAMPLE"
}

# One pass turns the framed sections into JSON: control bytes dropped (but tab, CR and the
# frame's own \036), backslash, quote, tab and CR escaped, lines joined with \n, trailing
# empty lines dropped as a command substitution would.
probe | tr -d '\000-\010\013\014\016-\035\037' | awk -v mark="$MARK" '
	function swap(s, re, to,    n, parts, i, o) {
		n = split(s, parts, re)
		o = parts[1]
		for (i = 2; i <= n; i++) o = o to parts[i]
		return o
	}
	BEGIN { printf "{\"probe\": 1, \"sections\": {"; sep = ""; skip = length(mark) }
	index($0, mark) == 1 {
		word = substr($0, skip + 1)
		if (word ~ /^section /) {
			printf "%s\"%s\": {\"out\": \"", sep, substr(word, 9)
			first = 1; empty = 0; sep = ", "
		} else printf "\", \"rc\": %d}", substr(word, 4) + 0
		next
	}
	$0 == "" { empty++; next }
	{
		line = $0
		# split() by a string, not /re/: a regex literal as an argument would be matched against $0
		if (index(line, "\\")) line = swap(line, "\\\\", "\\\\")
		if (index(line, "\"")) line = swap(line, "\"", "\\\"")
		if (index(line, "\t")) line = swap(line, "\t", "\\t")
		if (index(line, "\r")) line = swap(line, "\r", "\\r")
		if (!first) printf "\\n"
		for (; empty > 0; empty--) printf "\\n"
		first = 0
		printf "%s", line
	}
	END { print "}}" }'
