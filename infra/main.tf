provider "aws" {
  region = var.region

  # Pointing at an emulator (LocalStack) switches every endpoint and the credential checks.
  skip_credentials_validation = var.local_endpoint != null
  skip_requesting_account_id  = var.local_endpoint != null
  skip_metadata_api_check     = var.local_endpoint != null
  s3_use_path_style           = var.local_endpoint != null

  dynamic "endpoints" {
    for_each = var.local_endpoint == null ? [] : [var.local_endpoint]
    content {
      appautoscaling = endpoints.value
      cloudwatch     = endpoints.value
      cloudwatchlogs = endpoints.value
      dynamodb       = endpoints.value
      glue           = endpoints.value
      iam            = endpoints.value
      kinesis        = endpoints.value
      kms            = endpoints.value
      lambda         = endpoints.value
      s3             = endpoints.value
      scheduler      = endpoints.value
      sns            = endpoints.value
      sqs            = endpoints.value
      sts            = endpoints.value
    }
  }

  default_tags {
    tags = {
      project    = "event-pipeline"
      managed-by = "terraform"
    }
  }
}

data "aws_caller_identity" "current" {
  count = var.account_id == null ? 1 : 0
}

data "aws_partition" "current" {}

locals {
  account_id = var.account_id != null ? var.account_id : data.aws_caller_identity.current[0].account_id
  partition  = data.aws_partition.current.partition

  bucket_name  = "${var.name}-lake-${local.account_id}-${var.region}"
  stream_name  = "${var.name}-events"
  table_name   = "${var.name}-dedup"
  ingest_name  = "${var.name}-ingest"
  compact_name = "${var.name}-compact"
  namespace    = "EventPipeline"

  # ARNs built from names, so IAM policies are concrete at plan time.
  bucket_arn = "arn:${local.partition}:s3:::${local.bucket_name}"
  stream_arn = "arn:${local.partition}:kinesis:${var.region}:${local.account_id}:stream/${local.stream_name}"
  table_arn  = "arn:${local.partition}:dynamodb:${var.region}:${local.account_id}:table/${local.table_name}"
  queue_arn  = "arn:${local.partition}:sqs:${var.region}:${local.account_id}:${var.name}"
  logs_arn   = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:/aws/lambda"
  key_alias  = "alias/${var.name}"

  # The contract's configuration (docs/CONTRACT.md), shared by both functions.
  common_environment = {
    DATA_LAKE_BUCKET  = local.bucket_name
    STAGING_PREFIX    = "staging"
    QUARANTINE_PREFIX = "quarantine"
    PROCESSED_PREFIX  = "processed"
    METRICS_NAMESPACE = local.namespace
    METRICS_SINK      = var.metrics_sink
  }
}

# One customer-managed key encrypts the stream, the table, the bucket, the logs, the queues and the
# alarm topic.
resource "aws_kms_key" "pipeline" {
  description             = "${var.name}: stream, dedup table, data lake, logs, queues"
  enable_key_rotation     = true
  deletion_window_in_days = 14
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "pipeline" {
  name          = local.key_alias
  target_key_id = aws_kms_key.pipeline.key_id
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:This is a key policy: its "*" resource is the key itself, and write access is limited to the account and two services.
  #checkov:skip=CKV_AWS_356:This is a key policy: its "*" resource is the key itself.
  #checkov:skip=CKV_AWS_109:This is a key policy: key administration stays with the account root, as AWS recommends.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
  statement {
    sid       = "CloudWatchLogs"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:/aws/lambda/${var.name}-*"]
    }
  }
  statement {
    sid       = "AlarmsPublishToEncryptedTopic"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
  }
}
