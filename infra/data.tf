# The stream, the dedup table and the data-lake bucket.

resource "aws_kinesis_stream" "events" {
  name             = local.stream_name
  shard_count      = var.kinesis_shard_count
  retention_period = var.kinesis_retention_hours
  encryption_type  = "KMS"
  kms_key_id       = aws_kms_key.pipeline.arn

  stream_mode_details {
    stream_mode = var.kinesis_shard_count == null ? "ON_DEMAND" : "PROVISIONED"
  }
}

resource "aws_dynamodb_table" "dedup" {
  name         = local.table_name
  billing_mode = local.dedup_provisioned ? "PROVISIONED" : "PAY_PER_REQUEST"
  hash_key     = "event_uuid"
  # Claims are conditional writes only: reads stay at the minimum.
  write_capacity = local.dedup_provisioned ? var.dedup_min_write_capacity : null
  read_capacity  = local.dedup_provisioned ? 1 : null

  attribute {
    name = "event_uuid"
    type = "S"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.pipeline.arn
  }

  lifecycle {
    # Auto scaling owns the write capacity once the table exists.
    ignore_changes = [write_capacity]
    precondition {
      condition     = var.dedup_min_write_capacity >= 1 && var.dedup_min_write_capacity <= var.dedup_max_write_capacity
      error_message = "dedup_min_write_capacity must be at least 1 and at most dedup_max_write_capacity."
    }
    precondition {
      condition     = var.dedup_ttl_seconds > var.kinesis_retention_hours * 3600
      error_message = "dedup_ttl_seconds must exceed the stream's retention, or a redelivered record could pass as new."
    }
  }
}

locals {
  dedup_provisioned = var.dedup_capacity_mode == "provisioned"
}

# Provisioned mode: target tracking on write capacity utilization.
resource "aws_appautoscaling_target" "dedup_writes" {
  count              = local.dedup_provisioned ? 1 : 0
  service_namespace  = "dynamodb"
  resource_id        = "table/${aws_dynamodb_table.dedup.name}"
  scalable_dimension = "dynamodb:table:WriteCapacityUnits"
  min_capacity       = var.dedup_min_write_capacity
  max_capacity       = var.dedup_max_write_capacity
}

resource "aws_appautoscaling_policy" "dedup_writes" {
  count              = local.dedup_provisioned ? 1 : 0
  name               = "${var.name}-dedup-writes"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.dedup_writes[0].service_namespace
  resource_id        = aws_appautoscaling_target.dedup_writes[0].resource_id
  scalable_dimension = aws_appautoscaling_target.dedup_writes[0].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value = var.dedup_target_utilization
    predefined_metric_specification {
      predefined_metric_type = "DynamoDBWriteCapacityUtilization"
    }
  }
}

resource "aws_s3_bucket" "lake" {
  #checkov:skip=CKV_AWS_18:Access logging needs a second, log-only bucket; enable it with your account's central logging bucket.
  #checkov:skip=CKV_AWS_144:Cross-region replication is a recovery choice per deployment; staging and quarantine are transient and processed/ can be rebuilt by compaction.
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket events: compaction runs on a schedule.
  bucket = local.bucket_name

  lifecycle {
    precondition {
      condition     = length(local.bucket_name) <= 63
      error_message = "The bucket name ${local.bucket_name} is longer than S3's 63 characters: choose a shorter name."
    }
  }
}

resource "aws_s3_bucket_public_access_block" "lake" {
  bucket                  = aws_s3_bucket.lake.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "lake" {
  bucket = aws_s3_bucket.lake.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "lake" {
  bucket = aws_s3_bucket.lake.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.pipeline.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "lake" {
  bucket = aws_s3_bucket.lake.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "lake" {
  bucket     = aws_s3_bucket.lake.id
  depends_on = [aws_s3_bucket_versioning.lake]

  rule {
    id     = "expire-staging"
    status = "Enabled"
    filter {
      prefix = "staging/"
    }
    expiration {
      days = var.staging_expiration_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  rule {
    id     = "expire-quarantine"
    status = "Enabled"
    filter {
      prefix = "quarantine/"
    }
    expiration {
      days = var.quarantine_expiration_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  rule {
    id     = "processed-old-versions"
    status = "Enabled"
    filter {
      prefix = "processed/"
    }
    # Re-compaction replaces files: keep the replaced versions a week, for recovery.
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
  }

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 2
    }
  }
}

data "aws_iam_policy_document" "lake_tls_only" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      local.bucket_arn,
      "${local.bucket_arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "lake" {
  bucket     = aws_s3_bucket.lake.id
  policy     = data.aws_iam_policy_document.lake_tls_only.json
  depends_on = [aws_s3_bucket_public_access_block.lake]
}
