#!/usr/bin/env bash
# Installs what jepsen-lite needs on Debian/Ubuntu: iproute2 (ip netns,
# veth, bridge) and iptables. Needs root; does nothing when both are there.
set -euo pipefail
missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "jepsen-deps.sh: ${missing[*]} missing, and installing needs root" >&2
    exit 2
fi
echo "==> installing ${missing[*]}"
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
    || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
