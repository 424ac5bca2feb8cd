#!/usr/bin/env bash
# Builds the local Kubernetes that vx11's tests (and `vx11-devcluster`) run, all from pinned Go
# modules through the Go module proxy (nothing is downloaded as a binary), plus one C program:
#
#   vx11-controlplane  one multi-call Go program (main.go): etcd (embedded), kube-apiserver,
#                      kube-controller-manager, kube-scheduler, kubelet, kube-proxy; a symlink
#                      of each name points at it
#   helm               helm.sh/helm/v3 (HELM_VERSION below)
#   coredns            CoreDNS with a fixed set of plugins, no forward (../node/coredns)
#   kube-router        kube-router's NetworkPolicy firewall (KUBE_ROUTER_VERSION below; run
#                      with --run-firewall=true --run-router=false --run-service-proxy=false)
#   vx11-pause         the pod sandbox image's program (../node/pause.c, gcc -static)
#
# The binaries are cached outside the repo in
#   ${VX11_CACHE_DIR:-$HOME/.cache/vx11}/controlplane-<k8s>-helm-<helm>-coredns-<coredns>-kube-router-<kube-router>-<hash>/
# where <hash> covers every input: go.mod, go.sum and the Go sources of both modules, pause.c and
# this script. A build happens only when one of them changes. Progress goes to stderr; the LAST
# line on stdout is the bin directory.
#
# When run as root it also installs the Debian packages a real node needs, if any is missing
# (../node/install-packages.sh: containerd, runc, containernetworking-plugins, iptables, ipset,
# conntrack). VX11_NODE_PACKAGES=0 skips that.
#
# Environment: GO (the go command; default: go on PATH, else /usr/local/go/bin/go), CC (the C
# compiler for vx11-pause; default gcc), VX11_CACHE_DIR (cache root), VX11_REBUILD=1 (ignore
# the cache), VX11_NODE_PACKAGES=0 (never run apt-get).
set -euo pipefail

HELM_VERSION=v3.22.0
# The newest kube-router v2 the Go module proxy serves. Its go.mod has no replace directives,
# so `go install …@version` builds it as released.
KUBE_ROUTER_VERSION=v2.1.0

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
node=$(cd "$here/../node" && pwd)
started=$SECONDS

say() { printf '[controlplane +%ss] %s\n' "$((SECONDS - started))" "$*" >&2; }
die() { printf 'controlplane build: %s\n' "$*" >&2; exit 1; }

k8s_version=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$here/go.mod")
[[ -n $k8s_version ]] || die "cannot read the k8s.io/kubernetes version from $here/go.mod"
coredns_version=$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" { print $3; exit }
	$1 == "github.com/coredns/coredns" { print $2; exit }' "$node/coredns/go.mod")
[[ -n $coredns_version ]] || die "cannot read the github.com/coredns/coredns version from $node/coredns/go.mod"

# Every input of the build, by name and content. (install-packages.sh is not one: it changes
# the machine, not the binaries.)
key_hash=$(cd "$here/.." && sha256sum controlplane/go.mod controlplane/go.sum controlplane/*.go \
	controlplane/build.sh node/coredns/go.mod node/coredns/go.sum node/coredns/*.go node/pause.c |
	sha256sum | cut -c1-12)
cache_root=${VX11_CACHE_DIR:-$HOME/.cache/vx11}
bin_dir="$cache_root/controlplane-$k8s_version-helm-$HELM_VERSION-coredns-$coredns_version-kube-router-$KUBE_ROUTER_VERSION-$key_hash"

programs=(vx11-controlplane helm coredns kube-router vx11-pause)
commands=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

is_built() {
	[[ -f $bin_dir/.complete ]] || return 1
	local name
	for name in "${programs[@]}" "${commands[@]}"; do
		[[ -x $bin_dir/$name ]] || return 1
	done
}

# The node's Debian packages: checked on every run (a few ms), installed only as root.
node_packages() {
	[[ ${VX11_NODE_PACKAGES:-} != 0 ]] || return 0
	if ! bash "$node/install-packages.sh"; then
		say "the Debian packages above are missing: the control plane works without them, a real node does not"
	fi
}

if [[ ${VX11_REBUILD:-} != 1 ]] && is_built; then
	node_packages
	touch -c "$bin_dir/.complete" 2>/dev/null || true # last used: see the clean-up at the end
	say "cached: $bin_dir"
	echo "$bin_dir"
	exit 0
fi

# --- Go and a C compiler ---------------------------------------------------------------------
go_cmd=${GO:-}
if [[ -z $go_cmd ]]; then
	go_cmd=$(command -v go || true)
	[[ -n $go_cmd ]] || { [[ -x /usr/local/go/bin/go ]] && go_cmd=/usr/local/go/bin/go; }
fi
need_go="Go >= 1.26 is needed to build the test control plane (Kubernetes $k8s_version, helm $HELM_VERSION, CoreDNS $coredns_version, kube-router $KUBE_ROUTER_VERSION, from the Go module proxy).
Install it from https://go.dev/dl/ (e.g. into /usr/local/go, then put /usr/local/go/bin on PATH) or set GO=/path/to/go.
Or point VX11_CONTROLPLANE_BIN at a directory that already holds the binaries built by this script."
[[ -n $go_cmd && -x $(command -v "$go_cmd" || true) ]] || die "Go not found.
$need_go"
go_version=$("$go_cmd" env GOVERSION 2>/dev/null || true)
go_minor=$(sed -nE 's/^go1\.([0-9]+).*/\1/p' <<<"$go_version")
[[ -n $go_minor && $go_minor -ge 26 ]] || die "found ${go_version:-an unknown Go} at $go_cmd, which is too old.
$need_go"

cc=${CC:-gcc}
command -v "$cc" >/dev/null || die "no C compiler ($cc) for vx11-pause, the pod sandbox's program: apt-get install gcc libc6-dev (or set CC)"

# The pins are exact: never let the go command fetch another toolchain, nor read a go.work.
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOWORK=off CGO_ENABLED=0

mkdir -p "$cache_root"
# Two test processes starting at once must not build twice: the second waits for the first.
exec 9>"$cache_root/controlplane.lock"
if command -v flock >/dev/null; then
	flock -n 9 || { say "another build is running; waiting for it"; flock 9; }
fi
if [[ ${VX11_REBUILD:-} != 1 ]] && is_built; then
	node_packages
	say "built meanwhile: $bin_dir"
	echo "$bin_dir"
	exit 0
fi

node_packages

# Under the lock, any other unfinished build directory is left by a build that was killed.
for old in "$cache_root"/controlplane-*.tmp.*; do
	[[ -d $old ]] && rm -rf "$old"
done
work="$bin_dir.tmp.$$"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

# GNU time, when present, gives each step's peak memory (that of its largest process).
time_cmd=()
[[ -x /usr/bin/time ]] && time_cmd=(/usr/bin/time -f %M -o "$work/.peak-kb")

# run LABEL CMD...: runs a long step, telling every 30 s that it is still going.
run() {
	local label=$1
	shift
	say "$label"
	local step_start=$SECONDS
	rm -f "$work/.peak-kb"
	"${time_cmd[@]}" "$@" &
	local pid=$!
	while ! wait_for "$pid" 30; do
		say "... still $label ($((SECONDS - step_start))s)"
	done
	wait "$pid" || die "$label failed (see the output above)"
	local peak=""
	[[ -s $work/.peak-kb ]] && peak=", peak $(($(tail -n 1 "$work/.peak-kb") / 1024)) MiB"
	say "done $label in $((SECONDS - step_start))s$peak"
}
# wait_for PID SECONDS: true once PID has exited, false if it is still running after SECONDS.
wait_for() {
	local i
	for ((i = 0; i < $2 * 2; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.5
	done
	! kill -0 "$1" 2>/dev/null
}

say "building Kubernetes $k8s_version (control plane and node), helm $HELM_VERSION, CoreDNS $coredns_version and kube-router $KUBE_ROUTER_VERSION with $go_version into $bin_dir"
say "a first build takes 20-30 minutes on 2 cores and up to ~3 GiB of memory; later runs use the cache"

run "downloading Go modules" bash -c "cd '$here' && '$go_cmd' mod download && cd '$node/coredns' && '$go_cmd' mod download"

version_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	minor=${k8s_version#v1.}
	minor=${minor%%.*}
	version_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	version_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
run "compiling vx11-controlplane (${commands[*]})" \
	bash -c "cd '$here' && '$go_cmd' build -trimpath -ldflags='-s -w$version_ldflags' -o '$work/vx11-controlplane' ."

run "compiling helm $HELM_VERSION" \
	env GOBIN="$work" "$go_cmd" install -trimpath \
	-ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
	"helm.sh/helm/v3/cmd/helm@$HELM_VERSION"

run "compiling CoreDNS $coredns_version (../node/coredns)" \
	bash -c "cd '$node/coredns' && '$go_cmd' build -trimpath -ldflags='-s -w' -o '$work/coredns' ."

run "compiling kube-router $KUBE_ROUTER_VERSION" \
	env GOBIN="$work" "$go_cmd" install -trimpath \
	-ldflags="-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION -X github.com/cloudnativelabs/kube-router/v2/pkg/version.BuildDate=1970-01-01T00:00:00Z" \
	"github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"

run "compiling vx11-pause (../node/pause.c)" \
	"$cc" -static -O2 -s -Wall -Wextra -Werror -o "$work/vx11-pause" "$node/pause.c"

for name in "${commands[@]}"; do
	ln -s vx11-controlplane "$work/$name"
done

# --- A smoke test of every program before the cache calls it complete -------------------------
say "checking the programs"
check_version() { # NAME EXPECTED CMD...: CMD's first output line must contain EXPECTED
	local name=$1 want=$2 out
	shift 2
	out=$("$@" 2>&1 | head -n 1) || true
	[[ $out == *"$want"* ]] || die "$name: expected \"$want\" from '$*', got: $out"
	printf '  %-24s %s\n' "$name" "$out" >&2
}
for name in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
	check_version "$name" "Kubernetes $k8s_version" "$work/$name" --version
done
etcd_help=$("$work/etcd" --help 2>&1 || true)
[[ $etcd_help == *data-dir* ]] || die "etcd: --help does not describe -data-dir: $etcd_help"
printf '  %-24s %s\n' etcd "embedded etcd (--help ok)" >&2
check_version helm "$HELM_VERSION" "$work/helm" version --short
check_version coredns "CoreDNS-${coredns_version#v}" "$work/coredns" -version
check_version kube-router "$KUBE_ROUTER_VERSION" "$work/kube-router" --version
check_version vx11-pause "vx11-pause" "$work/vx11-pause" --version
# CoreDNS must have no plugin that could send a query elsewhere. Besides the seven of main.go,
# cache, log and kubernetes link metadata, transfer and metrics ("prometheus"); none of them
# talks to another server, and each does something only when a Corefile names it.
# (CoreDNS 1.15 prints one plugin name a line.)
want_plugins="cache errors health kubernetes loadbalance log metadata prometheus ready transfer"
got_plugins=$("$work/coredns" -plugins | awk 'NF == 1 { print $1 }' | sort | tr '\n' ' ')
[[ ${got_plugins% } == "$want_plugins" ]] || die "coredns -plugins: expected \"$want_plugins\", got \"${got_plugins% }\""
printf '  %-24s %s\n' "coredns -plugins" "$want_plugins" >&2

{
	echo "kubernetes $k8s_version (vx11-controlplane: ${commands[*]})"
	echo "helm $HELM_VERSION"
	echo "coredns $coredns_version (plugins: $want_plugins)"
	echo "kube-router $KUBE_ROUTER_VERSION"
	echo "vx11-pause ($("$cc" --version | head -n 1))"
	echo "go $go_version"
} >"$work/.complete"
rm -f "$work/.peak-kb"

rm -rf "$bin_dir"
mv "$work" "$bin_dir"
trap - EXIT

# Other builds (~300 MB each) go once nobody has used them for 3 days. Not at once: another
# checkout on this machine (a worktree, an older branch) may be using its own build right now,
# and removing it would make the two checkouts rebuild each other's in turn.
for old in "$cache_root"/controlplane-*; do
	[[ $old != "$bin_dir" && -d $old && $old != *.tmp.* ]] || continue
	[[ -f $old/.complete && -z $(find "$old/.complete" -mtime -3) ]] || continue
	rm -rf "$old"
done

say "built in $((SECONDS - started))s: $(du -sh "$bin_dir" | cut -f1) in $bin_dir"
echo "$bin_dir"
