//! Organization and domains (docs/graph-behaviour.md#domains).

use crate::client::GraphClient;
use crate::error::GraphError;
use crate::models::{Domain, Organization};

impl GraphClient {
    /// `GET /organization` (one item for the signed-in tenant).
    pub async fn organization(&self) -> Result<Vec<Organization>, GraphError> {
        self.get_all("/organization").await
    }

    /// `GET /domains`: every domain with `isVerified` and `authenticationType`.
    pub async fn domains(&self) -> Result<Vec<Domain>, GraphError> {
        self.get_all("/domains").await
    }

    /// Verified domains only (a UPN must use one of these).
    pub async fn verified_domains(&self) -> Result<Vec<Domain>, GraphError> {
        Ok(self
            .domains()
            .await?
            .into_iter()
            .filter(|d| d.is_verified)
            .collect())
    }
}
