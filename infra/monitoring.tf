# The dashboard and the alarms (with an optional e-mail subscription).

resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = aws_kms_key.pipeline.arn
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count     = var.alarm_email == null ? 0 : 1
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

locals {
  ingest_dimension  = { FunctionName = local.ingest_name }
  compact_dimension = { FunctionName = local.compact_name }
  alarm_actions     = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "iterator_age" {
  alarm_name          = "${local.ingest_name}-iterator-age"
  alarm_description   = "ingest is falling behind the stream (records could expire before they are read)."
  namespace           = "AWS/Lambda"
  metric_name         = "IteratorAge"
  dimensions          = local.ingest_dimension
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  threshold           = var.iterator_age_alarm_ms
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "errors" {
  for_each            = { ingest = local.ingest_dimension, compact = local.compact_dimension }
  alarm_name          = "${var.name}-${each.key}-errors"
  alarm_description   = "${each.key} invocations fail."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = each.value
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
}

# S3 request metrics for the on-failure prefix: a PUT there is a batch the event source mapping
# gave up on.
resource "aws_s3_bucket_metric" "given_up" {
  bucket = aws_s3_bucket.lake.id
  name   = "given-up-batches"
  filter {
    prefix = "aws/lambda/"
  }
}

resource "aws_cloudwatch_metric_alarm" "given_up" {
  alarm_name          = "${local.ingest_name}-given-up-batches"
  alarm_description   = "The event source mapping gave up on a batch: it is kept in s3://${local.bucket_name}/aws/lambda/; replay it with `redrive given-up`."
  namespace           = "AWS/S3"
  metric_name         = "PutRequests"
  dimensions          = { BucketName = local.bucket_name, FilterId = aws_s3_bucket_metric.given_up.name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  for_each = {
    compact-dead-letters = aws_sqs_queue.compact_dead_letters.name
  }
  alarm_name          = "${var.name}-${each.key}-depth"
  alarm_description   = "A compaction was given up: see the queue ${each.value}."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = each.value }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "quarantine_rate" {
  alarm_name          = "${local.ingest_name}-quarantine-rate"
  alarm_description   = "More than ${var.quarantine_rate_alarm * 100}% of received records are quarantined: a producer sends bad data."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.quarantine_rate_alarm
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions

  metric_query {
    id          = "rate"
    expression  = "IF(received > 0, quarantined / received, 0)"
    label       = "quarantined share"
    return_data = true
  }
  metric_query {
    id = "quarantined"
    metric {
      namespace   = local.namespace
      metric_name = "RecordsQuarantined"
      dimensions  = local.ingest_dimension
      stat        = "Sum"
      period      = 900
    }
  }
  metric_query {
    id = "received"
    metric {
      namespace   = local.namespace
      metric_name = "RecordsReceived"
      dimensions  = local.ingest_dimension
      stat        = "Sum"
      period      = 900
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "compaction_quarantine" {
  alarm_name          = "${local.compact_name}-lines-quarantined"
  alarm_description   = "Compaction quarantined staging lines it could not read. It never should: ingest writes every line. See quarantine/…/compaction-*."
  namespace           = local.namespace
  metric_name         = "LinesQuarantined"
  dimensions          = local.compact_dimension
  statistic           = "Sum"
  period              = 86400
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
}

locals {
  widget = {
    type   = "metric"
    width  = 8
    height = 6
  }
}

resource "aws_cloudwatch_dashboard" "pipeline" {
  dashboard_name = var.name
  dashboard_body = jsonencode({
    widgets = [
      merge(local.widget, { properties = {
        title = "Invocations and errors", region = var.region, stat = "Sum", period = 300,
        metrics = [
          ["AWS/Lambda", "Invocations", "FunctionName", local.ingest_name],
          ["AWS/Lambda", "Errors", "FunctionName", local.ingest_name],
          ["AWS/Lambda", "Invocations", "FunctionName", local.compact_name],
          ["AWS/Lambda", "Errors", "FunctionName", local.compact_name],
        ]
      } }),
      merge(local.widget, { properties = {
        title = "Duration (p50, p99)", region = var.region, period = 300,
        metrics = [
          ["AWS/Lambda", "Duration", "FunctionName", local.ingest_name, { stat = "p50" }],
          ["AWS/Lambda", "Duration", "FunctionName", local.ingest_name, { stat = "p99" }],
          ["AWS/Lambda", "Duration", "FunctionName", local.compact_name, { stat = "Maximum" }],
        ]
      } }),
      merge(local.widget, { properties = {
        title = "Iterator age and incoming records", region = var.region, period = 300,
        metrics = [
          ["AWS/Lambda", "IteratorAge", "FunctionName", local.ingest_name, { stat = "Maximum" }],
          ["AWS/Kinesis", "IncomingRecords", "StreamName", local.stream_name, { stat = "Sum", yAxis = "right" }],
        ]
      } }),
      merge(local.widget, { properties = {
        title = "Events written, duplicates dropped, quarantined", region = var.region, stat = "Sum", period = 300,
        metrics = [
          [local.namespace, "EventsWritten", "FunctionName", local.ingest_name],
          [local.namespace, "DuplicatesDropped", "FunctionName", local.ingest_name],
          [local.namespace, "RecordsQuarantined", "FunctionName", local.ingest_name],
          [local.namespace, "BatchItemFailures", "FunctionName", local.ingest_name],
        ]
      } }),
      merge(local.widget, { properties = {
        title = "Batches given up (kept for redrive) and redriven", region = var.region, stat = "Sum", period = 300,
        metrics = [
          ["AWS/S3", "PutRequests", "BucketName", local.bucket_name, "FilterId", aws_s3_bucket_metric.given_up.name],
          [local.namespace, "EventsWritten", "FunctionName", "redrive", { yAxis = "right" }],
        ]
      } }),
      merge(local.widget, { properties = {
        title = "Compaction rows and files", region = var.region, stat = "Sum", period = 86400,
        metrics = [
          [local.namespace, "EventsCompacted", "FunctionName", local.compact_name],
          [local.namespace, "DuplicatesRemoved", "FunctionName", local.compact_name],
          [local.namespace, "ParquetFilesWritten", "FunctionName", local.compact_name, { yAxis = "right" }],
        ]
      } }),
      merge(local.widget, { properties = {
        title = "Compaction: late data and quarantined lines", region = var.region, stat = "Sum", period = 86400,
        metrics = [
          [local.namespace, "DaysRecompacted", "FunctionName", local.compact_name],
          [local.namespace, "LateObjectsFound", "FunctionName", local.compact_name],
          [local.namespace, "LinesQuarantined", "FunctionName", local.compact_name],
        ]
      } }),
      merge(local.widget, { properties = {
        title = "Quarantined records by reason", region = var.region, stat = "Sum", period = 300,
        # One line per reason code ingest has seen: the metric carries a Reason dimension.
        metrics = [[{
          expression = "SEARCH('{${local.namespace},FunctionName,Reason} MetricName=\"RecordsQuarantinedByReason\" FunctionName=\"${local.ingest_name}\"', 'Sum', 300)"
          id         = "reasons"
          label      = ""
        }]]
      } }),
      merge(local.widget, { properties = {
        title = "Cold starts", region = var.region, stat = "Sum", period = 300,
        metrics = [
          [local.namespace, "ColdStart", "FunctionName", local.ingest_name],
          [local.namespace, "ColdStart", "FunctionName", local.compact_name],
        ]
      } }),
      merge(local.widget, { properties = {
        title = "Bytes written", region = var.region, stat = "Sum", period = 3600,
        metrics = [
          [local.namespace, "StagingBytesWritten", "FunctionName", local.ingest_name],
          [local.namespace, "ParquetBytesWritten", "FunctionName", local.compact_name],
        ]
      } }),
    ]
  })
}
