//! What a run did, counted by outcome: one typed field per count, so that a reader (status
//! lines, metrics, summaries) names a field the compiler checks.
//!
//! Stored and printed as a JSON object of every count by field name (`{"created": 3, …}`); a
//! count an older record does not name reads as 0.

use serde::{Deserialize, Serialize};

/// Declares [`RunCounts`] once: the struct, [`RunCounts::named`] and [`RunCounts::add`] cannot
/// forget a field.
macro_rules! run_counts {
    ($($(#[doc = $doc:literal])* $name:ident),+ $(,)?) => {
        /// Counts of one run (or one execution).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct RunCounts {
            $(
                $(#[doc = $doc])*
                pub $name: u64,
            )+
        }

        impl RunCounts {
            /// Every count by its field name, in declaration order.
            pub fn named(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name)),+]
            }

            /// Field-by-field sum (the hops of one scheduled run).
            pub fn add(&mut self, other: &RunCounts) {
                $(self.$name = self.$name.saturating_add(other.$name);)+
            }
        }
    };
}

run_counts! {
    /// Users created.
    created,
    /// Existing tenant users linked by the match attribute.
    linked,
    /// Users this connection had deleted, restored from the tenant's deleted items.
    restored,
    /// Users whose mapped attributes were updated.
    updated,
    /// Users enabled, following the source.
    enabled,
    /// Users disabled, following the source.
    disabled,
    /// License changes (one per user).
    licensed,
    /// Manager changes (set or removed).
    managers,
    groups_created,
    /// Existing tenant groups linked by displayName.
    groups_matched,
    members_added,
    members_removed,
    /// Users and groups deprovisioned (disabled or deleted) because they left the source or its
    /// scope, or the rule was deleted.
    deprovisioned,
    /// Links forgotten without a tenant write (superseded by another source id, or purged by
    /// Graph after a delete).
    unlinked,
    /// Objects whose step failed (recorded, retried with backoff).
    failed,
    /// Steps not run because a step they depend on failed.
    skipped,
    /// Destructive steps held back by the circuit breaker.
    held,
    /// Steps the plan held.
    planned,
    /// Problems found while planning (one per object).
    plan_issues,
    /// Out-of-band changes found in the tenant to what this connection manages (drift),
    /// reported or repaired.
    drift,
    /// Graph requests sent.
    graph_requests,
    /// Graph writes sent.
    graph_writes,
    /// Graph answers 429 or 503 (throttled).
    graph_throttled,
}

impl RunCounts {
    /// The non-zero counts by field name, in declaration order (status lines).
    pub fn non_zero(&self) -> Vec<(&'static str, u64)> {
        self.named().into_iter().filter(|(_, n)| *n > 0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_as_every_count_by_name() {
        let counts = RunCounts {
            created: 3,
            graph_writes: 7,
            ..RunCounts::default()
        };
        let json = serde_json::to_value(counts).unwrap_or_default();
        assert_eq!(json["created"], 3);
        assert_eq!(json["graph_writes"], 7);
        assert_eq!(json["failed"], 0, "zero counts are written too");
        assert_eq!(counts.non_zero(), vec![("created", 3), ("graph_writes", 7)]);
    }

    #[test]
    fn a_record_of_any_age_reads_back_absent_counts_as_zero() {
        let read: RunCounts =
            serde_json::from_str(r#"{"created": 2, "some_retired_count": 9}"#).unwrap_or_default();
        assert_eq!(
            read,
            RunCounts {
                created: 2,
                ..RunCounts::default()
            }
        );
    }

    #[test]
    fn named_lists_every_field_once() {
        let all_ones: RunCounts = serde_json::from_value(serde_json::Value::Object(
            RunCounts::default()
                .named()
                .iter()
                .map(|(k, _)| ((*k).to_owned(), serde_json::json!(1)))
                .collect(),
        ))
        .unwrap_or_default();
        assert!(
            all_ones.named().iter().all(|(_, n)| *n == 1),
            "{all_ones:?}"
        );
        let json = serde_json::to_value(all_ones).unwrap_or_default();
        assert_eq!(
            json.as_object().map(|o| o.len()),
            Some(all_ones.named().len())
        );
        let mut twice = all_ones;
        twice.add(&all_ones);
        assert!(twice.named().iter().all(|(_, n)| *n == 2), "{twice:?}");
    }
}
