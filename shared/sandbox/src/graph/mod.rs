//! Microsoft Graph `/v1.0`: the request pipeline and the handlers of its routes.
//!
//! Every request (and every `$batch` item) runs through [`execute_single`]: token →
//! throttling → scripted/random faults → latency → the route ([`route::Route`]), whose handler
//! checks permissions and validates as Graph does → request log and stats → state file.
//!
//! Handlers by resource: [`users`], [`groups`] and their [`members`], [`licenses`], deleted
//! directory objects ([`directory`]), [`organization`] and domains. `$batch` is in
//! [`crate::batch`].

mod delta;
mod directory;
mod expand;
mod faults;
mod groups;
mod licenses;
mod members;
mod organization;
mod paging;
mod pipeline;
mod projection;
mod query;
mod request;
mod route;
mod users;

pub(crate) use pipeline::{execute_single, stamp};
pub(crate) use request::GraphRequest;
