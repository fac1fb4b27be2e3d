//! The tenant's data: users, groups, deleted items, SKUs, domains, apps. Serialises as the state
//! dump and the state file.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::changes::{Change, ChangeLog, What};
use crate::config::{AppSeed, DomainSeed, Seed, SkuSeed};
use crate::wire::{now_iso, now_ms};

/// A directory object: its Graph properties plus sandbox bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Obj {
    /// Graph properties as stored (always includes `id`).
    pub props: Map<String, Value>,
    /// Creation order; paging cursors point into it.
    pub seq: u64,
    /// Unix ms from which the object is visible (replication lag,
    /// docs/graph-behaviour.md#replication-lag).
    #[serde(default)]
    pub visible_at_ms: u64,
    /// Soft-deleted: in `directory/deletedItems` (docs/graph-behaviour.md#soft-delete-and-restore).
    #[serde(default)]
    pub deleted: bool,
    /// Users: the manager's id (docs/graph-behaviour.md#manager).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    /// Groups: member ids (docs/graph-behaviour.md#group-membership).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// Users: holds a directory admin role (docs/graph-behaviour.md#privileged-users).
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
    /// Every change to a user or group, on the `next_seq` clock (what delta queries read).
    #[serde(default, skip_serializing_if = "ChangeLog::is_empty")]
    pub changes: ChangeLog,
    /// Lookup indexes; not part of the state dump. A deserialised state starts without them
    /// (lookups then scan) until `rebuild_indexes`.
    #[serde(skip)]
    idx: Indexes,
}

/// Lookup indexes over `TenantState::users`/`groups`.
///
/// The key maps are supersets: every object's current keys map to its position, but a position
/// may also sit under a key the object no longer has (after a UPN or mail change). Lookups verify
/// every candidate against the real predicate, so stale entries never change an answer. Removing
/// an object shifts positions, so removals rebuild everything. The counters are exact.
#[derive(Debug, Clone, Default)]
struct Indexes {
    /// Whether the indexes cover the whole state; when not, lookups scan.
    built: bool,
    /// Lowercased user id and UPN → user positions.
    user_keys: HashMap<String, Vec<usize>>,
    /// Lowercased group id → group positions.
    group_ids: HashMap<String, Vec<usize>>,
    /// Lowercased group mailNickname → group positions.
    group_nicks: HashMap<String, Vec<usize>>,
    /// Lowercased `mail` and `smtp:` proxy address (without the prefix) → (is user, position).
    addresses: HashMap<String, Vec<(bool, usize)>>,
    /// Users not soft-deleted.
    live_users: usize,
    /// Lowercased SKU id → live users holding it.
    consumed: HashMap<String, u32>,
}

fn push_pos<T: PartialEq>(map: &mut HashMap<String, Vec<T>>, key: &str, pos: T) {
    let list = map.entry(key.to_ascii_lowercase()).or_default();
    if !list.contains(&pos) {
        list.push(pos);
    }
}

/// Distinct lowercased SKU ids of a user's direct assignments.
fn sku_keys(u: &Obj) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(list) = u.props.get("assignedLicenses").and_then(Value::as_array) {
        for a in list {
            if let Some(s) = a.get("skuId").and_then(Value::as_str) {
                let s = s.to_ascii_lowercase();
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
    }
    out
}

/// The addresses `address_taken` matches an object on: `mail` and `smtp:` proxy addresses.
fn address_keys(o: &Obj) -> Vec<&str> {
    let mut out = Vec::new();
    if let Some(m) = o.str_prop("mail") {
        out.push(m);
    }
    if let Some(list) = o.props.get("proxyAddresses").and_then(Value::as_array) {
        for a in list.iter().filter_map(Value::as_str) {
            if a.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("smtp:"))
                && let Some(rest) = a.get(5..)
            {
                out.push(rest);
            }
        }
    }
    out
}

fn obj_has_address(o: &Obj, value: &str, smtp: &str) -> bool {
    o.str_prop("mail")
        .is_some_and(|m| m.eq_ignore_ascii_case(value))
        || o.props
            .get("proxyAddresses")
            .and_then(Value::as_array)
            .is_some_and(|p| {
                p.iter()
                    .filter_map(Value::as_str)
                    .any(|a| a.eq_ignore_ascii_case(smtp))
            })
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
            changes: ChangeLog::default(),
            idx: Indexes {
                built: true,
                ..Indexes::default()
            },
        };
        for user in &seed.users {
            let id = state.insert_user(user.clone(), 0);
            let upn = state
                .users
                .last()
                .and_then(|u| u.str_prop("userPrincipalName"))
                .map(str::to_ascii_lowercase);
            if upn.is_some_and(|upn| seed.admin_upns.iter().any(|a| a.eq_ignore_ascii_case(&upn)))
                && let Some(i) = state.user_exact(&id)
            {
                state.users[i].admin = true;
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

    /// The newest sequence number handed out (0 before any).
    pub fn head_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// Notes a change to the user `id` in the change log.
    pub fn log_user(&mut self, id: &str, what: What) {
        let seq = self.next_seq();
        self.changes.users.push(Change {
            seq,
            at_ms: now_ms(),
            id: id.to_owned(),
            what,
        });
    }

    /// Notes a change to the group `id` in the change log.
    pub fn log_group(&mut self, id: &str, what: What) {
        let seq = self.next_seq();
        self.changes.groups.push(Change {
            seq,
            at_ms: now_ms(),
            id: id.to_owned(),
            what,
        });
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
        self.changes.users.push(Change {
            seq,
            at_ms: now_ms(),
            id: id.clone(),
            what: What::Created,
        });
        self.users.push(Obj {
            props,
            seq,
            visible_at_ms,
            deleted: false,
            manager,
            members: Vec::new(),
            admin: false,
        });
        if self.idx.built {
            let i = self.users.len() - 1;
            self.idx.live_users += 1;
            self.count_licenses(i, true);
            self.index_user(i);
        }
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
        self.changes.groups.push(Change {
            seq,
            at_ms: now_ms(),
            id: id.clone(),
            what: What::Created,
        });
        self.groups.push(Obj {
            props,
            seq,
            visible_at_ms,
            deleted: false,
            manager: None,
            members,
            admin: false,
        });
        if self.idx.built {
            self.index_group(self.groups.len() - 1);
        }
        id
    }

    /// Rebuilds every index from the users and groups (after loading a state file).
    pub fn rebuild_indexes(&mut self) {
        self.idx = Indexes {
            built: true,
            ..Indexes::default()
        };
        for i in 0..self.users.len() {
            if !self.users[i].deleted {
                self.idx.live_users += 1;
                self.count_licenses(i, true);
            }
            self.index_user(i);
        }
        for g in 0..self.groups.len() {
            self.index_group(g);
        }
    }

    /// Adds the user's current keys (call after changing its UPN, mail or proxy addresses).
    pub fn index_user(&mut self, i: usize) {
        if !self.idx.built {
            return;
        }
        let Some(u) = self.users.get(i) else { return };
        push_pos(&mut self.idx.user_keys, u.id(), i);
        if let Some(upn) = u.str_prop("userPrincipalName") {
            push_pos(&mut self.idx.user_keys, upn, i);
        }
        for a in address_keys(u) {
            push_pos(&mut self.idx.addresses, a, (true, i));
        }
    }

    /// Adds the group's current keys (call after changing its mailNickname).
    pub fn index_group(&mut self, g: usize) {
        if !self.idx.built {
            return;
        }
        let Some(o) = self.groups.get(g) else { return };
        push_pos(&mut self.idx.group_ids, o.id(), g);
        if let Some(n) = o.str_prop("mailNickname") {
            push_pos(&mut self.idx.group_nicks, n, g);
        }
        for a in address_keys(o) {
            push_pos(&mut self.idx.addresses, a, (false, g));
        }
    }

    /// Adds (or takes away) the user's SKUs to the consumed-unit counters.
    fn count_licenses(&mut self, i: usize, add: bool) {
        let Some(u) = self.users.get(i) else { return };
        for sku in sku_keys(u) {
            let n = self.idx.consumed.entry(sku).or_insert(0);
            *n = if add {
                n.saturating_add(1)
            } else {
                n.saturating_sub(1)
            };
        }
    }

    /// Soft-deletes or restores a user.
    pub fn set_user_deleted(&mut self, i: usize, deleted: bool) {
        let Some(u) = self.users.get_mut(i) else {
            return;
        };
        if u.deleted == deleted {
            return;
        }
        u.deleted = deleted;
        let id = u.id().to_owned();
        self.log_user(
            &id,
            if deleted {
                What::SoftDeleted
            } else {
                What::Restored
            },
        );
        if self.idx.built {
            if deleted {
                self.idx.live_users = self.idx.live_users.saturating_sub(1);
            } else {
                self.idx.live_users += 1;
            }
            self.count_licenses(i, !deleted);
        }
    }

    /// Replaces a user's `assignedLicenses`.
    pub fn set_user_licenses(&mut self, i: usize, assigned: Vec<Value>) {
        let live = self.users.get(i).is_some_and(|u| !u.deleted);
        if live && self.idx.built {
            self.count_licenses(i, false);
        }
        if let Some(u) = self.users.get_mut(i) {
            u.props
                .insert("assignedLicenses".into(), Value::Array(assigned));
            let id = u.id().to_owned();
            self.log_user(
                &id,
                What::Props {
                    names: vec!["assignedLicenses".to_owned()],
                },
            );
        }
        if live && self.idx.built {
            self.count_licenses(i, true);
        }
    }

    /// Removes a user for good (positions shift, so the indexes are rebuilt).
    pub fn remove_user(&mut self, i: usize) {
        if i < self.users.len() {
            let gone = self.users.remove(i);
            self.log_user(gone.id(), What::Purged);
            if self.idx.built {
                self.rebuild_indexes();
            }
        }
    }

    /// Removes a group for good (positions shift, so the indexes are rebuilt).
    pub fn remove_group(&mut self, g: usize) {
        if g < self.groups.len() {
            let gone = self.groups.remove(g);
            self.log_group(gone.id(), What::Purged);
            if self.idx.built {
                self.rebuild_indexes();
            }
        }
    }

    /// The first user matching `pred`, which only matches users whose id or UPN equals `key`
    /// ignoring ASCII case.
    fn first_user(&self, key: &str, pred: impl Fn(&Obj) -> bool) -> Option<usize> {
        if !self.idx.built {
            return self.users.iter().position(pred);
        }
        let found = self
            .idx
            .user_keys
            .get(&key.to_ascii_lowercase())
            .and_then(|c| {
                c.iter()
                    .copied()
                    .filter(|&i| self.users.get(i).is_some_and(&pred))
                    .min()
            });
        debug_assert_eq!(found, self.users.iter().position(&pred), "user index");
        found
    }

    /// Positions (ascending, so in creation order) of the users a `$filter` can match when it
    /// only matches users by id or UPN (`userPrincipalName eq 'x'`, `id in ('a', 'b')`): a
    /// superset, which the caller still filters. `None`: the filter needs a scan.
    pub(crate) fn user_candidates(&self, expr: &crate::filter::Expr) -> Option<Vec<usize>> {
        use crate::filter::{Expr, Lit};
        if !self.idx.built {
            return None;
        }
        let keyed = |prop: &str| prop == "id" || prop.eq_ignore_ascii_case("userPrincipalName");
        let key = |lit: &Lit| match lit {
            Lit::Str(s) | Lit::Raw(s) => Some(s.to_ascii_lowercase()),
            Lit::Bool(_) | Lit::Null => None,
        };
        let keys: Vec<String> = match expr {
            Expr::Cmp { prop, op, val } if keyed(prop) && op.eq_ignore_ascii_case("eq") => {
                vec![key(val)?]
            }
            Expr::In { prop, vals } if keyed(prop) => {
                vals.iter().map(key).collect::<Option<Vec<_>>>()?
            }
            _ => return None,
        };
        let mut positions: Vec<usize> = keys
            .iter()
            .filter_map(|k| self.idx.user_keys.get(k))
            .flatten()
            .copied()
            .collect();
        positions.sort_unstable();
        positions.dedup();
        Some(positions)
    }

    /// The first group matching `pred`, which only matches groups whose id (or, with `by_nick`,
    /// mailNickname) equals `key` ignoring ASCII case.
    fn first_group(&self, key: &str, by_nick: bool, pred: impl Fn(&Obj) -> bool) -> Option<usize> {
        if !self.idx.built {
            return self.groups.iter().position(pred);
        }
        let map = if by_nick {
            &self.idx.group_nicks
        } else {
            &self.idx.group_ids
        };
        let found = map.get(&key.to_ascii_lowercase()).and_then(|c| {
            c.iter()
                .copied()
                .filter(|&g| self.groups.get(g).is_some_and(&pred))
                .min()
        });
        debug_assert_eq!(found, self.groups.iter().position(&pred), "group index");
        found
    }

    /// A live user by id or UPN regardless of replication (internal use).
    pub fn user_index_any(&self, key: &str) -> Option<usize> {
        self.first_user(key, |u| {
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

    /// The first user (live or not) whose id is exactly `id`.
    pub fn user_exact(&self, id: &str) -> Option<usize> {
        self.first_user(id, |u| u.id() == id)
    }

    /// The first live user whose id is exactly `id`.
    pub fn live_user_exact(&self, id: &str) -> Option<usize> {
        self.first_user(id, |u| !u.deleted && u.id() == id)
    }

    /// A soft-deleted user by id.
    pub fn deleted_user_index(&self, id: &str) -> Option<usize> {
        self.first_user(id, |u| u.deleted && u.id().eq_ignore_ascii_case(id))
    }

    /// Whether a live user other than `except` has `upn`. A deleted user holds no UPN: another
    /// user may take it, and restoring the deleted one then conflicts (Restore-MsolUser's
    /// `-NewUserPrincipalName` exists for that case:
    /// <https://learn.microsoft.com/previous-versions/azure/dn194109(v=azure.100)>).
    pub fn upn_taken(&self, upn: &str, except: Option<&str>) -> bool {
        self.first_user(upn, |u| {
            !u.deleted
                && except.is_none_or(|e| !u.id().eq_ignore_ascii_case(e))
                && u.str_prop("userPrincipalName")
                    .is_some_and(|x| x.eq_ignore_ascii_case(upn))
        })
        .is_some()
    }

    /// A live, replicated group by id.
    pub fn group_index(&self, id: &str, now_ms: u64) -> Option<usize> {
        self.first_group(id, false, |g| {
            !g.deleted && g.id().eq_ignore_ascii_case(id) && g.visible(now_ms)
        })
    }

    /// A live group by id regardless of replication.
    pub fn group_index_any(&self, id: &str) -> Option<usize> {
        self.first_group(id, false, |g| !g.deleted && g.id().eq_ignore_ascii_case(id))
    }

    /// A group (live or soft-deleted) by id.
    pub fn group_index_all(&self, id: &str) -> Option<usize> {
        self.first_group(id, false, |g| g.id().eq_ignore_ascii_case(id))
    }

    /// The first group (live or not) whose id is exactly `id`.
    pub fn group_exact(&self, id: &str) -> Option<usize> {
        self.first_group(id, false, |g| g.id() == id)
    }

    /// The first live group whose id is exactly `id`.
    pub fn live_group_exact(&self, id: &str) -> Option<usize> {
        self.first_group(id, false, |g| !g.deleted && g.id() == id)
    }

    /// A soft-deleted group by id.
    pub fn deleted_group_index(&self, id: &str) -> Option<usize> {
        self.first_group(id, false, |g| g.deleted && g.id().eq_ignore_ascii_case(id))
    }

    /// Whether a Microsoft 365 group (live or soft-deleted) other than the one with id exactly
    /// `except_id` uses `nick` as mailNickname.
    /// Why a deleted user or group cannot come back as it was: a live object took its UPN or
    /// one of its addresses since it was deleted. Names the property, as Graph's conflict does.
    pub fn restore_conflict(&self, users: bool, idx: usize) -> Option<&'static str> {
        let obj = if users {
            &self.users[idx]
        } else {
            &self.groups[idx]
        };
        let id = Some(obj.id());
        if users
            && obj
                .str_prop("userPrincipalName")
                .is_some_and(|upn| self.upn_taken(upn, id))
        {
            return Some("userPrincipalName");
        }
        if address_keys(obj).iter().any(|a| self.address_taken(a, id)) {
            return Some("proxyAddresses");
        }
        None
    }

    pub fn unified_nick_taken(&self, nick: &str, except_id: Option<&str>) -> bool {
        self.first_group(nick, true, |o| {
            except_id.is_none_or(|e| o.id() != e)
                && o.is_unified()
                && o.str_prop("mailNickname")
                    .is_some_and(|x| x.eq_ignore_ascii_case(nick))
        })
        .is_some()
    }

    /// Seats in use per SKU: live users' direct assignments (docs/graph-behaviour.md#licenses).
    pub fn consumed_units(&self, sku_id: &str) -> u32 {
        let scan = || {
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
        };
        if !self.idx.built {
            return scan();
        }
        let n = self
            .idx
            .consumed
            .get(&sku_id.to_ascii_lowercase())
            .copied()
            .unwrap_or(0);
        debug_assert_eq!(n, scan(), "consumed-unit counter");
        n
    }

    pub fn live_user_count(&self) -> usize {
        let scan = || self.users.iter().filter(|u| !u.deleted).count();
        if !self.idx.built {
            return scan();
        }
        debug_assert_eq!(self.idx.live_users, scan(), "live-user counter");
        self.idx.live_users
    }

    /// Whether a live object other than `except_id` holds `value` as its mail or in its
    /// proxyAddresses. Deleted objects hold none: restoring one whose address another object took
    /// since conflicts (Restore-MsolUser's `-AutoReconcileProxyConflicts`,
    /// <https://learn.microsoft.com/previous-versions/azure/dn194109(v=azure.100)>).
    pub fn address_taken(&self, value: &str, except_id: Option<&str>) -> bool {
        let smtp = format!("smtp:{value}");
        let pred = |o: &Obj| {
            !o.deleted
                && !except_id.is_some_and(|id| o.id().eq_ignore_ascii_case(id))
                && obj_has_address(o, value, &smtp)
        };
        let scan = || self.users.iter().chain(self.groups.iter()).any(pred);
        if !self.idx.built {
            return scan();
        }
        let found = self
            .idx
            .addresses
            .get(&value.to_ascii_lowercase())
            .is_some_and(|c| {
                c.iter().any(|&(user, i)| {
                    let list = if user { &self.users } else { &self.groups };
                    list.get(i).is_some_and(pred)
                })
            });
        debug_assert_eq!(found, scan(), "address index");
        found
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

/// `mail` also becomes the primary SMTP proxy address
/// (docs/graph-behaviour.md#user-property-rules).
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user(upn: &str, mail: &str) -> Value {
        json!({"userPrincipalName": upn, "mail": mail, "assignedLicenses": [{"skuId": "SKU-A"}]})
    }

    /// Every lookup also runs the full scan under `debug_assert`, so this checks the indexes
    /// after each kind of mutation.
    #[test]
    fn indexes_follow_every_mutation() {
        let mut tenant = TenantState::from_seed(&Seed::default());
        let a = tenant.insert_user(user("a@x.test", "a@x.test"), 0);
        let b = tenant.insert_user(user("b@x.test", "b@x.test"), 0);
        let g = tenant.insert_group(
            json!({"mailNickname": "team", "groupTypes": ["Unified"], "members": ["A@X.test"]}),
            0,
        );
        assert_eq!(tenant.user_index_any("A@x.TEST"), Some(0));
        assert_eq!(tenant.user_index_any(&b.to_uppercase()), Some(1));
        assert_eq!(tenant.groups[0].members, vec![a.clone()]);
        assert_eq!(tenant.consumed_units("sku-a"), 2);
        assert!(tenant.unified_nick_taken("TEAM", None));
        assert!(!tenant.unified_nick_taken("team", Some(&g)));

        // UPN and mail change.
        tenant.users[0]
            .props
            .insert("userPrincipalName".into(), json!("a2@x.test"));
        tenant.users[0]
            .props
            .insert("mail".into(), json!("a2@x.test"));
        add_mail_proxy(&mut tenant.users[0].props);
        tenant.index_user(0);
        assert_eq!(tenant.user_index_any("a@x.test"), None);
        assert_eq!(tenant.user_index_any("a2@x.test"), Some(0));
        assert!(tenant.address_taken("A2@x.test", None));
        assert!(
            tenant.address_taken("a@x.test", None),
            "old primary stays a proxy address"
        );
        assert!(!tenant.address_taken("a2@x.test", Some(&a)));

        // Soft delete, licenses, restore.
        tenant.set_user_deleted(1, true);
        assert_eq!(tenant.live_user_count(), 1);
        assert_eq!(tenant.consumed_units("SKU-A"), 1);
        assert_eq!(tenant.deleted_user_index(&b), Some(1));
        assert!(
            !tenant.upn_taken("b@x.test", None),
            "a deleted user holds no UPN"
        );
        tenant.set_user_licenses(0, vec![json!({"skuId": "SKU-B"})]);
        assert_eq!(tenant.consumed_units("SKU-A"), 0);
        assert_eq!(tenant.consumed_units("sku-b"), 1);
        tenant.set_user_deleted(1, false);
        assert_eq!(tenant.consumed_units("SKU-A"), 1);

        // Hard delete shifts positions.
        tenant.remove_user(0);
        assert_eq!(tenant.user_index_any("b@x.test"), Some(0));
        assert_eq!(tenant.user_exact(&a), None);
        assert_eq!(tenant.live_user_count(), 1);

        // State-file round trip: scans until rebuilt, then indexed.
        let mut loaded: TenantState =
            serde_json::from_value(serde_json::to_value(&tenant).unwrap_or(Value::Null))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.user_index_any("B@X.TEST"), Some(0));
        loaded.rebuild_indexes();
        assert_eq!(loaded.user_index_any("B@X.TEST"), Some(0));
        assert_eq!(loaded.group_index_all(&g), Some(0));
        assert_eq!(loaded.consumed_units("sku-a"), 1);
        assert_eq!(loaded.live_user_count(), 1);
        loaded.remove_group(0);
        assert_eq!(loaded.group_index_all(&g), None);
    }
}
