//! The Lambda handlers of the engine, shared by the two functions (which stay thin). What a
//! container and an invocation build comes from `m365-wiring` ([`context`], [`cloud_config`],
//! re-exported here), the same wiring the command line uses.
//!
//! - [`scheduled`]: the scheduled-sync handler and its continuation (a Step Functions loop).
//! - [`failures`]: the failed objects of a run, logged after it.
//! - [`webhook`]: the webhook handler (`POST /events/{connection}`).
//! - [`pingone_webhook`], [`pingone_batch`]: PingOne subscriptions (`POST /pingone/{connection}`).
//! - [`signature`]: Standard Webhooks verification (`v1`, HMAC-SHA256, `whsec_` secrets).
//! - [`events`]: the webhook event body (user and group upserts and deletes).
//! - [`metrics`]: CloudWatch Embedded Metric Format lines.
//! - [`logging`]: JSON logs following Lambda's log controls.

pub use m365_wiring::{cloud_config, context};

pub mod events;
pub mod failures;
pub mod logging;
pub mod metrics;
pub mod pingone_batch;
pub mod pingone_webhook;
pub mod scheduled;
pub mod signature;
pub mod webhook;
