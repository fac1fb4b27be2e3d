//! The cloud run-time of the engine, shared by the two Lambda functions (which stay thin):
//!
//! - [`context`]: what a container builds once ([`context::Deployment`]) and each invocation
//!   builds from it ([`context::Connection`]).
//! - [`scheduled`]: the scheduled-sync handler and its continuation (a Step Functions loop).
//! - [`webhook`]: the webhook handler (`POST /events/{connection}`).
//! - [`cloud_config`]: what a connection configuration must hold to run in the cloud.
//! - [`signature`]: Standard Webhooks verification (`v1`, HMAC-SHA256, `whsec_` secrets).
//! - [`events`]: the webhook event body (user and group upserts and deletes).
//! - [`metrics`]: CloudWatch Embedded Metric Format lines.
//! - [`logging`]: JSON logs following Lambda's log controls.

pub mod cloud_config;
pub mod context;
pub mod events;
pub mod logging;
pub mod metrics;
pub mod scheduled;
pub mod signature;
pub mod webhook;
