#!/bin/sh
# Installs the punktfunk appliance's files (packaging/manifest) into a root file system and
# enables them the way the image ships: the user preset for punktfunk.target (which every user's
# service manager starts at login), the system preset for the boot health check, and the firewalld
# service (and mDNS) in the default zone when firewalld is installed in that root.
#
# Usage: install.sh --root DIR --bin-dir DIR [--src DIR]
#   --root     the root file system to install into (/ in the Containerfile)
#   --bin-dir  where the built binaries are (target/release, target/debug, ...)
#   --src      the repository checkout holding packaging/, units/, udev/, image/ (default: ..)
# Run by the Containerfile and by the UML guest test (tests/src/guest.rs); keep it POSIX sh.
set -eu

root= bindir= src=$(cd "$(dirname "$0")/.." && pwd)
while [ $# -gt 0 ]; do
    case $1 in
        --root) root=$2; shift 2 ;;
        --bin-dir) bindir=$2; shift 2 ;;
        --src) src=$2; shift 2 ;;
        *) echo "install.sh: unknown argument $1 (see the usage at the top of $0)" >&2; exit 2 ;;
    esac
done
[ -n "$root" ] && [ -n "$bindir" ] || { echo "install.sh: --root and --bin-dir are required" >&2; exit 2; }

# 1. The files.
grep -v '^[[:space:]]*\(#\|$\)' "$src/packaging/manifest" | while read -r mode from to; do
    case $from in
        bin/*) from=$bindir/${from#bin/} ;;
        *) from=$src/$from ;;
    esac
    [ -f "$from" ] || { echo "install.sh: $from is missing (build the binaries first?)" >&2; exit 1; }
    install -D -m "$mode" "$from" "$root$to"
done

# 2. Enable through the presets, offline (no service manager runs while an image is built).
systemctl --root="$root" --global preset punktfunk.target
systemctl --root="$root" preset punktfunk-healthcheck.service

# 3. The firewall: open our ports (and mDNS for discovery) in firewalld's default zone, where
#    firewalld is installed in that root. firewall-offline-cmd has no --root option: for another
#    root (the UML guest's copy) it runs chrooted into it, the same program on the same files as
#    in the image build. No byte code is written: install.sh adds nothing to /usr but the manifest.
if [ -x "$root/usr/bin/firewall-offline-cmd" ]; then
    in_root() { if [ "$root" = / ]; then "$@"; else chroot "$root" "$@"; fi; }
    export PYTHONDONTWRITEBYTECODE=1
    in_root firewall-offline-cmd --add-service=punktfunk
    in_root firewall-offline-cmd --query-service=mdns >/dev/null || in_root firewall-offline-cmd --add-service=mdns
fi
