#!/bin/sh
# Builds the UML guest's root file system: Debian bookworm (minbase) with systemd as PID 1, a
# test user `gamer` (uid 1000, group input) with lingering enabled, and whatever packages the
# caller names (the runtime libraries and plugins of our binaries, derived in
# tests/src/guest.rs). Our own files are NOT laid in here: each boot gets a copy of this tree,
# and packaging/install.sh installs the image's files into that copy, as the Containerfile does.
#
# Usage: mkrootfs.sh DEST PACKAGE...    (as root; DEST must not exist; built in place, so the
#                                        caller builds into a temporary name and renames it)
set -eu
dest=$1
shift
[ ! -e "$dest" ] || { echo "mkrootfs: $dest exists" >&2; exit 1; }
mirror=${PUNKTFUNK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
include=$(printf '%s\n' "$@" | sort -u | paste -sd, -)

debootstrap --variant=minbase --include="$include" bookworm "$dest" "$mirror"

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

# The test user: in group input (the udev rule gives that group /dev/uinput and /dev/uhid), with
# lingering, so that its `systemd --user` (and with it punktfunk.target) starts at boot without a
# login - exactly what a gamer's machine does after the first login.
chroot "$dest" useradd --create-home --uid 1000 --groups input --shell /bin/bash gamer
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

chroot "$dest" apt-get clean
rm -rf "$dest/var/lib/apt/lists/"* "$dest/var/cache/apt/"*.bin
