//! How a compaction fails, as Lambda reports it (`errorType`).

use pipeline::ports::StoreError;
use pipeline::time::Date;

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing Parquet: {0}")]
    Parquet(parquet::errors::ParquetError),
    #[error("refusing to compact {day}: {why}")]
    Refused { day: Date, why: String },
}

impl From<parquet::errors::ParquetError> for CompactError {
    /// The store's failures reach the Parquet writer through its sink: they stay `Store` errors
    /// (which a retry may cure), not `Parquet` ones.
    fn from(error: parquet::errors::ParquetError) -> Self {
        match error {
            parquet::errors::ParquetError::External(inner) => {
                match inner.downcast::<StoreError>() {
                    Ok(store) => CompactError::Store(*store),
                    Err(other) => {
                        CompactError::Parquet(parquet::errors::ParquetError::External(other))
                    }
                }
            }
            other => CompactError::Parquet(other),
        }
    }
}

impl CompactError {
    /// The `errorType` Lambda reports (and a Step Functions `Retry` or `Catch` can match on):
    /// `BadRequest` and `Refused` will fail the same way again; `Store` may not, when the store's
    /// failure was transient; `Parquet` is a bug or a corrupt input.
    pub fn error_type(&self) -> &'static str {
        match self {
            CompactError::BadRequest(_) => "BadRequest",
            CompactError::Store(_) => "Store",
            CompactError::Parquet(_) => "Parquet",
            CompactError::Refused { .. } => "Refused",
        }
    }
}

impl From<CompactError> for lambda_runtime::Diagnostic {
    fn from(error: CompactError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.error_type().to_string(),
            error_message: error.to_string(),
        }
    }
}
