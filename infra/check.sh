#!/usr/bin/env bash
# Offline checks of infra/, run by `make test`: terraform fmt -check, validate, a plan with fake
# credentials, assertions on that plan (tests/test_plan.py), and checkov with zero failed checks.
# Where Terraform or the provider is missing, the checks say SKIPPED (scripts/skip.sh): never reported
# as passed, listed at the end of `make test`, and a failure under CI.
set -euo pipefail
cd "$(dirname "$0")"
python="${PIPELINE_PYTHON:-../.venv/bin/python}"

# shellcheck source=../scripts/skip.sh
source ../scripts/skip.sh

# checkov reads the .tf files itself: it runs whether or not terraform is here.
checkov="$(dirname "$python")/checkov"
if [ ! -x "$checkov" ]; then
  echo "infra checks: checkov is missing from the venv ($checkov): run through make" >&2
  exit 1
fi
"$checkov" -d . --framework terraform --skip-download --quiet --compact
echo "infra checks: checkov found no failed checks"

if ! command -v terraform >/dev/null; then
  skip "terraform fmt, validate, plan and the plan assertions" "terraform is not installed"
  exit 0
fi
plugins=()
if [ -d /opt/tf-plugins ]; then
  plugins=(-plugin-dir=/opt/tf-plugins)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
touch "$work/terraformrc"
export TF_DATA_DIR="$work/tf" TF_IN_AUTOMATION=1 TF_CLI_CONFIG_FILE="${TF_CLI_CONFIG_FILE:-$work/terraformrc}"
# Fake credentials; every endpoint points at a closed loopback port, so nothing is ever contacted.
export AWS_ACCESS_KEY_ID=fake AWS_SECRET_ACCESS_KEY=fake AWS_REGION=eu-west-1

terraform fmt -check -recursive
if ! terraform init -backend=false -input=false -no-color "${plugins[@]}" >"$work/init.log" 2>&1; then
  # Only a registry that cannot be reached is a skip; a version constraint nothing satisfies
  # ("no available releases match") is a failure like any other.
  if ! grep -q "no available releases match" "$work/init.log" &&
    grep -q "could not connect\|dial tcp\|no such host\|connection refused\|i/o timeout" "$work/init.log"; then
    skip "terraform validate, plan and the plan assertions" "the hashicorp/aws provider is neither in /opt/tf-plugins nor reachable"
    exit 0
  fi
  cat "$work/init.log"
  exit 1
fi
terraform validate -no-color
terraform plan -input=false -lock=false -no-color -out="$work/plan" \
  -var account_id=123456789012 -var local_endpoint=http://127.0.0.1:9 \
  -var alarm_email=ops@example.com >"$work/plan.log" || { cat "$work/plan.log"; exit 1; }
grep -E "^Plan:" "$work/plan.log"
# A name that would push the bucket name past S3's 63 characters is refused at plan time.
if terraform plan -input=false -lock=false -no-color -var account_id=123456789012 \
  -var local_endpoint=http://127.0.0.1:9 -var name=a-name-of-thirty-one-characters >"$work/long.log" 2>&1 ||
  ! grep -q "name must be 3-30 lower-case letters" "$work/long.log"; then
  cat "$work/long.log"
  echo "infra checks: a 31-character name was not refused" >&2
  exit 1
fi
echo "infra checks: a 31-character name is refused at plan time"
terraform show -json "$work/plan" >"$work/plan.json"
# The same with the dedup table in provisioned mode, for the assertions on its auto scaling.
terraform plan -input=false -lock=false -no-color -out="$work/provisioned" \
  -var account_id=123456789012 -var local_endpoint=http://127.0.0.1:9 \
  -var dedup_capacity_mode=provisioned -var dedup_min_write_capacity=50 >"$work/provisioned.log" ||
  { cat "$work/provisioned.log"; exit 1; }
terraform show -json "$work/provisioned" >"$work/provisioned.json"
PLAN_JSON="$work/plan.json" PROVISIONED_PLAN_JSON="$work/provisioned.json" \
  "$python" -m unittest discover -s tests -t . -v
