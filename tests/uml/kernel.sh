#!/usr/bin/env bash
# Build the User-Mode-Linux guest kernel the tests boot (uinput, uhid, hid-playstation, fq,
# netem, systemd as PID 1), or reuse the cached one.
#
# Prints the path of the stripped `linux` binary as the last line on stdout; progress goes to
# stderr. The kernel is cached under
#   ${PUNKTFUNK_CACHE:-/var/tmp/punktfunk-cache}/uml/<key>/linux
# where <key> hashes every input: the linux-source-6.1 package version, kernel.config-options,
# host-fp-size.patch and this script. A build runs in a temporary directory next to the cache
# and is renamed into place only when complete, so an interrupted build never leaves a broken
# cache entry. Callers that may run at the same time (tests) hold a lock around this script
# (tests/src/uml.rs does: `flock` on <cache>/uml/.lock).
#
# Cold: 7 minutes of CPU, 10-20 minutes on 2 busy cores. Cached: instant.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
options="$here/kernel.config-options"
patchfile="$here/host-fp-size.patch"
cache="${PUNKTFUNK_CACHE:-/var/tmp/punktfunk-cache}/uml"
source_pkg="linux-source-6.1"
source_tar="/usr/src/linux-source-6.1.tar.xz"
apt_packages=(linux-source-6.1 bc bison flex libelf-dev gcc make patch xz-utils)
jobs="${UML_BUILD_JOBS:-2}"

log() { echo "uml-kernel: $*" >&2; }

install_packages() {
    local missing=() p
    for p in "${apt_packages[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
    $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >&2
}

cache_key() {
    {
        echo "$source_pkg $(dpkg-query -W -f='${Version}' "$source_pkg")"
        sha256sum <"$options"
        sha256sum <"$patchfile"
        sha256sum <"${BASH_SOURCE[0]}"
    } | sha256sum | cut -c1-16
}

# Writes .config: defconfig, then the fragment, then olddefconfig; fails when Kconfig dropped
# any option of the fragment (its dependencies are missing on ARCH=um).
configure() {
    make ARCH=um defconfig >/dev/null
    scripts/kconfig/merge_config.sh -m .config "$options" >/dev/null
    make ARCH=um olddefconfig >/dev/null
    local line missing=0
    while IFS= read -r line; do
        case "$line" in
            CONFIG_*=*) grep -qxF "$line" .config || { log "option not applied: $line"; missing=1; } ;;
            "# CONFIG_"*" is not set")
                local name="${line#\# }"
                name="${name%% *}"
                if grep -q "^$name=" .config; then log "option not disabled: $name"; missing=1; fi
                ;;
        esac
    done <"$options"
    [ "$missing" = 0 ] || { log "the kernel config lacks options above: fix $options"; return 1; }
}

build() {
    local key="$1" dest="$cache/$1" tmp
    mkdir -p "$cache"
    tmp="$(mktemp -d "$cache/.build-$key.XXXXXX")"
    # The source tree (~1.5 GB) goes with the temporary directory, whatever happens.
    trap "rm -rf '$tmp'" EXIT
    local start=$SECONDS
    log "building the UML kernel $key in $tmp (about 10 minutes on 2 cores)"
    log "unpacking $source_tar"
    tar -xJf "$source_tar" -C "$tmp"
    cd "$tmp/linux-source-6.1"
    log "applying $(basename "$patchfile")"
    patch -p1 --quiet <"$patchfile"
    log "configuring from $(basename "$options")"
    configure
    log "compiling with make ARCH=um -j$jobs linux"
    # The full log stays next to the cache; stderr gets one line per 500 compiled objects, so
    # a long build shows it is alive.
    local buildlog="$cache/build-$key.log"
    if ! make ARCH=um -j"$jobs" linux 2>&1 | tee "$buildlog" | awk '
        / (CC|LD|AR|AS) / { n++; if (n % 500 == 0) printf "uml-kernel: %d objects\n", n > "/dev/stderr"; fflush("/dev/stderr") }'; then
        tail -n 40 "$buildlog" >&2
        log "make failed; the full log is $buildlog"
        return 1
    fi
    [ -x linux ] || { log "make did not produce ./linux"; return 1; }
    strip linux
    mkdir "$tmp/out"
    mv linux "$tmp/out/linux"
    cp .config "$tmp/out/config"
    echo "$key built in $((SECONDS - start)) s from $source_pkg $(dpkg-query -W -f='${Version}' "$source_pkg")" >"$tmp/out/BUILD-INFO"
    # Atomic install: rename the finished directory. If another builder won the race, keep its.
    if ! mv -T "$tmp/out" "$dest" 2>/dev/null; then
        [ -x "$dest/linux" ] || { log "could not install $dest"; return 1; }
    fi
    log "done in $((SECONDS - start)) s: $dest/linux ($(du -h "$dest/linux" | cut -f1))"
}

main() {
    install_packages
    local key
    key="$(cache_key)"
    if [ ! -x "$cache/$key/linux" ]; then
        (build "$key")
    fi
    echo "$cache/$key/linux"
}

main "$@"
