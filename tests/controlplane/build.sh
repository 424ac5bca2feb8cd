#!/usr/bin/env bash
# Builds the local Kubernetes control plane that vx11's tests (and `vx11-devcluster`) run:
# kube-apiserver + kube-controller-manager + embedded etcd in one program, and helm, all from
# pinned Go modules through the Go module proxy. Nothing is downloaded as a binary.
#
# The binaries are cached outside the repo in
#   ${VX11_CACHE_DIR:-$HOME/.cache/vx11}/controlplane-<k8s>-helm-<helm>-<hash>/
# where <hash> covers go.mod, go.sum, the Go sources and this script: a build happens only when
# one of them changes. Progress goes to stderr; the LAST line on stdout is the bin directory.
#
# Environment: GO (the go command; default: go on PATH, else /usr/local/go/bin/go),
# VX11_CACHE_DIR (cache root), VX11_REBUILD=1 (ignore the cache).
set -euo pipefail

HELM_VERSION=v3.22.0

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
started=$SECONDS

say() { printf '[controlplane +%ss] %s\n' "$((SECONDS - started))" "$*" >&2; }
die() { printf 'controlplane build: %s\n' "$*" >&2; exit 1; }

k8s_version=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$here/go.mod")
[[ -n $k8s_version ]] || die "cannot read the k8s.io/kubernetes version from $here/go.mod"

key_hash=$(cd "$here" && cat go.mod go.sum ./*.go build.sh | sha256sum | cut -c1-12)
cache_root=${VX11_CACHE_DIR:-$HOME/.cache/vx11}
bin_dir="$cache_root/controlplane-$k8s_version-helm-$HELM_VERSION-$key_hash"

is_built() { [[ -x $bin_dir/vx11-controlplane && -x $bin_dir/helm && -f $bin_dir/.complete ]]; }

if [[ ${VX11_REBUILD:-} != 1 ]] && is_built; then
	say "cached: $bin_dir"
	echo "$bin_dir"
	exit 0
fi

# --- Go -----------------------------------------------------------------------------------
go_cmd=${GO:-}
if [[ -z $go_cmd ]]; then
	go_cmd=$(command -v go || true)
	[[ -n $go_cmd ]] || { [[ -x /usr/local/go/bin/go ]] && go_cmd=/usr/local/go/bin/go; }
fi
need_go="Go >= 1.26 is needed to build the test control plane (Kubernetes $k8s_version and helm $HELM_VERSION, from the Go module proxy).
Install it from https://go.dev/dl/ (e.g. into /usr/local/go, then put /usr/local/go/bin on PATH) or set GO=/path/to/go.
Or point VX11_CONTROLPLANE_BIN at a directory that already holds vx11-controlplane and helm built by this script."
[[ -n $go_cmd && -x $(command -v "$go_cmd" || true) ]] || die "Go not found.
$need_go"
go_version=$("$go_cmd" env GOVERSION 2>/dev/null || true)
go_minor=$(sed -nE 's/^go1\.([0-9]+).*/\1/p' <<<"$go_version")
[[ -n $go_minor && $go_minor -ge 26 ]] || die "found ${go_version:-an unknown Go} at $go_cmd, which is too old.
$need_go"

# The pins are exact: never let the go command fetch another toolchain.
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

mkdir -p "$cache_root"
# Two test processes starting at once must not build twice: the second waits for the first.
exec 9>"$cache_root/controlplane.lock"
if command -v flock >/dev/null; then
	flock -n 9 || { say "another build is running; waiting for it"; flock 9; }
fi
if [[ ${VX11_REBUILD:-} != 1 ]] && is_built; then
	say "built meanwhile: $bin_dir"
	echo "$bin_dir"
	exit 0
fi

work="$bin_dir.tmp.$$"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

# run LABEL CMD...: runs a long step, telling every 30 s that it is still going.
run() {
	local label=$1
	shift
	say "$label"
	local step_start=$SECONDS
	"$@" &
	local pid=$!
	while ! wait_for "$pid" 30; do
		say "... still $label ($((SECONDS - step_start))s)"
	done
	wait "$pid" || die "$label failed (see the go output above)"
	say "done $label in $((SECONDS - step_start))s"
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

say "building Kubernetes $k8s_version control plane and helm $HELM_VERSION with $go_version into $bin_dir"
say "a first build takes 15-20 minutes on 2 cores and up to ~2.5 GiB of memory; later runs use the cache"

run "downloading Go modules" bash -c "cd '$here' && '$go_cmd' mod download"

version_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	minor=${k8s_version#v1.}
	minor=${minor%%.*}
	version_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	version_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
run "compiling vx11-controlplane (kube-apiserver, kube-controller-manager, etcd)" \
	bash -c "cd '$here' && '$go_cmd' build -trimpath -ldflags='-s -w$version_ldflags' -o '$work/vx11-controlplane' ."

run "compiling helm $HELM_VERSION" \
	env GOBIN="$work" "$go_cmd" install -trimpath \
	-ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
	"helm.sh/helm/v3/cmd/helm@$HELM_VERSION"

for name in etcd kube-apiserver kube-controller-manager; do
	ln -s vx11-controlplane "$work/$name"
done
touch "$work/.complete"

rm -rf "$bin_dir"
mv "$work" "$bin_dir"
trap - EXIT

# Older builds are dead weight (~200 MB each).
for old in "$cache_root"/controlplane-*; do
	[[ $old != "$bin_dir" && -d $old && $old != *.tmp.* ]] && rm -rf "$old"
done

say "built in $((SECONDS - started))s: $(du -sh "$bin_dir" | cut -f1) in $bin_dir"
echo "$bin_dir"
