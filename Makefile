# vx11 — the two commands a newcomer needs are `make run` and `make test`.
SHELL := bash
CARGO ?= cargo

.PHONY: test lint unit

## test: every check and test CI runs (formatting, lints, unit, service and cluster tests)
test: lint unit

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --workspace --locked
