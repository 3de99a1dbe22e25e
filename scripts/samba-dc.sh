#!/usr/bin/env bash
# Run a real Samba AD DC in a private network namespace for RPCGate's interop
# tests and fixture capture.
#
#   scripts/samba-dc.sh up      create netns/veth, provision (cached), start samba, wait ready
#   scripts/samba-dc.sh down    stop that samba (by its recorded PID) and delete netns/veth
#   scripts/samba-dc.sh status  print what is running
#
# Topology:   host  rpcg-h 10.99.0.1/24  <--veth-->  rpcg-s 10.99.0.2/24  netns rpcg-srv
# The namespace has no default route: the DC can only talk to this machine.
#
# Domain:  realm EXAMPLE.TEST, NetBIOS domain EXAMPLE, DC host name dc1 (dc1.example.test),
#          Administrator password: Passw0rd!Test   (test-only credentials)
#
# State:   ${RPCGATE_TEST_STATE:-/tmp/rpcgate-test}/samba  (provisioned once, reused)
#          ${RPCGATE_TEST_STATE:-/tmp/rpcgate-test}/samba-dc.pid
# Needs root and the packages from scripts/install-test-deps.sh.
set -euo pipefail

NS=rpcg-srv
VETH_H=rpcg-h
VETH_S=rpcg-s
HOST_IP=10.99.0.1
SRV_IP=10.99.0.2
REALM=EXAMPLE.TEST
DOMAIN=EXAMPLE
HOSTNAME_DC=dc1
ADMIN_PASS='Passw0rd!Test'
READY_TIMEOUT=${RPCGATE_DC_READY_TIMEOUT:-60}

STATE=${RPCGATE_TEST_STATE:-/tmp/rpcgate-test}
DIR=$STATE/samba
CONF=$DIR/etc/rpcgate-smb.conf
PIDFILE=$STATE/samba-dc.pid
LOCKFILE=$STATE/samba-dc.lock
SAMBA_BIN=/usr/sbin/samba
PY=/usr/bin/python3

log() { printf 'samba-dc: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, port 135)"; }
need_tools() {
    local t
    for t in ip setsid flock samba-tool "$SAMBA_BIN" "$PY"; do
        command -v "$t" >/dev/null || die "'$t' not found; run scripts/install-test-deps.sh first"
    done
    "$PY" -c 'import impacket' 2>/dev/null || die "python3-impacket missing; run scripts/install-test-deps.sh"
}

netns_exists() { [[ -e /run/netns/$NS ]] || ip netns list 2>/dev/null | grep -qE "^$NS( |\$)"; }
link_exists() { ip link show "$1" >/dev/null 2>&1; }

wait_link_gone() { # bounded: 10 s
    local i
    for i in $(seq 1 100); do
        link_exists "$VETH_H" || return 0
        sleep 0.1
    done
    return 1
}

# PID of our samba if it is alive and really is samba, else empty.
running_pid() {
    local pid exe
    [[ -s $PIDFILE ]] || return 0
    pid=$(<"$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    if [[ $exe == "$SAMBA_BIN" ]]; then echo "$pid"; fi
}

net_up() {
    if ! netns_exists; then
        ip netns add "$NS"
    fi
    if link_exists "$VETH_H" && ! ip netns exec "$NS" ip link show "$VETH_S" >/dev/null 2>&1; then
        log "removing stale $VETH_H"
        ip link del "$VETH_H" 2>/dev/null || true
        wait_link_gone || die "stale $VETH_H did not disappear within 10 s"
    fi
    if ! link_exists "$VETH_H"; then
        # a veth of a just-deleted namespace may still be going away
        wait_link_gone || die "$VETH_H still present"
        ip link add "$VETH_H" type veth peer name "$VETH_S"
        ip link set "$VETH_S" netns "$NS"
    fi
    ip addr replace "$HOST_IP/24" dev "$VETH_H"
    ip link set "$VETH_H" up
    ip netns exec "$NS" ip addr replace "$SRV_IP/24" dev "$VETH_S"
    ip netns exec "$NS" ip link set "$VETH_S" up
    ip netns exec "$NS" ip link set lo up
}

write_conf() {
    mkdir -p "$DIR"/{etc,private,state,cache,lock,run,ncalrpc,winbindd,ntp_signd,bind-dns,log}
    cat >"$CONF" <<CONF
# Written by RPCGate scripts/samba-dc.sh. Every path stays under $DIR.
[global]
	netbios name = ${HOSTNAME_DC^^}
	realm = $REALM
	workgroup = $DOMAIN
	server role = active directory domain controller
	interfaces = $SRV_IP 127.0.0.1
	bind interfaces only = yes
	disable netbios = yes
	server services = -dns -dnsupdate -nbt -wrepl -ntp_signd -kcc -drepl -s3fs -winbindd
	idmap_ldb:use rfc2307 = yes
	private dir = $DIR/private
	state directory = $DIR/state
	cache directory = $DIR/cache
	lock directory = $DIR/lock
	pid directory = $DIR/run
	ncalrpc dir = $DIR/ncalrpc
	binddns dir = $DIR/bind-dns
	winbindd socket directory = $DIR/winbindd
	ntp signd socket directory = $DIR/ntp_signd
	log file = $DIR/log/samba.log
	max log size = 10000
	log level = 1
CONF
}

provision() {
    if [[ -f $DIR/.provisioned && -f $DIR/private/sam.ldb ]]; then
        return 0
    fi
    log "provisioning $REALM into $DIR (once)"
    rm -rf "$DIR"
    mkdir -p "$DIR"
    local t0=$SECONDS
    if ! samba-tool domain provision --targetdir="$DIR" --realm="$REALM" --domain="$DOMAIN" \
        --adminpass="$ADMIN_PASS" --server-role=dc --use-rfc2307 \
        --dns-backend=SAMBA_INTERNAL --host-name="$HOSTNAME_DC" --host-ip="$SRV_IP" \
        --option="interfaces = $SRV_IP 127.0.0.1" --option="bind interfaces only = yes" \
        >"$STATE/provision.log" 2>&1; then
        tail -n 30 "$STATE/provision.log" >&2
        rm -rf "$DIR"
        die "samba-tool domain provision failed (log: $STATE/provision.log)"
    fi
    touch "$DIR/.provisioned"
    log "provisioned in $((SECONDS - t0)) s"
}

# Anonymous ept_map for samr v1.0 against 10.99.0.2:135; prints the port.
probe() {
    timeout 10 "$PY" - "$SRV_IP" <<'PYEOF' 2>/dev/null
import sys
from impacket.dcerpc.v5 import transport, epm
from impacket.dcerpc.v5.rpcrt import DCERPCException
from impacket.uuid import uuidtup_to_bin
host = sys.argv[1]
t = transport.DCERPCTransportFactory('ncacn_ip_tcp:%s[135]' % host)
t.set_connect_timeout(3)
dce = t.get_dce_rpc()
dce.connect()
try:
    b = epm.hept_map(host, uuidtup_to_bin(('12345778-1234-abcd-ef00-0123456789ac', '1.0')),
                     protocol='ncacn_ip_tcp', dce=dce)
finally:
    dce.disconnect()
print(b.rsplit('[', 1)[1].rstrip(']'))
PYEOF
}

wait_ready() {
    local pid=$1 start=$SECONDS port
    while (( SECONDS - start < READY_TIMEOUT )); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$DIR/log/samba.stdout" >&2 || true
            die "samba (pid $pid) exited during start-up (log: $DIR/log/samba.stdout)"
        fi
        if port=$(probe) && [[ $port =~ ^[0-9]+$ ]]; then
            log "ready after $((SECONDS - start)) s: ept_map samr -> $SRV_IP:$port"
            return 0
        fi
        sleep 0.5
    done
    tail -n 30 "$DIR/log/samba.stdout" >&2 || true
    die "endpoint mapper on $SRV_IP:135 not answering after ${READY_TIMEOUT} s"
}

cmd_up() {
    local pid
    pid=$(running_pid)
    if [[ -n $pid ]] && netns_exists && link_exists "$VETH_H"; then
        log "already running (pid $pid)"
        wait_ready "$pid"
        return 0
    fi
    if [[ -n $pid ]]; then
        log "samba pid $pid running but network incomplete; restarting"
        stop_samba
    fi
    net_up
    provision
    write_conf
    # a stale samba pid file from an unclean stop would make samba refuse to start
    rm -f "$DIR/run/samba.pid"
    # setsid: own session and process group; ip netns exec and setsid exec in place,
    # so $! is samba's PID (checked below).
    ip netns exec "$NS" setsid "$SAMBA_BIN" -s "$CONF" -F -M single --debug-stdout \
        </dev/null >"$DIR/log/samba.stdout" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$PIDFILE"
    sleep 0.2
    local exe
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    if [[ $exe != "$SAMBA_BIN" ]]; then
        # setsid forked (should not happen in a non-interactive shell): find the child
        local c
        c=$(pgrep -P "$pid" -x samba 2>/dev/null | head -n1 || true)
        [[ -n $c ]] && { pid=$c; echo "$pid" >"$PIDFILE"; }
    fi
    log "started samba pid $pid in netns $NS (log: $DIR/log/samba.stdout)"
    wait_ready "$pid"
}

stop_samba() {
    local pid pgid i
    pid=$(running_pid)
    if [[ -z $pid ]]; then
        rm -f "$PIDFILE"
        return 0
    fi
    pgid=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ' || true)
    log "stopping samba pid $pid"
    if [[ $pgid == "$pid" ]]; then
        kill -TERM -- "-$pgid" 2>/dev/null || true   # its own process group (setsid)
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    for i in $(seq 1 100); do   # bounded: 10 s
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "samba pid $pid did not exit after SIGTERM; sending SIGKILL"
        if [[ $pgid == "$pid" ]]; then kill -KILL -- "-$pgid" 2>/dev/null || true
        else kill -KILL "$pid" 2>/dev/null || true; fi
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$PIDFILE"
}

cmd_down() {
    stop_samba
    if netns_exists; then
        ip netns del "$NS" || log "warning: ip netns del $NS failed"
    fi
    if link_exists "$VETH_H"; then
        wait_link_gone || { ip link del "$VETH_H" 2>/dev/null || true; wait_link_gone || die "$VETH_H did not disappear within 20 s"; }
    fi
    log "down"
}

cmd_status() {
    local pid
    pid=$(running_pid)
    if [[ -n $pid ]]; then echo "samba: running pid $pid"; else echo "samba: not running"; fi
    if netns_exists; then echo "netns $NS: present"; else echo "netns $NS: absent"; fi
    if link_exists "$VETH_H"; then echo "veth $VETH_H: present"; else echo "veth $VETH_H: absent"; fi
    if [[ -f $DIR/.provisioned ]]; then echo "provisioned: $DIR"; else echo "provisioned: no"; fi
    if [[ -n $pid ]]; then
        local port
        if port=$(probe); then echo "ept_map samr: $SRV_IP:$port"; else echo "ept_map samr: no answer"; fi
    fi
    [[ -n $pid ]]
}

main() {
    local cmd=${1:-}
    case $cmd in
        up|down|status) ;;
        *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
    esac
    need_root
    [[ $cmd == status ]] || need_tools
    mkdir -p "$STATE"
    exec 9>"$LOCKFILE"
    flock -w 120 9 || die "another samba-dc.sh holds $LOCKFILE"
    "cmd_$cmd"
}

main "$@"
