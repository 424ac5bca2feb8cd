#!/usr/bin/env bash
# The machine-level part of vx11's test node: its network namespace and, when the node ends,
# the teardown of everything a kubelet + containerd node leaves behind.
#
#   bash tests/node/node.sh hold STATE_DIR     # run by the harness (tests/src/node.rs)
#   bash tests/node/node.sh teardown STATE_DIR # by hand, after a crash of this script itself
#   bash tests/node/node.sh check              # prints what of a node is still on this machine
#   bash tests/node/node.sh wait               # waits (up to 2 min) for a node's teardown to end,
#                                              # then fails if anything of a node is left
#
# `hold` takes the machine-wide node lock (one node at a time: containerd and kubelet write
# fixed paths and cgroups), builds the network, prints `ready`, and then waits for its stdin to
# close. The harness keeps the other end of that pipe open for as long as the node lives, so the
# teardown runs however the harness ends: a normal drop, Ctrl-C, a panic or SIGKILL.
#
# Network: namespace vx11-node, joined to this machine by one veth pair (host vx11h0
# 10.89.0.1/24, node eth0 10.89.0.2/24). Inside: the pod bridge cni0 (10.88.0.1/16), no default
# route, and a guard in the raw table that drops every packet to an address outside the node's
# own ranges. Everything that owns networking (the API server, kubelet, containerd and so the
# pods, kube-proxy, CoreDNS, kube-router) runs inside, so their iptables rules live and die
# with the namespace and the host's own rules and sysctls are never touched.
set -uo pipefail

NETNS=vx11-node
HOST_IF=vx11h0
HOST_IP=10.89.0.1
NODE_IP=10.89.0.2
POD_CIDR=10.88.0.0/16
BRIDGE_IP=10.88.0.1
SERVICE_CIDR=10.0.0.0/24
LOCK=/run/vx11-node.lock
# Paths outside the state directory that kubelet, containerd and libcni write to whatever their
# configuration says (NODE.md). Removed at teardown unless they were here before the node.
OUTSIDE_PATHS=(
	/var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni
	/run/containerd /usr/libexec/kubernetes /etc/cni /opt/cni
)

say() { printf '[vx11-node] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
in_node() { nsenter --net="/run/netns/$NETNS" -- "$@"; }

require() {
	[[ $(id -u) == 0 ]] || die "a real node needs root (kubelet, containerd and network namespaces); run as root, or use the simulated mode"
	local missing=()
	for tool in ip iptables nsenter flock containerd runc; do
		command -v "$tool" >/dev/null || missing+=("$tool")
	done
	[[ -d /usr/lib/cni ]] || missing+=("/usr/lib/cni (containernetworking-plugins)")
	((${#missing[@]} == 0)) || die "missing: ${missing[*]}; install with: apt-get install containerd runc containernetworking-plugins iptables ipset conntrack"
}

network_up() {
	ip netns add "$NETNS" || return 1
	ip link add "$HOST_IF" type veth peer name eth0 netns "$NETNS" || return 1
	ip addr add "$HOST_IP/24" dev "$HOST_IF" && ip link set "$HOST_IF" up || return 1
	# The host reaches pods (tests talk to them directly); the route goes with the veth.
	ip route add "$POD_CIDR" via "$NODE_IP" dev "$HOST_IF" || return 1
	in_node ip link set lo up || return 1
	in_node ip addr add "$NODE_IP/24" dev eth0 && in_node ip link set eth0 up || return 1
	# The pod bridge exists before CNI: CoreDNS listens on its address from the start, and the
	# CNI bridge plugin takes it over as it is.
	in_node ip link add cni0 type bridge && in_node ip addr add "$BRIDGE_IP/16" dev cni0 &&
		in_node ip link set cni0 up || return 1
	# These sysctls are the namespace's own: the host's stay as they were.
	in_node sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 \
		net.bridge.bridge-nf-call-ip6tables=1 || return 1
	local chain=VX11-GUARD
	in_node iptables -t raw -N "$chain" || return 1
	for dst in 127.0.0.0/8 "$NODE_IP/24" "$POD_CIDR" "$SERVICE_CIDR"; do
		in_node iptables -t raw -A "$chain" -d "$dst" -j RETURN || return 1
	done
	in_node iptables -t raw -A "$chain" -j DROP || return 1
	in_node iptables -t raw -I PREROUTING 1 -j "$chain" && in_node iptables -t raw -I OUTPUT 1 -j "$chain" || return 1
	# IPv6: loopback only (the API server's own client talks to [::1]).
	for hook in PREROUTING:-i OUTPUT:-o; do
		in_node ip6tables -t raw -A "${hook%%:*}" "${hook#*:}" lo -j ACCEPT &&
			in_node ip6tables -t raw -A "${hook%%:*}" -j DROP || return 1
	done
	return 0
}

# Kills every process of the node: those in its network namespace (containerd, shims, kubelet,
# the control plane...) and those in its pods' cgroups. Bounded: gives up after 10 rounds.
kill_node_processes() {
	local round pids
	for round in $(seq 1 10); do
		pids=$( (ip netns pids "$NETNS" 2>/dev/null; cat /sys/fs/cgroup/*/kubepods/cgroup.procs \
			/sys/fs/cgroup/*/kubepods/*/cgroup.procs /sys/fs/cgroup/*/kubepods/*/*/cgroup.procs \
			/sys/fs/cgroup/*/kubepods/*/*/*/cgroup.procs 2>/dev/null) | sort -u)
		[[ -n $pids ]] || return 0
		kill -9 $pids 2>/dev/null
		sleep 0.2
	done
	say "processes still alive after 10 rounds: $pids"
}

unmount_under() {
	local prefix=$1 target
	# Deepest first.
	awk -v p="$prefix" '$2 == p || index($2, p "/") == 1 { print $2 }' /proc/self/mounts | sort -r |
		while read -r target; do
			umount -l "$target" 2>/dev/null || say "cannot unmount $target"
		done
}

remove_cgroups() {
	local hierarchy dir
	for hierarchy in /sys/fs/cgroup/*/; do
		for name in kubepods k8s.io; do
			[[ -d $hierarchy$name ]] || continue
			find "$hierarchy$name" -depth -type d -exec rmdir {} + 2>/dev/null
			[[ -d $hierarchy$name ]] && say "cannot remove cgroup $hierarchy$name"
		done
	done
}

teardown() {
	local state=$1
	kill_node_processes
	local netns
	for netns in $(ip netns list 2>/dev/null | awk '$1 ~ /^cni-/ { print $1 }'); do
		ip netns del "$netns" 2>/dev/null
	done
	unmount_under "$state"
	unmount_under /var/lib/kubelet
	unmount_under /run/containerd
	ip netns del "$NETNS" 2>/dev/null
	ip link del "$HOST_IF" 2>/dev/null
	# `ip netns add` made /run/netns a mount point of its own; undo that once no namespace is left.
	if [[ -z $(ip netns list 2>/dev/null) ]] && [[ -f $state/run-netns-was-not-mounted ]]; then
		umount /run/netns 2>/dev/null
	fi
	remove_cgroups
	local path
	for path in "${OUTSIDE_PATHS[@]}"; do
		if [[ -e $path ]] && ! grep -qxF "$path" "$state/preexisting" 2>/dev/null; then
			rm -rf "$path"
		fi
	done
	rm -rf "$state"
}

# Prints each thing of a node still on this machine, one per line; nothing if it is clean.
check() {
	ip netns list 2>/dev/null | awk '$1 == "'"$NETNS"'" || $1 ~ /^cni-/ { print "network namespace " $1 }'
	ip link show "$HOST_IF" >/dev/null 2>&1 && echo "link $HOST_IF"
	ip link show cni0 >/dev/null 2>&1 && echo "link cni0 in the host namespace"
	iptables-save 2>/dev/null | grep -E 'KUBE-|CNI-|VX11-' | sed 's/^/iptables: /'
	awk '$2 ~ /kubelet|containerd|vx11-node/ { print "mount " $2 }' /proc/self/mounts
	# The program is the first word of a command line (a build's command line may name them too).
	# (Control planes without a node, which other tests run, are not a node's.)
	pgrep -a -f '^(\S*/)?(vx11-controlplane (kubelet|kube-proxy|kube-scheduler)|kubelet|kube-proxy|kube-scheduler|containerd|containerd-shim-runc-v2|kube-router|coredns|vx11-pause)( |$)' |
		sed 's/^/process /'
	ip netns pids "$NETNS" 2>/dev/null | sed 's/^/process in the node namespace /'
	for hierarchy in /sys/fs/cgroup/*/; do
		[[ -d ${hierarchy}kubepods ]] && echo "cgroup ${hierarchy}kubepods"
	done
	return 0
}

hold() {
	local state=$1
	require
	mkdir -p "$(dirname "$LOCK")" "$state" || die "cannot create $state"
	exec 8>"$LOCK"
	if ! flock -n 8; then
		say "another node is running or being torn down on this machine; waiting for it"
		flock 8
	fi
	# Terminal signals (Ctrl-C reaches the whole process group) must not cut the teardown short:
	# the end of stdin is the one signal this script acts on.
	trap '' INT TERM HUP QUIT
	# Leftovers of a node whose holder was itself killed with SIGKILL.
	if [[ -n $(check) || -e $state/preexisting ]]; then
		say "removing what an earlier node left: $(check | tr '\n' ';')"
		teardown "$state"
	fi
	mkdir -p "$state"
	: >"$state/preexisting"
	local path
	for path in "${OUTSIDE_PATHS[@]}"; do
		[[ -e $path ]] && echo "$path" >>"$state/preexisting"
	done
	awk '$2 == "/run/netns" { found = 1 } END { exit !found }' /proc/self/mounts ||
		touch "$state/run-netns-was-not-mounted"
	if ! network_up; then
		say "network setup failed; tearing down"
		teardown "$state"
		exit 1
	fi
	echo ready
	# Wait for the holder to go away (its end of our stdin closes, however it ends).
	cat >/dev/null
	teardown "$state"
	say "torn down"
}

# A test process's node is torn down after the process ends: `make test` waits for that.
wait_clean() {
	[[ -e $LOCK ]] && flock -w 120 "$LOCK" true
	local left
	left=$(check)
	[[ -z $left ]] || die "left on this machine by a node: $left"
}

case ${1:-} in
hold) hold "${2:?state dir}" ;;
wait) wait_clean ;;
teardown) teardown "${2:?state dir}" ;;
check) check ;;
*) die "usage: node.sh hold|teardown STATE_DIR | node.sh check|wait" ;;
esac
