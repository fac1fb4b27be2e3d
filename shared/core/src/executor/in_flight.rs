//! Group creates in flight: Entra ID does not keep group names unique, so a create whose answer
//! was lost must not simply be sent again. It is recorded before it is sent, and the next run
//! looks for the group before creating it.

use std::collections::HashMap;

use super::Executor;
use crate::model::ObjectKind;
use crate::plan::Step;
use crate::state::{ObjectError, StateError, UnixMillis};

/// The operation of the record kept while a group create is in flight: a run that stops before
/// recording the answer leaves it, and the next run looks for the group before creating it
/// again (group names are not unique in Entra ID, so a second create would duplicate it).
pub(super) const CREATE_IN_FLIGHT: &str = "create (unconfirmed)";

fn in_flight_record(source_id: &str, since: UnixMillis, now: UnixMillis) -> ObjectError {
    ObjectError {
        kind: ObjectKind::Group,
        source_id: source_id.to_owned(),
        operation: CREATE_IN_FLIGHT.to_owned(),
        message: format!(
            "the group create was sent at {} and its answer not recorded (the run stopped); \
             the next run looks for the group before creating it",
            crate::clock::format_utc(since)
        ),
        attempts: 0,
        first_failed_at: since,
        last_failed_at: now,
        next_retry_at: now,
    }
}

impl Executor<'_> {
    /// Group creates of `chunk` that an earlier run left in flight, by source id: when it sent
    /// them.
    pub(super) async fn groups_in_flight(
        &self,
        chunk: &[Step],
    ) -> Result<HashMap<String, UnixMillis>, StateError> {
        let ids: Vec<String> = chunk
            .iter()
            .filter_map(|step| match step {
                Step::CreateGroup { source_id, .. } => Some(source_id.clone()),
                _ => None,
            })
            .collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self
            .state
            .get_errors(self.connection, ObjectKind::Group, &ids)
            .await?
            .into_iter()
            .filter(|e| e.operation == CREATE_IN_FLIGHT)
            .map(|e| (e.source_id, e.first_failed_at))
            .collect())
    }

    /// Records every group create of `chunk` as in flight before it is sent.
    pub(super) async fn mark_groups_in_flight(
        &self,
        chunk: &[Step],
        earlier: &HashMap<String, UnixMillis>,
    ) -> Result<(), StateError> {
        let now = self.clock.now();
        for step in chunk {
            if let Step::CreateGroup { source_id, .. } = step {
                let since = earlier.get(source_id).copied().unwrap_or(now);
                let record = in_flight_record(source_id, since, now);
                self.state
                    .put_error(self.connection, &record, &self.lease.lease())
                    .await?;
            }
        }
        Ok(())
    }
}
