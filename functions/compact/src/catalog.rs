//! The lake's partitions in the Glue Data Catalog, so that Athena finds every partition compaction
//! writes (the default partition and languages no catalogue lists among them) with no filter
//! required, no crawler and no `MSCK REPAIR TABLE`.

use async_trait::async_trait;
use aws_sdk_glue::types::{PartitionInput, StorageDescriptor};
use pipeline::layout::ProcessedPartition;
use pipeline::ports::StoreError;
use tokio::sync::OnceCell;

/// A table of the lake's partitions.
#[async_trait]
pub trait PartitionCatalog: Send + Sync {
    /// Adds the partitions the table does not list yet; those it lists stay as they are.
    async fn register(&self, partitions: &[ProcessedPartition]) -> Result<(), StoreError>;
}

/// The values of a partition, in the table's partition-key order (year, month, day, language),
/// spelled as in its folder so that a later `MSCK REPAIR TABLE` or crawler finds the same ones.
pub fn partition_values(partition: &ProcessedPartition) -> Vec<String> {
    let day = partition.event_day;
    vec![
        format!("{:04}", day.year),
        format!("{:02}", day.month),
        format!("{:02}", day.day),
        partition.language.clone(),
    ]
}

/// A Glue table: every partition gets the table's storage descriptor (format, SerDe, columns) with
/// its own folder as the location.
pub struct GlueCatalog {
    client: aws_sdk_glue::Client,
    database: String,
    table: String,
    bucket: String,
    template: OnceCell<StorageDescriptor>,
}

/// BatchCreatePartition takes at most 100 partitions a request.
const BATCH: usize = 100;

impl GlueCatalog {
    pub fn new(sdk: &aws_config::SdkConfig, database: &str, table: &str, bucket: &str) -> Self {
        GlueCatalog {
            client: aws_sdk_glue::Client::new(sdk),
            database: database.to_string(),
            table: table.to_string(),
            bucket: bucket.to_string(),
            template: OnceCell::new(),
        }
    }

    fn operation(&self, name: &str) -> String {
        format!("{name} {}.{}", self.database, self.table)
    }

    async fn template(&self) -> Result<&StorageDescriptor, StoreError> {
        self.template
            .get_or_try_init(|| async {
                let output = self
                    .client
                    .get_table()
                    .database_name(&self.database)
                    .name(&self.table)
                    .send()
                    .await
                    .map_err(|e| pipeline::aws::store_error(self.operation("GetTable"), e))?;
                output
                    .table()
                    .and_then(|t| t.storage_descriptor())
                    .cloned()
                    .ok_or_else(|| {
                        StoreError::new(
                            self.operation("GetTable"),
                            "the table has no storage descriptor",
                        )
                    })
            })
            .await
    }
}

#[async_trait]
impl PartitionCatalog for GlueCatalog {
    async fn register(&self, partitions: &[ProcessedPartition]) -> Result<(), StoreError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let template = self.template().await?;
        for chunk in partitions.chunks(BATCH) {
            let inputs = chunk
                .iter()
                .map(|partition| {
                    let mut storage = template.clone();
                    storage.location = Some(format!("s3://{}/{}", self.bucket, partition.folder));
                    PartitionInput::builder()
                        .set_values(Some(partition_values(partition)))
                        .storage_descriptor(storage)
                        .build()
                })
                .collect();
            let output = self
                .client
                .batch_create_partition()
                .database_name(&self.database)
                .table_name(&self.table)
                .set_partition_input_list(Some(inputs))
                .send()
                .await
                .map_err(|e| {
                    pipeline::aws::store_error(self.operation("BatchCreatePartition"), e)
                })?;
            // A partition already listed comes back as an error entry: that is the idempotence.
            let failed: Vec<String> = output
                .errors()
                .iter()
                .filter_map(|e| {
                    let detail = e.error_detail()?;
                    (detail.error_code() != Some("AlreadyExistsException")).then(|| {
                        format!(
                            "{:?}: {} {}",
                            e.partition_values(),
                            detail.error_code().unwrap_or_default(),
                            detail.error_message().unwrap_or_default()
                        )
                    })
                })
                .collect();
            if let Some(first) = failed.first() {
                return Err(StoreError::new(
                    self.operation("BatchCreatePartition"),
                    format!("{} partitions failed, first: {first}", failed.len()),
                ));
            }
        }
        Ok(())
    }
}

/// Keeps the registered partitions, for unit tests.
#[cfg(test)]
#[derive(Default)]
pub struct MemoryCatalog {
    pub partitions: std::sync::Mutex<std::collections::BTreeSet<ProcessedPartition>>,
}

#[cfg(test)]
#[async_trait]
impl PartitionCatalog for MemoryCatalog {
    async fn register(&self, partitions: &[ProcessedPartition]) -> Result<(), StoreError> {
        self.partitions
            .lock()
            .unwrap()
            .extend(partitions.iter().cloned());
        Ok(())
    }
}
