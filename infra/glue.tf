# Two Glue tables for Athena (enable_glue; LocalStack's community edition has no Glue):
# - `events` over processed/: no partition projection. Compaction registers every partition it
#   writes (BatchCreatePartition), so every language, the default partition (NULL to readers)
#   among them, is found with no filter required.
# - `staging` over staging/: NDJSON, partitions projected from the key layout, so today's events
#   can be queried within a minute of arrival, before compaction.

resource "aws_glue_catalog_database" "lake" {
  count = var.enable_glue ? 1 : 0
  name  = local.glue_database
}

locals {
  glue_database = replace("${var.name}_lake", "-", "_")
  glue_table    = "events"

  # Mirrors the Parquet schema compaction writes (pipeline::lake::arrow_schema): fixed columns, then
  # one column per catalogue field, then extra_specifics.
  catalogue = jsondecode(file("${path.module}/../events/catalogue.json"))
  glue_type = { string = "string", integer = "bigint", number = "double", boolean = "boolean" }
  catalogue_fields = [for name in sort(keys(local.catalogue.fields)) : {
    name = name
    type = local.glue_type[local.catalogue.fields[name].type]
  }]
  lake_columns = concat(
    [
      { name = "event_uuid", type = "string" },
      { name = "event_name", type = "string" },
      { name = "event_type", type = "string" },
      { name = "event_subtype", type = "string" },
      { name = "created_at", type = "timestamp" },
      { name = "received_at", type = "timestamp" },
    ],
    local.catalogue_fields,
    [{ name = "extra_specifics", type = "string" }],
  )
  # A staging line (contract: Staging): timestamps stay RFC 3339 strings (from_iso8601_timestamp
  # reads them); event_specifics keeps the catalogue's fields, as declared.
  staging_columns = [
    { name = "event_uuid", type = "string" },
    { name = "event_name", type = "string" },
    { name = "event_type", type = "string" },
    { name = "event_subtype", type = "string" },
    { name = "created_at", type = "string" },
    { name = "received_at", type = "string" },
    { name = "event_specifics", type = "struct<${join(",", [for f in local.catalogue_fields : "${f.name}:${f.type}"])}>" },
    { name = "source", type = "struct<shard_id:string,sequence_number:string,sub_sequence_number:int>" },
  ]
}

resource "aws_glue_catalog_table" "events" {
  count         = var.enable_glue ? 1 : 0
  name          = local.glue_table
  database_name = aws_glue_catalog_database.lake[0].name
  table_type    = "EXTERNAL_TABLE"

  parameters = {
    EXTERNAL              = "TRUE"
    classification        = "parquet"
    "parquet.compression" = "ZSTD"
  }

  partition_keys {
    name = "year"
    type = "int"
  }
  partition_keys {
    name = "month"
    type = "int"
  }
  partition_keys {
    name = "day"
    type = "int"
  }
  partition_keys {
    name = "language"
    type = "string"
  }

  storage_descriptor {
    location      = "s3://${local.bucket_name}/processed/"
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    }

    dynamic "columns" {
      for_each = local.lake_columns
      content {
        name = columns.value.name
        type = columns.value.type
      }
    }
  }
}

resource "aws_glue_catalog_table" "staging" {
  count         = var.enable_glue ? 1 : 0
  name          = "staging"
  database_name = aws_glue_catalog_database.lake[0].name
  table_type    = "EXTERNAL_TABLE"

  # Integer projections need no injected value, so no filter is required; filter on the arrival
  # date anyway, or Athena enumerates every minute of the year range.
  parameters = merge(
    {
      EXTERNAL                    = "TRUE"
      classification              = "json"
      "projection.enabled"        = "true"
      "projection.year.type"      = "integer"
      "projection.year.range"     = "2020,2100"
      "storage.location.template" = "s3://${local.bucket_name}/staging/year=$${year}/month=$${month}/day=$${day}/hour=$${hour}/minute=$${minute}/"
    },
    merge([for column, range in { month = "1,12", day = "1,31", hour = "0,23", minute = "0,59" } : {
      "projection.${column}.type"       = "integer"
      "projection.${column}.range"      = range
      "projection.${column}.digits"     = "2"
    }]...),
  )

  dynamic "partition_keys" {
    for_each = ["year", "month", "day", "hour", "minute"]
    content {
      name = partition_keys.value
      type = "int"
    }
  }

  storage_descriptor {
    location      = "s3://${local.bucket_name}/staging/"
    input_format  = "org.apache.hadoop.mapred.TextInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"

    ser_de_info {
      serialization_library = "org.openx.data.jsonserde.JsonSerDe"
    }

    dynamic "columns" {
      for_each = local.staging_columns
      content {
        name = columns.value.name
        type = columns.value.type
      }
    }
  }
}
