# Every target does its own set-up: a fresh machine needs only Rust, Python 3 and make.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# The Python tools (moto, DuckDB, pyarrow) live in a project venv; CI points VENV at a cache.
VENV ?= .venv
export VENV
PYTHON := $(VENV)/bin/python

# The demo: how many events, and which local AWS (moto, embedded; or localstack, with Docker).
EVENTS ?= 100000
LOCAL_AWS ?= moto
DEMO_ARGS ?=

.PHONY: help venv build-debug demo test test-unit infra-check lint fmt clean

help:
	@echo "make demo      the whole pipeline locally: producer → Kinesis → ingest → compact → Parquet → report"
	@echo "               (EVENTS=1000000, LOCAL_AWS=localstack, DEMO_ARGS='--kpl 20 --shards 4')"
	@echo "make test      unit + integration tests against a private moto emulator"
	@echo "make lint      cargo fmt --check and clippy -D warnings"

venv: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt requirements-infra.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt -r requirements-infra.txt
	touch $@

build-debug:
	cargo build --workspace --bins --tests

test-unit:
	cargo test --workspace --lib --bins

# The functions are built in debug: against a local emulator, the emulator is the bottleneck.
demo: venv
	cargo build --bins
ifeq ($(LOCAL_AWS),localstack)
	localstack/run-localstack.sh cargo run --quiet -p localstack --bin demo -- --events $(EVENTS) $(DEMO_ARGS)
else
	scripts/with-moto.sh cargo run --quiet -p localstack --bin demo -- --events $(EVENTS) $(DEMO_ARGS)
endif

# Integration tests drive the built binaries through the Lambda Runtime API, against moto on a free
# loopback port that scripts/with-moto.sh starts and always stops.
test: venv build-debug infra-check
	scripts/with-moto.sh cargo test --workspace

# Terraform fmt/validate/plan with fake credentials, plan assertions and checkov, all offline.
infra-check: venv
	PIPELINE_PYTHON=$(abspath $(VENV))/bin/python infra/check.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf $(VENV) output
