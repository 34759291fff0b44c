# The two Lambda functions, their least-privilege roles and logs, the Kinesis event source mapping
# and the daily compaction schedule.

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_cloudwatch_log_group" "ingest" {
  name              = "/aws/lambda/${local.ingest_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.pipeline.arn
}

resource "aws_cloudwatch_log_group" "compact" {
  name              = "/aws/lambda/${local.compact_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.pipeline.arn
}

# ---- ingest: read the stream, claim ids, write staging/ and quarantine/ ----

resource "aws_iam_role" "ingest" {
  name               = local.ingest_name
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

data "aws_iam_policy_document" "ingest" {
  statement {
    sid = "ReadTheStream"
    actions = [
      "kinesis:DescribeStream",
      "kinesis:DescribeStreamSummary",
      "kinesis:GetRecords",
      "kinesis:GetShardIterator",
      "kinesis:ListShards",
      "kinesis:SubscribeToShard",
    ]
    resources = [local.stream_arn]
  }
  statement {
    sid       = "ClaimEventIds"
    actions   = ["dynamodb:PutItem"]
    resources = [local.table_arn]
  }
  statement {
    sid       = "WriteStagingAndQuarantine"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arn}/staging/*", "${local.bucket_arn}/quarantine/*"]
  }
  statement {
    sid       = "PutMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [local.namespace]
    }
  }
  # The event source mapping writes batches it gives up on to its S3 on-failure destination with
  # the function's role: s3:PutObject and s3:ListBucket (Lambda developer guide, "Retain discarded
  # batch records for a Kinesis Data Streams event source"). Lambda chooses the keys:
  # aws/lambda/{mapping UUID}/{shard}/YYYY/MM/DD/…
  statement {
    sid       = "KeepGivenUpBatches"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arn}/aws/lambda/*"]
  }
  statement {
    sid       = "ListForGivenUpBatches"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${local.logs_arn}/${local.ingest_name}:*"]
  }
}

resource "aws_iam_role_policy" "ingest" {
  name   = "ingest"
  role   = aws_iam_role.ingest.id
  policy = data.aws_iam_policy_document.ingest.json
}

resource "aws_lambda_function" "ingest" {
  #checkov:skip=CKV_AWS_117:The function only calls AWS APIs (Kinesis, DynamoDB, S3); a VPC would add NAT or endpoints and cold-start latency for nothing.
  #checkov:skip=CKV_AWS_272:Code signing needs an account-level signing profile; the zip is built by CI from this repository.
  #checkov:skip=CKV_AWS_116:A stream-triggered function has no asynchronous invocations: batches it gives up on go to the event source mapping's S3 on-failure destination.
  #checkov:skip=CKV_AWS_115:Concurrency is bounded by shards x parallelization factor; reserving it could fail in small accounts.
  function_name    = local.ingest_name
  role             = aws_iam_role.ingest.arn
  runtime          = "provided.al2023"
  architectures    = ["arm64"]
  handler          = "bootstrap"
  filename         = var.ingest_zip
  source_code_hash = fileexists(var.ingest_zip) ? filebase64sha256(var.ingest_zip) : null
  memory_size      = var.ingest_memory_mb
  timeout          = var.ingest_timeout_seconds
  kms_key_arn      = aws_kms_key.pipeline.arn

  environment {
    variables = merge(local.common_environment, {
      DEDUP_TABLE       = local.table_name
      DEDUP_TTL_SECONDS = tostring(var.dedup_ttl_seconds)
    })
  }

  tracing_config {
    mode = "PassThrough"
  }

  depends_on = [aws_cloudwatch_log_group.ingest, aws_iam_role_policy.ingest]
}

resource "aws_lambda_event_source_mapping" "ingest" {
  function_name                      = aws_lambda_function.ingest.arn
  event_source_arn                   = aws_kinesis_stream.events.arn
  starting_position                  = "TRIM_HORIZON"
  batch_size                         = var.batch_size
  maximum_batching_window_in_seconds = var.batching_window_seconds
  parallelization_factor             = var.parallelization_factor
  maximum_retry_attempts             = var.maximum_retry_attempts
  maximum_record_age_in_seconds      = var.maximum_record_age_seconds
  bisect_batch_on_function_error     = true
  function_response_types            = ["ReportBatchItemFailures"]

  # Given-up batches are kept whole (the invocation record and its payload) in the lake's bucket,
  # under aws/lambda/: `redrive given-up` replays them with their original eventIDs.
  destination_config {
    on_failure {
      destination_arn = local.bucket_arn
    }
  }
  depends_on = [aws_s3_bucket.lake]

  lifecycle {
    precondition {
      condition     = var.maximum_record_age_seconds == -1 || var.maximum_record_age_seconds <= var.kinesis_retention_hours * 3600
      error_message = "maximum_record_age_seconds beyond the stream's retention never applies: records expire from the stream first, and are lost without reaching the on-failure destination."
    }
  }
}

# ---- compact: read staging/, write and delete processed/, write quarantine/ ----

resource "aws_iam_role" "compact" {
  name               = local.compact_name
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

data "aws_iam_policy_document" "compact" {
  statement {
    sid       = "ListStagingAndProcessed"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["staging/*", "processed/*", "processed/"]
    }
  }
  statement {
    sid     = "ReadStagingManifestsAndTheLease"
    actions = ["s3:GetObject"]
    # Manifests record what each compaction consumed (late data, and no rebuild that shrinks a day).
    # The lease keeps two compactions apart; a conditional delete needs s3:GetObject as well.
    resources = ["${local.bucket_arn}/staging/*", "${local.bucket_arn}/processed/_manifests/*", "${local.bucket_arn}/processed/_lease/*"]
  }
  statement {
    sid       = "WriteAndReplaceProcessed"
    actions   = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${local.bucket_arn}/processed/*"]
  }
  statement {
    sid       = "QuarantineBadLines"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arn}/quarantine/*"]
  }
  statement {
    sid       = "PutMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [local.namespace]
    }
  }
  statement {
    sid       = "DeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = ["${local.queue_arn}-compact-dead-letters"]
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${local.logs_arn}/${local.compact_name}:*"]
  }
  # Registering partitions needs the catalog, the database and the table (Glue developer guide,
  # "Specifying AWS Glue resource ARNs").
  dynamic "statement" {
    for_each = var.enable_glue ? [1] : []
    content {
      sid     = "RegisterLakePartitions"
      actions = ["glue:GetTable", "glue:BatchCreatePartition"]
      resources = [
        "arn:${local.partition}:glue:${var.region}:${local.account_id}:catalog",
        "arn:${local.partition}:glue:${var.region}:${local.account_id}:database/${local.glue_database}",
        "arn:${local.partition}:glue:${var.region}:${local.account_id}:table/${local.glue_database}/${local.glue_table}",
      ]
    }
  }
}

resource "aws_iam_role_policy" "compact" {
  name   = "compact"
  role   = aws_iam_role.compact.id
  policy = data.aws_iam_policy_document.compact.json
}

resource "aws_sqs_queue" "compact_dead_letters" {
  name                      = "${var.name}-compact-dead-letters"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
}

resource "aws_lambda_function" "compact" {
  #checkov:skip=CKV_AWS_117:The function only calls S3; a VPC would add NAT or endpoints for nothing.
  #checkov:skip=CKV_AWS_272:Code signing needs an account-level signing profile; the zip is built by CI from this repository.
  #checkov:skip=CKV_AWS_115:Reserving concurrency fails in accounts at the default quota (variable compact_reserved_concurrency); a lease in S3 keeps compactions apart.
  function_name    = local.compact_name
  role             = aws_iam_role.compact.arn
  runtime          = "provided.al2023"
  architectures    = ["arm64"]
  handler          = "bootstrap"
  filename         = var.compact_zip
  source_code_hash = fileexists(var.compact_zip) ? filebase64sha256(var.compact_zip) : null
  memory_size      = var.compact_memory_mb
  timeout          = var.compact_timeout_seconds
  kms_key_arn      = aws_kms_key.pipeline.arn
  # Off by default: reserving concurrency fails on accounts at the default quota. Two runs never
  # compact at once either way: each holds the lease processed/_lease/compact.json while it works.
  reserved_concurrent_executions = coalesce(var.compact_reserved_concurrency, -1)

  environment {
    # The scheduled run looks back as far as staging is kept for days with late data.
    variables = merge(
      local.common_environment,
      { STAGING_RETENTION_DAYS = tostring(var.staging_expiration_days) },
      var.enable_glue ? { GLUE_DATABASE = local.glue_database, GLUE_TABLE = local.glue_table } : {},
    )
  }

  dead_letter_config {
    target_arn = aws_sqs_queue.compact_dead_letters.arn
  }

  tracing_config {
    mode = "PassThrough"
  }

  depends_on = [aws_cloudwatch_log_group.compact, aws_iam_role_policy.compact]
}

# ---- the daily schedule: compact the day before ----

data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  name               = "${var.name}-scheduler"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
}

data "aws_iam_policy_document" "scheduler" {
  statement {
    sid       = "InvokeCompact"
    actions   = ["lambda:InvokeFunction"]
    resources = ["arn:${local.partition}:lambda:${var.region}:${local.account_id}:function:${local.compact_name}"]
  }
  statement {
    sid       = "DeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = ["${local.queue_arn}-compact-dead-letters"]
  }
}

resource "aws_iam_role_policy" "scheduler" {
  name   = "invoke-compact"
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler.json
}

resource "aws_scheduler_schedule" "compact_daily" {
  name                         = "${var.name}-compact-daily"
  schedule_expression          = var.compact_schedule
  schedule_expression_timezone = "UTC"
  kms_key_arn                  = aws_kms_key.pipeline.arn

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.compact.arn
    role_arn = aws_iam_role.scheduler.arn
    # The contract's scheduled payload: compact the UTC day before `time`.
    input = jsonencode({ time = "<aws.scheduler.scheduled-time>", source = "aws.scheduler" })

    retry_policy {
      maximum_retry_attempts       = 3
      maximum_event_age_in_seconds = 3600
    }

    dead_letter_config {
      arn = aws_sqs_queue.compact_dead_letters.arn
    }
  }
}

# ---- the pipeline key, by ARN ----

# Each role's use of the key names the key's ARN: a condition on its alias (kms:ResourceAliases)
# takes minutes to reflect a new alias, so a fresh deployment would be denied at first.
locals {
  key_use = {
    # Lambda reads the encrypted stream and writes SSE-KMS objects and table items with this role.
    ingest = { role = aws_iam_role.ingest.id, actions = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"] }
    # compact reads and writes SSE-KMS objects.
    compact = { role = aws_iam_role.compact.id, actions = ["kms:Decrypt", "kms:GenerateDataKey"] }
    # The schedule is encrypted with the key.
    scheduler = { role = aws_iam_role.scheduler.id, actions = ["kms:Decrypt"] }
  }
}

resource "aws_iam_role_policy" "key_use" {
  for_each = local.key_use
  name     = "use-the-pipeline-key"
  role     = each.value.role
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid      = "UseThePipelineKey"
      Effect   = "Allow"
      Action   = each.value.actions
      Resource = aws_kms_key.pipeline.arn
    }]
  })
}

# ---- producers: a policy ready to attach to whatever puts events ----

resource "aws_iam_policy" "producer" {
  name        = "${var.name}-producer"
  description = "Put events to ${local.stream_name}: PutRecord(s), the shard listing the KPL uses, and the stream's KMS key."
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "PutEvents"
        Effect   = "Allow"
        Action   = ["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:ListShards", "kinesis:DescribeStreamSummary"]
        Resource = local.stream_arn
      },
      {
        # Putting to a KMS-encrypted stream needs a data key from the stream's key.
        Sid      = "EncryptForTheStream"
        Effect   = "Allow"
        Action   = ["kms:GenerateDataKey"]
        Resource = aws_kms_key.pipeline.arn
      },
    ]
  })
}
