#!/usr/bin/env bash
# Installs the Debian packages a vx11 test node needs, only those that are missing:
#   containerd, runc            the container runtime (containerd's CRI plugin is what kubelet talks to)
#   containernetworking-plugins the CNI plugins (bridge, host-local, loopback, portmap) in /usr/lib/cni
#   iptables, ipset, conntrack  kube-proxy (iptables mode) and kube-router's NetworkPolicy firewall
# Nothing is started or configured: the test harness runs containerd with its own config.
#
# Needs root (apt-get) when something is missing; with everything installed it only checks.
# Called by ../controlplane/build.sh; can be run by hand. Exit status 0 when all are present.
set -euo pipefail

packages=(containerd runc containernetworking-plugins iptables ipset conntrack)

say() { printf '[node packages] %s\n' "$*" >&2; }

installed() {
	[[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

command -v dpkg-query >/dev/null || {
	say "not a Debian/Ubuntu system (no dpkg-query): install ${packages[*]} yourself"
	exit 1
}

missing=()
for p in "${packages[@]}"; do
	installed "$p" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
	say "all installed: ${packages[*]}"
	exit 0
fi

if [[ $(id -u) != 0 ]]; then
	say "missing: ${missing[*]}; installing them needs root:"
	say "  sudo apt-get install -y ${missing[*]}"
	exit 1
fi

say "installing ${missing[*]} with apt-get (quiet; from Debian's archive)"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# A fresh machine may have no package lists yet.
if ! apt-get install -y -q -o DPkg::Lock::Timeout=300 "${missing[@]}" >"$log" 2>&1; then
	say "apt-get install failed; updating the package lists and trying once more"
	apt-get update -q -o DPkg::Lock::Timeout=300 >>"$log" 2>&1 || true
	if ! apt-get install -y -q -o DPkg::Lock::Timeout=300 "${missing[@]}" >>"$log" 2>&1; then
		tail -n 30 "$log" >&2
		say "could not install ${missing[*]} (apt-get output above)"
		exit 1
	fi
fi
for p in "${missing[@]}"; do
	installed "$p" || { tail -n 30 "$log" >&2; say "$p is still not installed"; exit 1; }
done
say "installed ${missing[*]}"
