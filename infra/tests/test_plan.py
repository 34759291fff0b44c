"""Assertions on `terraform show -json` of an offline plan (PLAN_JSON): the promises of the contract
and of least privilege, checked before anything is deployed."""
import json
import os
import unittest

with open(os.environ["PLAN_JSON"]) as plan_file:
    PLAN = json.load(plan_file)
RESOURCES = {r["address"]: r["change"]["after"] for r in PLAN["resource_changes"]}
CONFIGURATION = {r["address"]: r for r in PLAN["configuration"]["root_module"]["resources"]}
with open(os.path.join(os.path.dirname(__file__), "..", "..", "events", "catalogue.json")) as catalogue_file:
    CATALOGUE = json.load(catalogue_file)
BUCKET = "arn:aws:s3:::event-pipeline-lake-123456789012-eu-west-1"


def resource(address):
    return RESOURCES[address]


def policy(address):
    doc = json.loads(resource(address)["policy"])
    return doc["Statement"]


def grants(statements):
    """{action: set(resources)} of the Allow statements."""
    out = {}
    for s in statements:
        if s.get("Effect", "Allow") != "Allow":
            continue
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        for a in actions:
            out.setdefault(a, set()).update(resources)
    return out


class EventSourceMapping(unittest.TestCase):
    def test_reports_batch_item_failures_bisects_and_keeps_given_up_batches_in_s3(self):
        esm = resource("aws_lambda_event_source_mapping.ingest")
        self.assertEqual(esm["function_response_types"], ["ReportBatchItemFailures"])
        self.assertTrue(esm["bisect_batch_on_function_error"])
        self.assertEqual(esm["starting_position"], "TRIM_HORIZON")
        self.assertEqual(esm["batch_size"], 1000)
        self.assertEqual(esm["maximum_retry_attempts"], 10)
        self.assertEqual(esm["maximum_record_age_in_seconds"], 86400)
        self.assertEqual(esm["parallelization_factor"], 1)
        # An S3 destination keeps the whole invocation payload, which `redrive given-up` replays;
        # an SQS or SNS one keeps only metadata.
        self.assertEqual(esm["destination_config"][0]["on_failure"], [{"destination_arn": BUCKET}])
        self.assertNotIn("aws_sqs_queue.ingest_on_failure", RESOURCES)

    def test_records_are_given_up_before_the_stream_drops_them_and_claims_outlive_both(self):
        esm = resource("aws_lambda_event_source_mapping.ingest")
        retention = resource("aws_kinesis_stream.events")["retention_period"] * 3600
        self.assertLessEqual(esm["maximum_record_age_in_seconds"], retention)
        self.assertGreater(int(resource("aws_lambda_function.ingest")["environment"][0]["variables"]["DEDUP_TTL_SECONDS"]),
                           retention)


class DedupTable(unittest.TestCase):
    def test_key_ttl_recovery_and_encryption(self):
        table = resource("aws_dynamodb_table.dedup")
        self.assertEqual(table["hash_key"], "event_uuid")
        self.assertEqual(table["attribute"], [{"name": "event_uuid", "type": "S"}])
        self.assertEqual(table["ttl"], [{"attribute_name": "expires_at", "enabled": True}])
        self.assertEqual(table["billing_mode"], "PAY_PER_REQUEST")
        self.assertTrue(table["point_in_time_recovery"][0]["enabled"])
        self.assertTrue(table["server_side_encryption"][0]["enabled"])


class ProvisionedDedup(unittest.TestCase):
    """The plan with -var dedup_capacity_mode=provisioned -var dedup_min_write_capacity=50."""

    def setUp(self):
        with open(os.environ["PROVISIONED_PLAN_JSON"]) as f:
            plan = json.load(f)
        self.resources = {r["address"]: r["change"]["after"] for r in plan["resource_changes"]}

    def test_on_demand_is_the_default_with_no_scaling(self):
        self.assertEqual(resource("aws_dynamodb_table.dedup")["billing_mode"], "PAY_PER_REQUEST")
        self.assertFalse([a for a in RESOURCES if a.startswith("aws_appautoscaling_")])

    def test_provisioned_writes_are_auto_scaled_by_utilization(self):
        table = self.resources["aws_dynamodb_table.dedup"]
        self.assertEqual((table["billing_mode"], table["write_capacity"], table["read_capacity"]), ("PROVISIONED", 50, 1))
        target = self.resources["aws_appautoscaling_target.dedup_writes[0]"]
        self.assertEqual((target["service_namespace"], target["resource_id"], target["scalable_dimension"]),
                         ("dynamodb", "table/event-pipeline-dedup", "dynamodb:table:WriteCapacityUnits"))
        self.assertEqual((target["min_capacity"], target["max_capacity"]), (50, 1000))
        policy = self.resources["aws_appautoscaling_policy.dedup_writes[0]"]
        tracking = policy["target_tracking_scaling_policy_configuration"][0]
        self.assertEqual(policy["policy_type"], "TargetTrackingScaling")
        self.assertEqual(tracking["target_value"], 70)
        self.assertEqual(tracking["predefined_metric_specification"][0]["predefined_metric_type"],
                         "DynamoDBWriteCapacityUtilization")


class Functions(unittest.TestCase):
    def test_runtime_architecture_and_contract_environment(self):
        for name in ("ingest", "compact"):
            fn = resource(f"aws_lambda_function.{name}")
            self.assertEqual(fn["runtime"], "provided.al2023")
            self.assertEqual(fn["architectures"], ["arm64"])
            env = fn["environment"][0]["variables"]
            self.assertEqual(env["DATA_LAKE_BUCKET"], "event-pipeline-lake-123456789012-eu-west-1")
            self.assertEqual(env["METRICS_SINK"], "emf")
            self.assertEqual(env["STAGING_PREFIX"], "staging")
        ingest = resource("aws_lambda_function.ingest")["environment"][0]["variables"]
        self.assertEqual(ingest["DEDUP_TABLE"], "event-pipeline-dedup")
        self.assertEqual(ingest["DEDUP_TTL_SECONDS"], "604800")
        self.assertNotIn("DEDUP_TABLE", resource("aws_lambda_function.compact")["environment"][0]["variables"])
        compact = resource("aws_lambda_function.compact")["environment"][0]["variables"]
        # The scheduled run looks back for late data exactly as long as staging is kept.
        rules = resource("aws_s3_bucket_lifecycle_configuration.lake")["rule"]
        staging_days = [r["expiration"][0]["days"] for r in rules if r["id"] == "expire-staging"]
        self.assertEqual([int(compact["STAGING_RETENTION_DAYS"])], staging_days)

    def test_compact_has_cpu_for_its_two_threads_within_a_new_account_s_memory_quota(self):
        # Lambda gives one vCPU's worth of CPU per 1,769 MB; compaction runs a decoding and an
        # encoding thread at once, so 2,048 MB (1.16 vCPUs) left one of them mostly waiting. New
        # accounts have a reduced memory quota: 3,008 MB, Lambda's maximum before 2020, is the
        # default, and 3,538 MB (two full vCPUs) is for accounts whose quota allows it.
        memory = resource("aws_lambda_function.compact")["memory_size"]
        self.assertEqual(memory, 3008)
        self.assertGreater(memory / 1769, 1.5)

    def test_compact_reserves_no_concurrency_by_default(self):
        # Reserving concurrency fails on accounts at the default quota; compaction's lease keeps two
        # runs apart instead.
        self.assertEqual(resource("aws_lambda_function.compact")["reserved_concurrent_executions"], -1)

    def test_log_groups_keep_logs_a_year(self):
        for name in ("ingest", "compact"):
            group = resource(f"aws_cloudwatch_log_group.{name}")
            self.assertEqual(group["name"], f"/aws/lambda/event-pipeline-{name}")
            self.assertEqual(group["retention_in_days"], 365)


class LeastPrivilege(unittest.TestCase):
    def test_ingest_reads_the_stream_claims_ids_and_writes_only_staging_and_quarantine(self):
        g = grants(policy("aws_iam_role_policy.ingest"))
        self.assertEqual(g["dynamodb:PutItem"], {"arn:aws:dynamodb:eu-west-1:123456789012:table/event-pipeline-dedup"})
        # aws/lambda/*: where the event source mapping, with this role, keeps batches it gives up on.
        self.assertEqual(g["s3:PutObject"], {f"{BUCKET}/staging/*", f"{BUCKET}/quarantine/*", f"{BUCKET}/aws/lambda/*"})
        self.assertEqual(g["s3:ListBucket"], {BUCKET})
        self.assertEqual(g["kinesis:GetRecords"], {"arn:aws:kinesis:eu-west-1:123456789012:stream/event-pipeline-events"})
        self.assertFalse(any(a.startswith("s3:") and a not in ("s3:PutObject", "s3:ListBucket") for a in g), g.keys())
        self.assertFalse(any(a.startswith("dynamodb:") and a != "dynamodb:PutItem" for a in g))

    def test_compact_reads_staging_replaces_processed_and_quarantines(self):
        g = grants(policy("aws_iam_role_policy.compact"))
        self.assertEqual(g["s3:GetObject"], {f"{BUCKET}/staging/*", f"{BUCKET}/processed/_manifests/*",
                                             f"{BUCKET}/processed/_lease/*"})
        self.assertEqual(g["s3:DeleteObject"], {f"{BUCKET}/processed/*"})
        self.assertEqual(g["s3:PutObject"], {f"{BUCKET}/processed/*", f"{BUCKET}/quarantine/*"})
        self.assertEqual(g["s3:ListBucket"], {BUCKET})
        self.assertFalse(any(a.startswith(("dynamodb:", "kinesis:")) for a in g))

    def test_no_statement_grants_everything(self):
        for address in ("aws_iam_role_policy.ingest", "aws_iam_role_policy.compact", "aws_iam_role_policy.scheduler"):
            for statement in policy(address):
                resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                for action in actions:
                    self.assertFalse(action.endswith(":*"), f"{address}: {action}")
                if "*" in resources:
                    # PutMetricData has no resource-level permissions: its only scope is the namespace.
                    self.assertEqual(actions, ["cloudwatch:PutMetricData"], address)
                    self.assertEqual(statement["Condition"], {"StringEquals": {"cloudwatch:namespace": "EventPipeline"}})

    def test_both_functions_may_put_metrics_in_the_pipeline_namespace_only(self):
        # METRICS_SINK=cloudwatch calls PutMetricData; without this grant every publish is denied.
        for address in ("aws_iam_role_policy.ingest", "aws_iam_role_policy.compact"):
            [statement] = [s for s in policy(address) if "cloudwatch:PutMetricData" in s["Action"]]
            self.assertEqual(statement["Condition"], {"StringEquals": {"cloudwatch:namespace": "EventPipeline"}})

    def test_no_grant_that_grants_nothing(self):
        # ListStreams has no resource-level permissions: granted on a stream ARN it allows nothing.
        for address in ("aws_iam_role_policy.ingest", "aws_iam_role_policy.compact", "aws_iam_role_policy.scheduler"):
            self.assertNotIn("kinesis:ListStreams", grants(policy(address)), address)

    def test_key_use_names_the_key_arn_not_an_alias(self):
        # kms:ResourceAliases conditions take minutes to reflect a new alias; the key's ARN does not.
        for address in ("aws_iam_role_policy.ingest", "aws_iam_role_policy.compact", "aws_iam_role_policy.scheduler"):
            self.assertFalse(any(a.startswith("kms:") for a in grants(policy(address))), address)
        self.assertNotIn("kms:ResourceAliases", json.dumps(PLAN["configuration"]))
        key_use = CONFIGURATION["aws_iam_role_policy.key_use"]
        self.assertIn("aws_kms_key.pipeline.arn", key_use["expressions"]["policy"]["references"])
        self.assertEqual({a.split('"')[1] for a in RESOURCES if a.startswith("aws_iam_role_policy.key_use[")},
                         {"ingest", "compact", "scheduler"})

    def test_producers_get_a_ready_policy_for_the_encrypted_stream(self):
        producer = CONFIGURATION["aws_iam_policy.producer"]
        self.assertIn("aws_kms_key.pipeline.arn", producer["expressions"]["policy"]["references"])
        self.assertIn("producer_policy_arn", PLAN["configuration"]["root_module"]["outputs"])


class Schedule(unittest.TestCase):
    def test_compacts_the_previous_day_daily_with_retries_and_dead_letters(self):
        schedule = resource("aws_scheduler_schedule.compact_daily")
        self.assertEqual(schedule["schedule_expression"], "cron(15 0 * * ? *)")
        self.assertEqual(schedule["schedule_expression_timezone"], "UTC")
        target = schedule["target"][0]
        self.assertEqual(json.loads(target["input"])["time"], "<aws.scheduler.scheduled-time>")
        self.assertEqual(target["retry_policy"][0]["maximum_retry_attempts"], 3)
        self.assertEqual(len(target["dead_letter_config"]), 1)
        g = grants(policy("aws_iam_role_policy.scheduler"))
        self.assertEqual(g["lambda:InvokeFunction"], {"arn:aws:lambda:eu-west-1:123456789012:function:event-pipeline-compact"})


class Lake(unittest.TestCase):
    def test_bucket_is_private_encrypted_tls_only_and_expires_staging(self):
        block = resource("aws_s3_bucket_public_access_block.lake")
        self.assertTrue(all(block[k] for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")))
        sse = resource("aws_s3_bucket_server_side_encryption_configuration.lake")["rule"][0]
        self.assertEqual(sse["apply_server_side_encryption_by_default"][0]["sse_algorithm"], "aws:kms")
        deny = policy("aws_s3_bucket_policy.lake")[0]
        self.assertEqual(deny["Effect"], "Deny")
        self.assertEqual(deny["Condition"]["Bool"]["aws:SecureTransport"], "false")
        rules = {r["id"]: r for r in resource("aws_s3_bucket_lifecycle_configuration.lake")["rule"]}
        self.assertEqual(rules["expire-staging"]["expiration"][0]["days"], 14)
        self.assertEqual(rules["expire-staging"]["filter"][0]["prefix"], "staging/")
        self.assertEqual(rules["expire-quarantine"]["expiration"][0]["days"], 90)
        self.assertNotIn("expiration", [k for k, v in rules["processed-old-versions"].items() if v])

    def test_stream_is_encrypted_and_on_demand_by_default(self):
        stream = resource("aws_kinesis_stream.events")
        self.assertEqual(stream["encryption_type"], "KMS")
        self.assertEqual(stream["stream_mode_details"], [{"stream_mode": "ON_DEMAND"}])

    def test_the_lake_table_lists_partitions_compaction_registers_and_follows_the_catalogue(self):
        table = resource("aws_glue_catalog_table.events[0]")
        # No projection: an injected column would make Athena reject every query without an
        # equality filter on it, and the default partition could not be reached with IS NULL.
        self.assertFalse([k for k in table["parameters"] if k.startswith("projection.")], table["parameters"])
        columns = {c["name"]: c["type"] for c in table["storage_descriptor"][0]["columns"]}
        types = {"string": "string", "integer": "bigint", "number": "double", "boolean": "boolean"}
        for name, field in CATALOGUE["fields"].items():
            self.assertEqual(columns[name], types[field["type"]], name)
        self.assertEqual(columns["created_at"], "timestamp")
        self.assertEqual([p["name"] for p in table["partition_keys"]], ["year", "month", "day", "language"])
        # compact registers the partitions it writes in exactly this table, and may do nothing else.
        env = resource("aws_lambda_function.compact")["environment"][0]["variables"]
        self.assertEqual((env["GLUE_DATABASE"], env["GLUE_TABLE"]),
                         (resource("aws_glue_catalog_database.lake[0]")["name"], table["name"]))
        glue = {a: r for a, r in grants(policy("aws_iam_role_policy.compact")).items() if a.startswith("glue:")}
        arn = "arn:aws:glue:eu-west-1:123456789012"
        self.assertEqual(glue, {action: {f"{arn}:catalog", f"{arn}:database/event_pipeline_lake",
                                         f"{arn}:table/event_pipeline_lake/events"}
                                for action in ("glue:GetTable", "glue:BatchCreatePartition")})

    def test_the_staging_table_projects_every_minute_of_the_staging_layout(self):
        table = resource("aws_glue_catalog_table.staging[0]")
        params = table["parameters"]
        partitions = ["year", "month", "day", "hour", "minute"]
        self.assertEqual([p["name"] for p in table["partition_keys"]], partitions)
        self.assertEqual({params[f"projection.{p}.type"] for p in partitions}, {"integer"})
        self.assertEqual([params[f"projection.{p}.range"] for p in partitions[1:]], ["1,12", "1,31", "0,23", "0,59"])
        self.assertEqual({params[f"projection.{p}.digits"] for p in partitions[1:]}, {"2"})
        # The contract's staging key: staging/year=YYYY/month=MM/day=DD/hour=HH/minute=mm/{shard}-{seq}.ndjson
        self.assertEqual(
            params["storage.location.template"],
            "s3://event-pipeline-lake-123456789012-eu-west-1/staging/year=${year}/month=${month}/day=${day}/hour=${hour}/minute=${minute}/",
        )
        storage = table["storage_descriptor"][0]
        self.assertEqual(storage["ser_de_info"][0]["serialization_library"], "org.openx.data.jsonserde.JsonSerDe")
        columns = {c["name"]: c["type"] for c in storage["columns"]}
        self.assertEqual(columns["event_type"], "string")
        self.assertIn("language_id:string", columns["event_specifics"])
        self.assertNotIn("injected", json.dumps(PLAN["configuration"]))


class LocalStack(unittest.TestCase):
    # The LocalStack service each resource type needs (LocalStack's SERVICES names).
    SERVICE_OF_PREFIX = {
        "aws_s3_": "s3", "aws_dynamodb_": "dynamodb", "aws_kinesis_": "kinesis", "aws_cloudwatch_log_": "logs",
        "aws_cloudwatch_": "cloudwatch", "aws_kms_": "kms", "aws_iam_": "iam", "aws_lambda_": "lambda",
        "aws_sqs_": "sqs", "aws_sns_": "sns", "aws_scheduler_": "scheduler", "aws_glue_": "glue",
        "aws_appautoscaling_": "application-autoscaling",
    }

    def test_the_compose_file_loads_every_service_the_terraform_needs_but_glue(self):
        needed = set()
        for change in PLAN["resource_changes"]:
            if change["mode"] != "managed":
                continue
            prefix = next((p for p in self.SERVICE_OF_PREFIX if change["type"].startswith(p)), None)
            self.assertIsNotNone(prefix, f"which LocalStack service serves {change['type']}?")
            needed.add(self.SERVICE_OF_PREFIX[prefix])
        needed.add("sts")  # the provider asks who it is
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "localstack", "docker-compose.yml")) as f:
            [line] = [line for line in f if line.strip().startswith("SERVICES:")]
        loaded = set(line.split(":", 1)[1].strip().split(","))
        # Glue is not in the community edition: deploy-local and the README apply with enable_glue=false.
        self.assertEqual(needed - {"glue"} - loaded, set())
        self.assertNotIn("glue", loaded)


class Observability(unittest.TestCase):
    def test_dashboard_shows_the_pipeline_metrics(self):
        body = resource("aws_cloudwatch_dashboard.pipeline")["dashboard_body"]
        for metric in ("Invocations", "Errors", "Duration", "IteratorAge", "IncomingRecords", "EventsWritten",
                       "DuplicatesDropped", "RecordsQuarantined", "EventsCompacted", "DaysRecompacted",
                       "LateObjectsFound", "LinesQuarantined", "PutRequests", "ColdStart"):
            self.assertIn(f'"{metric}"', body, metric)
        # Quarantine by reason: every Reason value of the metric, whatever codes appear.
        self.assertIn('SEARCH(\'{EventPipeline,FunctionName,Reason} MetricName=\\"RecordsQuarantinedByReason\\" '
                      'FunctionName=\\"event-pipeline-ingest\\"\', \'Sum\', 300)', body)

    def test_alarms_cover_lag_errors_dead_letters_and_quarantine_rate(self):
        alarms = {r["alarm_name"] for a, r in RESOURCES.items() if a.startswith("aws_cloudwatch_metric_alarm.")}
        self.assertTrue({"event-pipeline-ingest-iterator-age", "event-pipeline-ingest-errors", "event-pipeline-compact-errors",
                         "event-pipeline-ingest-given-up-batches", "event-pipeline-compact-dead-letters-depth",
                         "event-pipeline-ingest-quarantine-rate", "event-pipeline-compact-lines-quarantined"} <= alarms,
                        alarms)
        lines = resource("aws_cloudwatch_metric_alarm.compaction_quarantine")
        self.assertEqual((lines["metric_name"], lines["threshold"], lines["comparison_operator"]),
                         ("LinesQuarantined", 0, "GreaterThanThreshold"))
        given_up = resource("aws_cloudwatch_metric_alarm.given_up")
        self.assertEqual((given_up["namespace"], given_up["metric_name"], given_up["dimensions"]),
                         ("AWS/S3", "PutRequests", {"BucketName": BUCKET.split(":::")[1], "FilterId": "given-up-batches"}))
        self.assertEqual(resource("aws_s3_bucket_metric.given_up")["filter"], [{"prefix": "aws/lambda/", "tags": None, "access_point": None}])
        self.assertEqual(resource('aws_sns_topic_subscription.alarm_email[0]')["endpoint"], "ops@example.com")


if __name__ == "__main__":
    unittest.main()
