# Sourced by apply-local.sh and tflocal-local.sh (both part of `make test`): what an apply of infra/
# against the local emulator needs. Sets `python`, `plugins` and `work` (a temporary folder, removed
# on exit, holding the Terraform data dir and a placeholder Lambda zip, `$work/bootstrap.zip`).
# Where terraform is missing it reports the check `$what` as skipped and ends the caller.
python="${PIPELINE_PYTHON:?run through scripts/with-moto.sh}"
: "${AWS_ENDPOINT_URL:?run through scripts/with-moto.sh}"
# shellcheck source=../scripts/skip.sh
source ../scripts/skip.sh
if ! command -v terraform >/dev/null; then
  skip "$what" "terraform is not installed"
  exit 0
fi
plugins=()
[ -d /opt/tf-plugins ] && plugins=(-plugin-dir=/opt/tf-plugins)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
touch "$work/terraformrc"
export TF_DATA_DIR="$work/tf" TF_IN_AUTOMATION=1 TF_CLI_CONFIG_FILE="$work/terraformrc"
"$python" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1], 'w').writestr('bootstrap', '#!/bin/sh\n')" "$work/bootstrap.zip"
