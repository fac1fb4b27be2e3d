//! A user create Graph refused because a user already holds the match value: the plan could
//! not see that user (an interrupted run created it moments ago and it is still replicating), and
//! linking it is what the plan would have done.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use super::Executor;
use super::Key;
use super::record::new_link;
use crate::directory::DirectoryError;
use crate::model::ObjectKind;
use crate::state::{Link, LinkOrigin, StateError, UnixMillis};

/// Pauses between look-ups of a user whose create was refused as a duplicate of the match
/// value: the existing user may not be visible yet (Graph replicates writes with a delay:
/// <https://learn.microsoft.com/en-us/graph/best-practices-concept#handling-expected-errors>).
const RELINK_PAUSES_MS: [u64; 5] = [0, 500, 1_000, 2_000, 4_000];

impl Executor<'_> {
    /// The link to the tenant user holding the match value of a create that Graph refused as
    /// a duplicate: the plan did not see it (it was created moments ago, by an interrupted run,
    /// and is still replicating), and matching it is what the plan would have done. Only when
    /// the match attribute is the property Graph named, and the user is not linked to another
    /// source id.
    pub(super) async fn relink_after_conflict(
        &self,
        source_id: &str,
        properties: &BTreeMap<String, Value>,
        error: &DirectoryError,
        released: &HashSet<Key>,
        now: UnixMillis,
    ) -> Result<Option<Link>, StateError> {
        let Some(tenant) = self.find_match_holder(properties, error).await else {
            return Ok(None);
        };
        if self
            .holder_of(ObjectKind::User, source_id, &tenant.id, released)
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let mut applied = tenant.properties;
        let enabled = applied
            .remove("accountEnabled")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        Ok(Some(new_link(
            ObjectKind::User,
            source_id,
            &tenant.id,
            LinkOrigin::Matched,
            applied,
            enabled,
            now,
        )))
    }

    /// The tenant user holding the match value Graph refused a create for, looked up while it
    /// may still be replicating.
    async fn find_match_holder(
        &self,
        properties: &BTreeMap<String, Value>,
        error: &DirectoryError,
    ) -> Option<crate::directory::TenantUser> {
        let attribute = error.property.as_deref()?;
        if error.kind != crate::directory::FailureKind::Conflict
            || !attribute.eq_ignore_ascii_case(self.match_attribute)
        {
            return None;
        }
        let value = properties.get(self.match_attribute)?.as_str()?.to_owned();
        let mut select: Vec<String> = properties.keys().cloned().collect();
        select.push("accountEnabled".to_owned());
        for pause in RELINK_PAUSES_MS {
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            match self
                .directory
                .find_users(self.match_attribute, std::slice::from_ref(&value), &select)
                .await
            {
                Ok(found) => {
                    if let Some(user) = found.into_iter().next() {
                        return Some(user);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "looking up the holder of a refused create failed");
                    return None;
                }
            }
        }
        None
    }
}
