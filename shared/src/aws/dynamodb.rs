//! The dedup store on DynamoDB: one conditional `PutItem` per event (contract: Deduplication).

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::AttributeValue;

use super::store_error;
use crate::ports::{Claim, ClaimOutcome, DedupStore, StoreError};

/// The dedup table: partition key `event_uuid` (S), `claimed_by` (S), TTL attribute `expires_at` (N).
pub struct DynamoDedupStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// The contract's claim condition, verbatim.
pub const CLAIM_CONDITION: &str =
    "attribute_not_exists(event_uuid) OR claimed_by = :this_event_id OR expires_at < :now";

impl DynamoDedupStore {
    pub fn new(sdk: &SdkConfig, table: &str) -> Self {
        Self::from_client(aws_sdk_dynamodb::Client::new(sdk), table)
    }

    /// Over a client built elsewhere (tests answer it offline).
    pub fn from_client(client: aws_sdk_dynamodb::Client, table: &str) -> Self {
        DynamoDedupStore {
            client,
            table: table.to_string(),
        }
    }
}

#[async_trait]
impl DedupStore for DynamoDedupStore {
    async fn claim(&self, claim: Claim<'_>) -> Result<ClaimOutcome, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(
                "event_uuid",
                AttributeValue::S(claim.event_uuid.to_string()),
            )
            .item(
                "claimed_by",
                AttributeValue::S(claim.claimed_by.to_string()),
            )
            .item(
                "expires_at",
                AttributeValue::N(claim.expires_at.to_string()),
            )
            .condition_expression(CLAIM_CONDITION)
            .expression_attribute_values(
                ":this_event_id",
                AttributeValue::S(claim.claimed_by.to_string()),
            )
            .expression_attribute_values(":now", AttributeValue::N(claim.now.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(ClaimOutcome::Claimed),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(ClaimOutcome::OwnedByAnother)
            }
            Err(e) => Err(store_error(
                format!("PutItem {} {}", self.table, claim.event_uuid),
                e,
            )),
        }
    }
}
