//! The provisioning engine of m365-provisioner: the source model, mapping, planning and safety
//! rules, and the port traits through which it reaches the world. It depends on no AWS, HTTP or
//! LDAP crate; adapters implement [`Source`], [`Directory`], [`StateStore`], [`SecretStore`] and
//! [`Clock`].

pub mod changes;
pub mod clock;
pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod counts;
pub mod directory;
pub mod drift;
pub mod engine;
pub mod executor;
pub mod hash;
pub mod inspect;
pub mod lease;
pub mod mapping;
pub mod model;
pub mod plan;
pub mod planner;
pub mod rule;
pub mod rule_mapping;
pub mod saved_plan;
pub mod secrets;
pub mod source;
pub mod state;

pub use clock::{Clock, ManualClock, SystemClock};
pub use counts::RunCounts;
pub use directory::{
    Directory, DirectoryCounters, DirectoryError, DirectoryOp, DirectoryResult, FailureKind,
    GroupKind, OpOutcome, TenantDomain, TenantGroup, TenantSku, TenantUser,
};
pub use model::{
    AttrValue, Attributes, LicenseAssignment, ObjectKind, RecordError, SourceGroup, SourceUser,
};
pub use secrets::{
    AppCredential, AppSecret, AssertionAlgorithm, CertificateSecret, ConnectionSecrets,
    CredentialKind, SecretError, SecretStore,
};
pub use source::{
    Change, ChangePage, SnapshotPage, Source, SourceCapabilities, SourceCursor, SourceError,
};
pub use state::{
    Checkpoint, HistoryEntry, HistoryResult, Lease, LeaseGrant, LeaseHolder, Link, LinkOrigin,
    ObjectError, Phase, RunRecord, RunStatus, StateError, StateResult, StateStore, UnixMillis,
};
