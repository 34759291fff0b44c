#!/usr/bin/env bash
# The LocalStack path as the README documents it, run the way users run it: `tflocal` (terraform-local
# from PyPI) applies infra/ with -var enable_glue=false (LocalStack's community edition has no Glue),
# here against the local emulator (AWS_ENDPOINT_URL, started by scripts/with-moto.sh) in place of
# LocalStack, which needs Docker or Python 3.12. Part of `make test`.
set -euo pipefail
cd "$(dirname "$0")"
what="tflocal apply against the emulator"
# shellcheck source=local-apply-setup.sh
source ./local-apply-setup.sh
tflocal="$(dirname "$python")/../tflocal/bin/tflocal"
[ -x "$tflocal" ] || { echo "tflocal-local: $tflocal is missing; run through make" >&2; exit 1; }

# tflocal writes its provider override beside the .tf files: work on a copy.
mkdir -p "$work/infra" "$work/events"
cp ./*.tf "$work/infra/"
cp ../events/catalogue.json "$work/events/"
# tflocal points every service at AWS_ENDPOINT_URL; S3 too (its default, s3.localhost.localstack.cloud,
# needs public DNS).
export S3_ENDPOINT="$AWS_ENDPOINT_URL" AWS_DEFAULT_REGION=us-east-1

cd "$work/infra"
"$tflocal" init -backend=false -input=false -no-color "${plugins[@]}" >"$work/init.log" 2>&1 || { cat "$work/init.log"; exit 1; }
"$tflocal" apply -auto-approve -input=false -no-color -parallelism=8 -var enable_glue=false -var region=us-east-1 \
  -var "ingest_zip=$work/bootstrap.zip" -var "compact_zip=$work/bootstrap.zip" >"$work/apply.log" 2>&1 \
  || { cat "$work/apply.log"; exit 1; }
grep -E "^Apply complete" "$work/apply.log"
# No -var local_endpoint: only tflocal's provider override (written for each command, removed after
# it) sends the calls to the emulator; the read-back below finds the resources there.
"$tflocal" output -json >"$work/outputs.json"

"$python" - "$work/outputs.json" <<'PY'
import json, sys, boto3
out = {k: v["value"] for k, v in json.load(open(sys.argv[1])).items()}
aws = lambda service: boto3.client(service, region_name="us-east-1")
assert out.get("athena_tables") is None, out
assert not aws("glue").get_databases()["DatabaseList"], "Glue was created"
env = aws("lambda").get_function_configuration(FunctionName=out["compact_function"])["Environment"]["Variables"]
assert "GLUE_TABLE" not in env and env["DATA_LAKE_BUCKET"] == out["bucket"], env
assert aws("kinesis").describe_stream_summary(StreamName=out["stream_name"])["StreamDescriptionSummary"]["EncryptionType"] == "KMS"
print("tflocal: infra/ applied with tflocal and enable_glue=false, as the README's LocalStack path runs it; "
      "no Glue, compact without GLUE_* variables, encrypted stream")
PY
