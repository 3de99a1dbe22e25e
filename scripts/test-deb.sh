#!/usr/bin/env bash
# Builds the Debian package (scripts/build-deb.sh), checks it with lintian, installs it on this
# machine with dpkg -i, checks the installed files and commands, purges it and checks that
# nothing is left: no file of the package, no /etc/rpcgate, no /var/log/rpcgate, no user.
#
#   scripts/test-deb.sh [PATH.deb]       # default: build it first
#
# Must run as root. Refuses to run when an rpcgate package or user already exists (it would be
# replaced and then purged). Never starts the service. The last line is "deb: ok" or an error.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=$REPO/test-output/deb
mkdir -p "$OUT"
log() { printf 'test-deb: %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || fail "must run as root (dpkg -i)"
if dpkg-query -W -f='${db:Status-Status}' rpcgate 2>/dev/null | grep -qx installed; then
    fail "a package rpcgate is already installed; not touching it"
fi
getent passwd rpcgate >/dev/null && fail "a user rpcgate already exists; not touching it"

if [[ $# -ge 1 ]]; then
    DEB=$1
else
    start=$(date +%s)
    DEB=$(scripts/build-deb.sh "$OUT" | tail -1)
    log "built $DEB in $(( $(date +%s) - start )) s"
fi
[[ -f $DEB ]] || fail "$DEB missing"
[[ $(basename "$DEB") =~ ^rpcgate_[0-9][0-9A-Za-z.+~]*_[a-z0-9]+\.deb$ ]] || fail "unexpected file name $(basename "$DEB")"

# lintian: no error or warning left (the overrides in the package each say why)
if command -v lintian >/dev/null; then
    lintian --fail-on error,warning --display-info "$DEB" >"$OUT/lintian.txt" 2>&1 || {
        cat "$OUT/lintian.txt" >&2; fail "lintian reports errors or warnings"
    }
    log "lintian: $(grep -c . "$OUT/lintian.txt" || true) info lines (test-output/deb/lintian.txt), no error or warning"
else
    fail "lintian not installed (scripts/install-test-deps.sh installs it)"
fi

installed=0
purge() {
    if [[ $installed -eq 1 ]]; then
        installed=0
        dpkg --purge rpcgate >"$OUT/purge.log" 2>&1 || { cat "$OUT/purge.log" >&2; return 1; }
    fi
}
trap 'purge || true' EXIT

dpkg -i "$DEB" >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log" >&2; fail "dpkg -i"; }
installed=1
dpkg-query -L rpcgate | sort >"$OUT/files.txt"

# the command
version=$(rpcgate --version)
[[ $version =~ ^[0-9][0-9A-Za-z.+~]*\ \((commit\ [0-9a-f]{7,}(-dirty)?|unknown\ commit)\)$ ]] || fail "rpcgate --version: \"$version\""
[[ $version == *commit\ * && $version != *unknown* ]] || fail "rpcgate --version names no commit: \"$version\""
[[ $(command -v rpcgate) == /usr/bin/rpcgate ]] || fail "rpcgate is $(command -v rpcgate), not /usr/bin/rpcgate"
rpcgate check-config /etc/rpcgate/rpcgate.yaml >"$OUT/check-config.txt" || fail "check-config /etc/rpcgate/rpcgate.yaml"
rpcgate check-config --config /etc/rpcgate/rpcgate.yaml >/dev/null || fail "check-config --config /etc/rpcgate/rpcgate.yaml"
grep -qx '/etc/rpcgate/rpcgate.yaml' <(dpkg-query -W -f='${Conffiles}\n' rpcgate | awk '{print $1}') \
    || fail "/etc/rpcgate/rpcgate.yaml is not a conffile"
ldd /usr/bin/rpcgate | grep -q 'libswiftCore' && fail "the binary links the Swift runtime dynamically"

# the unit and the user
UNIT=/lib/systemd/system/rpcgate.service
[[ -f $UNIT ]] || fail "$UNIT missing"
grep -qx 'ExecStart=/usr/bin/rpcgate run --config /etc/rpcgate/rpcgate.yaml' "$UNIT" || fail "ExecStart in $UNIT"
grep -qx 'ExecStartPre=/usr/bin/rpcgate check-config /etc/rpcgate/rpcgate.yaml' "$UNIT" || fail "ExecStartPre in $UNIT"
if command -v systemd-analyze >/dev/null; then
    # In a scratch root as test_deploy.py does (the distribution's units, the installed unit,
    # binary and kill): the host's systemd state does not matter. No output means no warning.
    root=$(mktemp -d)
    mkdir -p "$root/usr/lib/systemd" "$root/usr/bin"
    ln -s usr/bin "$root/bin"
    cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/system"
    install -D -m 0644 "$UNIT" "$root/lib/systemd/system/rpcgate.service"
    install -m 0755 /usr/bin/rpcgate "$root/usr/bin/rpcgate"
    install -m 0755 "$(type -P kill)" "$root/usr/bin/kill"
    (cd "$root" && systemd-analyze verify --root="$root" rpcgate.service) >"$OUT/systemd-analyze.txt" 2>&1 \
        || { rm -rf "$root"; cat "$OUT/systemd-analyze.txt" >&2; fail "systemd-analyze verify"; }
    rm -rf "$root"
    [[ -s $OUT/systemd-analyze.txt ]] && { cat "$OUT/systemd-analyze.txt" >&2; fail "systemd-analyze verify warned"; }
fi
getent passwd rpcgate | grep -q ':/nonexistent:/usr/sbin/nologin$' || fail "user rpcgate: $(getent passwd rpcgate)"
if [[ -d /run/systemd/system ]]; then
    systemctl is-active --quiet rpcgate.service && fail "the install started the service"
    systemctl is-enabled --quiet rpcgate.service && fail "the install enabled the service"
fi
# (other rpcgate processes on this machine, e.g. a test suite's, run other binaries)
for pid in $(pgrep -x rpcgate || true); do
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == /usr/bin/rpcgate ]] && fail "the installed rpcgate runs (pid $pid) after the install"
done

# man page and completions
MANPAGE=/usr/share/man/man1/rpcgate.1.gz
[[ -f $MANPAGE ]] || fail "$MANPAGE missing"
man_text=$(MANWIDTH=100 man -l "$MANPAGE" 2>"$OUT/man.err" | col -b) || fail "man -l $MANPAGE"
for word in check-config demo init run explain endpoints interfaces; do
    grep -q "$word" <<<"$man_text" || fail "the man page does not mention $word"
done
[[ -s $OUT/man.err ]] && { cat "$OUT/man.err" >&2; fail "man warnings"; }
bash -c 'source /usr/share/bash-completion/completions/rpcgate && complete -p rpcgate' >/dev/null \
    || fail "bash completion does not register"
grep -q 'demo' /usr/share/bash-completion/completions/rpcgate || fail "bash completion lacks demo"
[[ -s /usr/share/zsh/vendor-completions/_rpcgate ]] || fail "zsh completion missing"
[[ -s /usr/share/fish/vendor_completions.d/rpcgate.fish ]] || fail "fish completion missing"
log "installed: $(grep -c . "$OUT/files.txt") paths; $version; check-config, unit, user, man page, completions ok"

# purge: nothing of ours left
purge || fail "dpkg --purge"
dpkg-query -W -f='${db:Status-Status}' rpcgate 2>/dev/null | grep -qx 'installed\|config-files' && fail "package still known to dpkg"
left=()
while read -r path; do
    [[ -e $path && ! -d $path ]] && left+=("$path")
done <"$OUT/files.txt"
for path in /etc/rpcgate /var/log/rpcgate /usr/share/doc/rpcgate /etc/systemd/system/multi-user.target.wants/rpcgate.service; do
    [[ -e $path ]] && left+=("$path")
done
[[ ${#left[@]} -eq 0 ]] || fail "left after purge: ${left[*]}"
getent passwd rpcgate >/dev/null && fail "user rpcgate left after purge"
getent group rpcgate >/dev/null && fail "group rpcgate left after purge"
log "purged: no file, directory, user or group left"
echo "deb: ok ($(basename "$DEB"))"
