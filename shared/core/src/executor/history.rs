//! History: one entry per step that ran (applied or failed) or was held back, with what the
//! tenant answered, appended to the object's history with the chunk's records.

use crate::directory::{DirectoryError, DirectoryResult, OpOutcome};
use crate::plan::Step;
use crate::state::{HistoryEntry, HistoryResult, UnixMillis};

/// What the entries of one run share.
#[derive(Debug, Clone, Copy)]
pub(super) struct HistoryLog<'a> {
    pub run_id: &'a str,
    /// How long an entry is kept.
    pub retention_ms: i64,
}

impl HistoryLog<'_> {
    pub fn entry(
        self,
        step: &Step,
        result: HistoryResult,
        answer: String,
        now: UnixMillis,
    ) -> HistoryEntry {
        let (kind, source_id) = step.subject();
        HistoryEntry {
            kind,
            source_id: source_id.to_owned(),
            name: step.object().to_owned(),
            at: now,
            run_id: self.run_id.to_owned(),
            operation: step.operation().to_owned(),
            change: HistoryEntry::clip(step.details()),
            result,
            answer: HistoryEntry::clip(answer),
            expires_at: now.saturating_add(self.retention_ms),
        }
    }

    pub fn failed(self, step: &Step, error: &DirectoryError, now: UnixMillis) -> HistoryEntry {
        self.entry(step, HistoryResult::Failed, error.message.clone(), now)
    }

    /// A step that went through: the tenant's answers, and the request ids of the calls that
    /// gave them (a step of several calls names each once).
    pub fn applied(
        self,
        step: &Step,
        results: &[DirectoryResult<OpOutcome>],
        request_ids: &[Option<String>],
        now: UnixMillis,
    ) -> HistoryEntry {
        let mut ids: Vec<&str> = Vec::new();
        for id in request_ids.iter().flatten() {
            if !ids.contains(&id.as_str()) {
                ids.push(id);
            }
        }
        let answer = match ids.as_slice() {
            [] => answer(results),
            _ => format!("{}; request-id {}", answer(results), ids.join(", ")),
        };
        self.entry(step, HistoryResult::Applied, answer, now)
    }

    pub fn held(self, step: &Step, now: UnixMillis) -> HistoryEntry {
        self.entry(
            step,
            HistoryResult::Held,
            "held by the circuit breaker; nothing was written (sync --override-breaker after review)"
                .to_owned(),
            now,
        )
    }
}

/// The tenant's answers to a step that went through, in words.
fn answer(results: &[DirectoryResult<OpOutcome>]) -> String {
    let mut created = Vec::new();
    let (mut done, mut already) = (0, 0);
    for result in results.iter().flatten() {
        match result {
            OpOutcome::Created { id } => created.push(id.as_str()),
            OpOutcome::Done => done += 1,
            OpOutcome::AlreadyDone => already += 1,
        }
    }
    let mut parts = Vec::new();
    if !created.is_empty() {
        parts.push(format!("created object {}", created.join(", ")));
    }
    match done {
        0 => {}
        1 => parts.push("done".to_owned()),
        n => parts.push(format!("done ({n} requests)")),
    }
    if already > 0 {
        parts.push("already so in the tenant".to_owned());
    }
    if parts.is_empty() {
        "recorded (no tenant write needed)".to_owned()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_the_new_object_and_count_requests() {
        assert_eq!(
            answer(&[Ok(OpOutcome::Created { id: "o1".into() })]),
            "created object o1"
        );
        assert_eq!(
            answer(&[
                Ok(OpOutcome::Done),
                Ok(OpOutcome::Done),
                Ok(OpOutcome::AlreadyDone)
            ]),
            "done (2 requests); already so in the tenant"
        );
        assert_eq!(answer(&[]), "recorded (no tenant write needed)");
    }
}
