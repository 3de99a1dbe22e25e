#!/usr/bin/env bash
# Install the Debian packages RPCGate's interop tests and fixture capture need:
# a real Samba AD DC, Samba's rpcclient, impacket, pytest, tshark, Kerberos tools,
# iproute2/nftables and haproxy; chromium (headless screenshot of the status page), python3-yaml
# and systemd-analyze for the operations and deploy tests; lintian for the Debian package test;
# rsyslog (a real syslog receiver for the audit log's RFC 5424 output; the tests run their own
# rsyslogd on loopback).
#
# Idempotent: returns quickly when everything is already installed.
# Non-interactive; no daemon is left running on the host afterwards.
# Must run as root (Debian 12).
set -euo pipefail

PKGS=(samba-ad-dc samba-ad-provision smbclient python3-impacket python3-pytest tshark
      krb5-user iproute2 nftables haproxy chromium python3-yaml lintian rsyslog)
# systemd-analyze (deploy tests) only if absent: naming systemd would upgrade an installed one.
command -v systemd-analyze >/dev/null || PKGS+=(systemd)
# Daemons that package scripts could start on the host.
DAEMON_EXES=(/usr/sbin/samba /usr/sbin/smbd /usr/sbin/nmbd /usr/sbin/winbindd
             /usr/sbin/haproxy /usr/sbin/krb5kdc /usr/sbin/rsyslogd)
UNITS=(samba-ad-dc smbd nmbd winbind samba haproxy rsyslog)

log() { printf 'install-test-deps: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root"
command -v apt-get >/dev/null || die "apt-get not found (Debian/Ubuntu only)"

missing=()
for p in "${PKGS[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ $st == installed ]] || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    log "all packages already installed"
    exit 0
fi
log "missing: ${missing[*]}"

export DEBIAN_FRONTEND=noninteractive
export DEBCONF_NONINTERACTIVE_SEEN=true

# PIDs of host-namespace daemons running before the install (we never touch those).
host_netns=$(readlink /proc/self/ns/net)
daemon_pids() {
    local d exe
    for d in /proc/[0-9]*; do
        exe=$(readlink "$d/exe" 2>/dev/null) || continue
        for e in "${DAEMON_EXES[@]}"; do
            if [[ $exe == "$e" ]]; then
                # only processes in the host network namespace
                [[ $(readlink "$d/ns/net" 2>/dev/null) == "$host_netns" ]] && echo "${d#/proc/}"
                break
            fi
        done
    done
}
systemd_running() { [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; }
before_pids=$(daemon_pids | sort -n || true)
before_units=""
if systemd_running; then
    for u in "${UNITS[@]}"; do
        systemctl is-active --quiet "$u" 2>/dev/null && before_units+="$u " || true
    done
fi

# Keep package scripts from starting daemons.
POLICY=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
    if [[ $created_policy -eq 1 ]]; then rm -f "$POLICY"; fi
}
trap cleanup EXIT
if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\n# temporary, created by RPCGate scripts/install-test-deps.sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    created_policy=1
fi

# Preseed krb5-config so it never prompts (realm only matters to kinit users;
# tests use their own KRB5_CONFIG).
if command -v debconf-set-selections >/dev/null; then
    debconf-set-selections <<'SEL'
krb5-config krb5-config/default_realm string EXAMPLE.TEST
krb5-config krb5-config/add_servers_realm string EXAMPLE.TEST
krb5-config krb5-config/add_servers boolean false
krb5-config krb5-config/kerberos_servers string
krb5-config krb5-config/admin_server string
krb5-config krb5-config/read_conf boolean true
SEL
fi

APT_OPTS=(-y --no-install-recommends -o DPkg::Lock::Timeout=300
          -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

# apt-get update once if the lists are absent or the packages are unknown.
need_update=0
if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
    need_update=1
else
    for p in "${missing[@]}"; do
        if ! apt-cache show "$p" >/dev/null 2>&1; then need_update=1; break; fi
    done
fi
if [[ $need_update -eq 1 ]]; then
    log "apt-get update"
    apt-get -o DPkg::Lock::Timeout=300 update -q
fi

log "apt-get install ${missing[*]}"
if ! apt-get install "${APT_OPTS[@]}" "${PKGS[@]}"; then
    log "install failed; retrying once after apt-get update"
    apt-get -o DPkg::Lock::Timeout=300 update -q
    apt-get install "${APT_OPTS[@]}" "${PKGS[@]}"
fi

# Stop anything the install started (and only that).
if systemd_running; then
    for u in "${UNITS[@]}"; do
        if systemctl is-active --quiet "$u" 2>/dev/null && [[ " $before_units " != *" $u "* ]]; then
            log "stopping unit $u started by the install"
            systemctl stop "$u" || true
        fi
    done
fi
after_pids=$(daemon_pids | sort -n || true)
new_pids=$(comm -13 <(printf '%s\n' "$before_pids") <(printf '%s\n' "$after_pids") | sed '/^$/d' || true)
for pid in $new_pids; do
    log "stopping daemon pid $pid ($(readlink /proc/$pid/exe 2>/dev/null)) started by the install"
    kill "$pid" 2>/dev/null || true
done
for pid in $new_pids; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
done

for p in "${PKGS[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ $st == installed ]] || die "package $p not installed after apt-get"
done
log "done"
