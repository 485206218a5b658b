# shellcheck shell=sh
# opsctl watch, the host side: one long-lived POSIX sh sampler per host, sent on stdin after
# discover.sh (which defines discover()). It never changes anything on the host.
#
# Paced by the controller: every line the controller sends on stdin asks for one sample, and
# the sampler answers with one JSON line; so every host samples at the same moment and a
# sampler never runs faster than asked. It exits when its stdin closes (the controller or the
# connection is gone) or after OPSCTL_WATCH_MAX samples, never unbounded.
#
# Per sample it runs: ss once (listeners), ss once more if a php-fpm pool listens on TCP
# (CLOSE_WAIT), timeout + cgi-fcgi per php-fpm status page, wc per access log (and tail + head
# when it grew), and one awk that reads /proc and writes the JSON line. What runs only once, at
# the start: discovery, nginx -T (the access logs and their formats), php-fpm -tt (the status
# pages), ss -p (which listeners are nginx's and php-fpm's; again every REFRESH samples).
# The sampler's own CPU time (this shell and its children, /proc/$$/stat) is in every line:
# the controller shows the cost per sample.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH LC_ALL=C
MAX=${OPSCTL_WATCH_MAX:-3600}
LOG_CAP=${OPSCTL_WATCH_LOG_CAP:-4194304}   # bytes of access log read per sample and file, at most
REFRESH=${OPSCTL_WATCH_REFRESH:-60}        # samples between two readings of who owns which listener
T2="" T4=""
if command -v timeout >/dev/null 2>&1; then T2="timeout 2" T4="timeout -k 1 4"; fi
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)

# Listening sockets: `ss -Hntx state listening`, not `ss -l`: -l asks the kernel for closed
# sockets too, and to find those it walks the whole established-connection hash (sized by the
# machine's memory, not by its connections: 262144 buckets on 24 GB; ss -Hlntx 4.7 ms of CPU,
# this 2.0 ms). With one state asked for, ss leaves out the State column, which older versions
# print: L is the offset of the columns after it (Recv-Q, Send-Q, Local).
LISTENING='ss -Hntx state listening'

# owners: "KIND ADDRESS" of every socket an nginx or php-fpm process listens on (ss -p scans
# every process's file descriptors: too dear for every sample).
owners() {
	$LISTENING -p 2>/dev/null | awk '{ L = ($2 == "LISTEN") ? 1 : 0 }
		/"nginx"/ { print "nginx", $(4 + L); next } /"php-fpm/ { print "php-fpm", $(4 + L) }'
}

# fpm_status_pools: "LISTEN PATH POOL" of every pool of a running master with a status page
# (pm.status_listen if set, else the pool's own listen), from php-fpm -tt as the probe reads it.
fpm_status_pools() {
	command -v cgi-fcgi >/dev/null 2>&1 || return 0
	printf '%s\n' "$FOUND" | while read -r kind state _ exe conf _; do
		case $kind:$state:$exe in php-fpm:running:/*) ;; *) continue ;; esac
		if [ "$conf" = - ]; then $T4 "$exe" -tt 2>&1; else $T4 "$exe" -tt -y "$conf" 2>&1; fi | awk '
			{ sub(/^\[[^]]*\] NOTICE: /, "") }
			/^\[/ { pool = $0; gsub(/[\[\]]/, "", pool) }
			/^\tlisten = / { listen[pool] = $3 }
			/^\tpm.status_path = / { path[pool] = $3 }
			/^\tpm.status_listen = / { slisten[pool] = $3 }
			END { for (p in path) if (path[p] != "undefined" && path[p] != "") {
				l = (slisten[p] != "" && slisten[p] != "undefined") ? slisten[p] : listen[p]
				print l, path[p], p } }'
	done
}

# access_logs: "FILE N" per access log nginx writes (from nginx -T of the running master, else
# Debian's default): N is how many blank-separated fields follow $upstream_response_time in its
# log_format, so that awk finds it as $(NF - N); -1 when the format has none (or one we cannot
# count from the end: a quoted field after it).
access_logs() {
	# shellcheck disable=SC2046  # the master's words: binary, configuration, prefix
	set -- $(printf "%s\n" "$FOUND" | awk '$1 == "nginx" && $2 == "running" { print $4, $5, $6; exit }')
	if [ $# = 3 ] && [ "$1" != - ]; then
		exe=$1; shift
		[ "$1" = - ] && set -- "" "$2"
		[ "$2" = - ] && set -- "$1" ""
		$T4 "$exe" ${2:+-p "$2"} ${1:+-c "$1"} -T 2>/dev/null
	fi | awk '
		function urt_from_end(fmt,    at, tail) {
			at = index(fmt, "$upstream_response_time")
			if (!at) return -1
			tail = substr(fmt, at + length("$upstream_response_time"))
			if (index(tail, "\"")) return -1
			return split(tail, parts, " ")
		}
		# log_format NAME ...; may span lines: gather its quoted parts until the ";".
		/^[ \t]*log_format[ \t]/ { name = $2; fmt = ""; inside = 1; $1 = ""; $2 = "" }
		inside {
			line = $0; sub(/^[ \t]+/, "", line)
			gsub(/'"'"'/, "", line)
			done = sub(/;[ \t]*$/, "", line)
			fmt = fmt line
			if (done) { formats[name] = urt_from_end(fmt); inside = 0 }
			next
		}
		/^[ \t]*access_log[ \t]+\// {
			file = $2; sub(/;$/, "", file); f = $3; sub(/;$/, "", f)
			if (f == "" || f ~ /=/) f = "combined"
			if (!(file in seen)) { seen[file] = 1; order[++n] = file; fmt_of[file] = f }
		}
		END {
			if (!n) { order[++n] = "/var/log/nginx/access.log"; fmt_of[order[n]] = "combined" }
			for (i = 1; i <= n; i++) {
				f = fmt_of[order[i]]
				print order[i], (f in formats) ? formats[f] : -1
			}
		}'
}

# shellcheck disable=SC2016  # an awk program
# The JSON line: the tagged output of ss, cgi-fcgi and the new access log bytes on stdin, then
# /proc. Counters are sent raw; the controller turns them into rates.
SAMPLE_AWK='
function str(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return "\"" s "\"" }
function num(key, text,    v) {
	if (!match(text, "\"" key "\":[0-9]+")) return "null"
	v = substr(text, RSTART, RLENGTH); sub(/.*:/, "", v); return v + 0
}
function fpm_done() {
	if (pool == "") return
	ok = index(body, "\"active processes\"") ? 1 : 0
	fpm = fpm (fpm == "" ? "" : ",") "[" str(pool) "," str(plisten) "," ok "," num("active processes", body) "," \
		num("idle processes", body) "," num("listen queue", body) "," num("listen queue len", body) "," \
		num("max children reached", body) "," num("slow requests", body) "]"
	pool = ""
}
BEGIN {
	n = split(OWNERS, w, " ")
	for (i = 1; i + 1 <= n; i += 2) owner[w[i + 1]] = w[i]
	step = log(1.15)
}
FILENAME == "-" && /^@/ {
	fpm_done()
	part = $1
	if (part == "@fpm") { pool = $3; plisten = $2; body = "" }
	if (part == "@log") { logfiles++; urt_n = $3 + 0; skip_first = ($4 > 0); lnew += $5; lread += $6; if (urt_n >= 0) has_urt = 1 }
	next
}
FILENAME == "-" && part == "@ss" {
	L = ($2 == "LISTEN") ? 1 : 0
	a = $(4 + L)
	if (a in owner) listen = listen (listen == "" ? "" : ",") "[" str(owner[a]) "," str(a) "," ($(2 + L) + 0) "," ($(3 + L) + 0) "]"
	next
}
FILENAME == "-" && part == "@cw" { cw++; next }
FILENAME == "-" && part == "@fpm" { body = body $0; next }
FILENAME == "-" && part == "@log" {
	if (NF == 0) next
	if (skip_first) { skip_first = 0; next }   # cut in the middle when the log grew past the cap
	s = ""
	for (i = 1; i <= NF; i++) if ($i ~ /^"(GET|POST|HEAD|PUT|DELETE|PATCH|OPTIONS|CONNECT|TRACE)$/ || $i == "\"-\"") {
		s = ($i == "\"-\"") ? $(i + 1) : $(i + 3); break
	}
	if (s !~ /^[1-5][0-9][0-9]$/) s = "other"
	status[s]++
	lines++
	if (urt_n >= 0 && NF > urt_n) {
		v = $(NF - urt_n); sub(/,$/, "", v)
		if (v ~ /^[0-9]+(\.[0-9]+)?$/) urt[int(log(v * 1000 + 1) / step)]++
	}
	next
}
FILENAME ~ /netstat$/ && $1 == "TcpExt:" {
	if (!tcpnames) { for (i = 2; i <= NF; i++) tcpname[i] = $i; tcpnames = 1; next }
	for (i = 2; i <= NF; i++) { if (tcpname[i] == "ListenOverflows") lo = $i; if (tcpname[i] == "ListenDrops") ld = $i }
	next
}
FILENAME ~ /\/proc\/stat$/ && $1 == "cpu" { cpu_total = $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; iowait = $6; next }
FILENAME ~ /loadavg$/ { load = $1; next }
FILENAME ~ /meminfo$/ && $1 == "MemTotal:" { memt = $2; next }
FILENAME ~ /meminfo$/ && $1 == "MemAvailable:" { mema = $2; next }
FILENAME ~ /uptime$/ { up = $1; next }
FILENAME ~ /\/stat$/ && FILENAME !~ /\/proc\/stat$/ { sub(/^.*\) /, ""); ticks = $12 + $13 + $14 + $15; next }
END {
	fpm_done()
	printf "{\"watch\":1,\"seq\":%d,\"up\":%s,\"hz\":%d,\"ticks\":%d,\"cpu\":[%d,%d],\"load\":%s,\"mem\":[%d,%d],", \
		SEQ, up, HZ, ticks, cpu_total, iowait, load + 0, memt, mema
	printf "\"tcp\":[%d,%d],\"listen\":[%s],\"cw\":%s,\"fpm\":[%s],", lo, ld, listen, CWPORTS == "" ? "null" : cw + 0, fpm
	printf "\"log\":{\"files\":%d,\"new\":%d,\"read\":%d,\"lines\":%d,\"s\":{", logfiles, lnew, lread, lines
	sep = ""; for (k in status) { printf "%s\"%s\":%d", sep, k, status[k]; sep = "," }
	printf "},\"urt\":"
	if (!has_urt) printf "null"
	else { printf "{"; sep = ""; for (k in urt) { printf "%s\"%d\":%d", sep, k, urt[k]; sep = "," }; printf "}" }
	print "}}"
}'

# plan_logs: PLAN, one line per access log: "FILE URT CUT NEW OFFSET SIZE", what to read of it
# this sample (from OFFSET to SIZE: the bytes it grew by since the last sample, at most LOG_CAP,
# the newest; CUT=1 when it grew by more). A file that shrank was rotated: read from its start.
# Runs in this shell, not in the sample's pipeline, so that the offsets (OFF_N) persist.
plan_logs() {
	PLAN="" i=0
	while read -r file urt; do
		i=$((i + 1))
		# A log that appears later is new from its first byte.
		[ -f "$file" ] || { eval "OFF_$i=0"; continue; }
		size=$(wc -c <"$file" 2>/dev/null) || continue
		eval "off=\${OFF_$i:-}"
		# The first sample only notes where the log ends: what came before is not "since the last sample".
		[ -n "$off" ] || off=$size
		[ "$size" -ge "$off" ] || off=0
		new=$((size - off)) cut=0
		[ "$new" -le "$LOG_CAP" ] || { off=$((size - LOG_CAP)); cut=1; }
		PLAN="$PLAN$file $urt $cut $new $off $size
"
		eval "OFF_$i=\$size"
	done <<EOF
$LOGS
EOF
}

sample() {
	plan_logs
	# The loops read here-documents, not pipes: a pipe forks a shell for each of its sides.
	{
		echo "@ss"
		$LISTENING 2>/dev/null
		if [ -n "$CWPORTS" ]; then
			echo "@cw"
			ss -Htn state close-wait "( $CWPORTS )" 2>/dev/null
		fi
		[ -z "$POOLS" ] || while read -r listen path pool; do
			[ -n "$pool" ] || continue
			echo "@fpm $listen $pool"
			SCRIPT_NAME=$path SCRIPT_FILENAME=$path REQUEST_METHOD=GET QUERY_STRING=json \
				$T2 cgi-fcgi -bind -connect "$listen" 2>/dev/null
			echo
		done <<EOF
$POOLS
EOF
		while read -r file urt cut new off size; do
			[ -n "$file" ] || continue
			echo "@log $file $urt $cut $new $((size - off))"
			[ "$size" -gt "$off" ] || continue
			tail -c +$((off + 1)) "$file" 2>/dev/null | head -c $((size - off))
			echo   # a last line cut short must not swallow the next tag
		done <<EOF
$PLAN
EOF
	} | awk -v OWNERS="$OWNERS" -v CWPORTS="$CWPORTS" -v SEQ="$SEQ" -v HZ="$HZ" "$SAMPLE_AWK" - \
		/proc/net/netstat /proc/stat /proc/loadavg /proc/meminfo /proc/uptime "/proc/$$/stat"
}

# Who listens where (OWNERS: "KIND ADDRESS" pairs), and the ss filter of the php-fpm TCP
# listeners, whose CLOSE_WAIT sockets are counted (CWPORTS).
read_owners() {
	OWNERS=$(owners)
	CWPORTS=$(printf '%s\n' "$OWNERS" |
		awk '$1 == "php-fpm" && $2 ~ /:[0-9]+$/ { n = split($2, a, ":"); printf "%ssport = :%s", sep, a[n]; sep = " or " }')
}

watch_main() {
	FOUND=$(discover)
	POOLS=$(fpm_status_pools)
	LOGS=$(access_logs)
	SEQ=0
	while :; do
		[ $((SEQ % REFRESH)) = 0 ] && read_owners
		sample
		SEQ=$((SEQ + 1))
		[ "$SEQ" -lt "$MAX" ] || return 0
		read -r _ || return 0
	done
}

# Last line: the whole script is parsed before the first sample, so the controller's lines
# (sent only once that sample arrived) are read by `read`, never as script.
watch_main; exit 0
