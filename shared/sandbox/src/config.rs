//! Start-up configuration of the sandbox tenant: seed data, knobs and accepted token resources.
//!
//! Everything here is serde so `m365-provisioner sandbox --config FILE` can read it; unknown keys
//! are rejected (house style: config errors name the field).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::throttle::ThrottleConfig;

/// The whole start-up configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// The tenant as it is after a reset.
    pub seed: Seed,
    /// Latency, faults, replication lag, token lifetime, throttling.
    pub knobs: Knobs,
    /// Resources whose `{resource}/.default` scope the token endpoint accepts
    /// (docs/graph-behaviour.md#tokens).
    pub accepted_resources: Vec<String>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            seed: Seed::default(),
            knobs: Knobs::default(),
            accepted_resources: vec!["https://graph.microsoft.com".to_owned()],
        }
    }
}

impl SandboxConfig {
    /// The demo tenant described in [`crate::demo`].
    pub fn demo() -> Self {
        Self {
            seed: Seed::demo(),
            ..Self::default()
        }
    }
}

/// A domain of the tenant (docs/graph-behaviour.md#domains: UPNs need a verified domain; a
/// federated one also an immutable id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DomainSeed {
    pub id: String,
    #[serde(default)]
    pub is_default: bool,
    #[serde(default)]
    pub is_initial: bool,
    #[serde(default = "yes")]
    pub is_verified: bool,
    /// `Managed` or `Federated`.
    #[serde(default = "managed")]
    pub authentication_type: String,
}

fn yes() -> bool {
    true
}
fn managed() -> String {
    "Managed".to_owned()
}

/// A service plan inside a SKU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePlanSeed {
    pub service_plan_id: String,
    pub service_plan_name: String,
}

/// A subscribed SKU (docs/graph-behaviour.md#licenses). `consumedUnits` is always computed from the
/// users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SkuSeed {
    pub sku_id: String,
    pub sku_part_number: String,
    /// `prepaidUnits.enabled`.
    pub enabled: u32,
    #[serde(default)]
    pub service_plans: Vec<ServicePlanSeed>,
}

/// An app registration that may get tokens, with a client secret, certificates, or both (as
/// under Certificates & secrets in Entra). Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppSeed {
    pub client_id: String,
    /// The client secret's Value; empty: the app has no secret (certificates only).
    #[serde(default)]
    pub client_secret: String,
    /// Certificates registered on the app, PEM (`-----BEGIN CERTIFICATE-----`, the public part
    /// only): a client assertion signed with one of their keys is accepted
    /// (docs/graph-behaviour.md#tokens).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
    #[serde(default)]
    pub display_name: String,
    /// The secret exists but has expired (AADSTS7000222).
    #[serde(default)]
    pub secret_expired: bool,
    /// Application permissions granted with admin consent, issued as the `roles` claim.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl std::fmt::Debug for AppSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSeed")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("certificates", &self.certificates.len())
            .field("display_name", &self.display_name)
            .field("secret_expired", &self.secret_expired)
            .field("roles", &self.roles)
            .finish()
    }
}

/// Seed data: the tenant as it is after a reset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Seed {
    pub tenant_id: String,
    pub display_name: String,
    pub domains: Vec<DomainSeed>,
    pub skus: Vec<SkuSeed>,
    pub apps: Vec<AppSeed>,
    /// Users as Graph JSON (any property; `id` generated when absent; `assignedLicenses` counted).
    pub users: Vec<Value>,
    /// Groups as Graph JSON; an optional `members` array of user ids or UPNs is applied.
    pub groups: Vec<Value>,
    /// UPNs of users holding a directory admin role (docs/graph-behaviour.md#privileged-users).
    pub admin_upns: Vec<String>,
}

impl Default for Seed {
    fn default() -> Self {
        Self {
            tenant_id: crate::demo::TENANT_ID.to_owned(),
            display_name: "Sandbox".to_owned(),
            domains: vec![DomainSeed {
                id: crate::demo::INITIAL_DOMAIN.to_owned(),
                is_default: true,
                is_initial: true,
                is_verified: true,
                authentication_type: managed(),
            }],
            skus: Vec::new(),
            apps: Vec::new(),
            users: Vec::new(),
            groups: Vec::new(),
            admin_upns: Vec::new(),
        }
    }
}

impl Seed {
    /// The demo tenant (see [`crate::demo`]).
    pub fn demo() -> Self {
        use crate::demo::*;
        Self {
            tenant_id: TENANT_ID.to_owned(),
            display_name: TENANT_NAME.to_owned(),
            domains: demo_domains(),
            skus: demo_skus(),
            apps: demo_apps(),
            users: demo_users(),
            groups: demo_groups(),
            admin_upns: vec![ADMIN_UPN.to_owned()],
        }
    }
}

fn demo_domains() -> Vec<DomainSeed> {
    use crate::demo::*;
    let domain = |id: &str, default: bool, initial: bool, verified: bool, auth: &str| DomainSeed {
        id: id.to_owned(),
        is_default: default,
        is_initial: initial,
        is_verified: verified,
        authentication_type: auth.to_owned(),
    };
    vec![
        domain(INITIAL_DOMAIN, false, true, true, "Managed"),
        domain(VERIFIED_DOMAIN, true, false, true, "Managed"),
        domain(FEDERATED_DOMAIN, false, false, true, "Federated"),
        domain(UNVERIFIED_DOMAIN, false, false, false, "Managed"),
    ]
}

fn demo_skus() -> Vec<SkuSeed> {
    use crate::demo::*;
    let plan = |id: &str, name: &str| ServicePlanSeed {
        service_plan_id: id.to_owned(),
        service_plan_name: name.to_owned(),
    };
    vec![
        SkuSeed {
            sku_id: SKU_E3.to_owned(),
            sku_part_number: "ENTERPRISEPACK".to_owned(),
            enabled: 25,
            service_plans: vec![
                plan(E3_PLAN_EXCHANGE, "EXCHANGE_S_ENTERPRISE"),
                plan(E3_PLAN_SHAREPOINT, "SHAREPOINTENTERPRISE"),
                plan(E3_PLAN_TEAMS, "TEAMS1"),
                plan("43de0ff5-c92c-492b-9116-175376d08c38", "OFFICESUBSCRIPTION"),
            ],
        },
        SkuSeed {
            sku_id: SKU_E5.to_owned(),
            sku_part_number: "SPE_E5".to_owned(),
            enabled: 10,
            service_plans: vec![
                plan(E3_PLAN_EXCHANGE, "EXCHANGE_S_ENTERPRISE"),
                plan(E3_PLAN_TEAMS, "TEAMS1"),
                plan("41781fb2-bc02-4b7c-bd55-b576c07bb09d", "AAD_PREMIUM"),
                plan("eec0eb4f-6444-4f95-aba0-50c24d67f998", "AAD_PREMIUM_P2"),
            ],
        },
        SkuSeed {
            sku_id: SKU_FULL.to_owned(),
            sku_part_number: "EMS".to_owned(),
            enabled: 1,
            service_plans: vec![
                plan("41781fb2-bc02-4b7c-bd55-b576c07bb09d", "AAD_PREMIUM"),
                plan("c1ec4a95-1f05-45b3-a911-aa3fa01094f5", "INTUNE_A"),
            ],
        },
    ]
}

fn demo_apps() -> Vec<AppSeed> {
    use crate::demo::*;
    vec![
        AppSeed {
            client_id: CLIENT_ID.to_owned(),
            client_secret: CLIENT_SECRET.to_owned(),
            certificates: Vec::new(),
            display_name: "m365-provisioner (sandbox)".to_owned(),
            secret_expired: false,
            roles: vec![
                "User.ReadWrite.All".to_owned(),
                "Group.ReadWrite.All".to_owned(),
                "Organization.Read.All".to_owned(),
            ],
        },
        AppSeed {
            client_id: READONLY_CLIENT_ID.to_owned(),
            client_secret: READONLY_CLIENT_SECRET.to_owned(),
            certificates: Vec::new(),
            display_name: "read-only reporter (sandbox)".to_owned(),
            secret_expired: false,
            roles: vec![
                "User.Read.All".to_owned(),
                "Organization.Read.All".to_owned(),
            ],
        },
        AppSeed {
            client_id: EXPIRED_CLIENT_ID.to_owned(),
            client_secret: EXPIRED_CLIENT_SECRET.to_owned(),
            certificates: Vec::new(),
            display_name: "expired secret (sandbox)".to_owned(),
            secret_expired: true,
            roles: vec!["User.ReadWrite.All".to_owned()],
        },
    ]
}

fn demo_users() -> Vec<Value> {
    use crate::demo::*;
    vec![
        json!({
            "id": BJENSEN_ID,
            "accountEnabled": true,
            "displayName": "Barbara Jensen",
            "givenName": "Barbara",
            "surname": "Jensen",
            "mailNickname": "bjensen",
            "userPrincipalName": BJENSEN_UPN,
            "mail": BJENSEN_UPN,
            "usageLocation": "US",
            "jobTitle": "Accountant",
            "department": "Finance",
        }),
        json!({
            "id": ADMIN_ID,
            "accountEnabled": true,
            "displayName": "Tenant Administrator",
            "mailNickname": "admin",
            "userPrincipalName": ADMIN_UPN,
            "usageLocation": "US",
            "assignedLicenses": [{"skuId": SKU_FULL, "disabledPlans": []}],
        }),
    ]
}

fn demo_groups() -> Vec<Value> {
    use crate::demo::*;
    vec![json!({
        "id": ACCOUNTING_ID,
        "displayName": ACCOUNTING_NAME,
        "description": "Accounting department",
        "mailEnabled": false,
        "mailNickname": "accounting",
        "securityEnabled": true,
        "groupTypes": [],
        "members": [BJENSEN_ID],
    })]
}

/// Random fault injection (seeded, so a run is reproducible).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultKnobs {
    /// Seed of the fault RNG (also used to shuffle batch responses).
    pub seed: u64,
    /// Share (0..=1) of /v1.0 requests answered 429 (not applied).
    pub share_429: f64,
    /// Share answered 500.
    pub share_500: f64,
    /// Share answered 503.
    pub share_503: f64,
    /// Share that time out: the request IS applied, then the answer is held back `timeout_ms`.
    pub share_timeout: f64,
    /// How long a timed-out response is held back.
    pub timeout_ms: u64,
    /// Of the 500/503 faults on writes, the share that happens after the write was applied
    /// (docs/graph-behaviour.md#uncertain-creates).
    pub after_write_share: f64,
    /// `Retry-After` (seconds) sent with injected 429/503.
    pub retry_after_secs: f64,
}

impl Default for FaultKnobs {
    fn default() -> Self {
        Self {
            seed: 42,
            share_429: 0.0,
            share_500: 0.0,
            share_503: 0.0,
            share_timeout: 0.0,
            timeout_ms: 30_000,
            after_write_share: 0.5,
            retry_after_secs: 1.0,
        }
    }
}

/// Run-time knobs, also at `GET/PUT /_sandbox/knobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Knobs {
    /// Added latency for GET requests (ms).
    pub read_latency_ms: u64,
    /// Added latency for POST/PATCH/PUT/DELETE requests (ms).
    pub write_latency_ms: u64,
    /// Random faults.
    pub faults: FaultKnobs,
    /// A new user/group is invisible to reads and references for this long
    /// (docs/graph-behaviour.md#replication-lag).
    pub replication_lag_ms: u64,
    /// Lifetime of issued access tokens (s); `expires_in` is one second less, as Graph's 3599.
    pub token_lifetime_secs: u64,
    /// Throttling model (docs/graph-behaviour.md#identity-quotas).
    pub throttle: ThrottleConfig,
    /// Answer `$batch` items in a shuffled order (docs/graph-behaviour.md#json-batching: order is
    /// not guaranteed).
    pub shuffle_batch_responses: bool,
    /// Delta queries (docs/graph-behaviour.md#delta-queries).
    pub delta: DeltaKnobs,
}

/// How `/users/delta` and `/groups/delta` answer (docs/graph-behaviour.md#delta-queries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeltaKnobs {
    /// Objects per page (Graph chooses its own page size; 200 is what it is seen to use for
    /// users). A group with more member changes than this is split across pages, the group
    /// repeated on each.
    pub page_size: usize,
    /// A token older than this answers 400 `syncStateNotFound` (7 days for directory objects:
    /// <https://learn.microsoft.com/graph/delta-query-overview>).
    pub token_lifetime_secs: u64,
    /// Raising it invalidates every token issued before: they answer `410 Gone` with a
    /// `Location` to start over, as Graph does after tenant maintenance.
    pub reset_generation: u32,
}

impl Default for DeltaKnobs {
    fn default() -> Self {
        Self {
            page_size: 200,
            token_lifetime_secs: 7 * 24 * 3600,
            reset_generation: 0,
        }
    }
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            read_latency_ms: 0,
            write_latency_ms: 0,
            faults: FaultKnobs::default(),
            replication_lag_ms: 0,
            token_lifetime_secs: 3600,
            throttle: ThrottleConfig::default(),
            shuffle_batch_responses: true,
            delta: DeltaKnobs::default(),
        }
    }
}

/// What a scripted fault answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FaultStatus {
    /// 429, 500, 503 or 504: answered without applying the request.
    Status(u16),
    /// `"timeout"`: the request is applied, then the answer is held back `faults.timeout_ms`.
    Timeout(TimeoutTag),
}

/// Serialises as the string `"timeout"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeoutTag {
    #[serde(rename = "timeout")]
    Timeout,
}

impl FaultStatus {
    /// The timeout variant.
    pub const TIMEOUT: FaultStatus = FaultStatus::Timeout(TimeoutTag::Timeout);
}

/// A scripted, deterministic fault: fires on the next `count` requests matching `method` and
/// `path_prefix` (batch items included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// HTTP method to match; `"*"` or `""` matches any.
    #[serde(default)]
    pub method: String,
    /// Prefix of the path relative to the version root (`/users`); a leading `/v1.0` is ignored.
    #[serde(default)]
    pub path_prefix: String,
    pub status: FaultStatus,
    /// How many matching requests it fires on.
    #[serde(default = "one")]
    pub count: u32,
    /// `Retry-After` seconds sent with the fault (429/503).
    #[serde(default)]
    pub retry_after: Option<f64>,
    /// For 500/503/504: apply the request first, then answer the fault
    /// (docs/graph-behaviour.md#uncertain-creates).
    #[serde(default)]
    pub applied: bool,
}

fn one() -> u32 {
    1
}

impl FaultRule {
    /// A rule with `count` 1, no Retry-After and not applied.
    pub fn new(method: &str, path_prefix: &str, status: FaultStatus) -> Self {
        Self {
            method: method.to_owned(),
            path_prefix: path_prefix.to_owned(),
            status,
            count: 1,
            retry_after: None,
            applied: false,
        }
    }

    pub(crate) fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = self.method.is_empty()
            || self.method == "*"
            || self.method.eq_ignore_ascii_case(method);
        let prefix = self
            .path_prefix
            .strip_prefix("/v1.0")
            .unwrap_or(&self.path_prefix);
        let path = path.strip_prefix("/v1.0").unwrap_or(path);
        method_ok
            && path
                .to_ascii_lowercase()
                .starts_with(&prefix.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_client_secret() {
        let config = SandboxConfig::demo();
        let shown = format!("{config:?} {config:#?}");
        for app in &config.seed.apps {
            assert!(!shown.contains(&app.client_secret), "{shown}");
            assert!(shown.contains(&app.client_id), "{shown}");
        }
        assert!(!shown.contains(crate::demo::CLIENT_SECRET), "{shown}");
    }
}
