//! The tenant's data: users, groups, deleted items, SKUs, domains, apps. Serialises as the state
//! dump and the state file.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{AppSeed, DomainSeed, Seed, SkuSeed};
use crate::wire::now_iso;

/// A directory object: its Graph properties plus sandbox bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Obj {
    /// Graph properties as stored (always includes `id`).
    pub props: Map<String, Value>,
    /// Creation order; paging cursors point into it.
    pub seq: u64,
    /// Unix ms from which the object is visible (replication lag, graph-facts §9).
    #[serde(default)]
    pub visible_at_ms: u64,
    /// Soft-deleted: in `directory/deletedItems` (graph-facts §2.4).
    #[serde(default)]
    pub deleted: bool,
    /// Users: the manager's id (graph-facts §4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    /// Groups: member ids (graph-facts §5.3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// Users: holds a directory admin role (graph-facts §2.4, gotcha 15).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

impl Obj {
    pub fn id(&self) -> &str {
        self.props.get("id").and_then(Value::as_str).unwrap_or("")
    }

    pub fn str_prop(&self, name: &str) -> Option<&str> {
        self.props.get(name).and_then(Value::as_str)
    }

    pub fn visible(&self, now_ms: u64) -> bool {
        now_ms >= self.visible_at_ms
    }

    pub fn is_unified(&self) -> bool {
        self.props
            .get("groupTypes")
            .and_then(Value::as_array)
            .is_some_and(|t| t.iter().any(|v| v.as_str() == Some("Unified")))
    }

    pub fn is_dynamic(&self) -> bool {
        self.props
            .get("groupTypes")
            .and_then(Value::as_array)
            .is_some_and(|t| t.iter().any(|v| v.as_str() == Some("DynamicMembership")))
    }
}

/// The whole tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TenantState {
    pub tenant_id: String,
    pub display_name: String,
    pub created_date_time: String,
    pub domains: Vec<DomainSeed>,
    pub skus: Vec<SkuSeed>,
    pub apps: Vec<AppSeed>,
    pub users: Vec<Obj>,
    pub groups: Vec<Obj>,
    pub next_seq: u64,
}

impl TenantState {
    pub fn from_seed(seed: &Seed) -> Self {
        let mut state = Self {
            tenant_id: seed.tenant_id.clone(),
            display_name: seed.display_name.clone(),
            created_date_time: "2024-01-01T00:00:00Z".to_owned(),
            domains: seed.domains.clone(),
            skus: seed.skus.clone(),
            apps: seed.apps.clone(),
            users: Vec::new(),
            groups: Vec::new(),
            next_seq: 1,
        };
        for user in &seed.users {
            let id = state.insert_user(user.clone(), 0);
            let upn = state
                .users
                .last()
                .and_then(|u| u.str_prop("userPrincipalName"))
                .map(str::to_ascii_lowercase);
            if upn.is_some_and(|upn| seed.admin_upns.iter().any(|a| a.eq_ignore_ascii_case(&upn)))
                && let Some(u) = state.users.iter_mut().find(|u| u.id() == id)
            {
                u.admin = true;
            }
        }
        for group in &seed.groups {
            state.insert_group(group.clone(), 0);
        }
        state
    }

    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Inserts a user as given (no validation); returns its id.
    pub fn insert_user(&mut self, user: Value, visible_at_ms: u64) -> String {
        let mut props = match user {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let id = ensure_id(&mut props);
        props
            .entry("createdDateTime")
            .or_insert_with(|| Value::String(now_iso()));
        props
            .entry("userType")
            .or_insert_with(|| Value::String("Member".to_owned()));
        props
            .entry("assignedLicenses")
            .or_insert_with(|| Value::Array(Vec::new()));
        add_mail_proxy(&mut props);
        let manager = props
            .remove("manager")
            .and_then(|m| m.as_str().map(str::to_owned));
        let seq = self.next_seq();
        self.users.push(Obj {
            props,
            seq,
            visible_at_ms,
            deleted: false,
            manager,
            members: Vec::new(),
            admin: false,
        });
        id
    }

    /// Inserts a group as given (no validation); a `members` array of ids/UPNs is applied.
    pub fn insert_group(&mut self, group: Value, visible_at_ms: u64) -> String {
        let mut props = match group {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let id = ensure_id(&mut props);
        props
            .entry("createdDateTime")
            .or_insert_with(|| Value::String(now_iso()));
        props
            .entry("groupTypes")
            .or_insert_with(|| Value::Array(Vec::new()));
        let members: Vec<String> = props
            .remove("members")
            .and_then(|m| m.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|key| {
                self.user_index_any(key)
                    .map(|i| self.users[i].id().to_owned())
            })
            .collect();
        let seq = self.next_seq();
        self.groups.push(Obj {
            props,
            seq,
            visible_at_ms,
            deleted: false,
            manager: None,
            members,
            admin: false,
        });
        id
    }

    /// A live user by id or UPN regardless of replication (internal use).
    pub fn user_index_any(&self, key: &str) -> Option<usize> {
        self.users.iter().position(|u| {
            !u.deleted
                && (u.id().eq_ignore_ascii_case(key)
                    || u.str_prop("userPrincipalName")
                        .is_some_and(|upn| upn.eq_ignore_ascii_case(key)))
        })
    }

    /// A live, replicated user by id or UPN.
    pub fn user_index(&self, key: &str, now_ms: u64) -> Option<usize> {
        self.user_index_any(key)
            .filter(|&i| self.users[i].visible(now_ms))
    }

    /// A live, replicated group by id.
    pub fn group_index(&self, id: &str, now_ms: u64) -> Option<usize> {
        self.groups
            .iter()
            .position(|g| !g.deleted && g.id().eq_ignore_ascii_case(id) && g.visible(now_ms))
    }

    /// Seats in use per SKU: live users' direct assignments (graph-facts §3.2).
    pub fn consumed_units(&self, sku_id: &str) -> u32 {
        let count = self
            .users
            .iter()
            .filter(|u| !u.deleted)
            .filter(|u| {
                u.props
                    .get("assignedLicenses")
                    .and_then(Value::as_array)
                    .is_some_and(|l| {
                        l.iter().any(|a| {
                            a.get("skuId")
                                .and_then(Value::as_str)
                                .is_some_and(|s| s.eq_ignore_ascii_case(sku_id))
                        })
                    })
            })
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    pub fn live_user_count(&self) -> usize {
        self.users.iter().filter(|u| !u.deleted).count()
    }

    /// Whether any object other than `except_id` (live or soft-deleted, graph-facts §2.4) holds
    /// `value` in property `prop` or in its proxyAddresses.
    pub fn address_taken(&self, value: &str, except_id: Option<&str>) -> bool {
        let smtp = format!("smtp:{value}");
        self.users.iter().chain(self.groups.iter()).any(|o| {
            if except_id.is_some_and(|id| o.id().eq_ignore_ascii_case(id)) {
                return false;
            }
            o.str_prop("mail")
                .is_some_and(|m| m.eq_ignore_ascii_case(value))
                || o.props
                    .get("proxyAddresses")
                    .and_then(Value::as_array)
                    .is_some_and(|p| {
                        p.iter()
                            .filter_map(Value::as_str)
                            .any(|a| a.eq_ignore_ascii_case(&smtp))
                    })
        })
    }
}

fn ensure_id(props: &mut Map<String, Value>) -> String {
    match props.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            props.insert("id".into(), Value::String(id.clone()));
            id
        }
    }
}

/// `mail` also becomes the primary SMTP proxy address (graph-facts §2.2).
pub(crate) fn add_mail_proxy(props: &mut Map<String, Value>) {
    let Some(mail) = props.get("mail").and_then(Value::as_str).map(str::to_owned) else {
        return;
    };
    let entry = props
        .entry("proxyAddresses")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = entry {
        let smtp = format!("SMTP:{mail}");
        let already = list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| a.eq_ignore_ascii_case(&smtp));
        if !already {
            // The new primary replaces the old primary, which becomes a secondary address.
            for a in list.iter_mut() {
                if let Some(s) = a.as_str()
                    && let Some(rest) = s.strip_prefix("SMTP:")
                {
                    *a = Value::String(format!("smtp:{rest}"));
                }
            }
            list.push(Value::String(smtp));
        }
    }
}
