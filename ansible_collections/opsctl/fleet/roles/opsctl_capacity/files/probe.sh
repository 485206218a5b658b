# shellcheck shell=sh
# shellcheck disable=SC3045  # ulimit -H: dash and bash (the /bin/sh of every target) have it
# managed by opsctl: what the capacity model needs to know about a host, as one JSON line.
# The same script serves the opsctl_capacity role and `opsctl harden --explain`, so both see
# the same numbers. cpus and memory_mb are defined as Ansible defines ansible_processor_vcpus
# and ansible_memtotal_mb (processor entries in /proc/cpuinfo; MemTotal in MiB, rounded down).
# A service counts as present when it is installed AND running: a binary that merely exists
# (a balancer built from the same image as the web hosts) is not tuned, and says so.
running() { grep -qs "^$1" /proc/[0-9]*/comm; }
cpus=$(grep -c '^processor' /proc/cpuinfo)
memory_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
php_bin=$(for f in /usr/sbin/php-fpm[0-9]*; do [ -x "$f" ] && echo "$f"; done | sort -V | tail -n 1)
if [ -n "$php_bin" ] && ! running php-fpm; then
    php_installed=$php_bin
    php_bin=""
fi
if [ -n "$php_bin" ]; then
    php_version=${php_bin#/usr/sbin/php-fpm}
elif [ -x /usr/sbin/php-fpm ]; then
    php_bin=/usr/sbin/php-fpm
    php_version=$(/usr/sbin/php-fpm -v 2>/dev/null | sed -n '1s/^PHP \([0-9]*\.[0-9]*\).*/\1/p')
else
    php_version=""
fi
if [ -x /usr/sbin/nginx ] && running nginx; then nginx=true; else nginx=false; fi
if [ -d /run/systemd/system ]; then systemd=true; else systemd=false; fi
# The most open files a service here can get: fs.nr_open, unless CAP_SYS_RESOURCE is not in the
# bounding set (containers, the lab): then no process can raise its hard limit above the current one.
capbnd=$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)
if [ $(( 0x${capbnd:-0} >> 24 & 1 )) = 1 ]; then nofile_max=$(cat /proc/sys/fs/nr_open); else nofile_max=$(ulimit -Hn); fi
printf '{"cpus": %s, "memory_mb": %s, "php_version": "%s", "php_fpm_bin": "%s", "php_fpm_stopped": "%s", "nginx": %s, "systemd": %s, "nofile_max": %s}\n' \
    "${cpus:-0}" "${memory_mb:-0}" "$php_version" "$php_bin" "${php_installed:-}" "$nginx" "$systemd" "${nofile_max:-1048576}"
