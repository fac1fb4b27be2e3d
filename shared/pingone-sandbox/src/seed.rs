//! What a stand-in environment starts with: one environment, its worker apps, populations, users
//! and groups. [`Seed::demo`] is a small ready-made environment ([`demo`] names its ids).

use serde_json::{Map, Value};

/// How a worker app authenticates at the token endpoint (its `tokenEndpointAuthMethod`,
/// <https://developer.pingidentity.com/pingone-api/auth/openid-connect-oauth-2/token-admin-app-client_credentials.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuthMethod {
    /// `Authorization: Basic base64(clientId:clientSecret)`.
    ClientSecretBasic,
    /// Form fields `client_id` and `client_secret`.
    ClientSecretPost,
}

/// A worker application allowed to take client-credentials tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerApp {
    pub client_id: String,
    pub client_secret: String,
    pub auth_method: TokenAuthMethod,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopulationSeed {
    pub id: String,
    pub name: String,
}

/// A user. Custom attributes (`managerId`, ...) become top-level keys of the user's JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSeed {
    pub id: String,
    pub username: String,
    pub email: String,
    pub given_name: String,
    pub family_name: String,
    pub formatted_name: Option<String>,
    pub title: Option<String>,
    pub enabled: bool,
    pub population_id: String,
    pub external_id: Option<String>,
    pub custom: Map<String, Value>,
}

impl UserSeed {
    /// An enabled user with a fresh id, `{username}@example.com` as email and the username as
    /// given and family name.
    pub fn new(username: &str, population_id: &str) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.to_owned(),
            email: format!("{username}@example.com"),
            given_name: username.to_owned(),
            family_name: username.to_owned(),
            formatted_name: None,
            title: None,
            enabled: true,
            population_id: population_id.to_owned(),
            external_id: None,
            custom: Map::new(),
        }
    }
}

/// A group. A group with a `user_filter` is dynamic: its users are those the filter matches, and
/// `member_user_ids` must be empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSeed {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub population_id: Option<String>,
    pub external_id: Option<String>,
    pub user_filter: Option<String>,
    /// Direct user members.
    pub member_user_ids: Vec<String>,
    /// Groups nested directly in this one.
    pub member_group_ids: Vec<String>,
}

impl GroupSeed {
    /// An empty static group with a fresh id.
    pub fn new(name: &str) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            description: None,
            population_id: None,
            external_id: None,
            user_filter: None,
            member_user_ids: Vec::new(),
            member_group_ids: Vec::new(),
        }
    }
}

/// The starting state of the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Seed {
    pub environment_id: String,
    pub apps: Vec<WorkerApp>,
    pub populations: Vec<PopulationSeed>,
    pub users: Vec<UserSeed>,
    pub groups: Vec<GroupSeed>,
}

/// Ids and credentials of [`Seed::demo`].
pub mod demo {
    pub const ENVIRONMENT_ID: &str = "4f1d2c3b-5a6e-4b7c-8d9e-0a1b2c3d4e5f";

    /// A worker app authenticating with `client_secret_basic`.
    pub const BASIC_CLIENT_ID: &str = "7b2e9c41-3f5a-4d6b-9e8c-1a2b3c4d5e6f";
    pub const BASIC_CLIENT_SECRET: &str = "standin-basic-secret~1";
    /// A worker app authenticating with `client_secret_post`.
    pub const POST_CLIENT_ID: &str = "9c3f0d52-4a6b-4e7c-8f9d-2b3c4d5e6f70";
    pub const POST_CLIENT_SECRET: &str = "standin-post-secret~2";

    pub const POPULATION_STAFF: &str = "a1b2c3d4-0001-4000-8000-000000000001";
    pub const POPULATION_CONTRACTORS: &str = "a1b2c3d4-0002-4000-8000-000000000002";

    pub const ALICE_ID: &str = "b0000000-0000-4000-8000-00000000a11c";
    pub const BOB_ID: &str = "b0000000-0000-4000-8000-000000000b0b";
    pub const CAROL_ID: &str = "b0000000-0000-4000-8000-0000000ca201";
    pub const DAVE_ID: &str = "b0000000-0000-4000-8000-00000000da7e";
    pub const ERIN_ID: &str = "b0000000-0000-4000-8000-00000000e214";

    /// Static: Alice and Bob directly, and the Platform group nested.
    pub const ENGINEERING_ID: &str = "c0000000-0000-4000-8000-0000000e2612";
    /// Static: Carol; nested in Engineering.
    pub const PLATFORM_ID: &str = "c0000000-0000-4000-8000-00000000f1a7";
    /// Dynamic: every user of the contractors population (Dave, Erin).
    pub const CONTRACTORS_ID: &str = "c0000000-0000-4000-8000-00000000c0a7";
}

impl Seed {
    /// Two populations, five users (Bob's `managerId` is Alice; Erin is disabled), three groups
    /// (Platform nested in Engineering; Contractors dynamic over the contractors population).
    pub fn demo() -> Self {
        use demo::*;
        let user = |id: &str, username: &str, given: &str, family: &str, pop: &str| UserSeed {
            id: id.to_owned(),
            email: format!("{username}@example.com"),
            given_name: given.to_owned(),
            family_name: family.to_owned(),
            formatted_name: Some(format!("{given} {family}")),
            ..UserSeed::new(username, pop)
        };
        let alice = UserSeed {
            title: Some("Engineering Manager".to_owned()),
            external_id: Some("E1001".to_owned()),
            ..user(ALICE_ID, "alice", "Alice", "Archer", POPULATION_STAFF)
        };
        let mut bob = UserSeed {
            title: Some("Engineer".to_owned()),
            external_id: Some("E1002".to_owned()),
            ..user(BOB_ID, "bob", "Bob", "Baker", POPULATION_STAFF)
        };
        bob.custom
            .insert("managerId".to_owned(), Value::String(ALICE_ID.to_owned()));
        let carol = user(CAROL_ID, "carol", "Carol", "Carter", POPULATION_STAFF);
        let dave = user(DAVE_ID, "dave", "Dave", "Dunn", POPULATION_CONTRACTORS);
        let erin = UserSeed {
            enabled: false,
            ..user(ERIN_ID, "erin", "Erin", "Evans", POPULATION_CONTRACTORS)
        };
        Self {
            environment_id: ENVIRONMENT_ID.to_owned(),
            apps: vec![
                WorkerApp {
                    client_id: BASIC_CLIENT_ID.to_owned(),
                    client_secret: BASIC_CLIENT_SECRET.to_owned(),
                    auth_method: TokenAuthMethod::ClientSecretBasic,
                },
                WorkerApp {
                    client_id: POST_CLIENT_ID.to_owned(),
                    client_secret: POST_CLIENT_SECRET.to_owned(),
                    auth_method: TokenAuthMethod::ClientSecretPost,
                },
            ],
            populations: vec![
                PopulationSeed {
                    id: POPULATION_STAFF.to_owned(),
                    name: "Staff".to_owned(),
                },
                PopulationSeed {
                    id: POPULATION_CONTRACTORS.to_owned(),
                    name: "Contractors".to_owned(),
                },
            ],
            users: vec![alice, bob, carol, dave, erin],
            groups: demo_groups(),
        }
    }
}

fn demo_groups() -> Vec<GroupSeed> {
    use demo::*;
    vec![
        GroupSeed {
            id: ENGINEERING_ID.to_owned(),
            description: Some("Everyone in engineering".to_owned()),
            member_user_ids: vec![ALICE_ID.to_owned(), BOB_ID.to_owned()],
            member_group_ids: vec![PLATFORM_ID.to_owned()],
            ..GroupSeed::new("Engineering")
        },
        GroupSeed {
            id: PLATFORM_ID.to_owned(),
            population_id: Some(POPULATION_STAFF.to_owned()),
            external_id: Some("grp-platform".to_owned()),
            member_user_ids: vec![CAROL_ID.to_owned()],
            ..GroupSeed::new("Platform")
        },
        GroupSeed {
            id: CONTRACTORS_ID.to_owned(),
            user_filter: Some(format!("population.id eq \"{POPULATION_CONTRACTORS}\"")),
            ..GroupSeed::new("Contractors")
        },
    ]
}
