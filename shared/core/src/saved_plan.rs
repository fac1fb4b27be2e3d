//! A plan saved by `plan --out FILE` and carried out by `apply FILE`: exactly the reviewed steps,
//! or nothing. `apply` plans again and goes ahead only when the new plan holds the same steps;
//! otherwise it names the steps that differ and what moved (docs/operations.md#review-a-plan).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::{Plan, Step};
use crate::state::UnixMillis;

/// The version of the file's layout; a file of another version is refused.
pub const SAVED_PLAN_FORMAT: u32 = 1;

/// At most this many differing steps are named in a refusal (the count is always given).
const NAMED_DIFFERENCES: usize = 5;

/// The file `plan --out` writes. It holds no secret: a create's password is made when it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format: u32,
    /// The connection and rule (`<connection>/<rule>`) it was made for.
    pub connection: String,
    pub saved_at: UnixMillis,
    /// A fingerprint of the rule's configuration when the plan was made.
    pub rule_fingerprint: String,
    pub plan: Plan,
}

impl SavedPlan {
    pub fn new(plan: Plan, rule_fingerprint: String, saved_at: UnixMillis) -> SavedPlan {
        SavedPlan {
            format: SAVED_PLAN_FORMAT,
            connection: plan.connection.clone(),
            saved_at,
            rule_fingerprint,
            plan,
        }
    }

    /// Reads a saved plan, naming what is wrong with a file that is not one.
    pub fn from_json(text: &str) -> Result<SavedPlan, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            format!("not a saved plan (JSON: {e}); write one with `plan --out FILE`")
        })?;
        let format = value.get("format").and_then(serde_json::Value::as_u64);
        if format != Some(u64::from(SAVED_PLAN_FORMAT)) {
            return Err(format!(
                "saved plan format {} is not the format this version reads ({SAVED_PLAN_FORMAT}); make the plan again with `plan --out FILE`",
                format.map_or_else(|| "(none)".to_owned(), |f| f.to_string())
            ));
        }
        serde_json::from_value(value)
            .map_err(|e| format!("not a saved plan ({e}); write one with `plan --out FILE`"))
    }

    /// Whether `now`, the plan made at apply time, is the plan that was saved: the same
    /// connection and the same steps (in any order). The reason names what differs.
    pub fn check(&self, now: &Plan, rule_fingerprint: &str) -> Result<(), String> {
        if self.connection != now.connection {
            return Err(format!(
                "the plan was made for {} and this configuration syncs {}; apply it with that configuration",
                self.connection, now.connection
            ));
        }
        let (gone, new) = differences(&self.plan.steps, &now.steps);
        if gone.is_empty() && new.is_empty() {
            return Ok(());
        }
        let moved = if now.steps.is_empty() {
            "nothing is left to do: it was carried out already, or the tenant was brought in line another way"
        } else if self.rule_fingerprint == rule_fingerprint {
            "the source or the tenant changed since"
        } else {
            "the rule changed since"
        };
        let mut reason = format!(
            "the saved plan (made {}) no longer matches what a sync would do now: {moved}. Steps no longer planned: {}; steps planned now that it does not hold: {}",
            crate::clock::format_utc(self.saved_at),
            gone.len(),
            new.len()
        );
        for (label, steps) in [("no longer planned", &gone), ("planned now", &new)] {
            for step in steps.iter().take(NAMED_DIFFERENCES) {
                reason.push_str(&format!(
                    "\n  {label}: {} {} {}  {}",
                    step.marker().symbol(),
                    step.operation(),
                    step.object(),
                    step.details()
                ));
            }
            if steps.len() > NAMED_DIFFERENCES {
                reason.push_str(&format!(
                    "\n  {label}: … and {} more",
                    steps.len() - NAMED_DIFFERENCES
                ));
            }
        }
        reason.push_str("\nNothing was written. Review a new plan with `plan --out FILE`, then apply that file.");
        Err(reason)
    }
}

/// The steps of `saved` not in `now`, and those of `now` not in `saved`, each counted as often
/// as it occurs.
fn differences<'s>(saved: &'s [Step], now: &'s [Step]) -> (Vec<&'s Step>, Vec<&'s Step>) {
    let key = |step: &Step| serde_json::to_string(step).unwrap_or_default();
    let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
    for step in now {
        *remaining.entry(key(step)).or_default() += 1;
    }
    let mut gone = Vec::new();
    for step in saved {
        match remaining.get_mut(&key(step)) {
            Some(n) if *n > 0 => *n -= 1,
            _ => gone.push(step),
        }
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for step in saved {
        *seen.entry(key(step)).or_default() += 1;
    }
    let mut new = Vec::new();
    for step in now {
        match seen.get_mut(&key(step)) {
            Some(n) if *n > 0 => *n -= 1,
            _ => new.push(step),
        }
    }
    (gone, new)
}

/// A fingerprint of a serializable configuration (FNV-1a of its JSON), to tell whether it changed.
pub fn fingerprint(value: &impl Serialize) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    format!("{:016x}", crate::hash::fnv1a(text.as_bytes(), FNV_OFFSET))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::{AttributeChange, BreakerVerdict};

    fn plan(steps: Vec<Step>) -> Plan {
        Plan {
            drift: Vec::new(),
            connection: "demo/staff".into(),
            steps,
            issues: vec![],
            snapshot_complete: true,
            breaker: BreakerVerdict::default(),
        }
    }

    fn update(id: &str, title: &str) -> Step {
        Step::UpdateUser {
            source_id: id.into(),
            user_principal_name: format!("{id}@example.com"),
            changes: vec![AttributeChange {
                name: "jobTitle".into(),
                old: json!("Clerk"),
                new: json!(title),
            }],
        }
    }

    #[test]
    fn the_same_steps_in_another_order_match() {
        let saved = SavedPlan::new(
            plan(vec![update("a", "X"), update("b", "Y")]),
            "r1".into(),
            0,
        );
        let text = serde_json::to_string(&saved).unwrap();
        let read = SavedPlan::from_json(&text).unwrap();
        assert_eq!(read, saved);
        assert_eq!(
            read.check(&plan(vec![update("b", "Y"), update("a", "X")]), "r2"),
            Ok(())
        );
    }

    #[test]
    fn a_changed_step_is_refused_naming_both_sides_and_the_cause() {
        let saved = SavedPlan::new(
            plan(vec![update("a", "X"), update("b", "Y")]),
            "r1".into(),
            0,
        );
        let reason = saved
            .check(&plan(vec![update("a", "X"), update("b", "Z")]), "r1")
            .unwrap_err();
        assert!(
            reason.contains("the source or the tenant changed"),
            "{reason}"
        );
        assert!(
            reason
                .contains("Steps no longer planned: 1; steps planned now that it does not hold: 1"),
            "{reason}"
        );
        assert!(
            reason.contains(
                "no longer planned: ~ update user b@example.com  jobTitle: \"Clerk\" → \"Y\""
            ),
            "{reason}"
        );
        assert!(
            reason
                .contains("planned now: ~ update user b@example.com  jobTitle: \"Clerk\" → \"Z\""),
            "{reason}"
        );
        let reason = saved
            .check(&plan(vec![update("a", "X")]), "r2")
            .unwrap_err();
        assert!(reason.contains("the rule changed"), "{reason}");
        let reason = saved.check(&plan(vec![]), "r1").unwrap_err();
        assert!(reason.contains("it was carried out already"), "{reason}");
        let mut other = plan(vec![]);
        other.connection = "demo/other".into();
        assert!(
            saved
                .check(&other, "r1")
                .unwrap_err()
                .contains("made for demo/staff")
        );
    }

    #[test]
    fn a_file_of_another_format_is_refused() {
        let error = SavedPlan::from_json(r#"{"format": 7}"#).unwrap_err();
        assert!(error.contains("format 7"), "{error}");
        let error = SavedPlan::from_json("plan contoso: 3 to create").unwrap_err();
        assert!(error.contains("not a saved plan"), "{error}");
    }
}
