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

TF_VARS ?=

.PHONY: help venv tflocal-venv build-debug build build-tools deploy deploy-local demo bench test test-unit infra-check lint fmt clean

help:
	@echo "make demo      the whole pipeline locally: producer → Kinesis → ingest → compact → Parquet → report"
	@echo "               (EVENTS=1000000, LOCAL_AWS=localstack, DEMO_ARGS='--kpl 20 --shards 4')"
	@echo "make test      unit + integration tests against a private moto emulator"
	@echo "make lint      cargo fmt --check and clippy -D warnings"
	@echo "make bench     speed and memory vs DuckDB, pyarrow and a Python handler (BENCHMARKS.md)"
	@echo "make build     release zips for Lambda (arm64): target/lambda/{ingest,compact}/bootstrap.zip"
	@echo "make deploy    build, then terraform apply in infra/ (your AWS credentials; TF_VARS='-var region=…')"
	@echo "make deploy-local  build, then terraform apply against LocalStack on localhost:4566"

venv: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt requirements-infra.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt -r requirements-infra.txt
	touch $@

# tflocal lives in a venv of its own inside the project venv: its hcl2 module and checkov's clash.
tflocal-venv: $(VENV)/.tflocal-installed

$(VENV)/.tflocal-installed: requirements-tflocal.txt $(VENV)/.installed
	python3 -m venv $(VENV)/tflocal
	$(VENV)/tflocal/bin/pip install --quiet --disable-pip-version-check -r requirements-tflocal.txt
	touch $@

build-debug:
	cargo build --workspace --bins --tests

test-unit:
	cargo test --workspace --lib --bins

# The functions are built in debug: against a local emulator, the emulator is the bottleneck.
demo: venv
	cargo build --bins
ifeq ($(LOCAL_AWS),localstack)
	localstack/run-localstack.sh cargo run --quiet -p localstack --bin demo -- --events $(EVENTS) --kinesis emulator --dynamodb emulator $(DEMO_ARGS)
else
	scripts/with-moto.sh cargo run --quiet -p localstack --bin demo -- --events $(EVENTS) $(DEMO_ARGS)
endif

# cargo-lambda and zig (for cross-compiling to arm64) come from PyPI, into the project venv.
build-tools: $(VENV)/.build-tools

$(VENV)/.build-tools: requirements-build.txt $(VENV)/.installed
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-build.txt
	touch $@

build: build-tools
	PATH="$(abspath $(VENV))/bin:$$PATH" cargo lambda build --release --arm64 --output-format zip -p ingest -p compact
	@ls -l $${CARGO_TARGET_DIR:-target}/lambda/*/bootstrap.zip

deploy: build
	terraform -chdir=infra init -input=false
	terraform -chdir=infra apply $(TF_VARS)

# LocalStack's community edition has no Glue.
deploy-local: build
	terraform -chdir=infra init -input=false
	terraform -chdir=infra apply -var local_endpoint=http://localhost:4566 -var account_id=000000000000 -var enable_glue=false $(TF_VARS)

# Speed and memory against DuckDB, pyarrow and a Python handler (release build); see BENCHMARKS.md.
bench: venv
	bench/run.sh

# Integration tests drive the built binaries through the Lambda Runtime API, against moto on a free
# loopback port that scripts/with-moto.sh starts and always stops.
# A small demo runs end to end too (two shards, KPL aggregates, an outage whose given-up batches are
# redriven), and must match the producer's ledger exactly.
test: venv tflocal-venv build-debug infra-check
	scripts/with-moto.sh cargo test --workspace
	scripts/with-moto.sh infra/apply-local.sh
	scripts/with-moto.sh infra/tflocal-local.sh
	@out=$$(mktemp -d); \
	  scripts/with-moto.sh cargo run --quiet -p localstack --bin demo -- --events 3000 --kpl 10 --shards 2 \
	    --outage 5 --output "$$out" > "$$out/demo.log" 2>&1 || { cat "$$out/demo.log"; exit 1; }; \
	  grep -E "^(redrove|checked against the producer)" "$$out/demo.log"; rm -rf "$$out"
	@echo "make test: unit and integration tests on moto, infra checks (fmt, validate, plan assertions, checkov), terraform apply and tflocal apply on moto, a demo checked against the producer's ledger: all passed, except what is listed as skipped below"
	@if [ -s $(SKIP_REPORT) ]; then echo "make test SKIPPED these checks:"; sed 's/^/  - /' $(SKIP_REPORT); else echo "make test skipped nothing"; fi

# Terraform fmt/validate/plan with fake credentials, plan assertions and checkov, all offline.
# Checks that could not run are listed here (scripts/skip.sh), summarised at the end of `make test`,
# and fail CI.
SKIP_REPORT ?= $(CURDIR)/.skipped-checks
export SKIP_REPORT

infra-check: venv
	@rm -f $(SKIP_REPORT)
	PIPELINE_PYTHON=$(abspath $(VENV))/bin/python infra/check.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	python3 scripts/check-rust-version.py
	python3 scripts/check-sizes.py
	scripts/check-deps.sh
	python3 scripts/readme-demo.py --check
	python3 bench/render.py --check
	@python3 scripts/figures-age.py

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf $(VENV) output
