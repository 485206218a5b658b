# shellcheck shell=sh
# managed by opsctl: which nginx and php-fpm masters run on this host, read from /proc, not from
# package paths (docs/architecture.md, "Discovery"). POSIX sh; sent in front of the readiness
# probe (probe.sh: check, the preflight and capacity roles, harden --explain) and of the rolling
# reload (graceful-reload.sh), so every one of them finds the same masters the same way.
# Defines discover(); prints nothing itself.

# Where a layout puts php-fpm and nginx binaries when no running master names them: Debian and
# RHEL packages, Remi and SCL collections, source builds and panels under a prefix.
FPM_LAYOUTS="/usr/sbin/php-fpm* /usr/local/sbin/php-fpm /usr/local/php*/sbin/php-fpm /www/server/php/*/sbin/php-fpm
	/opt/remi/php*/root/usr/sbin/php-fpm /opt/rh/*/root/usr/sbin/php-fpm"
NGINX_LAYOUTS="/usr/sbin/nginx /usr/local/sbin/nginx /usr/local/nginx/sbin/nginx /usr/local/openresty/nginx/sbin/nginx
	/usr/local/tengine/sbin/nginx /www/server/nginx/sbin/nginx /opt/nginx/sbin/nginx"

# service_of KIND EXE CONF PID: " unit=NAME scripts=A,B" for what starts this master: the systemd
# unit of its cgroup (else a unit whose text names its binary as a word: /usr/sbin/php-fpm is not a
# part of /usr/sbin/php-fpm8.2 or /opt/remi/php74/root/usr/sbin/php-fpm), the init scripts naming its binary,
# configuration or prefix. A prefix of /usr names nothing.
service_of() {
	unit="" scripts=""
	if [ "$4" != - ]; then
		while IFS=: read -r _ ctl path; do
			case $ctl:$path in :*.service | name=systemd:*.service) unit=${path##*/} ;; esac
		done <"/proc/$4/cgroup" 2>/dev/null
	fi
	prefix=${2%/sbin/*}
	case $prefix in /usr | /usr/local | "$2") prefix=$2 ;; esac
	set -- "$1" "$2" "$3" "$prefix"
	[ "$3" = - ] && set -- "$1" "$2" "$2" "$4"
	# -w: the prefix /usr/local/php is not a part of /usr/local/php7.4. Paths have no blanks.
	# shellcheck disable=SC2013
	for f in $(grep -lswF -e "$2" -e "$3" -e "$4" /etc/init.d/* /etc/rc.d/init.d/* 2>/dev/null); do
		grep -qs "$1" "$f" && scripts=${scripts:+$scripts,}$f
	done
	if [ -z "$unit" ]; then
		f=$(grep -lswF -e "$2" /etc/systemd/system/*.service /usr/lib/systemd/system/*.service /lib/systemd/system/*.service 2>/dev/null | head -n 1)
		unit=${f##*/}
	fi
	echo " unit=${unit:--} scripts=${scripts:--}"
}

# nginx_built EXE OPTION: a path nginx was built with (conf-path, pid-path), from nginx -V.
nginx_built() {
	"$1" -V 2>&1 | tr ' ' '\n' | sed -n "s/^--$2=//p"
}

# pid_file_of KIND EXE CONF PREFIX: " pidfile=PATH" where the master writes its pid: php-fpm's
# [global] pid (relative: below the prefix's var/), nginx's main-context pid directive, else
# the path nginx was built with. What a reload signals and a restart waits for.
pid_file_of() {
	file=-
	if [ "$3" != - ] && [ -r "$3" ]; then
		if [ "$1" = php-fpm ]; then
			file=$(sed -n 's/^[[:space:]]*pid[[:space:]]*=[[:space:]]*\([^;[:space:]]*\).*/\1/p' "$3" | tail -n 1)
			case $file in /* | "") ;; *) file=${2%/sbin/*}/var/$file ;; esac
		else
			file=$(sed -n 's/^pid[[:space:]]\{1,\}\([^;[:space:]]*\);.*/\1/p' "$3" | head -n 1)
			[ -n "$file" ] || file=$(nginx_built "$2" pid-path)
			case $file in /* | "") ;; *) file=${4%/}/$file; [ "$4" != - ] || file=$(nginx_built "$2" prefix)/${file#-/} ;; esac
		fi
	fi
	echo " pidfile=${file:--}"
}

# discover: one line per nginx or php-fpm master this host runs, read from /proc (its binary, the
# configuration its title names), then one per installed binary of a known layout that none of
# them runs (a stopped service):
#   KIND running|stopped PID|- EXE CONF|- PREFIX|- unit=NAME|- scripts=A,B|- pidfile=PATH|-
discover() {
	running=" " MNT=$(readlink /proc/self/ns/mnt)
	for d in /proc/[0-9]*; do
		read -r comm 2>/dev/null <"$d/comm" || continue
		case $comm in nginx | php-fpm*) ;; *) continue ;; esac
		args=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null)
		case $args in *"master process"*) ;; *) continue ;; esac
		# A master in another mount namespace (a container, a chroot) is that system's, not this
		# one's: its paths mean nothing here. Unreadable (not root): assume it is ours.
		ns=$(readlink "$d/ns/mnt" 2>/dev/null)
		[ -n "$ns" ] && [ "$ns" != "$MNT" ] && continue
		pid=${d#/proc/}
		exe=$(readlink "$d/exe" 2>/dev/null) || exe=$(command -v "$comm")
		exe=${exe% (deleted)}
		exe=${exe:--}
		conf=- prefix=-
		if [ "$comm" = nginx ]; then
			kind=nginx
			# shellcheck disable=SC2086  # the title's words are the master's arguments
			set -- ${args#*master process}
			while [ $# -gt 1 ]; do
				case $1 in -c) conf=$2; shift ;; -p) prefix=$2; shift ;; esac
				shift
			done
			[ "$conf" != - ] || [ "$exe" = - ] || conf=$(nginx_built "$exe" conf-path)
		else
			kind=php-fpm
			case $args in *"("*")"*) conf=${args#*(}; conf=${conf%)*} ;; esac
		fi
		running="$running$(readlink -f "$exe") "
		echo "$kind running $pid $exe ${conf:--} $prefix$(service_of "$kind" "$exe" "$conf" "$pid")$(pid_file_of "$kind" "$exe" "$conf" "$prefix")"
	done
	for exe in $FPM_LAYOUTS $NGINX_LAYOUTS; do
		[ -f "$exe" ] || continue
		[ -x "$exe" ] || continue
		case $running in *" $(readlink -f "$exe") "*) continue ;; esac
		case $exe in */nginx) kind=nginx ;; *) kind=php-fpm ;; esac
		echo "$kind stopped - $exe - -$(service_of "$kind" "$exe" - -) pidfile=-"
	done
}
