//! Group and membership operations (docs/graph-behaviour.md#creating-groups, #group-membership,
//! #uncertain-creates).

use reqwest::Method;
use serde_json::{Value, json};

use crate::adopt::{CREATED_DATE_TIME, CreateStarted, Found, not_ours};
use crate::answer_times::WhenLate;
use crate::client::{GraphClient, Pager};
use crate::error::GraphError;
use crate::models::{
    AddMembersOutcome, DirectoryObject, Group, NewGroup, Patch, directory_object_url,
};
use crate::odata::{MAX_BIND, Query, encode_path_segment as seg, filter_eq};
use crate::users::PAGE_SIZE;

const GROUP_SELECT: &[&str] = &[
    "id",
    "displayName",
    "mailNickname",
    "description",
    "mailEnabled",
    "securityEnabled",
    "groupTypes",
    CREATED_DATE_TIME,
];

/// What the look-up after an uncertain group create found.
enum Lookup {
    /// The group this create made.
    Ours(Group),
    /// Nothing: the create did not land; posting again is safe.
    Absent,
    /// The look-up failed, or found only a group that existed before (a conflict).
    Failed(GraphError),
}

impl GraphClient {
    /// `GET /groups/{id}`; `None` when it does not exist.
    pub async fn get_group(&self, id: &str) -> Result<Option<Group>, GraphError> {
        let q = Query::new().select(GROUP_SELECT);
        self.get_optional(&format!("/groups/{}{}", seg(id), q.to_query_string()))
            .await
    }

    /// Every group whose displayName equals `name`. displayName is not unique: zero, one or
    /// many results come back and the caller decides.
    pub async fn find_groups_by_display_name(&self, name: &str) -> Result<Vec<Group>, GraphError> {
        self.find_groups_by("displayName", name).await
    }

    /// Groups whose mailNickname equals `nickname` (unique among Microsoft 365 groups only).
    pub async fn find_groups_by_mail_nickname(
        &self,
        nickname: &str,
    ) -> Result<Vec<Group>, GraphError> {
        self.find_groups_by("mailNickname", nickname).await
    }

    async fn find_groups_by(&self, attribute: &str, value: &str) -> Result<Vec<Group>, GraphError> {
        let q = Query::new()
            .filter(filter_eq(attribute, value))
            .select(GROUP_SELECT)
            .top(PAGE_SIZE);
        self.get_all(&format!("/groups{}", q.to_query_string()))
            .await
    }

    /// Every group, a page at a time.
    pub fn list_groups<S: AsRef<str>>(&self, select: &[S]) -> Pager<Group> {
        let q = Query::new().select(select).top(PAGE_SIZE);
        Pager::new(self.clone(), &format!("/groups{}", q.to_query_string()))
    }

    /// `POST /groups`. Up to 20 initial members are bound in the create request; the rest are
    /// added afterwards. After a timeout or 5xx the group is looked up by mailNickname and
    /// displayName (with replication retries) before posting again; only a group whose
    /// `createdDateTime` shows this call made it is adopted (see `shared/graph/src/adopt.rs`).
    /// Creates a group an earlier run may already have created (it sent the create at
    /// `earlier_attempt`, Unix ms, and stopped before recording the answer): the group is
    /// looked for first, waiting out replication lag, and adopted if it was created since then;
    /// otherwise it is created.
    pub async fn create_group_resuming(
        &self,
        group: &NewGroup,
        earlier_attempt: i64,
    ) -> Result<Group, GraphError> {
        let started = CreateStarted::at_unix_millis(earlier_attempt);
        match self.find_created_group(group, started).await {
            Lookup::Ours(g) => {
                tracing::info!(group = %group.display_name, id = %g.id, "adopting the group an earlier, interrupted run created");
                Ok(g)
            }
            Lookup::Absent => self.create_group(group).await,
            Lookup::Failed(e) => Err(e),
        }
    }

    pub async fn create_group(&self, group: &NewGroup) -> Result<Group, GraphError> {
        let mut first = group.clone();
        let rest: Vec<String> = if first.members.len() > MAX_BIND {
            first.members.split_off(MAX_BIND)
        } else {
            Vec::new()
        };
        first.owners.truncate(MAX_BIND);
        let body = first.to_body(self.graph_base());
        let started = CreateStarted::now();
        let mut backoff = self.settings().transient_retry.backoff();
        let created = loop {
            let mut call = self.call(Method::POST, "/groups", Some(body.clone()));
            call.retry_transient = false;
            // A late answer is an uncertain create: looked up below.
            call.when_late = WhenLate::GiveUp;
            match self.send_json::<Group>(call).await {
                Ok(g) => break g,
                Err(e @ GraphError::Transient { .. }) => {
                    tracing::warn!(group = %group.display_name, error = %e, "group create may or may not have landed; looking it up");
                    match self.find_created_group(group, started).await {
                        Lookup::Ours(g) => break g,
                        Lookup::Absent => {}
                        Lookup::Failed(le) if le.is_retryable() => {
                            // Cannot tell whether it landed: a re-post could duplicate it.
                            tracing::warn!(group = %group.display_name, error = %le, "cannot look the group up; not re-posting");
                            return Err(e);
                        }
                        Lookup::Failed(le) => return Err(le),
                    }
                    match backoff.next() {
                        Some(d) => {
                            self.inner.stats.count_retry();
                            tokio::time::sleep(d).await;
                        }
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        };
        if !rest.is_empty() {
            let outcome = self.add_group_members(&created.id, &rest).await?;
            if let Some((_, e)) = outcome.failed.into_iter().next() {
                return Err(e);
            }
        }
        Ok(created)
    }

    /// Looks for the group an uncertain create may have made: same mailNickname and
    /// displayName, created since `started`. The new group may not be visible yet, so while
    /// only older namesakes (or nothing) are visible the look-up is retried per
    /// `replication_retry`. After that, an older namesake is a conflict naming it.
    async fn find_created_group(&self, group: &NewGroup, started: CreateStarted) -> Lookup {
        let older: std::sync::Mutex<Option<Group>> = std::sync::Mutex::new(None);
        let lookup = || async {
            let found = self
                .find_groups_by_mail_nickname(&group.mail_nickname)
                .await?;
            let (ours, theirs): (Vec<Group>, Vec<Group>) = found
                .into_iter()
                .filter(|g| g.display_name.as_deref() == Some(group.display_name.as_str()))
                .partition(|g| started.covers(g.created_date_time.as_deref()));
            if let Some(g) = ours.into_iter().next() {
                return Ok(g);
            }
            if let Some(g) = theirs.into_iter().next()
                && let Ok(mut slot) = older.lock()
            {
                *slot = Some(g);
            }
            Err(GraphError::NotFound {
                ctx: Box::new(crate::error::ErrorContext {
                    method: "GET".into(),
                    path: "/groups".into(),
                    status: Some(404),
                    message: "the group this create made is not (yet) visible".into(),
                    ..Default::default()
                }),
            })
        };
        match self.with_replication_retry(lookup).await {
            Ok(g) => Lookup::Ours(g),
            Err(GraphError::NotFound { .. }) => {
                match older.into_inner().unwrap_or_else(|e| e.into_inner()) {
                    Some(g) => Lookup::Failed(not_ours(
                        Found::Group,
                        &group.display_name,
                        &g.id,
                        g.created_date_time.as_deref(),
                        started,
                    )),
                    None => Lookup::Absent,
                }
            }
            Err(e) => Lookup::Failed(e),
        }
    }

    /// `PATCH /groups/{id}` with only the given properties.
    pub async fn update_group(&self, id: &str, patch: &Patch) -> Result<(), GraphError> {
        if patch.is_empty() {
            return Ok(());
        }
        let path = format!("/groups/{}", seg(id));
        let body = Value::Object(patch.0.clone());
        // Not retried on 404: PATCH is not a reference operation, and a missing object is far
        // more often really missing than still replicating (callers patch linked objects).
        self.send_no_content(self.call(Method::PATCH, &path, Some(body)))
            .await
    }

    /// `DELETE /groups/{id}`.
    pub async fn delete_group(&self, id: &str) -> Result<(), GraphError> {
        let path = format!("/groups/{}", seg(id));
        self.send_no_content(self.call(Method::DELETE, &path, None))
            .await
    }

    /// Direct members of a group, a page (≤ 999) at a time.
    pub fn list_group_members<S: AsRef<str>>(
        &self,
        id: &str,
        select: &[S],
    ) -> Pager<DirectoryObject> {
        let q = Query::new().select(select).top(PAGE_SIZE);
        Pager::new(
            self.clone(),
            &format!("/groups/{}/members{}", seg(id), q.to_query_string()),
        )
    }

    /// `POST /groups/{id}/members/$ref`. `Ok(true)` when added, `Ok(false)` when already a
    /// member. Retried while the group or member is still replicating.
    pub async fn add_group_member(
        &self,
        group_id: &str,
        member_id: &str,
    ) -> Result<bool, GraphError> {
        let path = format!("/groups/{}/members/$ref", seg(group_id));
        let body = json!({ "@odata.id": directory_object_url(self.graph_base(), member_id) });
        let r = self
            .with_replication_retry(|| {
                self.send_no_content(self.call(Method::POST, &path, Some(body.clone())))
            })
            .await;
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.is_reference_already_present() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds many members: `members@odata.bind` in PATCHes of 20 (all-or-nothing per chunk);
    /// a chunk refused with 400/404 (one member already there, one missing) falls back to
    /// single adds so the others still land. Already-members count as success.
    /// Permission and throttling failures that outlast the retries stop the whole call.
    pub async fn add_group_members(
        &self,
        group_id: &str,
        member_ids: &[String],
    ) -> Result<AddMembersOutcome, GraphError> {
        let mut ids: Vec<String> = Vec::with_capacity(member_ids.len());
        for id in member_ids {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        let path = format!("/groups/{}", seg(group_id));
        let mut outcome = AddMembersOutcome::default();
        for chunk in ids.chunks(MAX_BIND) {
            let binds: Vec<Value> = chunk
                .iter()
                .map(|id| Value::String(directory_object_url(self.graph_base(), id)))
                .collect();
            let body = json!({ "members@odata.bind": binds });
            let r = self
                .with_replication_retry(|| {
                    self.send_no_content(self.call(Method::PATCH, &path, Some(body.clone())))
                })
                .await;
            match r {
                Ok(()) => outcome.added.extend(chunk.iter().cloned()),
                Err(e) if matches!(e.status(), Some(400 | 404)) => {
                    tracing::info!(group = group_id, error = %e, "bulk member add refused; adding one by one");
                    for id in chunk {
                        match self.add_group_member(group_id, id).await {
                            Ok(true) => outcome.added.push(id.clone()),
                            Ok(false) => outcome.already_members.push(id.clone()),
                            Err(e) if matches!(e, GraphError::PermissionDenied { .. }) => {
                                return Err(e);
                            }
                            Err(e) => outcome.failed.push((id.clone(), e)),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(outcome)
    }

    /// `DELETE /groups/{id}/members/{member}/$ref`. `Ok(true)` when removed, `Ok(false)` when it
    /// was not a member (404 or "removed object references do not exist").
    pub async fn remove_group_member(
        &self,
        group_id: &str,
        member_id: &str,
    ) -> Result<bool, GraphError> {
        let path = format!("/groups/{}/members/{}/$ref", seg(group_id), seg(member_id));
        match self
            .send_no_content(self.call(Method::DELETE, &path, None))
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.is_reference_absent() => Ok(false),
            Err(e) => Err(e),
        }
    }
}
