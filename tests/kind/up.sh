#!/usr/bin/env bash
# vx11 in a real kind cluster: create it from kind-config.yaml, build the image, load it,
# `helm install` the chart, wait for the default token set, print how to call the gateway.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cluster="${VX11_KIND_CLUSTER:-vx11}"
image="vx11:$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$root/charts/vx11/Chart.yaml")"

missing=()
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "kind install needs: ${missing[*]} (not found on PATH)." >&2
  echo "Install Docker and kind (https://kind.sigs.k8s.io), or run 'make run' for the local control plane." >&2
  exit 3
fi
docker info >/dev/null 2>&1 || { echo "docker is installed but its engine is not running" >&2; exit 3; }

step() { echo "[kind] $*" >&2; }
if ! kind get clusters | grep -qx "$cluster"; then
  step "creating cluster $cluster from kind-config.yaml"
  kind create cluster --name "$cluster" --config "$root/kind-config.yaml"
fi
step "building image $image"
docker build -t "$image" "$root"
step "loading $image into kind"
kind load docker-image "$image" --name "$cluster"
step "helm install"
kubectl create namespace vx11 --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace vx11 pod-security.kubernetes.io/enforce=restricted --overwrite
helm upgrade --install vx11 "$root/charts/vx11" --namespace vx11 --set image.pullPolicy=Never "$@"
step "waiting for the token set and the pods"
kubectl -n vx11 wait --for=condition=Ready vts/vx11 --timeout=120s
kubectl -n vx11 rollout status deploy/vx11-gateway deploy/vx11-operator-backend --timeout=180s
cat <<'DONE'

vx11 is running in kind; the gateway is http://localhost:8000.
  TOKEN=$(kubectl -n vx11 get secret vx11-client-tokens -o jsonpath='{.data.operator}' | base64 -d)
  curl -s -H "X-VX11-Token: $TOKEN" localhost:8000/operator/api/health
  kubectl -n vx11 annotate vts/vx11 vx11.dev/rotate="$(date +%s)" --overwrite
Remove it with: kind delete cluster --name vx11
DONE
