//! [`Seed::generated`]: a larger environment for scenario tests, the same on every call.

use serde_json::Value;

use crate::seed::{GroupSeed, PopulationSeed, Seed, UserSeed, demo};

/// Ids and names of [`Seed::generated`]. Every id is a fixed UUID derived from the index, so
/// two calls (or two processes) agree on them. Indexes are 0-based: user 0 is `user0001`.
pub mod generated {
    /// Populations: 0 `Employees`, 1 `Partners`, 2 `Contractors`; user `i` is in population
    /// `i % 3`.
    pub const POPULATION_NAMES: [&str; 3] = ["Employees", "Partners", "Contractors"];

    /// Groups, by index. 0–6 are static, user `i` a direct member of group `i % 7`; `Platform`
    /// is nested in `Engineering` and `Payments` in `Finance`. 7 `Contractors` is dynamic
    /// (`userFilter` `title eq "Contractor"`). 8 `Admins` is static with the first three users,
    /// 9 `Alumni` static and empty.
    pub const GROUP_NAMES: [&str; 10] = [
        "Engineering",
        "Platform",
        "Finance",
        "Payments",
        "Sales",
        "Support",
        "Marketing",
        "Contractors",
        "Admins",
        "Alumni",
    ];
    pub const ENGINEERING: usize = 0;
    pub const PLATFORM: usize = 1;
    pub const FINANCE: usize = 2;
    pub const PAYMENTS: usize = 3;
    pub const CONTRACTORS: usize = 7;
    pub const ADMINS: usize = 8;
    pub const ALUMNI: usize = 9;
    /// The static groups users are spread over (user `i` in group `i % SPREAD_GROUPS`).
    pub const SPREAD_GROUPS: usize = 7;
    /// The `title` of the contractors (user `i` with `i % 20 == 7`, 5 % of the users).
    pub const CONTRACTOR_TITLE: &str = "Contractor";

    fn id(kind: u32, index: usize) -> String {
        format!("{kind:08x}-0000-4000-8000-{index:012x}")
    }

    /// The id of user `index` (username `user{index+1:04}`).
    pub fn user_id(index: usize) -> String {
        id(0x5eed_0001, index)
    }

    /// The id of group `index` (see [`GROUP_NAMES`]).
    pub fn group_id(index: usize) -> String {
        id(0x5eed_0002, index)
    }

    /// The id of population `index` (see [`POPULATION_NAMES`]).
    pub fn population_id(index: usize) -> String {
        id(0x5eed_0003, index)
    }

    /// The username of user `index`: `user0001` for 0.
    pub fn username(index: usize) -> String {
        format!("user{:04}", index + 1)
    }

    /// Whether user `index` is disabled: every 10th user (`user0010`, `user0020`, ...).
    pub fn disabled(index: usize) -> bool {
        index % 10 == 9
    }

    /// Whether user `index` has the title `Contractor` (member of the dynamic group).
    pub fn contractor(index: usize) -> bool {
        index % 20 == 7
    }

    /// The user `managerId` of user `index` points to: none for the first five users, else an
    /// earlier user (`index / 5 - 1`).
    pub fn manager(index: usize) -> Option<usize> {
        (index >= 5).then(|| index / 5 - 1)
    }
}

const GIVEN: [&str; 16] = [
    "Ada", "Ben", "Chloe", "Dmitri", "Elena", "Farah", "Gustav", "Hana", "Ivan", "Julia", "Kwame",
    "Lena", "Mateo", "Nora", "Omar", "Priya",
];
const FAMILY: [&str; 13] = [
    "Abbott", "Berg", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito",
    "Jensen", "Kowalski", "Larsen", "Moreau",
];
const TITLES: [&str; 8] = [
    "Engineer",
    "Senior Engineer",
    "Accountant",
    "Analyst",
    "Manager",
    "Designer",
    "Sales Representative",
    "Support Specialist",
];

fn generated_user(i: usize) -> UserSeed {
    use generated::*;
    let given = GIVEN[i % GIVEN.len()];
    let family = FAMILY[(i / GIVEN.len() + i) % FAMILY.len()];
    let title = if contractor(i) {
        CONTRACTOR_TITLE
    } else {
        TITLES[i % TITLES.len()]
    };
    let mut user = UserSeed {
        id: user_id(i),
        given_name: given.to_owned(),
        family_name: family.to_owned(),
        formatted_name: Some(format!("{given} {family}")),
        title: Some(title.to_owned()),
        enabled: !disabled(i),
        external_id: Some(format!("G{:05}", i + 1)),
        ..UserSeed::new(&username(i), &population_id(i % POPULATION_NAMES.len()))
    };
    if let Some(m) = manager(i) {
        user.custom
            .insert("managerId".to_owned(), Value::String(user_id(m)));
    }
    user
}

fn generated_groups(users: usize) -> Vec<GroupSeed> {
    use generated::*;
    GROUP_NAMES
        .iter()
        .enumerate()
        .map(|(g, name)| {
            let members: Vec<String> = match g {
                _ if g < SPREAD_GROUPS => (g..users).step_by(SPREAD_GROUPS).map(user_id).collect(),
                ADMINS => (0..users.min(3)).map(user_id).collect(),
                _ => Vec::new(),
            };
            let nested = match g {
                ENGINEERING => vec![group_id(PLATFORM)],
                FINANCE => vec![group_id(PAYMENTS)],
                _ => Vec::new(),
            };
            GroupSeed {
                id: group_id(g),
                user_filter: (g == CONTRACTORS).then(|| format!("title eq \"{CONTRACTOR_TITLE}\"")),
                member_user_ids: members,
                member_group_ids: nested,
                ..GroupSeed::new(name)
            }
        })
        .collect()
}

impl Seed {
    /// `users` users in 3 populations and 10 groups, the same ids on every call ([`generated`]
    /// names them), in the demo environment with the demo worker apps ([`demo`]).
    pub fn generated(users: usize) -> Self {
        use generated::*;
        Self {
            environment_id: demo::ENVIRONMENT_ID.to_owned(),
            apps: Self::demo().apps,
            populations: POPULATION_NAMES
                .iter()
                .enumerate()
                .map(|(p, name)| PopulationSeed {
                    id: population_id(p),
                    name: (*name).to_owned(),
                })
                .collect(),
            users: (0..users).map(generated_user).collect(),
            groups: generated_groups(users),
        }
    }
}
