#!/bin/sh
# The UML appliance guest's test driver (tests/src/appliance.rs). Runs as root from
# pf-guest-driver.service once the boot health check has finished, exercises the appliance the
# way systemd runs it, and records facts (`key=value` lines in $share/facts, evidence files next
# to them); the Rust test asserts every one. It judges nothing itself, and never stops early.
# Mode (/etc/pf-guest/mode): `full` runs everything and powers off; `rollback` only records the
# health check of its boot and powers off (a boot whose check rolled back has rebooted before the
# driver's turn).
set -u
share=$(sed -n 's/.*pf\.share=\([^ ]*\).*/\1/p' /proc/cmdline)
mkdir -p /mnt/share
mount -t hostfs -o "$share" hostfs /mnt/share || { echo "cannot mount the share $share" >&2; exit 1; }
S=/mnt/share
F=$S/facts
mode=$(cat /etc/pf-guest/mode)
exec >>"$S/output" 2>&1
boot=$(($(cat "$S/boots" 2>/dev/null || echo 0) + 1))
echo "$boot" >"$S/boots"
echo "== boot $boot, mode $mode, $(date -u +%T)"

fact() { echo "$1=$2" >>"$F"; echo "fact $1=$2"; }
# As the test user, in its service manager's environment.
U() { setpriv --reuid=1000 --regid=1000 --init-groups --reset-env \
          env XDG_RUNTIME_DIR=/run/user/1000 DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus "$@"; }
prop() { U systemctl --user show -p "$2" --value "$1"; }
# Waits up to $1 seconds for the shell condition $2.
until_() { t=$1; shift; while [ "$t" -gt 0 ]; do eval "$1" && return 0; sleep 1; t=$((t - 1)); done; return 1; }

hc_result=$(systemctl show -p Result --value punktfunk-healthcheck.service)
hc_state=$(systemctl show -p ActiveState --value punktfunk-healthcheck.service)
fact "boot$boot.healthcheck" "$hc_state/$hc_result"
journalctl -b -u punktfunk-healthcheck.service -o cat >"$S/healthcheck-boot$boot.log"

# The driver only gets here when the check did not reboot the machine: after a pass, or after
# a failure the gate would not roll back (the boot before already did).
if [ "$mode" = rollback ]; then
    if [ "$hc_result" = success ]; then echo 0 >"$S/status"; else echo 1 >"$S/status"; fi
    # Straight off (-ff: no unit is stopped; the full mode asserts the clean poweroff): after a
    # UML reboot the orderly poweroff sometimes never completed. The journal is synced first,
    # the test reads it afterwards.
    journalctl --sync
    sync
    systemctl poweroff -ff
    exit 0
fi

DAEMONS="session media transport input"
HOST=127.0.0.1:9777
CLIENT="punktfunk-client --config-dir /home/gamer/guest-client --name guest-client"

# --- after boot: the target through the preset, the sockets, READY and STATUS ----------------
fact target.active "$(U systemctl --user is-active punktfunk.target)"
fact target.enabled "$(U systemctl --user is-enabled punktfunk.target)"
fact target.preset "$(prop punktfunk.target UnitFilePreset)"
ss -xlH >"$S/listening.txt"
for d in $DAEMONS; do
    fact "socket.$d.stream" "$(grep -c "u_str.*/run/user/1000/punktfunk/$d.sock" "$S/listening.txt")"
    fact "socket.$d.seqpacket" "$(grep -c "u_seq.*/run/user/1000/punktfunk/$d.fds" "$S/listening.txt")"
    fact "unit.$d.state" "$(prop "punktfunk-$d.service" ActiveState)/$(prop "punktfunk-$d.service" SubState)"
    fact "unit.$d.status" "$(prop "punktfunk-$d.service" StatusText)"
    U systemctl --user status --no-pager "punktfunk-$d.service" >"$S/status-$d.txt" 2>&1
done

# --- udev and sysctl -----------------------------------------------------------------------------
fact dev.uinput "$(stat -c '%G %a' /dev/uinput)"
fact dev.uhid "$(stat -c '%G %a' /dev/uhid)"
fact sysctl.rmem_max "$(sysctl -n net.core.rmem_max)"
fact sysctl.wmem_max "$(sysctl -n net.core.wmem_max)"

# --- the reference client pairs and streams inside the guest; doctor ----------------------------
pin=$(U punktfunkctl pair --json | sed -n 's/.*"pin":"\([0-9]*\)".*/\1/p')
U $CLIENT pair --pin "$pin" "$HOST" >"$S/pair.txt" 2>&1
fact pair.rc $?
U $CLIENT stream "$HOST" --duration 4 --mode 640x360@30 --bitrate 2000 --codec h264 --decode --json \
    >"$S/stream.json" 2>"$S/stream.err"
fact stream.rc $?
U punktfunkctl doctor --json >"$S/doctor.json" 2>"$S/doctor.err"
fact doctor.rc $?

# --- the firewall: firewalld runs with our service in its default zone, and filters -------------
fact firewalld.state "$(firewall-cmd --state 2>&1)"
fact firewalld.zone "$(firewall-cmd --get-default-zone 2>&1)"
fact firewalld.services "$(firewall-cmd --list-services 2>&1)"
fact firewalld.ports "$(firewall-cmd --info-service=punktfunk 2>&1 | sed -n 's/^ *ports: //p')"
# A client on the LAN: a network namespace behind a veth pair, whose host end (no zone of its
# own) is in the default zone. A TCP port of our service connects; a closed port outside the
# zone (80) is rejected by firewalld (admin-prohibited: "No route to host", where an open host would answer
# "Connection refused"); the reference client pairs and streams over UDP 9777 through it.
ip netns add lan
ip link add lan1 type veth peer name eth0 netns lan
ip addr add 10.78.0.1/24 dev lan1
ip link set lan1 up
ip -n lan addr add 10.78.0.2/24 dev eth0
ip -n lan link set eth0 up
ip -n lan link set lo up
LAN() { ip netns exec lan setpriv --reuid=1000 --regid=1000 --init-groups --reset-env "$@"; }
tcp() { ip netns exec lan timeout 10 bash -c "exec 3<>/dev/tcp/10.78.0.1/$1 && echo connected" 2>&1 | tail -n 1; }
fact lan.tcp.47989 "$(tcp 47989)"
fact lan.tcp.80 "$(tcp 80)"
LAN_CLIENT="punktfunk-client --config-dir /home/gamer/lan-client --name lan-client"
pin=$(U punktfunkctl pair --json | sed -n 's/.*"pin":"\([0-9]*\)".*/\1/p')
LAN $LAN_CLIENT pair --pin "$pin" 10.78.0.1:9777 >"$S/lan-pair.txt" 2>&1
fact lan.pair.rc $?
LAN $LAN_CLIENT stream 10.78.0.1:9777 --duration 3 --mode 640x360@30 --bitrate 2000 --codec h264 --json \
    >"$S/lan-stream.json" 2>"$S/lan-stream.err"
fact lan.stream.rc $?

# --- socket activation: the first call starts a stopped daemon ----------------------------------
U systemctl --user stop punktfunk-input.service
fact activation.before "$(prop punktfunk-input.service ActiveState)"
fact activation.socket "$(U systemctl --user is-active punktfunk-input.socket)"
U punktfunkctl --timeout 30 status --json >"$S/activation-status.json" 2>&1
fact activation.call_rc $?
fact activation.after "$(prop punktfunk-input.service ActiveState)"

# --- kill -9 of each daemon: systemd restarts it -------------------------------------------------
for d in $DAEMONS; do
    u=punktfunk-$d.service
    pid=$(prop $u MainPID)
    n=$(prop $u NRestarts)
    kill -9 "$pid"
    until_ 30 "[ \"\$(prop $u MainPID)\" != $pid ] && [ \"\$(prop $u MainPID)\" != 0 ] && [ \"\$(prop $u ActiveState)\" = active ]"
    fact "kill.$d" "$n->$(prop $u NRestarts) $(prop $u ActiveState)"
done

# --- a live stream survives a media restart -----------------------------------------------------
U $CLIENT stream "$HOST" --duration 10 --mode 640x360@30 --bitrate 2000 --codec h264 --json \
    >"$S/restart-stream.json" 2>"$S/restart-stream.err" &
client=$!
sleep 3
n=$(prop punktfunk-media.service NRestarts)
kill -9 "$(prop punktfunk-media.service MainPID)"
wait $client
fact restart_stream.rc $?
until_ 30 "[ \"\$(prop punktfunk-media.service ActiveState)\" = active ]"
fact restart_stream.media "$n->$(prop punktfunk-media.service NRestarts)"

# --- SIGSTOP: WatchdogSec= kills and restarts the daemon ----------------------------------------
u=punktfunk-input.service
pid=$(prop $u MainPID)
n=$(prop $u NRestarts)
kill -STOP "$pid"
until_ 90 "[ \"\$(prop $u NRestarts)\" -gt $n ] && [ \"\$(prop $u ActiveState)\" = active ]"
fact watchdog.input "$n->$(prop $u NRestarts) $(prop $u ActiveState)"

# --- poweroff: the journal (read on the host) shows how everything stopped ---------------------
echo 0 >"$S/status"
echo "== poweroff at $(date -u +%T)"
sync
logger -t pf-guest-driver "POWEROFF"
systemctl poweroff
