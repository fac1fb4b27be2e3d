//! Test harness.

/// The engine end to end against the sandbox tenant (`tests/scenario_*.rs`).
#[allow(
    clippy::expect_used,
    reason = "a harness that cannot set up should fail the test loudly"
)]
pub mod scenario;

pub mod moto;

/// A throwaway slapd and the test directory (`tests/ldap_source.rs`).
pub mod ldap;

/// A throwaway Samba Active Directory domain controller shared by a test binary
/// (`tests/ad_source.rs`).
pub mod samba;

/// The deployed product (moto or in-memory ports, a sandbox tenant, the functions' runtime)
/// for handler tests.
pub mod cloud;

/// In-memory configurations, files and secrets for a deployment without AWS.
pub mod memory_ports;

/// PingOne stand-in environments for the PingOne source's tests (`tests/pingone_*.rs`).
pub mod pingone {
    use std::collections::BTreeSet;

    use m365_pingone_sandbox::Seed;

    /// [`Seed::generated`] with `users` users, where users whose manager is disabled have no
    /// manager: a manager who is not provisioned is reported and retried every run, and the
    /// scenarios that use this seed expect quiet runs after the first.
    pub fn seed_with_enabled_managers(users: usize) -> Seed {
        let mut seed = Seed::generated(users);
        let disabled: BTreeSet<String> = seed
            .users
            .iter()
            .filter(|u| !u.enabled)
            .map(|u| u.id.clone())
            .collect();
        for user in &mut seed.users {
            let reports_to_disabled = user
                .custom
                .get("managerId")
                .and_then(|m| m.as_str())
                .is_some_and(|m| disabled.contains(m));
            if reports_to_disabled {
                user.custom.remove("managerId");
            }
        }
        seed
    }
}

/// Helpers for the Graph client tests against the sandbox tenant (`tests/graph_client_*.rs`).
// A harness that cannot start the sandbox or build a client should fail the test loudly.
#[allow(clippy::expect_used)]
pub mod graph_client {
    use std::time::Duration;

    use m365_graph::{
        Credentials, GraphClient, GraphSettings, PacingConfig, RetryPolicy, SharedState,
    };
    use m365_sandbox::{RunningSandbox, Sandbox, SandboxConfig, demo};
    use secrecy::SecretString;
    use serde_json::Value;

    /// A demo sandbox on a free local port.
    pub async fn start_demo() -> RunningSandbox {
        Sandbox::demo().start().await.expect("sandbox starts")
    }

    /// A sandbox with the given configuration.
    pub async fn start(config: SandboxConfig) -> RunningSandbox {
        Sandbox::new(config).start().await.expect("sandbox starts")
    }

    /// Settings pointing at the sandbox with test-sized retry delays and no client pacing.
    pub fn settings(sb: &RunningSandbox) -> GraphSettings {
        GraphSettings {
            login_url: Some(sb.login_url()),
            graph_url: Some(sb.graph_url()),
            request_timeout: Duration::from_secs(10),
            max_attempts: 10,
            pacing: PacingConfig::disabled(),
            replication_retry: RetryPolicy::fast(10, Duration::from_millis(25)),
            transient_retry: RetryPolicy::fast(5, Duration::from_millis(10)),
            ..GraphSettings::default()
        }
    }

    pub fn credentials(client_id: &str, secret: &str) -> Credentials {
        Credentials {
            tenant: demo::TENANT_ID.to_string(),
            client_id: client_id.to_string(),
            credential: m365_graph::ClientCredential::Secret(SecretString::from(
                secret.to_string(),
            )),
        }
    }

    /// The read-write demo app.
    pub fn demo_credentials() -> Credentials {
        credentials(demo::CLIENT_ID, demo::CLIENT_SECRET)
    }

    /// A client for the read-write demo app with its own token cache and pacer registry.
    pub fn client(sb: &RunningSandbox) -> GraphClient {
        client_with(settings(sb), demo_credentials())
    }

    pub fn client_with(settings: GraphSettings, credentials: Credentials) -> GraphClient {
        GraphClient::with_shared(settings, credentials, SharedState::isolated())
            .expect("client builds")
    }

    /// Live users in the tenant whose UPN equals `upn` (case-insensitive).
    pub fn users_with_upn(sb: &RunningSandbox, upn: &str) -> Vec<Value> {
        sb.sandbox()
            .users()
            .into_iter()
            .filter(|u| {
                u["userPrincipalName"]
                    .as_str()
                    .is_some_and(|v| v.eq_ignore_ascii_case(upn))
            })
            .collect()
    }

    /// Live user by id.
    pub fn user_by_id(sb: &RunningSandbox, id: &str) -> Option<Value> {
        sb.sandbox()
            .users()
            .into_iter()
            .find(|u| u["id"].as_str() == Some(id))
    }

    /// Live groups with this displayName.
    pub fn groups_named(sb: &RunningSandbox, name: &str) -> Vec<Value> {
        sb.sandbox()
            .groups()
            .into_iter()
            .filter(|g| g["displayName"].as_str() == Some(name))
            .collect()
    }

    /// A valid password for new users.
    pub const PASSWORD: &str = "Sandbox-Passw0rd!";

    /// A minimal valid new user in the verified domain.
    pub fn new_user(alias: &str) -> m365_graph::NewUser {
        let mut u = m365_graph::NewUser::new(
            format!("{alias}@{}", demo::VERIFIED_DOMAIN),
            format!("Test {alias}"),
            alias,
            PASSWORD,
        );
        u.usage_location = Some("US".into());
        u
    }
}
