#!/usr/bin/env bash
# Runs an image tar from tests/image/build.sh on a private containerd, as a node would: imports
# it with `ctr -n k8s.io images import`, runs it under runc with a read-only rootfs and the
# default seccomp profile, then removes everything it made. Needs root, containerd and runc
# (Debian: apt-get install containerd runc); no network, no registry.
#
#   bash tests/image/ctr-check.sh "$(bash tests/image/build.sh)"
#     every binary in /usr/local/bin with --help (exit 0), then the ENTRYPOINT (the gateway)
#     detached with the image's own config: its process must run as the image's User
#     (65532:65532), with the image's WorkingDir; then SIGTERM.
#   bash tests/image/ctr-check.sh "$(bash tests/image/build.sh --pause BIN)"
#     the pause image detached: runs as 65535:65535, exits 0 on SIGTERM.
#
# containerd gets its own root, state and sockets under a temporary directory and no CRI plugin.
# containerd 1.6 also writes /run/containerd/{fifo,runc,s} whatever its config says: they are
# removed afterwards only if they did not exist before and no other containerd runs. The
# containers' cgroups live under /vx11-ctr-check-<pid> in every hierarchy, removed afterwards.
# `ctr run` 1.6 has no --user: the user is the image config's, which is what is checked.
set -euo pipefail

tar_file=${1:?usage: ctr-check.sh IMAGE.tar}
[[ -f $tar_file ]] || { echo "ctr-check: $tar_file is not a file" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "ctr-check: needs root (containerd and runc)" >&2; exit 1; }
for tool in containerd ctr runc tar; do
	command -v "$tool" >/dev/null || { echo "ctr-check: $tool is needed" >&2; exit 1; }
done

started=$SECONDS
say() { printf '[ctr-check +%ss] %s\n' "$((SECONDS - started))" "$*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

dir=$(mktemp -d /tmp/ctrd-check.XXXXXX)
sock=$dir/containerd.sock
cgroup_parent=vx11-ctr-check-$$
run_existed=()
for p in /run/containerd /run/containerd/fifo /run/containerd/runc /run/containerd/s; do
	[[ -e $p ]] && run_existed+=("$p")
done
ctrd_pid=

cleanup() {
	local status=$?
	set +e
	if [[ -n $ctrd_pid ]]; then
		for c in $(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
			ctr --address "$sock" -n k8s.io tasks kill -s KILL "$c" >/dev/null 2>&1
		done
		sleep 0.5
		for c in $(ctr --address "$sock" -n k8s.io containers ls -q 2>/dev/null); do
			ctr --address "$sock" -n k8s.io tasks delete -f "$c" >/dev/null 2>&1
			ctr --address "$sock" -n k8s.io containers delete "$c" >/dev/null 2>&1
		done
		kill "$ctrd_pid" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$ctrd_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$ctrd_pid" 2>/dev/null
		wait "$ctrd_pid" 2>/dev/null
	fi
	# Shims started for our socket (their command line names our directory).
	for pid in $(pgrep -f -- "$dir" 2>/dev/null); do
		[[ $pid != "$$" ]] && kill -KILL "$pid" 2>/dev/null
	done
	# Mounts under our directory (snapshots, task rootfs), deepest first.
	awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null; done
	rm -rf "$dir"
	for h in /sys/fs/cgroup/*/; do
		[[ -d $h$cgroup_parent ]] || continue
		find "$h$cgroup_parent" -depth -type d -exec rmdir {} \; 2>/dev/null
	done
	[[ ! -d /run/containerd ]] || say "/run/containerd now holds: $(ls -A /run/containerd | tr '\n' ' ')"
	if pgrep -x containerd >/dev/null; then
		[[ -e /run/containerd ]] && say "another containerd runs: /run/containerd left as it is"
	else
		for p in /run/containerd/fifo /run/containerd/runc /run/containerd/s /run/containerd; do
			local existed=0 e
			for e in "${run_existed[@]}"; do [[ $e == "$p" ]] && existed=1; done
			((existed)) || rm -rf "$p"
		done
	fi
	exit "$status"
}
trap cleanup EXIT

# The image's name, User, Entrypoint, WorkingDir: from the tar itself.
index=$(tar -xOf "$tar_file" index.json)
image=$(sed -n 's/.*"io.containerd.image.name":"\([^"]*\)".*/\1/p' <<<"$index")
[[ -n $image ]] || fail "no io.containerd.image.name in $tar_file's index.json"
manifest_digest=$(sed -n 's/.*"digest":"sha256:\([0-9a-f]*\)".*/\1/p' <<<"$index")
manifest=$(tar -xOf "$tar_file" "blobs/sha256/$manifest_digest")
config_digest=$(sed -n 's/.*"config":{[^}]*"digest":"sha256:\([0-9a-f]*\)".*/\1/p' <<<"$manifest")
layer_digest=$(sed -n 's/.*"layers":\[{[^}]*"digest":"sha256:\([0-9a-f]*\)".*/\1/p' <<<"$manifest")
config=$(tar -xOf "$tar_file" "blobs/sha256/$config_digest")
user=$(sed -n 's/.*"User":"\([^"]*\)".*/\1/p' <<<"$config")
workdir=$(sed -n 's/.*"WorkingDir":"\([^"]*\)".*/\1/p' <<<"$config")
entrypoint=$(sed -n 's/.*"Entrypoint":\["\([^"]*\)".*/\1/p' <<<"$config")
say "image $image: user $user, entrypoint $entrypoint, workdir $workdir"

cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = "$dir/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
EOF
containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
ctrd_pid=$!
for _ in $(seq 100); do
	ctr --address "$sock" version >/dev/null 2>&1 && break
	kill -0 "$ctrd_pid" 2>/dev/null || { cat "$dir/containerd.log" >&2; fail "containerd exited"; }
	sleep 0.1
done
say "containerd $ctrd_pid ready on $sock"
c() { ctr --address "$sock" -n k8s.io "$@"; }

c images import "$tar_file" >&2
c images ls | grep -F "$image" >&2 || fail "$image not listed after import"
c images check | grep -F "$image" >&2

run_opts=(--read-only --seccomp --null-io)
n=0
# proc_of ID: the host PID of a running task.
proc_of() { c tasks ls | awk -v id="$1" '$1 == id && $3 == "RUNNING" { print $2 }'; }

mapfile -t bins < <(tar -xOf "$tar_file" "blobs/sha256/$layer_digest" | tar -tzf - | grep '^usr/local/bin/[^/]\+$' || true)
for b in "${bins[@]}"; do
	n=$((n + 1))
	say "ctr run --rm --read-only --seccomp $image t$n /$b --help"
	out=$(c run --rm --read-only --seccomp --cgroup "/$cgroup_parent/t$n" "$image" "t$n" "/$b" --help 2>&1) ||
		fail "/$b --help: $out"
	printf '%s\n' "$out" | head -n 3 | sed 's/^/    /' >&2
done

if [[ -n $entrypoint ]]; then
	n=$((n + 1))
	env=()
	[[ $entrypoint != */vx11-gateway ]] || env=(--env VX11_GATEWAY_ADDR=127.0.0.1:8000 --env VX11_METRICS_ADDR=127.0.0.1:9090)
	say "ctr run -d ${run_opts[*]} $image t$n (the image's entrypoint $entrypoint)"
	c run -d "${run_opts[@]}" "${env[@]}" --cgroup "/$cgroup_parent/t$n" "$image" "t$n" >&2
	pid=
	for _ in $(seq 50); do pid=$(proc_of "t$n"); [[ -n $pid ]] && break; sleep 0.1; done
	[[ -n $pid ]] || fail "t$n is not running: $(c tasks ls)"
	sleep 1
	[[ -n $(proc_of "t$n") ]] || fail "t$n exited within 1 s"
	uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
	gid=$(awk '/^Gid:/ { print $2 }' "/proc/$pid/status")
	cwd=$(readlink "/proc/$pid/cwd")
	say "t$n: pid $pid, uid $uid, gid $gid, cwd $cwd, $(tr '\0' ' ' <"/proc/$pid/cmdline")"
	[[ $uid:$gid == "$user" ]] || fail "runs as $uid:$gid, the image says $user"
	[[ $cwd == *"${workdir%/}" || $workdir == / ]] || fail "cwd $cwd, the image says $workdir"
	c tasks kill -s TERM "t$n"
	status=
	for _ in $(seq 50); do
		status=$(c tasks ls | awk -v id="t$n" '$1 == id { print $3 }')
		[[ $status == STOPPED ]] && break
		sleep 0.1
	done
	[[ $status == STOPPED ]] || fail "t$n did not stop on SIGTERM within 5 s"
	code=0
	c tasks delete "t$n" >&2 || code=$? # ctr exits with the task's exit status
	c containers delete "t$n"
	say "t$n stopped on SIGTERM (exit status $code)"
	[[ $code == 0 ]] || fail "t$n exited with $code on SIGTERM"
fi

c images rm "$image" >&2
say "OK: $image imported and run under runc"
