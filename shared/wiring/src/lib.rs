//! One path from a connection's configuration to the engine's ports, shared by the command line
//! and the Lambda functions:
//!
//! - [`connect`]: the source a `[source]` names, the tenant reached with the connection's
//!   credentials (read again once when the tenant refuses them), and the engine's sizes.
//! - [`local_secrets`]: the command line's secret stores (environment, file, fixed).
//! - [`cloud_config`]: what a configuration must hold to run in the cloud.
//! - [`context`]: what a Lambda container builds once, and each invocation from it.
//! - [`ports`]: what a deployment is built on (configurations, secrets, state, S3), so that
//!   the handlers run the same on AWS and on in-memory ports.
//!
//! It links no Lambda runtime: the command line depends on it, the functions' handlers
//! (`m365-runtime`) build on it.

pub mod cloud_config;
pub mod connect;
pub mod context;
pub mod local_secrets;
pub mod ports;
