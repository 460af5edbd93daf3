# punktfunk — every command a person (or CI) runs. `just --list` shows them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Debian packages the build and the tests need (installed by `setup`, idempotently).
apt_packages := "pkg-config python3-venv systemd debootstrap passwd util-linux iproute2 nftables libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav libopus-dev gstreamer1.0-pipewire pipewire wireplumber dbus fonts-dejavu-core linux-source-6.1 bc bison flex libelf-dev mutter kwin-wayland sway"

default:
    @just --list

# Install what building and testing need (idempotent; apt only when something is missing).
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    missing=()
    for p in {{apt_packages}}; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}"
        sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
        export DEBIAN_FRONTEND=noninteractive TMPDIR="$(mktemp -d)"
        $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
        $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" \
            || { $sudo apt-get -o DPkg::Lock::Timeout=600 -f install -y -qq; \
                 $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"; }
    fi
    command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

# Build every binary (debug).
build:
    cargo build --workspace --bins

# Start the four daemons the way systemd would, pair the reference client, stream the
# synthetic source over punktfunk/1 on loopback, print what arrived and how fast, stop.
demo: setup build
    cargo run -q -p punktfunk-tests --bin pf-demo

# Everything CI checks: format, clippy, and every test (unit, property, end-to-end, UML guest).
test: setup build lint uml-kernel
    cargo nextest run --workspace --no-fail-fast

# The cached kernel is /var/tmp/punktfunk-cache/uml/<key>/linux (~7 CPU-minutes cold).
# Build the User-Mode-Linux kernel the guest tests boot, or find it cached.
uml-kernel:
    tests/uml/kernel.sh

# Benchmarks, each against a baseline in the same run: AU ring handoff vs a bare eventfd and a
# unary gRPC round trip; FEC + seal per frame; FEC + seal + send (sendmmsg, GSO, naive send());
# x264 encode alone; capture → reassembled through the whole stack against its encode share;
# Moonlight's connect → first frame against punktfunk/1's; kernel (EDT, fq) against user-space
# pacing of the same frames in the UML guest (the host kernel has no fq).
bench: setup
    cargo build --release --workspace --bins
    cargo bench -p punktfunk-ring --bench handoff
    cargo bench -p punktfunk-tests --bench grpc_rtt
    cargo bench -p punktfunk-wire --bench frame
    cargo bench -p punktfunk-gamestream --bench packetize
    cargo bench -p punktfunk-dataplane --bench send
    cargo bench -p punktfunk-media --bench encode
    cargo bench -p punktfunk-tests --bench e2e_latency
    cargo bench -p punktfunk-tests --bench compositor_latency
    cargo bench -p punktfunk-tests --bench input_latency
    cargo bench -p punktfunk-tests --bench gamestream_connect
    cargo bench -p punktfunk-tests --bench pacing

# Delivery under 1/2/5/10 % random loss across two network namespaces, 10,000 frames each (~3 min).
loss-sweep: setup
    cargo run --release -p punktfunk-dataplane --example loss_sweep

# Run each fuzz target for SECONDS (default 60) and print the execution counts.
fuzz seconds="60":
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
    tests/fuzz/run.sh services/wire/fuzz {{seconds}}
    tests/fuzz/run.sh services/control/fuzz {{seconds}}
    tests/fuzz/run.sh services/hid/fuzz {{seconds}}
    tests/fuzz/run.sh services/session/fuzz {{seconds}}
    tests/fuzz/run.sh services/gamestream/fuzz {{seconds}}

# rustfmt check and clippy with warnings as errors.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Install the binaries to ~/.local/bin and the user units, then start punktfunk.target.
install:
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release --workspace --bins
    bindir="$HOME/.local/bin"; unitdir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
    mkdir -p "$bindir" "$unitdir"
    for b in punktfunk-session punktfunk-media punktfunk-transport punktfunk-input punktfunkctl punktfunk-client punktfunk-testpattern; do
        install -m 0755 "target/release/$b" "$bindir/$b"
    done
    for u in units/*; do
        # The units name /usr/bin (the image's layout); a user install lives in ~/.local/bin.
        sed "s|/usr/bin/|$bindir/|g" "$u" > "$unitdir/$(basename "$u")"
    done
    echo "installed binaries to $bindir and units to $unitdir"
    if command -v systemctl >/dev/null && systemctl --user show-environment >/dev/null 2>&1; then
        systemctl --user daemon-reload
        systemctl --user enable --now punktfunk.target
        "$bindir/punktfunkctl" status || true
    else
        echo "no systemd --user session here; start one and run: systemctl --user enable --now punktfunk.target"
    fi

# Build the bootc image (needs podman and access to ghcr.io; not possible on CI machines).
image tag="localhost/punktfunk:latest":
    #!/usr/bin/env bash
    set -euo pipefail
    command -v podman >/dev/null || { echo "podman is not installed: install it (apt/dnf install podman) to build the image"; exit 1; }
    podman build -t "{{tag}}" -f Containerfile .
    echo "built {{tag}}; on the gaming PC: sudo bootc switch --transport containers-storage {{tag}}"
