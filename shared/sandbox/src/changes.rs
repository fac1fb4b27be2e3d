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
pub(crate) struct Change {
    pub seq: u64,
    pub id: String,
    #[serde(flatten)]
    pub what: What,
}

/// Changes to users and to groups, each list in ascending `seq`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ChangeLog {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<Change>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Change>,
}

impl ChangeLog {
    pub(crate) fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
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
}
