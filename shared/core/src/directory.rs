//! The `Directory` port: the target tenant as the engine sees it. The Graph client implements it
//! (`GraphDirectory`); operations are data, so the adapter can batch and pace them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::model::LicenseAssignment;

/// A tenant user as far as the engine needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantUser {
    pub id: String,
    pub user_principal_name: String,
    /// Properties read with the lookup (the mapped ones), by Graph name.
    pub properties: BTreeMap<String, serde_json::Value>,
}

/// A tenant group as far as the engine needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantGroup {
    pub id: String,
    pub display_name: String,
    /// `Unified` for Microsoft 365 groups.
    pub group_types: Vec<String>,
    pub security_enabled: bool,
}

/// A verified or unverified domain of the tenant (UPN validation needs both facts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantDomain {
    pub name: String,
    pub verified: bool,
    pub federated: bool,
}

/// A SKU the tenant subscribes to (`GET /subscribedSkus`,
/// <https://learn.microsoft.com/en-us/graph/api/subscribedsku-list>): its GUID and its part
/// number (`ENTERPRISEPACK`, `SPE_E3`), which is how a rule may name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSku {
    /// The skuId GUID that `assignLicense` takes.
    pub sku_id: String,
    /// The skuPartNumber; empty when Graph gave none.
    pub sku_part_number: String,
}

/// Security group or Microsoft 365 group (docs/graph-behaviour.md#creating-groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    #[default]
    Security,
    Microsoft365,
}

/// One write to the tenant.
#[derive(Clone)]
pub enum DirectoryOp {
    /// `properties` are Graph user properties without `passwordProfile`; the password travels
    /// apart so that it is never logged or stored.
    CreateUser {
        properties: BTreeMap<String, serde_json::Value>,
        password: SecretString,
        force_change_password: bool,
    },
    /// Only the changed properties; `null` clears.
    UpdateUser {
        id: String,
        properties: BTreeMap<String, serde_json::Value>,
    },
    DeleteUser {
        id: String,
    },
    /// Brings a deleted user back from the tenant's deleted items, as it was (mailbox, licenses,
    /// group memberships). A user already live again counts as success.
    RestoreUser {
        id: String,
    },
    AssignLicenses {
        id: String,
        add: Vec<LicenseAssignment>,
        remove: Vec<String>,
    },
    SetManager {
        id: String,
        manager_id: String,
    },
    RemoveManager {
        id: String,
    },
    CreateGroup {
        display_name: String,
        mail_nickname: String,
        kind: GroupKind,
        description: Option<String>,
        /// An earlier run sent this create at this instant and stopped before recording the
        /// result: the group it may have made is looked for first (waiting out replication
        /// lag), and adopted if it was created since then.
        earlier_attempt: Option<crate::state::UnixMillis>,
    },
    DeleteGroup {
        id: String,
    },
    /// Adds members; "already a member" counts as success.
    AddMembers {
        group_id: String,
        member_ids: Vec<String>,
    },
    /// Removes one member; "not a member" counts as success.
    RemoveMember {
        group_id: String,
        member_id: String,
    },
}

impl std::fmt::Debug for DirectoryOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirectoryOp::CreateUser {
                properties,
                force_change_password,
                ..
            } => f
                .debug_struct("CreateUser")
                .field("properties", properties)
                .field("password", &"[REDACTED]")
                .field("force_change_password", force_change_password)
                .finish(),
            DirectoryOp::UpdateUser { id, properties } => f
                .debug_struct("UpdateUser")
                .field("id", id)
                .field("properties", properties)
                .finish(),
            DirectoryOp::DeleteUser { id } => f.debug_struct("DeleteUser").field("id", id).finish(),
            DirectoryOp::RestoreUser { id } => {
                f.debug_struct("RestoreUser").field("id", id).finish()
            }
            DirectoryOp::AssignLicenses { id, add, remove } => f
                .debug_struct("AssignLicenses")
                .field("id", id)
                .field("add", add)
                .field("remove", remove)
                .finish(),
            DirectoryOp::SetManager { id, manager_id } => f
                .debug_struct("SetManager")
                .field("id", id)
                .field("manager_id", manager_id)
                .finish(),
            DirectoryOp::RemoveManager { id } => {
                f.debug_struct("RemoveManager").field("id", id).finish()
            }
            DirectoryOp::CreateGroup {
                display_name,
                mail_nickname,
                kind,
                description,
                earlier_attempt,
            } => f
                .debug_struct("CreateGroup")
                .field("earlier_attempt", earlier_attempt)
                .field("display_name", display_name)
                .field("mail_nickname", mail_nickname)
                .field("kind", kind)
                .field("description", description)
                .finish(),
            DirectoryOp::DeleteGroup { id } => {
                f.debug_struct("DeleteGroup").field("id", id).finish()
            }
            DirectoryOp::AddMembers {
                group_id,
                member_ids,
            } => f
                .debug_struct("AddMembers")
                .field("group_id", group_id)
                .field("member_ids", member_ids)
                .finish(),
            DirectoryOp::RemoveMember {
                group_id,
                member_id,
            } => f
                .debug_struct("RemoveMember")
                .field("group_id", group_id)
                .field("member_id", member_id)
                .finish(),
        }
    }
}

/// What a successful write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpOutcome {
    /// A create: the new object's id.
    Created {
        id: String,
    },
    Done,
    /// Nothing to do: the tenant already was in that state (member present, manager absent…).
    AlreadyDone,
}

/// How a tenant write failed, in terms the engine decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A unique value is taken (`property` says which).
    Conflict,
    /// The object does not exist (any more).
    NotFound,
    /// A value was refused (`property` says which when known).
    InvalidValue,
    NoLicenseSeats,
    MissingUsageLocation,
    /// The app lacks a permission, or the target is privileged.
    PermissionDenied,
    /// Throttled beyond the client's own retries.
    Throttled,
    /// A fault worth retrying later.
    Transient,
    /// The credentials or the connection are wrong: the whole run stops.
    Authentication,
    Other,
}

/// A failed tenant operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DirectoryError {
    pub kind: FailureKind,
    /// The Graph property concerned, when known.
    pub property: Option<String>,
    /// Operator-readable: what failed and what to fix. Never a secret.
    pub message: String,
}

impl DirectoryError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            property: None,
            message: message.into(),
        }
    }

    /// Worth retrying in a later run without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, FailureKind::Throttled | FailureKind::Transient)
    }

    /// The whole run must stop (nothing else can succeed either).
    pub fn is_fatal(&self) -> bool {
        self.kind == FailureKind::Authentication
    }
}

pub type DirectoryResult<T> = Result<T, DirectoryError>;

/// The target tenant.
#[async_trait]
pub trait Directory: Send + Sync {
    /// Users whose `attribute` equals one of `values` (the match attribute; UPN by default).
    /// `select` names the properties to read back into [`TenantUser::properties`].
    async fn find_users(
        &self,
        attribute: &str,
        values: &[String],
        select: &[String],
    ) -> DirectoryResult<Vec<TenantUser>>;

    /// Every group with this displayName (it is not unique).
    async fn find_groups_by_name(&self, display_name: &str) -> DirectoryResult<Vec<TenantGroup>>;

    /// Object ids of a group's members.
    async fn group_members(&self, group_id: &str) -> DirectoryResult<Vec<String>>;

    /// The tenant's domains.
    async fn domains(&self) -> DirectoryResult<Vec<TenantDomain>>;

    /// The SKUs the tenant subscribes to: read once per run, and only when a rule names a SKU
    /// by its part number (docs/design.md#licenses-and-manager).
    async fn subscribed_skus(&self) -> DirectoryResult<Vec<TenantSku>>;

    /// Which of these user ids are in the tenant's deleted items, restorable (the others were
    /// purged, permanently deleted, or restored already).
    async fn restorable_users(&self, ids: &[String]) -> DirectoryResult<Vec<String>>;

    /// Applies independent operations, as concurrently and batched as the adapter can; results
    /// come back in the order of `ops`.
    async fn apply(&self, ops: Vec<DirectoryOp>) -> Vec<DirectoryResult<OpOutcome>>;

    /// [`Self::apply`], each result with the tenant's id for the call that answered it (Graph's
    /// `request-id`) where the adapter knows it, for the object's history.
    async fn apply_answered(
        &self,
        ops: Vec<DirectoryOp>,
    ) -> Vec<(DirectoryResult<OpOutcome>, Option<String>)> {
        self.apply(ops)
            .await
            .into_iter()
            .map(|result| (result, None))
            .collect()
    }

    /// The users and groups changed in the tenant since `request.from` (Graph's delta queries),
    /// for drift detection (docs/design.md#drift). A cursor Graph no longer accepts (expired
    /// after 7 days, or reset) starts full rounds instead of failing. Adapters that cannot
    /// report changes answer an error of kind `Other`.
    async fn read_changes(&self, request: ChangesRequest) -> DirectoryResult<TenantChanges> {
        let _ = request;
        Err(DirectoryError::new(
            FailureKind::Other,
            "this directory cannot report its changes",
        ))
    }

    /// Graph requests and writes sent so far (summaries and benchmarks).
    fn counters(&self) -> DirectoryCounters;
}

/// Where a read of the tenant's changes starts: the `@odata.deltaLink` of the last round of each
/// collection, relative to the Graph version root (its token opaque). Absent: that collection's
/// next read is a full round (<https://learn.microsoft.com/graph/delta-query-overview>).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantCursor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<String>,
}

/// What [`Directory::read_changes`] reads.
#[derive(Debug, Clone)]
pub struct ChangesRequest {
    /// User properties to read and to track (Graph's `$select`), `manager` included when the
    /// manager is managed. Empty: users are not read.
    pub user_select: Vec<String>,
    /// Group properties to read and track, `members` included. Empty: groups are not read.
    pub group_select: Vec<String>,
    /// Continue from these rounds; `None`: full rounds (every object, as it is now).
    pub from: Option<TenantCursor>,
}

/// How an object left the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Removal {
    /// Deleted, and restorable from the deleted items (Graph's `@removed` reason `changed`).
    Restorable,
    /// Gone for good (reason `deleted`).
    Permanent,
}

/// One object a round reported: as it is now, or removed. An object reported several times in
/// a round (Graph may repeat one, and spreads a large group's members over pages) comes once,
/// merged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObservedObject {
    pub id: String,
    pub removed: Option<Removal>,
    /// The selected properties Graph returned, by name.
    pub properties: BTreeMap<String, serde_json::Value>,
    /// The tracked relationship (a user's `manager`, a group's `members`): target object id →
    /// linked (`true`) or unlinked (`false`), the last report of each target winning. In a full
    /// round, every current link.
    pub links: BTreeMap<String, bool>,
}

/// The tenant's changes since a cursor, or its whole state (a full round).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantChanges {
    /// Every object as it is now (asked for, or because Graph no longer knew the cursor), not
    /// only the changed ones.
    pub full: bool,
    /// Why a read asked to continue was a full round (the cursor expired or was reset).
    pub restarted: Option<String>,
    pub users: Vec<ObservedObject>,
    pub groups: Vec<ObservedObject>,
    /// Where the next read continues.
    pub cursor: TenantCursor,
}

/// Traffic counters of a directory adapter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryCounters {
    pub requests: u64,
    pub writes: u64,
    pub throttled: u64,
}
