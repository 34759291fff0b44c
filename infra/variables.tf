variable "name" {
  description = "Prefix of every resource name: at most 30 characters, so the bucket name ({name}-lake-{account}-{region}) stays within S3's 63."
  type        = string
  default     = "event-pipeline"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,28}[a-z0-9]$", var.name))
    error_message = "name must be 3-30 lower-case letters, digits or dashes, starting with a letter and ending with a letter or digit (the bucket name must fit in 63 characters)."
  }
}

variable "region" {
  description = "AWS region to deploy to."
  type        = string
  default     = "eu-west-1"
}

variable "account_id" {
  description = "AWS account id. Leave null to look it up (STS); set it for offline plans."
  type        = string
  default     = null
}

variable "local_endpoint" {
  description = "An emulator endpoint (LocalStack: http://localhost:4566). When set, every AWS service the stack uses is pointed at it and credential checks are skipped."
  type        = string
  default     = null
}

variable "kinesis_shard_count" {
  description = "Shards for a PROVISIONED stream; null for ON_DEMAND capacity."
  type        = number
  default     = null
}

variable "kinesis_retention_hours" {
  description = "How long the stream keeps records (24-8760). Keep the dedup TTL above it."
  type        = number
  default     = 24
}

variable "ingest_zip" {
  description = "Zip of the ingest function (cargo lambda build --release --arm64 --output-format zip)."
  type        = string
  default     = "../target/lambda/ingest/bootstrap.zip"
}

variable "compact_zip" {
  description = "Zip of the compact function."
  type        = string
  default     = "../target/lambda/compact/bootstrap.zip"
}

variable "ingest_memory_mb" {
  type    = number
  default = 512
}

variable "ingest_timeout_seconds" {
  type    = number
  default = 120
}

variable "compact_memory_mb" {
  description = "Memory of compact, which sets its CPU: one vCPU's worth at 1,769 MB, two at 3,538 MB. Compaction decodes and encodes on two threads at once (bench/NOTES.md), so 3,008 MB gives it 1.7 vCPUs; 3,538 or more gives both threads a full vCPU where the account's memory quota allows (new accounts have a reduced one)."
  type        = number
  default     = 3008
  validation {
    condition     = var.compact_memory_mb >= 128 && var.compact_memory_mb <= 10240
    error_message = "Lambda takes 128 to 10,240 MB."
  }
}

variable "enable_glue" {
  description = "Create the Glue database and tables for Athena (compaction then registers the partitions it writes). Off for LocalStack's community edition, which has no Glue."
  type        = bool
  default     = true
}

variable "compact_reserved_concurrency" {
  description = "Reserved concurrency of compact; null reserves none (accounts at the default concurrency quota cannot reserve any). Compaction's lease keeps runs apart either way."
  type        = number
  default     = null
}

variable "metrics_sink" {
  description = "Where both functions publish metrics: emf (log lines, no API calls), cloudwatch (PutMetricData) or off."
  type        = string
  default     = "emf"
  validation {
    condition     = contains(["emf", "cloudwatch", "off"], var.metrics_sink)
    error_message = "metrics_sink must be emf, cloudwatch or off."
  }
}

variable "compact_timeout_seconds" {
  type    = number
  default = 900
}

variable "batch_size" {
  description = "Event source mapping: records per invocation (1-10000)."
  type        = number
  default     = 1000
}

variable "batching_window_seconds" {
  description = "Event source mapping: how long to gather a batch (0-300)."
  type        = number
  default     = 5
}

variable "parallelization_factor" {
  description = "Event source mapping: concurrent batches per shard (1-10)."
  type        = number
  default     = 1
}

variable "maximum_retry_attempts" {
  description = "Event source mapping: retries of a failing batch before it is given up to the S3 on-failure destination (-1: until the record age or retention ends it)."
  type        = number
  default     = 10
}

variable "maximum_record_age_seconds" {
  description = "Event source mapping: records older than this are given up to the S3 on-failure destination (-1: never); at most the stream's retention."
  type        = number
  default     = 86400
}

variable "dedup_capacity_mode" {
  description = "The dedup table's capacity: on-demand (pay per claim; the default) or provisioned (write capacity auto scaled between dedup_min/max_write_capacity; cheaper under steady traffic, throttles on sudden bursts until it scales)."
  type        = string
  default     = "on-demand"
  validation {
    condition     = contains(["on-demand", "provisioned"], var.dedup_capacity_mode)
    error_message = "dedup_capacity_mode must be on-demand or provisioned."
  }
}

variable "dedup_min_write_capacity" {
  description = "Provisioned mode: the fewest write capacity units auto scaling keeps (each claim of an id under 1 KB takes one)."
  type        = number
  default     = 5
}

variable "dedup_max_write_capacity" {
  description = "Provisioned mode: the most write capacity units auto scaling may set."
  type        = number
  default     = 1000
  validation {
    condition     = var.dedup_max_write_capacity >= 1
    error_message = "dedup_max_write_capacity must be at least 1."
  }
}

variable "dedup_target_utilization" {
  description = "Provisioned mode: the share of write capacity (percent) auto scaling aims to use."
  type        = number
  default     = 70
  validation {
    condition     = var.dedup_target_utilization >= 20 && var.dedup_target_utilization <= 90
    error_message = "dedup_target_utilization must be 20-90 (Application Auto Scaling's range for DynamoDB)."
  }
}

variable "dedup_ttl_seconds" {
  description = "How long a claimed event id blocks duplicates; above the stream's retention."
  type        = number
  default     = 604800
}

variable "staging_expiration_days" {
  description = "Staging objects expire after this many days (compaction runs daily)."
  type        = number
  default     = 14
}

variable "quarantine_expiration_days" {
  type    = number
  default = 90
}

variable "log_retention_days" {
  type    = number
  default = 365
}

variable "compact_schedule" {
  description = "When compaction runs (EventBridge Scheduler expression, UTC): it compacts the day before."
  type        = string
  default     = "cron(15 0 * * ? *)"
}

variable "alarm_email" {
  description = "E-mail address subscribed to the alarms' SNS topic; null for none."
  type        = string
  default     = null
}

variable "iterator_age_alarm_ms" {
  type    = number
  default = 600000
}

variable "quarantine_rate_alarm" {
  description = "Alarm when more than this share of received records is quarantined over 15 minutes."
  type        = number
  default     = 0.05
}
