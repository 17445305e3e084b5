#!/bin/bash
# End-to-end test of the sysom-mcp packages on a real systemd (issue 7).
#
#   sudo bash tests/e2e/run.sh                 # build packages if needed, run all steps
#   sudo bash tests/e2e/run.sh --rootfs-only   # only build/refresh the cached guest rootfs
#
# Boots a Debian 12 rootfs (mmdebstrap, cached) with `systemd-nspawn -b` in its own network
# namespace, installs dist/sysom-mcp_*.deb and dist/sysom-mcp-*.rpm in it and runs
# tests/e2e/guest/test.sh there. Prints PASS/FAIL per step; exits non-zero on any FAIL or if the
# guest run did not complete.
#
# Environment:
#   E2E_CACHE    cache directory (default /var/cache/sysom-mcp-e2e); the rootfs lives in
#                $E2E_CACHE/rootfs-<hash of package list + hooks>, rebuilt when absent
#   E2E_MIRROR   Debian mirror (default: the URI in /etc/apt/sources.list.d/*.sources)
#   E2E_DEB, E2E_RPM   packages to test (default: dist/sysom-mcp_*.deb, dist/sysom-mcp-*.rpm;
#                E2E_RPM=none skips the .rpm (step 11 then fails);
#                `make deb rpm` runs when they are absent)
#   E2E_TIMEOUT  seconds the guest may run (default 900)
#   E2E_STEPS    space-separated step numbers to run (default: all)
#   E2E_KEEP     1 = keep the staging directory with the guest's results and journal
# Step 13 binds the host's /dev/kmsg into the guest (read-only, with CAP_SYSLOG) and, on a
# cgroup v1 host, a 32 MiB memory cgroup at /run/e2e-memcg (see "what step 13 needs" below).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${E2E_CACHE:-/var/cache/sysom-mcp-e2e}
timeout_s=${E2E_TIMEOUT:-900}
suite=bookworm
mcp_spec=${E2E_MCP_SPEC:-mcp==2.3.0}
start_ts=$(date +%s)

log() { printf '[e2e %3ss] %s\n' "$(( $(date +%s) - start_ts ))" "$*"; }
die() { printf 'e2e: %s\n' "$*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root (systemd-nspawn, mmdebstrap): sudo bash $0"

apt_install() {
    local i
    for i in 1 2; do
        if DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; then return 0; fi
        log "apt-get install $* failed (try $i), updating lists and retrying"
        apt-get update -q || true
        sleep 3
    done
    die "cannot install $*"
}

# --- host tools -------------------------------------------------------------------------
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)   # upgrades host systemd libs; harmless
command -v dpkg-deb >/dev/null || need+=(dpkg)
if [ ${#need[@]} -gt 0 ]; then
    log "installing host tools: ${need[*]}"
    apt_install "${need[@]}"
fi

# --- rootfs (cached) ---------------------------------------------------------------------
packages=(
    systemd systemd-sysv dbus udev kmod iproute2 procps less
    python3 python3-venv curl ca-certificates openssl
    nftables iptables firewalld ufw
    rpm nginx
)
mirror=${E2E_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(awk '/^URIs:/{print $2}' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -m1 -E '/debian/?$' || true)
    mirror=${mirror:-http://deb.debian.org/debian}
fi
secmirror=${E2E_SECURITY_MIRROR:-}
if [ -z "$secmirror" ]; then
    secmirror=$(awk '/^URIs:/{print $2}' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -m1 -E 'debian-security/?$' || true)
    secmirror=${secmirror:-http://deb.debian.org/debian-security}
fi
key=$( { echo "$suite ${packages[*]} $mcp_spec"; cat "$here/rootfs-customize.sh" "$here/guest/e2e-runner.service"; } \
       | sha256sum | cut -c1-16)
rootfs=$cache/rootfs-$key
mkdir -p "$cache"

if [ ! -e "$rootfs/.complete" ]; then
    log "building guest rootfs $rootfs (mirror $mirror; takes 1-3 min)"
    rm -rf "$rootfs" "$rootfs.tmp"
    inc=$(IFS=,; echo "${packages[*]}")
    mmdebstrap --mode=root --variant=minbase --include="$inc" \
        --aptopt='Apt::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook="sh '$here/rootfs-customize.sh' \"\$1\" '$here/guest' '$mcp_spec'" \
        "$suite" "$rootfs.tmp" \
        "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $secmirror $suite-security main" \
        || { rm -rf "$rootfs.tmp"; die "mmdebstrap failed"; }
    touch "$rootfs.tmp/.complete"
    mv "$rootfs.tmp" "$rootfs"
    # drop rootfs builds for other package lists
    for old in "$cache"/rootfs-*; do
        [ "$old" = "$rootfs" ] || rm -rf "$old"
    done
    log "rootfs ready: $(du -sh "$rootfs" | cut -f1)"
else
    log "using cached rootfs $rootfs"
fi
[ "${1:-}" = --rootfs-only ] && exit 0

# --- packages ----------------------------------------------------------------------------
shopt -s nullglob
debs=(${E2E_DEB:-$repo/dist/sysom-mcp_*.deb})
rpms=(${E2E_RPM:-$repo/dist/sysom-mcp-*.rpm})
if [ -z "${E2E_DEB:-}" ] && { [ ${#debs[@]} -eq 0 ] || [ ${#rpms[@]} -eq 0 ]; }; then
    log "no packages in dist/, running make deb rpm"
    make -C "$repo" deb rpm
    debs=("$repo"/dist/sysom-mcp_*.deb)
    rpms=("$repo"/dist/sysom-mcp-*.rpm)
fi
[ ${#debs[@]} -ge 1 ] || die "no .deb found (dist/sysom-mcp_*.deb)"
deb=$(ls -t "${debs[@]}" | head -1)
rpm_file=
for f in "${rpms[@]}"; do [ -f "$f" ] && [ "$f" -nt "${rpm_file:-/nonexistent}" ] && rpm_file=$f; done
log "deb: $deb"
log "rpm: ${rpm_file:-<none>}"

# --- staging dir bound to /e2e in the guest -------------------------------------------------
stage=$(mktemp -d "$cache/run-XXXXXX")
cleanup() {
    [ -z "${memcg:-}" ] || rmdir "$memcg" 2>/dev/null || true
    if [ "${E2E_KEEP:-0}" = 1 ]; then log "kept $stage"; else rm -rf "$stage"; fi
}
trap cleanup EXIT
mkdir -p "$stage/pkg" "$stage/out"
cp "$deb" "$stage/pkg/"
[ -n "$rpm_file" ] && cp "$rpm_file" "$stage/pkg/"
cp -r "$here/guest" "$stage/guest"
chmod +x "$stage"/guest/*.sh "$stage"/guest/*.py
if [ -d "$repo/tests/mock_sysom" ]; then
    cp -r "$repo/tests/mock_sysom" "$stage/mock_sysom"
fi

# Upgrade package for step 10: the same .deb repacked with version <v>+e2e1.
upg=$stage/upgrade
mkdir -p "$upg"
dpkg-deb -R "$deb" "$upg/tree"
ver=$(sed -n 's/^Version: //p' "$upg/tree/DEBIAN/control")
sed -i "s/^Version: .*/Version: ${ver}+e2e1/" "$upg/tree/DEBIAN/control"
mkdir -p "$stage/pkg/upgrade"
dpkg-deb -Zgzip -b "$upg/tree" "$stage/pkg/upgrade/" >/dev/null
rm -rf "$upg"
{
    echo "DEB=/e2e/pkg/$(basename "$deb")"
    echo "DEB_UPGRADE=$(ls "$stage"/pkg/upgrade/*.deb | sed "s|^$stage|/e2e|")"
    echo "DEB_VERSION=$ver"
    [ -n "$rpm_file" ] && echo "RPM=/e2e/pkg/$(basename "$rpm_file")"
    echo "E2E_STEPS='${E2E_STEPS:-}'"
} > "$stage/env"
chmod -R a+rX "$stage"

# --- what step 13 (induced conditions) needs from the host ------------------------------------
# The guest shares the host kernel, and so its kernel log; but systemd-nspawn gives a container
# no /dev/kmsg and drops CAP_SYSLOG (needed with kernel.dmesg_restrict=1). A VM or a real host
# has both, so the guest gets the host's /dev/kmsg read-only and CAP_SYSLOG.
nspawn_extra=(--bind-ro=/dev/kmsg --capability=CAP_SYSLOG)
# On a cgroup v1 host nspawn mounts the guest's memory hierarchy read-only, so systemd in the
# guest cannot enforce MemoryMax=. For the OOM check the host then prepares a 32 MiB memory
# cgroup (a child of this script's own) and binds it into the guest at /run/e2e-memcg.
memcg=
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] && [ -d /sys/fs/cgroup/memory ]; then
    own=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup)
    memcg=/sys/fs/cgroup/memory${own%/}/sysom-e2e-oom-$$
    if mkdir "$memcg" 2>/dev/null && echo $((32 << 20)) > "$memcg/memory.limit_in_bytes"; then
        nspawn_extra+=(--bind="$memcg:/run/e2e-memcg")
        echo "E2E_MEMCG=$(basename "$memcg")" >> "$stage/env"
        log "cgroup v1 host: prepared memory cgroup $memcg (32 MiB) for the OOM check"
    else
        log "cgroup v1 host: cannot prepare a memory cgroup under ${own:-?}; step 13's OOM check will fail"
        rmdir "$memcg" 2>/dev/null; memcg=
    fi
fi

# --- boot -------------------------------------------------------------------------------
log "booting guest (timeout ${timeout_s}s)"
nspawn_rc=0
timeout --foreground -k 10 "$timeout_s" \
    systemd-nspawn -q -D "$rootfs" --volatile=overlay --register=no --keep-unit \
        --private-network --machine=sysom-e2e --bind="$stage:/e2e" "${nspawn_extra[@]}" \
        -b e2e.run </dev/null || nspawn_rc=$?
log "guest exited (nspawn rc $nspawn_rc)"

# --- results ----------------------------------------------------------------------------
results=$stage/out/results
echo
echo "================ sysom-mcp e2e results ================"
if [ -s "$results" ]; then cat "$results"; else echo "(no results recorded)"; fi
echo "======================================================="
fails=$(grep -c '^FAIL' "$results" 2>/dev/null || true)
passes=$(grep -c '^PASS' "$results" 2>/dev/null || true)
guest_rc=$(cat "$stage/out/rc" 2>/dev/null || echo missing)
log "total $(( $(date +%s) - start_ts ))s: ${passes:-0} passed, ${fails:-0} failed, guest rc $guest_rc"
if [ "$guest_rc" = missing ]; then
    echo "e2e: the guest run did not complete (timeout or crash)" >&2
    if [ -s "$stage/out/journal.txt" ]; then tail -n 200 "$stage/out/journal.txt"; fi
    E2E_KEEP=1
    exit 1
fi
if [ "${fails:-0}" != 0 ] || [ "$guest_rc" != 0 ]; then
    E2E_KEEP=1
    exit 1
fi
exit 0
