//! The tenant's change log: every change to a user or group, in order, on the tenant's sequence
//! clock (the one that numbers objects). Delta queries (`/users/delta`, `/groups/delta`) read it:
//! a delta token is a position on that clock (docs/graph-behaviour.md#delta-queries).

use serde::{Deserialize, Serialize};

/// A relationship delta queries can track: a user's `manager`, a group's `members`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Relation {
    Manager,
    Members,
}

impl Relation {
    /// The navigation property's name in `$select` and in `<name>@delta`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Relation::Manager => "manager",
            Relation::Members => "members",
        }
    }
}

/// What happened to an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "camelCase")]
pub(crate) enum What {
    Created,
    /// Properties written (set, changed or cleared).
    Props {
        names: Vec<String>,
    },
    /// A link to `target` added or removed.
    Link {
        relation: Relation,
        target: String,
        added: bool,
    },
    /// Moved to the deleted items (restorable).
    SoftDeleted,
    /// Back from the deleted items.
    Restored,
    /// Gone for good.
    Purged,
}

/// One change to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Change {
    pub seq: u64,
    /// Unix ms when it happened (entries older than a token can live are dropped).
    #[serde(default)]
    pub at_ms: u64,
    pub id: String,
    #[serde(flatten)]
    pub what: What,
}

/// Changes to users and to groups, each list in ascending `seq`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChangeLog {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<Change>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Change>,
    /// Changes up to this sequence number were dropped: a token from before it cannot be
    /// served (Graph's `syncStateNotFound`).
    #[serde(default)]
    pub compacted_through: u64,
}

impl ChangeLog {
    pub(crate) fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && self.compacted_through == 0
    }

    /// Drops the changes made before `before_ms`: no token older than a token's lifetime is
    /// served, so they would never be read again. Entries are in time order; the check is one
    /// comparison when there is nothing to drop.
    pub(crate) fn compact(&mut self, before_ms: u64) {
        for list in [&mut self.users, &mut self.groups] {
            let old = list.partition_point(|c| c.at_ms < before_ms);
            if old > 0 {
                if let Some(last) = list.get(old - 1) {
                    self.compacted_through = self.compacted_through.max(last.seq);
                }
                list.drain(..old);
            }
        }
    }

    /// The changes of one list after `since` up to and including `upto`.
    pub(crate) fn between(list: &[Change], since: u64, upto: u64) -> &[Change] {
        let start = list.partition_point(|c| c.seq <= since);
        let end = list.partition_point(|c| c.seq <= upto);
        list.get(start..end.max(start)).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: u64) -> Change {
        Change {
            seq,
            at_ms: seq * 10,
            id: format!("o{seq}"),
            what: What::Created,
        }
    }

    #[test]
    fn between_takes_the_half_open_window() {
        let list: Vec<Change> = [2, 4, 6, 8].into_iter().map(change).collect();
        let seqs = |s: u64, u: u64| -> Vec<u64> {
            ChangeLog::between(&list, s, u)
                .iter()
                .map(|c| c.seq)
                .collect()
        };
        assert_eq!(seqs(0, 100), vec![2, 4, 6, 8]);
        assert_eq!(seqs(4, 6), vec![6]);
        assert_eq!(seqs(4, 5), Vec::<u64>::new());
        assert_eq!(seqs(8, 100), Vec::<u64>::new());
        assert_eq!(seqs(6, 2), Vec::<u64>::new());
    }

    #[test]
    fn compaction_drops_old_changes_and_remembers_how_far() {
        let mut log = ChangeLog {
            users: [2, 4, 6].into_iter().map(change).collect(),
            groups: [3, 5].into_iter().map(change).collect(),
            compacted_through: 0,
        };
        log.compact(10);
        assert_eq!(log.compacted_through, 0, "nothing older than 10 ms");
        log.compact(45);
        assert_eq!(log.users.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![6]);
        assert_eq!(
            log.groups.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![5]
        );
        assert_eq!(log.compacted_through, 4);
        assert!(!log.is_empty());
    }
}
