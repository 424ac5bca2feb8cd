# vx11 — the two commands a newcomer needs are `make run` and `make test`.
SHELL := bash
CARGO ?= cargo

.PHONY: test lint controlplane unit manifests

## test: every check and test CI runs (formatting, lints, unit, service and cluster tests)
test: lint controlplane unit

lint: controlplane
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	@"$$(bash tests/controlplane/build.sh 2>/dev/null | tail -n 1)/helm" lint --strict charts/vx11
	@bash tests/render-manifests.sh --check 2>/dev/null

## controlplane: build (first time ~20 min) or reuse the cached kube-apiserver, etcd, helm
controlplane:
	@bash tests/controlplane/build.sh >/dev/null

unit:
	$(CARGO) test --workspace --locked

## manifests: render manifests/ from the chart after changing charts/vx11
manifests:
	bash tests/render-manifests.sh
