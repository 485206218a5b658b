#!/bin/sh
# managed by opsctl: boots one lab host. Runs as PID 1 of a fresh mount/UTS/PID namespace,
# inside the host's network namespace, then chroots into the host's own file system view.
# Arguments: HOSTNAME MERGED UPPER WORK HIDE_DIR
set -eu
host=$1 merged=$2 upper=$3 work=$4 hide=$5
mount --make-rprivate /
mount -t overlay opsctl-lab -o "lowerdir=/,upperdir=$upper,workdir=$work" "$merged"
mount --rbind /dev "$merged/dev"
mount -t tmpfs -o mode=0755 tmpfs "$merged/run"
mount -t tmpfs -o mode=1777 tmpfs "$merged/tmp"
# The lab's keys and every other host's files live below $hide: not for this host's eyes.
mount -t tmpfs -o mode=0700 tmpfs "$merged$hide"
hostname "$host"
exec chroot "$merged" /bin/sh /etc/opsctl-lab/init.sh
