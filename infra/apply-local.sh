#!/usr/bin/env bash
# `terraform apply` of infra/ against the local emulator (AWS_ENDPOINT_URL, started by
# scripts/with-moto.sh), with placeholder zips, then a look at what was created. Part of `make test`.
set -euo pipefail
cd "$(dirname "$0")"
what="terraform apply against the emulator"
# shellcheck source=local-apply-setup.sh
source ./local-apply-setup.sh

terraform init -backend=false -input=false -no-color "${plugins[@]}" >/dev/null
vars=(-var account_id=123456789012 -var region=us-east-1 -var "local_endpoint=$AWS_ENDPOINT_URL"
      -var "ingest_zip=$work/bootstrap.zip" -var "compact_zip=$work/bootstrap.zip")
terraform apply -auto-approve -input=false -no-color -state="$work/state" -parallelism=8 "${vars[@]}" >"$work/apply.log" 2>&1 \
  || { cat "$work/apply.log"; exit 1; }
grep -E "^Apply complete" "$work/apply.log"
# The README states how many resources this creates: that number is this count, not a typed one.
created=$(terraform state list -state="$work/state" | grep -cv '^data\.')
stated=$(grep -oE 'creates all [0-9]+ resources' ../README.md | grep -oE '[0-9]+' || true)
if [ "$created" != "$stated" ]; then
  echo "infra apply: $created resources created, but README.md says it creates all ${stated:-?}" >&2
  exit 1
fi
terraform output -json -state="$work/state" >"$work/outputs.json"

"$python" - "$work/outputs.json" <<'PY'
import json, sys, boto3
out = {k: v["value"] for k, v in json.load(open(sys.argv[1])).items()}
aws = lambda service: boto3.client(service, region_name="us-east-1")
ttl = aws("dynamodb").describe_time_to_live(TableName=out["dedup_table"])["TimeToLiveDescription"]
assert ttl["TimeToLiveStatus"] == "ENABLED" and ttl["AttributeName"] == "expires_at", ttl
mappings = [m for m in aws("lambda").list_event_source_mappings()["EventSourceMappings"]
            if m["FunctionArn"].endswith(":function:" + out["ingest_function"])]
assert mappings[0]["FunctionResponseTypes"] == ["ReportBatchItemFailures"], mappings
assert mappings[0]["BisectBatchOnFunctionError"] is True, mappings
on_failure = mappings[0].get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
assert on_failure == "arn:aws:s3:::" + out["bucket"], mappings
assert out["given_up_batches"] == f"s3://{out['bucket']}/aws/lambda/{mappings[0]['UUID']}/", out
env = aws("lambda").get_function_configuration(FunctionName=out["ingest_function"])["Environment"]["Variables"]
assert env["DEDUP_TABLE"] == out["dedup_table"] and env["DATA_LAKE_BUCKET"] == out["bucket"], env
rules = aws("s3").get_bucket_lifecycle_configuration(Bucket=out["bucket"])["Rules"]
assert {r["ID"] for r in rules} >= {"expire-staging", "expire-quarantine"}, rules
schedule = aws("scheduler").get_schedule(Name="event-pipeline-compact-daily")
assert schedule["ScheduleExpression"] == "cron(15 0 * * ? *)", schedule
iam = aws("iam")
key = out["kms_key"]
for role, actions in {"ingest": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
                      "compact": ["kms:Decrypt", "kms:GenerateDataKey"], "scheduler": ["kms:Decrypt"]}.items():
    document = iam.get_role_policy(RoleName=f"event-pipeline-{role}", PolicyName="use-the-pipeline-key")["PolicyDocument"]
    [statement] = document["Statement"]
    assert statement["Resource"] == key and statement["Action"] == actions and "Condition" not in statement, document
producer = iam.get_policy(PolicyArn=out["producer_policy_arn"])["Policy"]
document = iam.get_policy_version(PolicyArn=out["producer_policy_arn"], VersionId=producer["DefaultVersionId"])["PolicyVersion"]["Document"]
document = json.loads(document) if isinstance(document, str) else document
by_sid = {s["Sid"]: s for s in document["Statement"]}
assert by_sid["PutEvents"]["Resource"] == out["stream_arn"] and "kinesis:PutRecords" in by_sid["PutEvents"]["Action"], document
assert by_sid["EncryptForTheStream"] == {"Sid": "EncryptForTheStream", "Effect": "Allow", "Action": ["kms:GenerateDataKey"],
                                         "Resource": key}, document
compact = aws("lambda").get_function_configuration(FunctionName=out["compact_function"])
assert "ReservedConcurrentExecutions" not in aws("lambda").get_function_concurrency(FunctionName=out["compact_function"]), compact
print("infra apply: every resource created on the emulator; dedup TTL, event source mapping, "
      "S3 on-failure destination, function environment, lifecycle rules, schedule, key grants by ARN, producer policy and unreserved compact concurrency read back as planned")
PY
