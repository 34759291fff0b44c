# A Glue table over processed/ with partition projection: Athena finds every partition from the
# key layout itself, with no crawler and no MSCK REPAIR.

resource "aws_glue_catalog_database" "lake" {
  name = replace("${var.name}_lake", "-", "_")
}

locals {
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
}

resource "aws_glue_catalog_table" "events" {
  name          = "events"
  database_name = aws_glue_catalog_database.lake.name
  table_type    = "EXTERNAL_TABLE"

  parameters = {
    EXTERNAL                    = "TRUE"
    classification              = "parquet"
    "parquet.compression"       = "ZSTD"
    "projection.enabled"        = "true"
    "projection.year.type"      = "integer"
    "projection.year.range"     = "2000,2100"
    "projection.month.type"     = "integer"
    "projection.month.range"    = "1,12"
    "projection.month.digits"   = "2"
    "projection.day.type"       = "integer"
    "projection.day.range"      = "1,31"
    "projection.day.digits"     = "2"
    "projection.language.type"  = "injected"
    "storage.location.template" = "s3://${local.bucket_name}/processed/year=$${year}/month=$${month}/day=$${day}/language=$${language}"
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
