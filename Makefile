# vx11 — the two commands a newcomer needs are `make run` and `make test`.
SHELL := bash
CARGO ?= cargo

.PHONY: run test lint controlplane unit manifests image kind-up bench

## run: vx11 on a local control plane (or `make run ARGS=--kind` for kind), until Ctrl-C
run: controlplane
	$(CARGO) build --bins
	$(CARGO) run -q -p vx11-tests --bin vx11-local -- $(ARGS)

## test: every check and test CI runs (formatting, lints, unit, service and cluster tests, a fuzz smoke)
test: lint controlplane unit fuzz-smoke

lint: controlplane
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	@"$$(bash tests/controlplane/build.sh 2>/dev/null | tail -n 1)/helm" lint --strict charts/vx11
	@bash tests/render-manifests.sh --check

## controlplane: build (first time ~20 min) or reuse the cached kube-apiserver, etcd, helm
controlplane:
	@bash tests/controlplane/build.sh >/dev/null

unit:
	@status=0; $(CARGO) test --workspace --locked || status=$$?; \
	  bash tests/node/node.sh wait || status=1; exit $$status

## manifests: render manifests/ from the chart after changing charts/vx11
manifests:
	bash tests/render-manifests.sh

## image: the container image with the three binaries (needs docker)
image:
	docker build -t vx11:$$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' charts/vx11/Chart.yaml) .

## image-oci: the same image without Docker: an OCI layout tar for `ctr images import` (tests/image/build.sh; prints its path)
.PHONY: image-oci
image-oci:
	@bash tests/image/build.sh

## kind-up: create a kind cluster from kind-config.yaml, load the image, helm install
kind-up:
	bash tests/kind/up.sh

## bench: gateway vs nginx vs HAProxy vs direct with 1 and 2 workers (req/s, p99, CPU and system calls per request), SSE streams through each, reload under load, controller figures (~25 min, estimated; loopback only)
bench:
	bash bench/run.sh

## install: the `kubectl vx11` plugin (binary kubectl-vx11) into ~/.cargo/bin, which kubectl finds on PATH
.PHONY: install
install:
	$(CARGO) install --locked --path controller --bin kubectl-vx11

## fuzz: every fuzz target (fuzz/) for FUZZ_TIME seconds each (default 60); nightly, cargo-fuzz installed when missing
.PHONY: fuzz fuzz-smoke
FUZZ_TIME ?= 60
fuzz:
	FUZZ_TIME=$(FUZZ_TIME) bash fuzz/run.sh

## fuzz-smoke: the CI run of every fuzz target, ~15 s each (FUZZ_SMOKE_TIME); fails on a crash
FUZZ_SMOKE_TIME ?= 15
fuzz-smoke:
	FUZZ_SMOKE_TIME=$(FUZZ_SMOKE_TIME) bash fuzz/run.sh --smoke
