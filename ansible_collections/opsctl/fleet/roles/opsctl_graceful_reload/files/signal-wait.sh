# shellcheck shell=sh
# managed by opsctl: the one "signal the master, then wait for its new workers" rule
# (docs/failure-modes.md, F3). POSIX sh, no bash: the graceful init script (/bin/sh) embeds it,
# and the rolling reload, the drain of an nginx balancer and the nginx and php-fpm roles'
# handlers run it in front of their own steps. Every wait is bounded.
#
# A reload is done when the master named in the pid file runs, a worker it did not have
# before runs, and, with OPSCTL_WAIT_OLD=1, every worker it had before has exited:
# - nginx, SIGHUP: the master re-reads the tested tree and starts new workers; the old ones
#   finish their requests, bounded by worker_shutdown_timeout. A rejected tree starts none.
# - php-fpm, SIGUSR2: the master re-executes itself (same PID) and starts new workers once
#   every old one has finished (process_control_timeout). A pool with pm = ondemand starts no
#   worker before a request: OPSCTL_NO_WORKERS_OK=1 then accepts no worker at all.

# opsctl_workers MASTER: the master's children, each followed by a space.
opsctl_workers() {
	for _ow_pid in $(pgrep -P "$1" 2>/dev/null); do printf '%s ' "$_ow_pid"; done
}

# opsctl_gone PID: true once PID has exited (a zombie, not yet reaped, has exited).
opsctl_gone() {
	kill -0 "$1" 2>/dev/null || return 0
	[ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" = Z ]
}

# opsctl_wait_for SECONDS COMMAND...: run COMMAND every 0.2 s until it succeeds, at most SECONDS.
opsctl_wait_for() {
	_owf_tries=$(( $1 * 5 )); shift
	until "$@"; do
		_owf_tries=$(( _owf_tries - 1 ))
		[ "$_owf_tries" -gt 0 ] || return 1
		sleep 0.2
	done
}

# opsctl_new_workers MASTER: the children of MASTER not in OPSCTL_OLD_WORKERS.
opsctl_new_workers() {
	for _onw_pid in $(opsctl_workers "$1"); do
		case " $OPSCTL_OLD_WORKERS " in *" $_onw_pid "*) ;; *) printf '%s ' "$_onw_pid" ;; esac
	done
}

# opsctl_reloaded PIDFILE: the reload that replaced OPSCTL_OLD_WORKERS is done (see above).
opsctl_reloaded() {
	_or_master=$(cat "$1" 2>/dev/null) && kill -0 "$_or_master" 2>/dev/null || return 1
	if [ "${OPSCTL_WAIT_OLD:-0}" = 1 ]; then
		for _or_pid in $OPSCTL_OLD_WORKERS; do opsctl_gone "$_or_pid" || return 1; done
	fi
	[ -n "$(opsctl_new_workers "$_or_master")" ] || [ "${OPSCTL_NO_WORKERS_OK:-0}" = 1 ]
}

# opsctl_signal_and_wait SIGNAL PIDFILE SECONDS: send SIGNAL to the master in PIDFILE and wait
# until opsctl_reloaded. Exit 0 done, 1 not within SECONDS, 2 no master to signal. Leaves
# OPSCTL_OLD_WORKERS (before) and OPSCTL_NEW_WORKERS (after) for the caller's message.
opsctl_signal_and_wait() {
	_osw_master=$(cat "$2" 2>/dev/null) && kill -0 "$_osw_master" 2>/dev/null || return 2
	OPSCTL_OLD_WORKERS=$(opsctl_workers "$_osw_master")
	kill -"$1" "$_osw_master" || return 2
	opsctl_wait_for "$3" opsctl_reloaded "$2" || return 1
	# shellcheck disable=SC2034  # read by the script this one is sent in front of
	OPSCTL_NEW_WORKERS=$(opsctl_new_workers "$(cat "$2")")
}
