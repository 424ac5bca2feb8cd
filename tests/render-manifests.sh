#!/usr/bin/env bash
# Renders manifests/ from charts/vx11 with the chart's defaults (release `vx11`, namespace
# `vx11`). `--check` fails when the committed files differ from a fresh render.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin_dir="$(bash "$root/tests/controlplane/build.sh" | tail -n 1)"
helm="$bin_dir/helm"

render() {
  local out="$1"
  mkdir -p "$out/examples"
  {
    echo "# Rendered from charts/vx11 by tests/render-manifests.sh; do not edit by hand."
    echo "# kubectl create namespace vx11 && kubectl apply -f manifests/crd.yaml"
    echo "# kubectl apply -n vx11 -f manifests/install.yaml"
    "$helm" template vx11 "$root/charts/vx11" --namespace vx11 --set tokenSet.create=false
  } > "$out/install.yaml"
  {
    echo "# Rendered from charts/vx11 by tests/render-manifests.sh; do not edit by hand."
    echo "# kubectl apply -n vx11 -f manifests/examples/tokenset.yaml"
    "$helm" template vx11 "$root/charts/vx11" --namespace vx11 --show-only templates/tokenset.yaml
  } > "$out/examples/tokenset.yaml"
}

if [ "${1:-}" = "--check" ]; then
  fresh="$(mktemp -d)"
  trap 'rm -rf "$fresh"' EXIT
  render "$fresh"
  for f in install.yaml examples/tokenset.yaml; do
    if ! diff -u "$root/manifests/$f" "$fresh/$f"; then
      echo "manifests/$f is stale: run bash tests/render-manifests.sh and commit the result" >&2
      exit 1
    fi
  done
  echo "manifests/ matches charts/vx11"
else
  render "$root/manifests"
  echo "rendered manifests/install.yaml and manifests/examples/tokenset.yaml"
fi
