#!/bin/sh
# mmdebstrap --customize-hook for the e2e guest rootfs.
# usage: rootfs-customize.sh ROOTFS GUEST_DIR MCP_PIP_SPEC
# Part of the rootfs cache key: changing this file rebuilds the rootfs.
set -eu
root=$1 guest=$2 mcp_spec=$3

echo sysom-e2e > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 sysom-e2e\n::1 localhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
chroot "$root" passwd -d root

# Services the steps start themselves; timers that would only add noise.
chroot "$root" systemctl disable firewalld.service nginx.service 2>/dev/null || true
for u in console-getty.service getty@tty1.service apt-daily.timer apt-daily-upgrade.timer fstrim.timer e2scrub_all.timer man-db.timer \
         dpkg-db-backup.timer logrotate.timer systemd-tmpfiles-clean.timer; do
    chroot "$root" systemctl mask "$u" 2>/dev/null || true
done

install -m 0644 "$guest/e2e-runner.service" "$root/etc/systemd/system/e2e-runner.service"
chroot "$root" systemctl enable e2e-runner.service

# The Python MCP client (the guide's `from mcp.client.sse import sse_client`), installed at build
# time while the registry is reachable; the booted guest has a private network and no registry.
# Wheels are downloaded with the host's pip (its proxy/CA settings apply; the host is Debian 12
# x86_64 with Python 3.11 like the guest), then installed offline into the guest's venv.
chroot "$root" python3 -m venv /opt/e2e-venv
mkdir -p "$root/tmp/e2e-wheels"
python3 -m pip download -q --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_36_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$root/tmp/e2e-wheels" "$mcp_spec"
env -u PIP_FIND_LINKS chroot "$root" /opt/e2e-venv/bin/pip install -q --no-index --no-cache-dir \
    --disable-pip-version-check --find-links /tmp/e2e-wheels "$mcp_spec"
rm -rf "$root/tmp/e2e-wheels"
chroot "$root" /opt/e2e-venv/bin/python -c 'import mcp.client.sse, mcp.client.streamable_http'
