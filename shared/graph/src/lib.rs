//! Microsoft Graph v1.0 client for provisioning.
//!
//! - tokens by client credentials, a client secret or a certificate's client assertion
//!   ([`ClientCredential`], [`assertion`]), cached and renewed ([`TokenCache`]), national clouds
//!   ([`Cloud`]) with endpoint overrides (the sandbox tenant);
//! - typed operations on users, licenses, managers, groups, memberships, organization, domains
//!   and deleted items, plus JSON `$batch`;
//! - delta rounds on users and groups ([`GraphClient::delta_round`]), merged by object and
//!   restarted once when Graph no longer takes the token;
//! - resilience: `Retry-After` (fractional) on 429/503, exponential backoff with jitter on
//!   transient failures, look-up-before-re-create after uncertain creates, bounded retries for
//!   replication lag;
//! - pacing per (app, tenant) from Graph's identity quotas, adaptive to 429s and
//!   `x-ms-throttle-limit-percentage`;
//! - errors classified into [`GraphError`] with [`GraphError::is_retryable`].
//!
//! The Graph behaviour it relies on, with public sources, is described in
//! `docs/graph-behaviour.md`; comments link its sections.

mod adopt;
mod answer_times;
mod answered;
mod apps;
pub mod assertion;
mod batch;
mod client;
mod delta;
mod directory;
mod directory_adapter;
pub mod error;
mod groups;
mod limiter;
pub mod models;
pub mod odata;
pub mod pacing;
mod settings;
pub mod token;
mod users;

pub use apps::AppUsage;
pub use assertion::{CertificateCredential, CertificateError};
pub use batch::{BatchRequest, BatchResponse};
pub use client::{GraphClient, Pager, RequestStats, SharedState, USER_AGENT};
pub use delta::{
    DeltaCollection, DeltaObject, DeltaRemoval, DeltaReset, DeltaResetKind, DeltaRound,
};
pub use directory_adapter::GraphDirectory;
pub use error::{AuthError, ErrorContext, ErrorKind, GraphError};
pub use m365_core::secrets::{AssertionAlgorithm, CredentialKind};
pub use models::*;
pub use pacing::{Cost, Pacer, PacerRegistry, ThrottleSignal};
pub use reqwest::Method;
pub use settings::{
    ClientCredential, Cloud, Credentials, EndpointPolicy, Endpoints, GraphSettings, PacingConfig,
    RetryPolicy, TenantSize, is_loopback_url,
};
pub use token::{TokenCache, TokenClaims};
pub use users::PAGE_SIZE;
