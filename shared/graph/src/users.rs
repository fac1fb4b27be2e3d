//! User, license, manager and deleted-item operations (docs/graph-behaviour.md#creating-users,
//! #updating-users, #soft-delete-and-restore, #licenses, #manager, #replication-lag).

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::adopt::{CREATED_DATE_TIME, CreateStarted, Found, not_ours};
use crate::answer_times::WhenLate;
use crate::client::{GraphClient, Pager};
use crate::error::{ErrorContext, GraphError};
use crate::models::{
    AssignedLicense, DirectoryObject, LicenseDetail, NewUser, Patch, SubscribedSku, User,
};
use crate::odata::{
    MAX_EQ_VALUE_CHARS, MAX_IN_VALUES, Query, encode_path_segment as seg, filter_eq, filter_in,
    is_valid_attribute,
};

/// `$top` for list calls: Graph's maximum page size for users, groups and members.
pub const PAGE_SIZE: u32 = 999;

/// What an uncertain create reads of the user it finds: Graph's default user properties plus
/// those `NewUser` sets and `createdDateTime`, which decides whether it is adopted.
const ADOPT_USER_SELECT: &[&str] = &[
    "id",
    "userPrincipalName",
    "displayName",
    "mailNickname",
    "accountEnabled",
    "givenName",
    "surname",
    "mail",
    "jobTitle",
    "department",
    "usageLocation",
    "employeeId",
    "onPremisesImmutableId",
    CREATED_DATE_TIME,
];

/// The user an uncertain create found, if this create made it; else a conflict naming it.
fn adopt_user(found: User, upn: &str, started: CreateStarted) -> Result<User, GraphError> {
    let created = found.created_date_time.as_deref();
    if started.covers(created) {
        tracing::info!(user = upn, id = %found.id, "adopting the user the uncertain create made");
        Ok(found)
    } else {
        Err(not_ours(Found::User, upn, &found.id, created, started))
    }
}

impl GraphClient {
    /// `GET /users/{id | userPrincipalName}`; `None` when it does not exist (404).
    pub async fn get_user<S: AsRef<str>>(
        &self,
        id_or_upn: &str,
        select: &[S],
    ) -> Result<Option<User>, GraphError> {
        let q = Query::new().select(select);
        self.get_optional(&format!("/users/{}{}", seg(id_or_upn), q.to_query_string()))
            .await
    }

    /// Like [`get_user`](Self::get_user) but for an object just written: a 404 is retried as
    /// replication lag (per `replication_retry`) before it is reported as `NotFound`.
    pub async fn get_user_after_write<S: AsRef<str>>(
        &self,
        id_or_upn: &str,
        select: &[S],
    ) -> Result<User, GraphError> {
        let q = Query::new().select(select);
        let path = format!("/users/{}{}", seg(id_or_upn), q.to_query_string());
        self.with_replication_retry(|| self.get_json::<User>(&path))
            .await
    }

    /// Users whose `attribute` equals `value` (`$filter=attribute eq 'value'`). Zero, one or
    /// more results; never a 404.
    pub async fn find_users_by<S: AsRef<str>>(
        &self,
        attribute: &str,
        value: &str,
        select: &[S],
    ) -> Result<Vec<User>, GraphError> {
        check_filter_input(attribute, std::slice::from_ref(&value))?;
        let q = Query::new()
            .filter(filter_eq(attribute, value))
            .select(select)
            .top(PAGE_SIZE);
        self.get_all(&format!("/users{}", q.to_query_string()))
            .await
    }

    /// Bulk lookup: users whose `attribute` is any of `values`, with `in` filters of at most 15
    /// values per request (docs/graph-behaviour.md#queries-and-filters). Requests run concurrently
    /// within the client limit.
    pub async fn find_users_by_any<S: AsRef<str>>(
        &self,
        attribute: &str,
        values: &[String],
        select: &[S],
    ) -> Result<Vec<User>, GraphError> {
        check_filter_input(attribute, values)?;
        let mut unique: Vec<&String> = Vec::new();
        for v in values {
            if !unique.contains(&v) {
                unique.push(v);
            }
        }
        let select: Vec<String> = select.iter().map(|s| s.as_ref().to_string()).collect();
        let paths: Vec<String> = unique
            .chunks(MAX_IN_VALUES)
            .map(|chunk| {
                let q = Query::new()
                    .filter(filter_in(attribute, chunk))
                    .select(&select)
                    .top(PAGE_SIZE);
                format!("/users{}", q.to_query_string())
            })
            .collect();
        let width = self.settings().concurrency.max(1);
        let results: Vec<Result<Vec<User>, GraphError>> = futures::stream::iter(paths)
            .map(|p| async move { self.get_all::<User>(&p).await })
            .buffer_unordered(width)
            .collect()
            .await;
        let mut out = Vec::new();
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    /// `POST /users`. After a timeout or 5xx the user may exist anyway: it is looked up by UPN
    /// before posting again, and a UPN conflict on the re-post fetches the user the earlier
    /// attempt created. A user found either way is returned only if its `createdDateTime` shows
    /// this call made it (see `shared/graph/src/adopt.rs`); an older one is a `Conflict` naming it. No
    /// duplicates, and no take-over of somebody else's account.
    pub async fn create_user(&self, user: &NewUser) -> Result<User, GraphError> {
        let body = serde_json::to_value(user)
            .map_err(|e| GraphError::Config(format!("the new user cannot be serialised: {e}")))?;
        let upn = user.user_principal_name.as_str();
        let started = CreateStarted::now();
        let mut backoff = self.settings().transient_retry.backoff();
        let mut uncertain = false;
        loop {
            let mut call = self.call(Method::POST, "/users", Some(body.clone()));
            call.retry_transient = false;
            // A late answer is an uncertain create: looked up below.
            call.when_late = WhenLate::GiveUp;
            match self.send_json::<User>(call).await {
                Ok(u) => return Ok(u),
                Err(e @ GraphError::Transient { .. }) => {
                    uncertain = true;
                    tracing::warn!(user = upn, error = %e, "create may or may not have landed; looking the user up");
                    match self.get_user(upn, ADOPT_USER_SELECT).await {
                        Ok(Some(existing)) => return adopt_user(existing, upn, started),
                        Ok(None) => {}
                        Err(le) if le.is_retryable() => {}
                        Err(le) => return Err(le),
                    }
                    match backoff.next() {
                        Some(d) => {
                            self.inner.stats.count_retry();
                            tokio::time::sleep(d).await;
                        }
                        None => return Err(e),
                    }
                }
                Err(e @ GraphError::Conflict { .. }) if uncertain => {
                    // Our earlier attempt most likely created it; it may still be replicating.
                    tracing::info!(
                        user = upn,
                        "conflict after an uncertain create; fetching the existing user"
                    );
                    return match self.get_user_after_write(upn, ADOPT_USER_SELECT).await {
                        Ok(u) => adopt_user(u, upn, started),
                        Err(GraphError::NotFound { .. }) => Err(e),
                        Err(other) => Err(other),
                    };
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `PATCH /users/{id}` with only the properties in `patch`. An empty patch sends nothing.
    pub async fn update_user(&self, id_or_upn: &str, patch: &Patch) -> Result<(), GraphError> {
        if patch.is_empty() {
            return Ok(());
        }
        let body = Value::Object(patch.0.clone());
        let path = format!("/users/{}", seg(id_or_upn));
        // Not retried on 404: PATCH is not a reference operation, and a missing object is far
        // more often really missing than still replicating (callers patch linked objects).
        self.send_no_content(self.call(Method::PATCH, &path, Some(body)))
            .await
    }

    /// `DELETE /users/{id}` (soft delete: restorable for 30 days).
    pub async fn delete_user(&self, id_or_upn: &str) -> Result<(), GraphError> {
        let path = format!("/users/{}", seg(id_or_upn));
        self.send_no_content(self.call(Method::DELETE, &path, None))
            .await
    }

    /// Every user, a page (≤ 999) at a time, with the given `$select`.
    pub fn list_users<S: AsRef<str>>(&self, select: &[S]) -> Pager<User> {
        let q = Query::new().select(select).top(PAGE_SIZE);
        Pager::new(self.clone(), &format!("/users{}", q.to_query_string()))
    }

    /// Soft-deleted users (`/directory/deletedItems/microsoft.graph.user`), page by page.
    pub fn list_deleted_users<S: AsRef<str>>(&self, select: &[S]) -> Pager<User> {
        let q = Query::new().select(select).top(PAGE_SIZE);
        Pager::new(
            self.clone(),
            &format!(
                "/directory/deletedItems/microsoft.graph.user{}",
                q.to_query_string()
            ),
        )
    }

    /// Soft-deleted groups (Microsoft 365 groups; deleted security groups are gone for good).
    pub fn list_deleted_groups<S: AsRef<str>>(&self, select: &[S]) -> Pager<crate::models::Group> {
        let q = Query::new().select(select).top(PAGE_SIZE);
        Pager::new(
            self.clone(),
            &format!(
                "/directory/deletedItems/microsoft.graph.group{}",
                q.to_query_string()
            ),
        )
    }

    /// `GET /directory/deletedItems/{id}`: the deleted object, `None` when the deleted items do
    /// not hold it (never deleted, restored, purged after 30 days, or permanently deleted).
    pub async fn get_deleted_item(&self, id: &str) -> Result<Option<DirectoryObject>, GraphError> {
        let path = format!("/directory/deletedItems/{}?$select=id", seg(id));
        self.get_optional(&path).await
    }

    /// `POST /directory/deletedItems/{id}/restore`: returns the restored object.
    pub async fn restore_deleted_item(&self, id: &str) -> Result<DirectoryObject, GraphError> {
        let path = format!("/directory/deletedItems/{}/restore", seg(id));
        self.send_json(self.call(Method::POST, &path, None)).await
    }

    /// `DELETE /directory/deletedItems/{id}`: permanent deletion.
    pub async fn permanently_delete_item(&self, id: &str) -> Result<(), GraphError> {
        let path = format!("/directory/deletedItems/{}", seg(id));
        self.send_no_content(self.call(Method::DELETE, &path, None))
            .await
    }

    // ---- licenses ----------------------------------------------------------------------------

    /// `POST /users/{id}/assignLicense`; both arrays are always sent
    /// (docs/graph-behaviour.md#licenses). Retried while the user is still replicating. Seats and
    /// usageLocation problems come back as `NoLicenseSeats` / `MissingUsageLocation`.
    pub async fn assign_license(
        &self,
        id_or_upn: &str,
        add: &[AssignedLicense],
        remove: &[String],
    ) -> Result<User, GraphError> {
        let body = json!({ "addLicenses": add, "removeLicenses": remove });
        let path = format!("/users/{}/assignLicense", seg(id_or_upn));
        self.with_replication_retry(|| {
            self.send_json::<User>(self.call(Method::POST, &path, Some(body.clone())))
        })
        .await
    }

    /// `GET /users/{id}/licenseDetails`.
    pub async fn license_details(&self, id_or_upn: &str) -> Result<Vec<LicenseDetail>, GraphError> {
        self.get_all(&format!("/users/{}/licenseDetails", seg(id_or_upn)))
            .await
    }

    /// `GET /subscribedSkus` (no `$filter` support: filter client-side).
    pub async fn subscribed_skus(&self) -> Result<Vec<SubscribedSku>, GraphError> {
        self.get_all("/subscribedSkus").await
    }

    // ---- manager -------------------------------------------------------------------------------

    /// `GET /users/{id}/manager`; `None` when no manager is set (its 404,
    /// docs/graph-behaviour.md#manager).
    pub async fn get_manager(
        &self,
        id_or_upn: &str,
    ) -> Result<Option<DirectoryObject>, GraphError> {
        self.get_optional(&format!("/users/{}/manager", seg(id_or_upn)))
            .await
    }

    /// `PUT /users/{id}/manager/$ref`, retried while either user is still replicating.
    pub async fn set_manager(&self, id_or_upn: &str, manager_id: &str) -> Result<(), GraphError> {
        let path = format!("/users/{}/manager/$ref", seg(id_or_upn));
        let body = json!({
            "@odata.id": format!("{}/users/{}", self.graph_base(), seg(manager_id))
        });
        self.with_replication_retry(|| {
            self.send_no_content(self.call(Method::PUT, &path, Some(body.clone())))
        })
        .await
    }

    /// `DELETE /users/{id}/manager/$ref`; no manager (404) counts as done.
    pub async fn remove_manager(&self, id_or_upn: &str) -> Result<(), GraphError> {
        let path = format!("/users/{}/manager/$ref", seg(id_or_upn));
        match self
            .send_no_content(self.call(Method::DELETE, &path, None))
            .await
        {
            Err(GraphError::NotFound { ctx }) if ctx.status == Some(404) => Ok(()),
            other => other,
        }
    }
}

fn check_filter_input<S: AsRef<str>>(attribute: &str, values: &[S]) -> Result<(), GraphError> {
    if !is_valid_attribute(attribute) {
        return Err(GraphError::Config(format!(
            "`{attribute}` is not a property name that can be filtered on"
        )));
    }
    if let Some(v) = values
        .iter()
        .find(|v| v.as_ref().chars().count() > MAX_EQ_VALUE_CHARS)
    {
        return Err(GraphError::InvalidValue {
            property: Some(attribute.to_string()),
            ctx: Box::new(ErrorContext {
                method: "GET".into(),
                path: "/users".into(),
                message: format!(
                    "a {}-character value cannot be matched: Graph compares at most {MAX_EQ_VALUE_CHARS} characters",
                    v.as_ref().chars().count()
                ),
                ..ErrorContext::default()
            }),
        });
    }
    Ok(())
}
