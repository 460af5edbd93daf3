#!/bin/sh
# Builds the UML guest's root file system: Debian bookworm (minbase) with systemd as PID 1, a
# test user `gamer` (uid 1000, groups input and wheel) with lingering enabled, and whatever packages the
# caller names (the runtime libraries and plugins of our binaries, derived in
# tests/src/appliance.rs). Our own files are NOT laid in here: each boot gets a copy of this tree,
# and packaging/install.sh installs the image's files into that copy, as the Containerfile does.
#
# Usage: mkrootfs.sh CACHE_DIR PACKAGE...   (as root)
# Prints the root's path as its last line: CACHE_DIR/<key>, key = hash of the sorted package
# list and this script. Built under a temporary name and renamed when complete, so a cached root
# is always a whole one; the caller serialises concurrent builds (a lock file in CACHE_DIR).
# Boots never write to it: each gets a copy (tests/src/appliance.rs).
set -eu
cache=$1
shift
pkgs=$(printf '%s\n' "$@" | sort -u)
key=$( { printf '%s\n' "$pkgs"; cat "$0"; } | sha256sum | cut -c1-16)
if [ -d "$cache/$key" ]; then
    echo "$cache/$key"
    exit 0
fi
mkdir -p "$cache"
rm -rf "$cache/.build-$key"
dest=$cache/.build-$key
mirror=${PUNKTFUNK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
include=$(printf '%s\n' "$pkgs" | paste -sd, -)

echo "building the guest root file system $cache/$key (debootstrap, a few minutes once)" >&2
debootstrap --variant=minbase --include="$include" bookworm "$dest" "$mirror" >&2

# Debootstrap's files that describe the host, not the guest.
echo punktfunk-guest >"$dest/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 punktfunk-guest\n::1 localhost\n' >"$dest/etc/hosts"
: >"$dest/etc/machine-id"
# The root is hostfs, mounted by the kernel. Files the guest creates on hostfs belong to the
# host user running UML (root), whoever created them, so every place a non-root user writes is a
# tmpfs: the test user's home, /tmp and /var/tmp.
cat >"$dest/etc/fstab" <<'FSTAB'
# the root is hostfs, mounted by the kernel
tmpfs /tmp        tmpfs mode=1777,nosuid,nodev 0 0
tmpfs /var/tmp    tmpfs mode=1777,nosuid,nodev 0 0
tmpfs /home/gamer tmpfs mode=0700,uid=1000,gid=1000,nosuid,nodev 0 0
FSTAB

# The test user: in group input (the udev rule gives that group /dev/uinput and /dev/uhid) and in
# wheel, as the first user of a Bazzite install is (Debian has no wheel group: it is created; the
# image's polkit rule lets wheel read firewalld's zones), with lingering, so that its
# `systemd --user` (and with it punktfunk.target) starts at boot without a login - exactly what a
# gamer's machine does after the first login.
chroot "$dest" groupadd >&2 --force --system wheel
chroot "$dest" useradd >&2 --create-home --uid 1000 --groups input,wheel --shell /bin/bash gamer
mkdir -p "$dest/var/lib/systemd/linger"
: >"$dest/var/lib/systemd/linger/gamer"

# UML has no virtual terminals and no hardware clock; these units would only fail or wait.
for u in getty@tty1.service serial-getty@ttyS0.service systemd-hwdb-update.service \
         apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
         fstrim.timer dpkg-db-backup.timer; do
    ln -sf /dev/null "$dest/etc/systemd/system/$u"
done
# A persistent journal, read from the host after poweroff (journalctl --directory).
mkdir -p "$dest/var/log/journal"

chroot "$dest" apt-get clean >&2
rm -rf "$dest/var/lib/apt/lists/"* "$dest/var/cache/apt/"*.bin

mv "$dest" "$cache/$key"
echo "$cache/$key"
