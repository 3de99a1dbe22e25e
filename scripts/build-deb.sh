#!/usr/bin/env bash
# Builds the Debian package rpcgate_<version>_<arch>.deb from a release build with the Swift
# runtime linked in (it then needs only libc, libm, libstdc++ and libgcc_s):
#
#   scripts/build-deb.sh [OUTPUT-DIRECTORY]        # default test-output/deb
#
# Contents: /usr/bin/rpcgate; the systemd unit (deploy/systemd/rpcgate.service, ExecStart pointed
# at /usr/bin) in /lib/systemd/system and its sysusers file; /etc/rpcgate/rpcgate.yaml (the example
# configuration, a conffile); the man page (swift-argument-parser's generate-manual, built from the
# package checkout, offline); bash, zsh and fish completions (`rpcgate --generate-completion-script`);
# copyright, changelog and example configurations in /usr/share/doc/rpcgate. Maintainer scripts:
# deploy/debian/{postinst,prerm,postrm}.
#
# The release build uses its own scratch path (.build-release, RPCGATE_RELEASE_SCRATCH) so the debug
# build in .build is untouched; a cold build takes about 8 minutes on 2 idle cores (39 min measured
# while three other Swift builds shared them), a change to the CLI about 1.5 min, an unchanged tree
# seconds. The version is the binary's (`rpcgate --version`), the commit is embedded by
# Plugins/BuildInfoPlugin (RPCGATE_GIT_COMMIT overrides it). Timestamps come from the commit's date
# (SOURCE_DATE_EPOCH), so two builds of one commit give the same files.
#
# The last line printed is the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${1:-$REPO/test-output/deb}
SCRATCH=${RPCGATE_RELEASE_SCRATCH:-$REPO/.build-release}
MAINTAINER=${RPCGATE_DEB_MAINTAINER:-RPCGate developers <rpcgate@users.noreply.github.com>}
log() { printf 'build-deb: %s\n' "$*" >&2; }

for tool in swift dpkg-deb dpkg objdump gzip; do
    command -v "$tool" >/dev/null || { log "$tool not found"; exit 1; }
done
mkdir -p "$OUT"

if [[ -z ${RPCGATE_GIT_COMMIT:-} ]] && commit=$(git rev-parse --short=12 HEAD 2>/dev/null); then
    [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]] && commit+=-dirty
    export RPCGATE_GIT_COMMIT=$commit
fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

# 1. the release binary (full RELRO: -z now, as lintian's hardening check expects)
# Swift's dynamic exclusivity checks off in every module, SwiftNIO's included, as in the README's
# build steps (docs/PERFORMANCE.md: the trade-off); RPCGATE_EXCLUSIVITY_CHECKS=1 keeps them.
RELEASE=(-c release --static-swift-stdlib --product rpcgate --scratch-path "$SCRATCH" -Xlinker -z -Xlinker now)
[[ -n ${RPCGATE_EXCLUSIVITY_CHECKS:-} ]] || RELEASE+=(-Xswiftc -enforce-exclusivity=unchecked)
log "swift build ${RELEASE[*]}"
start=$(date +%s)
if ! swift build "${RELEASE[@]}" >"$OUT/build.log" 2>&1; then
    grep -vE '^\[[0-9]+/[0-9]+\]' "$OUT/build.log" | tail -n 40 >&2
    log "release build failed (log: $OUT/build.log)"; exit 1
fi
BIN=$(swift build "${RELEASE[@]}" --show-bin-path)/rpcgate
log "release build: $(( $(date +%s) - start )) s"
VERSION=$("$BIN" --version | awk '{print $1}')
[[ $VERSION =~ ^[0-9][0-9A-Za-z.+~]*$ ]] || { log "unexpected version \"$VERSION\""; exit 1; }
ARCH=$(dpkg --print-architecture)

# 2. generate-manual from the swift-argument-parser checkout the build resolved (no network)
PARSER=$SCRATCH/checkouts/swift-argument-parser
[[ -f $PARSER/Package.swift ]] || { log "$PARSER missing: the release build did not resolve swift-argument-parser"; exit 1; }
log "swift build --product generate-manual (swift-argument-parser)"
if ! swift build --package-path "$PARSER" --scratch-path "$SCRATCH/generate-manual" --product generate-manual \
    --disable-automatic-resolution >"$OUT/generate-manual.log" 2>&1; then
    tail -n 40 "$OUT/generate-manual.log" >&2
    log "generate-manual build failed (log: $OUT/generate-manual.log)"; exit 1
fi
GENERATE_MANUAL=$(swift build --package-path "$PARSER" --scratch-path "$SCRATCH/generate-manual" --show-bin-path)/generate-manual

# 3. the tree
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/rpcgate-deb.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
ROOT=$STAGE/rpcgate_${VERSION}_$ARCH
DOC=$ROOT/usr/share/doc/rpcgate
install -d "$ROOT/DEBIAN" "$ROOT/usr/bin" "$ROOT/lib/systemd/system" "$ROOT/usr/lib/sysusers.d" "$ROOT/etc/rpcgate" \
    "$ROOT/usr/share/man/man1" "$ROOT/usr/share/bash-completion/completions" "$ROOT/usr/share/zsh/vendor-completions" \
    "$ROOT/usr/share/fish/vendor_completions.d" "$DOC/examples" "$ROOT/usr/share/lintian/overrides"

install -m 0755 "$BIN" "$ROOT/usr/bin/rpcgate"
strip --strip-unneeded --remove-section=.comment "$ROOT/usr/bin/rpcgate"
sed -e 's|/usr/local/bin/rpcgate|/usr/bin/rpcgate|g' \
    -e 's|^Description=.*|&\nDocumentation=man:rpcgate(1) file:///usr/share/doc/rpcgate/README.md.gz|' \
    -e 's|^#   install -m 0755 rpcgate /usr/local/bin/rpcgate .*|#   (installed by the Debian package rpcgate: see /usr/share/doc/rpcgate)|' \
    deploy/systemd/rpcgate.service >"$ROOT/lib/systemd/system/rpcgate.service"
chmod 0644 "$ROOT/lib/systemd/system/rpcgate.service"
grep -q '^ExecStart=/usr/bin/rpcgate run --config /etc/rpcgate/rpcgate.yaml$' "$ROOT/lib/systemd/system/rpcgate.service" \
    || { log "the unit's ExecStart was not rewritten"; exit 1; }
install -m 0644 deploy/systemd/rpcgate.sysusers.conf "$ROOT/usr/lib/sysusers.d/rpcgate.conf"
install -m 0644 config/rpcgate.example.yaml "$ROOT/etc/rpcgate/rpcgate.yaml"
echo /etc/rpcgate/rpcgate.yaml >"$ROOT/DEBIAN/conffiles"

# man page: one page, every subcommand a section; dated by the commit
MAN=$STAGE/man
mkdir -p "$MAN"
"$GENERATE_MANUAL" "$BIN" --output-directory "$MAN" --date "$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)" \
    --authors "The RPCGate authors" >&2
[[ -s $MAN/rpcgate.1 ]] || { log "generate-manual wrote no rpcgate.1"; exit 1; }
gzip -9n <"$MAN/rpcgate.1" >"$ROOT/usr/share/man/man1/rpcgate.1.gz"

# bash-completion sources the file: no #! line (lintian: bash-completion-with-hashbang).
"$BIN" --generate-completion-script bash | sed '1{/^#!/d}' >"$ROOT/usr/share/bash-completion/completions/rpcgate"
"$BIN" --generate-completion-script zsh >"$ROOT/usr/share/zsh/vendor-completions/_rpcgate"
"$BIN" --generate-completion-script fish >"$ROOT/usr/share/fish/vendor_completions.d/rpcgate.fish"

install -m 0644 deploy/debian/copyright "$DOC/copyright"
gzip -9n <README.md >"$DOC/README.md.gz"
gzip -9n <CHANGELOG.md >"$DOC/CHANGELOG.md.gz"
gzip -9n <docs/DEPLOYMENT.md >"$DOC/DEPLOYMENT.md.gz"
install -m 0644 config/rpcgate.example.yaml config/rpcgate.dc-hardened.yaml "$DOC/examples/"
{
    printf 'rpcgate (%s) unstable; urgency=medium\n\n' "$VERSION"
    printf '  * Release %s, commit %s.\n' "$VERSION" "${RPCGATE_GIT_COMMIT:-unknown}"
    printf '  * What changed for users: CHANGELOG.md.gz in this directory.\n\n'
    printf ' -- %s  %s\n' "$MAINTAINER" "$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$DOC/changelog.gz"
install -m 0644 deploy/debian/lintian-overrides "$ROOT/usr/share/lintian/overrides/rpcgate"
install -m 0755 deploy/debian/postinst deploy/debian/prerm deploy/debian/postrm "$ROOT/DEBIAN/"

# Depends: the package of every shared library the binary needs, with the glibc it was linked for.
depends=()
for lib in $(objdump -p "$ROOT/usr/bin/rpcgate" | awk '/NEEDED/ {print $2}'); do
    # (no early exit in these pipelines: with pipefail a writer killed by SIGPIPE fails the script)
    path=$(ldconfig -p | awk -v lib="$lib" '$1 == lib && /x86-64|x86_64/ && !found {print $NF; found = 1}')
    [[ -n $path ]] || { log "cannot find $lib"; exit 1; }
    pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | sed -n '1s/:.*//p') || pkg=
    [[ -n $pkg ]] || pkg=$(dpkg -S "$path" 2>/dev/null | sed -n '1s/:.*//p') || pkg=
    [[ -n $pkg ]] || { log "no package owns $path"; exit 1; }
    depends+=("$pkg")
done
glibc=$(objdump -T "$ROOT/usr/bin/rpcgate" | grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' | sed 's/GLIBC_//' | sort -uV | tail -1)
depends_field=$(printf '%s\n' "${depends[@]}" | sort -u | while read -r pkg; do
    if [[ $pkg == libc6 && -n $glibc ]]; then echo "libc6 (>= $glibc)"; else echo "$pkg"; fi
done | paste -sd, | sed 's/,/, /g')

installed_size=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
cat >"$ROOT/DEBIAN/control" <<EOF
Package: rpcgate
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $installed_size
Depends: $depends_field
Section: net
Priority: optional
Description: gateway for Microsoft RPC (DCE/RPC over TCP)
 RPCGate sits between a client segment and Windows or Samba servers such as
 Active Directory domain controllers. Clients reach the servers through TCP 135
 and one small port range: endpoint-mapper replies are rewritten into the
 gateway's ports, and every bind and call is checked against an interface
 policy (with built-in profiles against DCSync, authentication coercion and
 remote execution) before it reaches the server.
 .
 The package installs the rpcgate command, a hardened systemd unit (not
 started or enabled), the service user rpcgate, and an example configuration
 in /etc/rpcgate/rpcgate.yaml. "rpcgate demo" shows the gateway working on
 loopback; "rpcgate init --server DC" writes a configuration for a real server.
EOF

(cd "$ROOT" && find . -type f ! -path './DEBIAN/*' -printf '%P\n' | LC_ALL=C sort | xargs md5sum) >"$ROOT/DEBIAN/md5sums"

# Reproducible ownership and times: root:root, every mtime the commit's.
find "$ROOT" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
DEB=$OUT/rpcgate_${VERSION}_$ARCH.deb
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$DEB" >&2
log "$(dpkg-deb --info "$DEB" | awk '/Version:|Installed-Size:|Depends:/' | tr -s ' ' | paste -sd';')"
echo "$DEB"
