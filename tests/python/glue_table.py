"""The lake's Glue table on the emulator (AWS_ENDPOINT_URL), made and read with boto3, an SDK
independent of the one compaction uses.

    python glue_table.py create <database> <table> <bucket>   # as infra/glue.tf defines it
    python glue_table.py partitions <database> <table>        # every partition, as JSON
"""
import json
import sys

import boto3

glue = boto3.client("glue", region_name="us-east-1")
command, database, table = sys.argv[1:4]
if command == "create":
    bucket = sys.argv[4]
    glue.create_database(DatabaseInput={"Name": database})
    glue.create_table(DatabaseName=database, TableInput={
        "Name": table,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"EXTERNAL": "TRUE", "classification": "parquet"},
        "PartitionKeys": [{"Name": "year", "Type": "int"}, {"Name": "month", "Type": "int"},
                          {"Name": "day", "Type": "int"}, {"Name": "language", "Type": "string"}],
        "StorageDescriptor": {
            "Location": f"s3://{bucket}/processed/",
            "Columns": [{"Name": "event_uuid", "Type": "string"}],
            "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            "SerdeInfo": {"SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"},
        },
    })
    print(json.dumps({"created": f"{database}.{table}"}))
elif command == "partitions":
    partitions = []
    for page in glue.get_paginator("get_partitions").paginate(DatabaseName=database, TableName=table):
        for p in page["Partitions"]:
            partitions.append({
                "values": p["Values"],
                "location": p["StorageDescriptor"]["Location"],
                "serde": p["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"],
                "input_format": p["StorageDescriptor"]["InputFormat"],
            })
    print(json.dumps(sorted(partitions, key=lambda p: p["values"])))
else:
    sys.exit(f"unknown command {command}")
