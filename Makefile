# vx11 — the two commands a newcomer needs are `make run` and `make test`.
SHELL := bash
CARGO ?= cargo

.PHONY: test lint controlplane unit

## test: every check and test CI runs (formatting, lints, unit, service and cluster tests)
test: lint controlplane unit

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## controlplane: build (first time ~20 min) or reuse the cached kube-apiserver, etcd, helm
controlplane:
	@bash tests/controlplane/build.sh >/dev/null

unit:
	$(CARGO) test --workspace --locked
