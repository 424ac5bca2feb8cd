#!/usr/bin/env bash
# Builds go-httpbin, the real upstream of the fidelity matrix (tests/tests/fidelity.rs): a
# backend nobody here wrote, from the Go module proxy (nothing is downloaded as a binary).
#
# The binary is cached outside the repo in
#   ${VX11_CACHE_DIR:-$HOME/.cache/vx11}/go-httpbin-<version>/go-httpbin
# and built only when missing. Progress goes to stderr; the LAST line on stdout is the
# binary's path.
#
# Environment: GO (the go command; default: go on PATH, else /usr/local/go/bin/go),
# VX11_CACHE_DIR (cache root), VX11_REBUILD=1 (ignore the cache).
set -euo pipefail

GO_HTTPBIN_VERSION=v2.26.0
module=github.com/mccutchen/go-httpbin/v2/cmd/go-httpbin

started=$SECONDS
say() { printf '[go-httpbin +%ss] %s\n' "$((SECONDS - started))" "$*" >&2; }
die() { printf 'go-httpbin build: %s\n' "$*" >&2; exit 1; }

cache_root=${VX11_CACHE_DIR:-$HOME/.cache/vx11}
bin_dir="$cache_root/go-httpbin-$GO_HTTPBIN_VERSION"
binary="$bin_dir/go-httpbin"

if [[ ${VX11_REBUILD:-} != 1 && -x $binary && -f $bin_dir/.complete ]]; then
	say "cached: $binary"
	echo "$binary"
	exit 0
fi

go_cmd=${GO:-}
if [[ -z $go_cmd ]]; then
	go_cmd=$(command -v go || true)
	[[ -n $go_cmd ]] || { [[ -x /usr/local/go/bin/go ]] && go_cmd=/usr/local/go/bin/go; }
fi
[[ -n $go_cmd && -x $(command -v "$go_cmd" || true) ]] || die "Go not found: go-httpbin $GO_HTTPBIN_VERSION is built from the Go module proxy.
Install Go from https://go.dev/dl/ (e.g. into /usr/local/go) or set GO=/path/to/go."

export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOWORK=off CGO_ENABLED=0

mkdir -p "$cache_root"
# Two test processes starting at once must not build twice: the second waits for the first.
exec 9>"$cache_root/go-httpbin.lock"
if command -v flock >/dev/null; then
	flock -n 9 || { say "another build is running; waiting for it"; flock 9; }
fi
if [[ ${VX11_REBUILD:-} != 1 && -x $binary && -f $bin_dir/.complete ]]; then
	say "built meanwhile: $binary"
	echo "$binary"
	exit 0
fi

work="$bin_dir.tmp.$$"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

say "building $module@$GO_HTTPBIN_VERSION with $("$go_cmd" env GOVERSION) (about a minute on 2 cores)"
GOBIN="$work" "$go_cmd" install -trimpath -ldflags='-s -w' "$module@$GO_HTTPBIN_VERSION" ||
	die "go install $module@$GO_HTTPBIN_VERSION failed (see above)"
"$work/go-httpbin" -h 2>&1 | grep -q -- '-prefix' || die "the built go-httpbin has no -prefix flag"
echo "go-httpbin $GO_HTTPBIN_VERSION ($("$go_cmd" env GOVERSION))" >"$work/.complete"

rm -rf "$bin_dir"
mv "$work" "$bin_dir"
trap - EXIT
say "built: $binary"
echo "$binary"
