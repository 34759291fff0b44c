output "stream_name" {
  description = "Put events here (PutRecords, or the KPL)."
  value       = aws_kinesis_stream.events.name
}

output "stream_arn" {
  value = aws_kinesis_stream.events.arn
}

output "bucket" {
  description = "The data lake: staging/, quarantine/, processed/."
  value       = aws_s3_bucket.lake.bucket
}

output "dedup_table" {
  value = aws_dynamodb_table.dedup.name
}

output "ingest_function" {
  value = aws_lambda_function.ingest.function_name
}

output "compact_function" {
  value = aws_lambda_function.compact.function_name
}

output "given_up_batches" {
  description = "Where the event source mapping keeps batches it gave up on (replay: redrive given-up)."
  value       = "s3://${aws_s3_bucket.lake.id}/aws/lambda/${aws_lambda_event_source_mapping.ingest.uuid}/"
}

output "compact_dead_letter_queue" {
  value = aws_sqs_queue.compact_dead_letters.url
}

output "alarm_topic" {
  value = aws_sns_topic.alarms.arn
}

output "dashboard_url" {
  value = "https://${var.region}.console.aws.amazon.com/cloudwatch/home?region=${var.region}#dashboards:name=${aws_cloudwatch_dashboard.pipeline.dashboard_name}"
}

output "athena_tables" {
  description = "Glue tables for Athena: the compacted lake (events) and today's staging (staging); null without Glue."
  value = var.enable_glue ? {
    events  = "${aws_glue_catalog_database.lake[0].name}.${aws_glue_catalog_table.events[0].name}"
    staging = "${aws_glue_catalog_database.lake[0].name}.${aws_glue_catalog_table.staging[0].name}"
  } : null
}

output "kms_key" {
  description = "Readers of the lake (Athena users) need kms:Decrypt on this key."
  value       = aws_kms_key.pipeline.arn
}

output "producer_policy_arn" {
  description = "Attach to the role or user of anything that puts events: PutRecord(s) on the stream and kms:GenerateDataKey on its key."
  value       = aws_iam_policy.producer.arn
}
