//! `GraphDirectory`: the Graph client as the engine's [`Directory`] port.
//!
//! # Which path each operation takes, and why
//!
//! Batching never lowers Graph's cost (docs/graph-behaviour.md#json-batching: 20 writes in a
//! `$batch` are 20 writes), so the number of *Graph requests* is the same either way; what `$batch`
//! saves is HTTP round trips, i.e. latency per concurrency slot, which is what lets a run keep the
//! write quota busy. It costs nothing in correctness only where the client adds no logic around the
//! request. So:
//!
//! | op | path | why |
//! |---|---|---|
//! | `CreateUser` | `create_user` | after a 5xx or timeout the client looks the UPN up before re-posting (docs/graph-behaviour.md#uncertain-creates); a batch item answered 5xx cannot be re-sent safely, and the password goes only through the typed `passwordProfile` |
//! | `CreateGroup` | `create_group` | same: look-up by mailNickname + displayName before re-posting (displayName is not unique, so a blind re-post could duplicate) |
//! | `AddMembers` | `members@odata.bind` PATCHes of 20 (own loop, see below) | a single member already present refuses the whole chunk (docs/graph-behaviour.md#group-membership) |
//! | `UpdateUser`, `DeleteUser`, `DeleteGroup` | `$batch` | plain single requests; PATCH/DELETE items are re-sent by the batch only on 429/5xx, which is safe for them |
//! | `RemoveMember`, `RemoveManager` | `$batch` | the client's "not a member"/"no manager" rule is a classification of the answer (`is_reference_absent`, 404), applied here to the item; the dedicated `remove_manager` cannot even tell `Done` from `AlreadyDone` |
//! | `SetManager`, `AssignLicenses` | `$batch`, then the client's `set_manager` / `assign_license` for items refused as replication lag | a reference to an object that is not visible yet is refused *without effect*, so re-sending is safe; the dedicated methods retry with backoff (docs/graph-behaviour.md#replication-lag). Objects that are not new (the common case) cost one batched request and no extra round trip |
//!
//! Batches are ≤ 20 items, built by this adapter (one `GraphClient::batch` call per chunk) so that
//! a failed envelope fails only its own items, never the whole `apply`. Items that POST
//! (`assignLicense`) travel in envelopes of their own, because an envelope holding a POST is not
//! re-sent after a transient failure while the others are. All chunks and dedicated operations run
//! concurrently; the client's semaphore and pacer bound what is actually in flight.
//!
//! `AddMembers` PATCHes 20 references at a time. A chunk refused because a member is already
//! there provably added nothing (all-or-nothing), so the adapter reads the group's membership once
//! (a read: no write quota), drops the members already present from this and every later chunk
//! and PATCHes again; this costs one refused write where the client's fallback (single adds for the
//! whole chunk) costs up to 20. Chunks refused for another 400/404 (a member that does not exist)
//! fall back to the client's single adds, which isolate the bad member and retry replication lag.
//!
//! Deleting an object that is already gone (404) is `AlreadyDone`: the tenant is in the requested
//! state. Writes are re-sent only when the first attempt provably did not apply (429, replication
//! lag, an all-or-nothing refusal) or when the request is idempotent (the client's own PATCH/PUT/
//! DELETE retries on 5xx).

use std::collections::{BTreeMap, HashSet, VecDeque};

use async_trait::async_trait;
use futures::StreamExt;
use m365_core::directory::{ChangesRequest, ObservedObject, Removal, TenantChanges};
use m365_core::{
    Directory, DirectoryCounters, DirectoryError, DirectoryOp, DirectoryResult, FailureKind,
    LicenseAssignment, OpOutcome, TenantDomain, TenantGroup, TenantSku, TenantUser,
};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};

use crate::answered::with_request_id;
use crate::batch::{BatchRequest, BatchResponse};
use crate::client::{Collection, GraphClient};
use crate::delta::{DeltaCollection, DeltaObject, DeltaRemoval, DeltaRound};
use crate::error::GraphError;
use crate::models::{AssignedLicense, NewGroup, NewUser, PasswordProfile, directory_object_url};
use crate::odata::{
    MAX_BATCH, MAX_BIND, MAX_EQ_VALUE_CHARS, MAX_IN_VALUES, Query, encode_path_segment as seg,
    filter_in, is_valid_attribute,
};
use crate::users::PAGE_SIZE;

/// Properties `POST /users` cannot do without (docs/graph-behaviour.md#creating-users).
const REQUIRED_USER_PROPERTIES: &[&str] = &[
    "accountEnabled",
    "displayName",
    "mailNickname",
    "userPrincipalName",
];

/// The Graph client behind the [`Directory`] port.
#[derive(Debug, Clone)]
pub struct GraphDirectory {
    client: GraphClient,
}

impl GraphDirectory {
    pub fn new(client: GraphClient) -> Self {
        GraphDirectory { client }
    }

    /// The client (for what the port does not cover: SKUs, organization, connection tests).
    pub fn client(&self) -> &GraphClient {
        &self.client
    }

    fn width(&self) -> usize {
        self.client.settings().concurrency.max(1)
    }
}

// ---- error mapping ---------------------------------------------------------------------------

/// `GraphError` → `DirectoryError`. The message is the client's Display, which names the
/// request (method, path, status, Graph's code and message, request-id) and never holds a token,
/// secret or query string.
pub(crate) fn directory_error(e: &GraphError) -> DirectoryError {
    let kind = match e {
        GraphError::Conflict { .. } => FailureKind::Conflict,
        GraphError::NotFound { .. } => FailureKind::NotFound,
        GraphError::InvalidValue { .. } => FailureKind::InvalidValue,
        GraphError::NoLicenseSeats { .. } => FailureKind::NoLicenseSeats,
        GraphError::MissingUsageLocation { .. } => FailureKind::MissingUsageLocation,
        GraphError::PermissionDenied { .. } => FailureKind::PermissionDenied,
        GraphError::Throttled { .. } => FailureKind::Throttled,
        GraphError::Transient { .. } => FailureKind::Transient,
        // Even an unavailable token endpoint stops the run: nothing else can succeed either.
        GraphError::Unauthorized { .. } | GraphError::Auth(_) => FailureKind::Authentication,
        GraphError::BadRequest { .. } | GraphError::Config(_) | GraphError::Decode { .. } => {
            FailureKind::Other
        }
    };
    DirectoryError {
        kind,
        property: e.property().map(str::to_string),
        message: e.to_string(),
    }
}

fn invalid_input(property: &str, message: String) -> DirectoryError {
    DirectoryError {
        kind: FailureKind::InvalidValue,
        property: Some(property.to_string()),
        message,
    }
}

// ---- operations as batch items ---------------------------------------------------------------

/// What a batched item was, to read its answer (and fall back on replication lag).
#[derive(Debug)]
enum Batched {
    Write,
    Delete,
    AssignLicenses {
        id: String,
        add: Vec<AssignedLicense>,
        remove: Vec<String>,
    },
    SetManager {
        id: String,
        manager_id: String,
    },
    RemoveManager,
    RemoveMember,
    Restore {
        id: String,
    },
}

/// Where one op goes.
enum Route {
    Batch(BatchRequest, Batched),
    Dedicated(DirectoryOp),
    Settled(DirectoryResult<OpOutcome>),
}

fn licenses(add: &[LicenseAssignment]) -> Vec<AssignedLicense> {
    add.iter()
        .map(|l| AssignedLicense {
            sku_id: l.sku_id.clone(),
            disabled_plans: l.disabled_plans.clone(),
        })
        .collect()
}

fn json_request(id: String, method: Method, url: String, body: Value) -> BatchRequest {
    BatchRequest::new(id, method, url)
        .with_header("Content-Type", "application/json")
        .with_body(body)
}

impl GraphDirectory {
    fn route(&self, index: usize, op: DirectoryOp) -> Route {
        let id = index.to_string();
        match op {
            DirectoryOp::UpdateUser {
                id: user,
                properties,
            } => {
                if properties.is_empty() {
                    return Route::Settled(Ok(OpOutcome::AlreadyDone));
                }
                let body = Value::Object(properties.into_iter().collect());
                Route::Batch(
                    json_request(id, Method::PATCH, format!("/users/{}", seg(&user)), body),
                    Batched::Write,
                )
            }
            DirectoryOp::DeleteUser { id: user } => Route::Batch(
                BatchRequest::new(id, Method::DELETE, format!("/users/{}", seg(&user))),
                Batched::Delete,
            ),
            // https://learn.microsoft.com/graph/api/directory-deleteditems-restore (no body).
            DirectoryOp::RestoreUser { id: user } => Route::Batch(
                BatchRequest::new(
                    id,
                    Method::POST,
                    format!("/directory/deletedItems/{}/restore", seg(&user)),
                ),
                Batched::Restore { id: user },
            ),
            DirectoryOp::DeleteGroup { id: group } => Route::Batch(
                BatchRequest::new(id, Method::DELETE, format!("/groups/{}", seg(&group))),
                Batched::Delete,
            ),
            DirectoryOp::AssignLicenses {
                id: user,
                add,
                remove,
            } => {
                if add.is_empty() && remove.is_empty() {
                    return Route::Settled(Ok(OpOutcome::AlreadyDone));
                }
                let add = licenses(&add);
                // Both arrays are always sent (docs/graph-behaviour.md#licenses).
                let body = json!({ "addLicenses": add, "removeLicenses": remove });
                Route::Batch(
                    json_request(
                        id,
                        Method::POST,
                        format!("/users/{}/assignLicense", seg(&user)),
                        body,
                    ),
                    Batched::AssignLicenses {
                        id: user,
                        add,
                        remove,
                    },
                )
            }
            DirectoryOp::SetManager {
                id: user,
                manager_id,
            } => {
                let body = json!({
                    "@odata.id": format!("{}/users/{}", self.client.graph_base(), seg(&manager_id))
                });
                Route::Batch(
                    json_request(
                        id,
                        Method::PUT,
                        format!("/users/{}/manager/$ref", seg(&user)),
                        body,
                    ),
                    Batched::SetManager {
                        id: user,
                        manager_id,
                    },
                )
            }
            DirectoryOp::RemoveManager { id: user } => Route::Batch(
                BatchRequest::new(
                    id,
                    Method::DELETE,
                    format!("/users/{}/manager/$ref", seg(&user)),
                ),
                Batched::RemoveManager,
            ),
            DirectoryOp::RemoveMember {
                group_id,
                member_id,
            } => Route::Batch(
                BatchRequest::new(
                    id,
                    Method::DELETE,
                    format!(
                        "/groups/{}/members/{}/$ref",
                        seg(&group_id),
                        seg(&member_id)
                    ),
                ),
                Batched::RemoveMember,
            ),
            DirectoryOp::AddMembers { member_ids, .. } if member_ids.is_empty() => {
                Route::Settled(Ok(OpOutcome::AlreadyDone))
            }
            op @ (DirectoryOp::CreateUser { .. }
            | DirectoryOp::CreateGroup { .. }
            | DirectoryOp::AddMembers { .. }) => Route::Dedicated(op),
        }
    }

    /// One envelope (≤ 20 items): the answers, with replication-lag fallbacks done.
    async fn run_batch(
        &self,
        items: Vec<(usize, BatchRequest, Batched)>,
    ) -> Vec<(usize, DirectoryResult<OpOutcome>)> {
        let requests: Vec<BatchRequest> = items.iter().map(|(_, r, _)| r.clone()).collect();
        let responses = match self.client.batch(requests).await {
            Ok(r) => r,
            Err(e) => {
                // The envelope failed after the client's own retries: its items may or may not
                // have applied; each is reported with that error (retryable when it is).
                let err = directory_error(&e);
                return items
                    .into_iter()
                    .map(|(i, _, _)| (i, Err(err.clone())))
                    .collect();
            }
        };
        let answered = items.into_iter().zip(responses);
        futures::stream::iter(answered)
            .map(|((i, _, kind), resp)| async move { (i, self.read_item(kind, &resp).await) })
            .buffer_unordered(MAX_BATCH)
            .collect()
            .await
    }

    async fn read_item(&self, kind: Batched, resp: &BatchResponse) -> DirectoryResult<OpOutcome> {
        let Some(e) = resp.error() else {
            return Ok(OpOutcome::Done);
        };
        match kind {
            Batched::Delete | Batched::RemoveManager if e.status() == Some(404) => {
                Ok(OpOutcome::AlreadyDone)
            }
            Batched::RemoveMember if e.is_reference_absent() => Ok(OpOutcome::AlreadyDone),
            // Not in the deleted items: restored already (an earlier run stopped before
            // recording it) when the user is live, else gone for good.
            Batched::Restore { id } if e.status() == Some(404) => {
                match self.client.get_user(&id, &["id"]).await {
                    Ok(Some(_)) => Ok(OpOutcome::AlreadyDone),
                    Ok(None) => Err(directory_error(&e)),
                    Err(lookup) => Err(directory_error(&lookup)),
                }
            }
            Batched::AssignLicenses { id, add, remove } if e.is_replication_lag() => {
                // Refused without effect; the client's method retries with backoff
                // (docs/graph-behaviour.md#replication-lag).
                self.pause_for_replication().await;
                match self.client.assign_license(&id, &add, &remove).await {
                    Ok(_) => Ok(OpOutcome::Done),
                    Err(e) => Err(directory_error(&e)),
                }
            }
            Batched::SetManager { id, manager_id } if e.is_replication_lag() => {
                self.pause_for_replication().await;
                match self.client.set_manager(&id, &manager_id).await {
                    Ok(()) => Ok(OpOutcome::Done),
                    Err(e) => Err(directory_error(&e)),
                }
            }
            _ => Err(directory_error(&e)),
        }
    }

    /// The first replication-retry delay, so the fallback's first attempt is not wasted on an
    /// object that was invisible a moment ago.
    async fn pause_for_replication(&self) {
        tokio::time::sleep(self.client.settings().replication_retry.base_delay).await;
    }

    // ---- dedicated operations ----------------------------------------------------------------

    async fn run_dedicated(&self, op: DirectoryOp) -> DirectoryResult<OpOutcome> {
        match op {
            DirectoryOp::CreateUser {
                properties,
                password,
                force_change_password,
            } => {
                let user = new_user(properties, password.expose_secret(), force_change_password)?;
                match self.client.create_user(&user).await {
                    Ok(u) => Ok(OpOutcome::Created { id: u.id }),
                    Err(e) => Err(directory_error(&e)),
                }
            }
            DirectoryOp::CreateGroup {
                display_name,
                mail_nickname,
                kind,
                description,
                earlier_attempt,
            } => {
                let mut group = match kind {
                    m365_core::GroupKind::Security => {
                        NewGroup::security(display_name, mail_nickname)
                    }
                    m365_core::GroupKind::Microsoft365 => {
                        NewGroup::microsoft365(display_name, mail_nickname)
                    }
                };
                group.description = description;
                let created = match earlier_attempt {
                    Some(at) => self.client.create_group_resuming(&group, at).await,
                    None => self.client.create_group(&group).await,
                };
                match created {
                    Ok(g) => Ok(OpOutcome::Created { id: g.id }),
                    Err(e) => Err(directory_error(&e)),
                }
            }
            DirectoryOp::AddMembers {
                group_id,
                member_ids,
            } => self.add_members(&group_id, &member_ids).await,
            // `route` sends every other op to a batch.
            _ => Err(missing_result()),
        }
    }

    /// `members@odata.bind` PATCH of one chunk (≤ 20), retried while the group or a member is
    /// still replicating (a refusal adds nothing, so the re-send is safe).
    async fn patch_members(&self, group_id: &str, chunk: &[String]) -> Result<(), GraphError> {
        let path = format!("/groups/{}", seg(group_id));
        let binds: Vec<Value> = chunk
            .iter()
            .map(|id| Value::String(directory_object_url(self.client.graph_base(), id)))
            .collect();
        let body = json!({ "members@odata.bind": binds });
        self.client
            .with_replication_retry(|| {
                self.client.send_no_content(self.client.call(
                    Method::PATCH,
                    &path,
                    Some(body.clone()),
                ))
            })
            .await
    }

    async fn member_set(&self, group_id: &str) -> Result<HashSet<String>, GraphError> {
        let members = self
            .client
            .list_group_members(group_id, &["id"])
            .collect_all()
            .await?;
        Ok(members
            .into_iter()
            .map(|m| m.id.to_ascii_lowercase())
            .collect())
    }

    async fn add_members(
        &self,
        group_id: &str,
        member_ids: &[String],
    ) -> DirectoryResult<OpOutcome> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut queue: VecDeque<String> = member_ids
            .iter()
            .filter(|id| seen.insert(id.to_ascii_lowercase()))
            .cloned()
            .collect();
        let total = queue.len();
        let mut present: Option<HashSet<String>> = None;
        let mut added = 0usize;
        let mut failed: Vec<(String, GraphError)> = Vec::new();
        while !queue.is_empty() {
            let mut chunk: Vec<String> = Vec::with_capacity(MAX_BIND);
            while chunk.len() < MAX_BIND {
                let Some(id) = queue.pop_front() else { break };
                let known = present
                    .as_ref()
                    .is_some_and(|p| p.contains(&id.to_ascii_lowercase()));
                if !known {
                    chunk.push(id);
                }
            }
            if chunk.is_empty() {
                continue;
            }
            match self.patch_members(group_id, &chunk).await {
                Ok(()) => added += chunk.len(),
                Err(e) if e.is_reference_already_present() && present.is_none() => {
                    tracing::info!(
                        group = group_id,
                        "bulk member add refused: some are members already; reading the membership once"
                    );
                    present = Some(
                        self.member_set(group_id)
                            .await
                            .map_err(|e| directory_error(&e))?,
                    );
                    for id in chunk.into_iter().rev() {
                        queue.push_front(id);
                    }
                }
                Err(e) if group_missing(&e, group_id) => return Err(directory_error(&e)),
                Err(e) if matches!(e.status(), Some(400 | 404)) => {
                    tracing::info!(group = group_id, error = %e, "bulk member add refused; adding one by one");
                    let singles: Vec<(String, Result<bool, GraphError>)> =
                        futures::stream::iter(chunk)
                            .map(|id| async move {
                                let r = self.client.add_group_member(group_id, &id).await;
                                (id, r)
                            })
                            .buffer_unordered(self.width())
                            .collect()
                            .await;
                    for (id, r) in singles {
                        match r {
                            Ok(true) => added += 1,
                            Ok(false) => {}
                            Err(e @ GraphError::PermissionDenied { .. }) => {
                                return Err(directory_error(&e));
                            }
                            Err(e) => failed.push((id, e)),
                        }
                    }
                }
                Err(e) => return Err(directory_error(&e)),
            }
        }
        if let Some((member, e)) = failed.first() {
            let mut err = directory_error(e);
            err.message = format!(
                "{} of {total} members could not be added to group {group_id} (the others are members now); first: member {member}: {}",
                failed.len(),
                err.message
            );
            return Err(err);
        }
        Ok(if added == 0 {
            OpOutcome::AlreadyDone
        } else {
            OpOutcome::Done
        })
    }
}

/// A 404 naming the group itself: single adds would only fail again, once per member.
fn group_missing(e: &GraphError, group_id: &str) -> bool {
    e.status() == Some(404)
        && e.context().is_some_and(|c| {
            c.message
                .to_ascii_lowercase()
                .contains(&group_id.to_ascii_lowercase())
        })
}

fn missing_result() -> DirectoryError {
    DirectoryError::new(
        FailureKind::Other,
        "internal: the directory adapter produced no result for this operation",
    )
}

/// The `POST /users` body: the mapped properties plus `passwordProfile`. Missing required
/// properties are refused here, before any request, naming the property.
fn new_user(
    properties: BTreeMap<String, Value>,
    password: &str,
    force_change_password: bool,
) -> DirectoryResult<NewUser> {
    if let Some(p) = REQUIRED_USER_PROPERTIES
        .iter()
        .find(|p| properties.get(**p).is_none_or(Value::is_null))
    {
        return Err(invalid_input(
            p,
            format!("POST /users: the required property {p} is missing; map it in the rule"),
        ));
    }
    let mut body: Map<String, Value> = properties.into_iter().collect();
    // A placeholder, so that no error below can ever quote the password.
    body.insert(
        "passwordProfile".into(),
        json!({ "password": "", "forceChangePasswordNextSignIn": force_change_password }),
    );
    let upn = body
        .get("userPrincipalName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut user: NewUser = serde_json::from_value(Value::Object(body)).map_err(|e| {
        // serde says what it expected; the password is not in this body yet.
        DirectoryError::new(
            FailureKind::InvalidValue,
            format!("POST /users for {upn}: a mapped property has the wrong type: {e}"),
        )
    })?;
    user.password_profile = PasswordProfile {
        password: password.to_string(),
        force_change_password_next_sign_in: force_change_password,
    };
    Ok(user)
}

fn tenant_user(obj: &Map<String, Value>, select: &[String]) -> Option<TenantUser> {
    let id = obj.get("id")?.as_str()?.to_string();
    let user_principal_name = obj
        .get("userPrincipalName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let properties = select
        .iter()
        .map(|p| (p.clone(), obj.get(p).cloned().unwrap_or(Value::Null)))
        .collect();
    Some(TenantUser {
        id,
        user_principal_name,
        properties,
    })
}

impl GraphDirectory {
    /// Reads one `in` chunk's answer, following `@odata.nextLink` if the chunk matched more
    /// than a page (a non-unique match attribute).
    async fn collect_users(
        &self,
        resp: &BatchResponse,
        select: &[String],
    ) -> Result<Vec<TenantUser>, GraphError> {
        let mut page: Collection<Value> = resp.json()?;
        let mut out = Vec::new();
        loop {
            out.extend(
                page.value
                    .iter()
                    .filter_map(Value::as_object)
                    .filter_map(|o| tenant_user(o, select)),
            );
            let Some(next) = page.next_link.take() else {
                break;
            };
            let call = self.client.call_absolute(&next)?;
            page = self.client.send_json(call).await?;
        }
        Ok(out)
    }

    /// One collection's delta round for [`Directory::read_changes`]; `None` when its select
    /// list is empty (the collection is not read).
    async fn delta_of(
        &self,
        collection: DeltaCollection,
        select: &[String],
        from: Option<&str>,
    ) -> Result<Option<DeltaRound>, GraphError> {
        if select.is_empty() {
            return Ok(None);
        }
        self.client
            .delta_round(collection, select, from)
            .await
            .map(Some)
    }
}

/// The rounds read as the port's changes: full when asked for or when a round restarted, the
/// restarts explained, each read collection's deltaLink as its cursor.
fn tenant_changes(
    asked_full: bool,
    users: Option<DeltaRound>,
    groups: Option<DeltaRound>,
) -> TenantChanges {
    let mut changes = TenantChanges {
        full: asked_full,
        ..TenantChanges::default()
    };
    let mut restarts: Vec<String> = Vec::new();
    for (collection, round) in [
        (DeltaCollection::Users, users),
        (DeltaCollection::Groups, groups),
    ] {
        let Some(round) = round else { continue };
        changes.full |= round.full;
        if let Some(reset) = &round.restarted {
            let one = match collection {
                DeltaCollection::Users => "user",
                DeltaCollection::Groups => "group",
            };
            restarts.push(format!(
                "the {} delta token {reset}; read every {one} again",
                collection.name()
            ));
        }
        let objects: Vec<ObservedObject> = round.objects.into_iter().map(observed).collect();
        match collection {
            DeltaCollection::Users => {
                changes.users = objects;
                changes.cursor.users = Some(round.delta_link);
            }
            DeltaCollection::Groups => {
                changes.groups = objects;
                changes.cursor.groups = Some(round.delta_link);
            }
        }
    }
    changes.restarted = (!restarts.is_empty()).then(|| restarts.join("; "));
    changes
}

fn observed(object: DeltaObject) -> ObservedObject {
    ObservedObject {
        id: object.id,
        removed: object.removed.map(|r| match r {
            DeltaRemoval::Changed => Removal::Restorable,
            DeltaRemoval::Deleted => Removal::Permanent,
        }),
        properties: object.properties,
        links: object.links,
    }
}

#[async_trait]
impl Directory for GraphDirectory {
    #[tracing::instrument(skip_all, fields(attribute, values = values.len()))]
    async fn find_users(
        &self,
        attribute: &str,
        values: &[String],
        select: &[String],
    ) -> DirectoryResult<Vec<TenantUser>> {
        if !is_valid_attribute(attribute) {
            return Err(invalid_input(
                attribute,
                format!("`{attribute}` is not a property name users can be matched on"),
            ));
        }
        if let Some(v) = values
            .iter()
            .find(|v| v.chars().count() > MAX_EQ_VALUE_CHARS)
        {
            return Err(invalid_input(
                attribute,
                format!(
                    "a {}-character {attribute} cannot be matched: Graph compares at most {MAX_EQ_VALUE_CHARS} characters",
                    v.chars().count()
                ),
            ));
        }
        let mut seen: HashSet<String> = HashSet::new();
        let unique: Vec<&String> = values
            .iter()
            .filter(|v| seen.insert(v.to_lowercase()))
            .collect();
        if unique.is_empty() {
            return Ok(Vec::new());
        }
        let mut fields: Vec<String> = vec!["id".into(), "userPrincipalName".into()];
        for s in select {
            if !fields.iter().any(|f| f.eq_ignore_ascii_case(s)) {
                fields.push(s.clone());
            }
        }
        let requests: Vec<BatchRequest> = unique
            .chunks(MAX_IN_VALUES)
            .enumerate()
            .map(|(i, chunk)| {
                let q = Query::new()
                    .filter(filter_in(attribute, chunk))
                    .select(&fields)
                    .top(PAGE_SIZE);
                BatchRequest::get(i.to_string(), format!("/users{}", q.to_query_string()))
            })
            .collect();
        let envelopes: Vec<Vec<BatchRequest>> =
            requests.chunks(MAX_BATCH).map(<[_]>::to_vec).collect();
        let answers: Vec<Result<Vec<TenantUser>, GraphError>> = futures::stream::iter(envelopes)
            .map(|env| async move {
                let mut out = Vec::new();
                for resp in self.client.batch(env).await? {
                    out.extend(self.collect_users(&resp, select).await?);
                }
                Ok(out)
            })
            .buffer_unordered(self.width())
            .collect()
            .await;
        let mut ids: HashSet<String> = HashSet::new();
        let mut users = Vec::new();
        for a in answers {
            for u in a.map_err(|e| directory_error(&e))? {
                if ids.insert(u.id.clone()) {
                    users.push(u);
                }
            }
        }
        Ok(users)
    }

    #[tracing::instrument(skip_all)]
    async fn find_groups_by_name(&self, display_name: &str) -> DirectoryResult<Vec<TenantGroup>> {
        let groups = self
            .client
            .find_groups_by_display_name(display_name)
            .await
            .map_err(|e| directory_error(&e))?;
        Ok(groups
            .into_iter()
            .map(|g| TenantGroup {
                display_name: g.display_name.unwrap_or_else(|| display_name.to_string()),
                group_types: g.group_types.unwrap_or_default(),
                security_enabled: g.security_enabled.unwrap_or(false),
                id: g.id,
            })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(group = group_id))]
    async fn group_members(&self, group_id: &str) -> DirectoryResult<Vec<String>> {
        let members = self
            .client
            .list_group_members(group_id, &["id"])
            .collect_all()
            .await
            .map_err(|e| directory_error(&e))?;
        Ok(members.into_iter().map(|m| m.id).collect())
    }

    #[tracing::instrument(skip_all)]
    async fn domains(&self) -> DirectoryResult<Vec<TenantDomain>> {
        let domains = self
            .client
            .domains()
            .await
            .map_err(|e| directory_error(&e))?;
        Ok(domains
            .into_iter()
            .map(|d| TenantDomain {
                verified: d.is_verified,
                federated: d.is_federated(),
                name: d.id,
            })
            .collect())
    }

    #[tracing::instrument(skip_all)]
    async fn subscribed_skus(&self) -> DirectoryResult<Vec<TenantSku>> {
        let skus = self
            .client
            .subscribed_skus()
            .await
            .map_err(|e| directory_error(&e))?;
        Ok(skus
            .into_iter()
            .map(|s| TenantSku {
                sku_id: s.sku_id,
                sku_part_number: s.sku_part_number.unwrap_or_default(),
            })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(users = ids.len()))]
    async fn restorable_users(&self, ids: &[String]) -> DirectoryResult<Vec<String>> {
        let client = &self.client;
        let answers: Vec<Result<Option<String>, GraphError>> = futures::stream::iter(ids.to_vec())
            .map(move |id| async move {
                let found = client.get_deleted_item(&id).await?;
                Ok(found.map(|_| id))
            })
            .buffer_unordered(self.width())
            .collect()
            .await;
        let mut out = Vec::new();
        for answer in answers {
            out.extend(answer.map_err(|e| directory_error(&e))?);
        }
        Ok(out)
    }

    async fn apply(&self, ops: Vec<DirectoryOp>) -> Vec<DirectoryResult<OpOutcome>> {
        self.apply_answered(ops)
            .await
            .into_iter()
            .map(|(result, _)| result)
            .collect()
    }

    #[tracing::instrument(skip_all, fields(ops = ops.len()))]
    async fn apply_answered(
        &self,
        ops: Vec<DirectoryOp>,
    ) -> Vec<(DirectoryResult<OpOutcome>, Option<String>)> {
        let mut results: Vec<Option<(DirectoryResult<OpOutcome>, Option<String>)>> =
            vec![None; ops.len()];
        // POST items apart: an envelope holding a POST is not re-sent after a transient failure.
        let mut posts: Vec<(usize, BatchRequest, Batched)> = Vec::new();
        let mut others: Vec<(usize, BatchRequest, Batched)> = Vec::new();
        let mut dedicated: Vec<(usize, DirectoryOp)> = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            match self.route(i, op) {
                Route::Batch(req, kind) if req.method == Method::POST => posts.push((i, req, kind)),
                Route::Batch(req, kind) => others.push((i, req, kind)),
                Route::Dedicated(op) => dedicated.push((i, op)),
                Route::Settled(r) => results[i] = Some((r, None)),
            }
        }
        let (n_batched, n_dedicated) = (posts.len() + others.len(), dedicated.len());
        let mut envelopes: Vec<Vec<(usize, BatchRequest, Batched)>> = Vec::new();
        for list in [others, posts] {
            let mut list = list.into_iter().peekable();
            while list.peek().is_some() {
                envelopes.push(list.by_ref().take(MAX_BATCH).collect());
            }
        }
        // Every envelope and dedicated operation is started at once: the client's limiter and
        // pacer bound the requests in flight, so an operation waiting out a Retry-After or a
        // replication delay holds no request slot and does not hold the others back.
        let width = envelopes.len().max(dedicated.len()).max(1);
        // Each answer with the request-id of its call: an envelope's for its items.
        let batched = futures::stream::iter(envelopes)
            .map(|env| async move {
                let (answers, id) = with_request_id(self.run_batch(env)).await;
                answers
                    .into_iter()
                    .map(|(i, r)| (i, (r, id.clone())))
                    .collect::<Vec<_>>()
            })
            .buffer_unordered(width)
            .flat_map(futures::stream::iter)
            .collect::<Vec<_>>();
        let singles = futures::stream::iter(dedicated)
            .map(|(i, op)| async move { (i, with_request_id(self.run_dedicated(op)).await) })
            .buffer_unordered(width)
            .collect::<Vec<_>>();
        let (batched, singles) = futures::join!(batched, singles);
        for (i, r) in batched.into_iter().chain(singles) {
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(r);
            }
        }
        let out: Vec<(DirectoryResult<OpOutcome>, Option<String>)> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| (Err(missing_result()), None)))
            .collect();
        let failed = out.iter().filter(|(r, _)| r.is_err()).count();
        tracing::debug!(
            batched = n_batched,
            dedicated = n_dedicated,
            failed,
            "directory operations applied"
        );
        out
    }

    /// Both collections' delta rounds, concurrently (docs/graph-behaviour.md#delta-queries): each
    /// from its stored deltaLink, or a full round when it has none or Graph no longer takes it.
    #[tracing::instrument(skip_all, fields(full = request.from.is_none()))]
    async fn read_changes(&self, request: ChangesRequest) -> DirectoryResult<TenantChanges> {
        let from = request.from.as_ref();
        let (users, groups) = futures::future::try_join(
            self.delta_of(
                DeltaCollection::Users,
                &request.user_select,
                from.and_then(|c| c.users.as_deref()),
            ),
            self.delta_of(
                DeltaCollection::Groups,
                &request.group_select,
                from.and_then(|c| c.groups.as_deref()),
            ),
        )
        .await
        .map_err(|e| directory_error(&e))?;
        Ok(tenant_changes(from.is_none(), users, groups))
    }

    fn counters(&self) -> DirectoryCounters {
        let s = self.client.stats();
        DirectoryCounters {
            requests: s.requests,
            writes: s.writes,
            throttled: s.throttled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorContext;
    use std::time::Duration;

    fn ctx(status: u16) -> Box<ErrorContext> {
        Box::new(ErrorContext {
            method: "POST".into(),
            path: "/users".into(),
            status: Some(status),
            message: "m".into(),
            ..ErrorContext::default()
        })
    }

    #[test]
    fn errors_map_to_failure_kinds_with_property() {
        let cases = vec![
            (
                GraphError::Conflict {
                    property: Some("userPrincipalName".into()),
                    ctx: ctx(400),
                },
                FailureKind::Conflict,
                Some("userPrincipalName"),
            ),
            (
                GraphError::InvalidValue {
                    property: Some("mailNickname".into()),
                    ctx: ctx(400),
                },
                FailureKind::InvalidValue,
                Some("mailNickname"),
            ),
            (
                GraphError::NotFound { ctx: ctx(404) },
                FailureKind::NotFound,
                None,
            ),
            (
                GraphError::NoLicenseSeats { ctx: ctx(400) },
                FailureKind::NoLicenseSeats,
                None,
            ),
            (
                GraphError::MissingUsageLocation { ctx: ctx(400) },
                FailureKind::MissingUsageLocation,
                None,
            ),
            (
                GraphError::PermissionDenied { ctx: ctx(403) },
                FailureKind::PermissionDenied,
                None,
            ),
            (
                GraphError::Throttled {
                    retry_after: Some(Duration::from_secs(1)),
                    ctx: ctx(429),
                },
                FailureKind::Throttled,
                None,
            ),
            (
                GraphError::Transient {
                    retry_after: None,
                    ctx: ctx(503),
                },
                FailureKind::Transient,
                None,
            ),
            (
                GraphError::Unauthorized { ctx: ctx(401) },
                FailureKind::Authentication,
                None,
            ),
            (
                GraphError::Auth(crate::AuthError::InvalidClientSecret {
                    client_id: "c".into(),
                }),
                FailureKind::Authentication,
                None,
            ),
            (
                GraphError::BadRequest { ctx: ctx(400) },
                FailureKind::Other,
                None,
            ),
            (GraphError::Config("x".into()), FailureKind::Other, None),
        ];
        for (e, kind, prop) in cases {
            let d = directory_error(&e);
            assert_eq!(d.kind, kind, "{e}");
            assert_eq!(d.property.as_deref(), prop, "{e}");
            assert_eq!(d.message, e.to_string());
        }
    }

    #[test]
    fn new_user_needs_the_required_properties_and_carries_the_password() {
        let mut p: BTreeMap<String, Value> = BTreeMap::new();
        p.insert("accountEnabled".into(), json!(true));
        p.insert("displayName".into(), json!("A"));
        p.insert("mailNickname".into(), json!("a"));
        let e = new_user(p.clone(), "Secret-1x", true).unwrap_err();
        assert_eq!(e.kind, FailureKind::InvalidValue);
        assert_eq!(e.property.as_deref(), Some("userPrincipalName"));
        p.insert("userPrincipalName".into(), json!("a@example.com"));
        p.insert("usageLocation".into(), json!("US"));
        p.insert("companyName".into(), json!("Contoso"));
        let u = new_user(p.clone(), "Secret-1x", false).unwrap();
        let v = serde_json::to_value(&u).unwrap();
        assert_eq!(v["passwordProfile"]["password"], "Secret-1x");
        assert_eq!(v["passwordProfile"]["forceChangePasswordNextSignIn"], false);
        assert_eq!(v["usageLocation"], "US");
        assert_eq!(v["companyName"], "Contoso");
        p.insert("accountEnabled".into(), json!("yes"));
        let e = new_user(p, "Secret-1x", true).unwrap_err();
        assert!(!e.message.contains("Secret-1x"));
    }
}
