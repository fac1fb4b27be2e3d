//! Typed Graph resources. Unknown fields are kept in `extra` so nothing Graph returns is lost
//! (e.g. properties asked for with `$select` that have no typed field).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A user as Graph returns it (any `$select`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_nickname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_premises_immutable_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_licenses: Option<Vec<AssignedLicense>>,
    /// When the directory created the user (ISO 8601 UTC, e.g. `2026-12-02T07:30:00Z`); only
    /// returned when `$select`ed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `passwordProfile` on create. Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordProfile {
    pub password: String,
    pub force_change_password_next_sign_in: bool,
}

impl std::fmt::Debug for PasswordProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordProfile")
            .field("password", &"[REDACTED]")
            .field(
                "force_change_password_next_sign_in",
                &self.force_change_password_next_sign_in,
            )
            .finish()
    }
}

/// Properties whose values `Debug` of a body never shows.
const SECRET_PROPERTIES: &[&str] = &["passwordProfile", "password"];

/// `Debug` of a JSON object with the values of [`SECRET_PROPERTIES`] replaced.
pub(crate) struct RedactedBody<'a>(pub(crate) &'a Map<String, Value>);

impl std::fmt::Debug for RedactedBody<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in self.0 {
            if SECRET_PROPERTIES.iter().any(|s| s.eq_ignore_ascii_case(k)) {
                m.entry(k, &"[REDACTED]");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

/// Body of `POST /users`. The required properties are fields; anything else goes in `extra`
/// (e.g. `onPremisesExtensionAttributes`, `companyName`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewUser {
    pub account_enabled: bool,
    pub display_name: String,
    pub mail_nickname: String,
    pub user_principal_name: String,
    pub password_profile: PasswordProfile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_premises_immutable_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl std::fmt::Debug for NewUser {
    // The initial password must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("user_principal_name", &self.user_principal_name)
            .field("display_name", &self.display_name)
            .field("mail_nickname", &self.mail_nickname)
            .field("account_enabled", &self.account_enabled)
            .field("password_profile", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

impl NewUser {
    /// The required properties; optional ones can be set on the returned value.
    pub fn new(
        user_principal_name: impl Into<String>,
        display_name: impl Into<String>,
        mail_nickname: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        NewUser {
            account_enabled: true,
            display_name: display_name.into(),
            mail_nickname: mail_nickname.into(),
            user_principal_name: user_principal_name.into(),
            password_profile: PasswordProfile {
                password: password.into(),
                force_change_password_next_sign_in: true,
            },
            given_name: None,
            surname: None,
            job_title: None,
            department: None,
            usage_location: None,
            employee_id: None,
            mail: None,
            on_premises_immutable_id: None,
            extra: Map::new(),
        }
    }
}

/// A PATCH body: only the properties present are sent. `set` writes a value, `clear` sends
/// `null` (for nullable properties; Graph refuses to clear `displayName`). Its `Debug` hides a
/// `passwordProfile` (a password reset).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Patch(pub Map<String, Value>);

impl std::fmt::Debug for Patch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Patch")
            .field(&RedactedBody(&self.0))
            .finish()
    }
}

impl Patch {
    pub fn new() -> Self {
        Patch::default()
    }

    pub fn set(mut self, property: &str, value: impl Into<Value>) -> Self {
        self.0.insert(property.to_string(), value.into());
        self
    }

    pub fn clear(mut self, property: &str) -> Self {
        self.0.insert(property.to_string(), Value::Null);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// PATCH body for a user.
pub type UserPatch = Patch;
/// PATCH body for a group.
pub type GroupPatch = Patch;

/// One license in `assignedLicenses` / `addLicenses`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedLicense {
    pub sku_id: String,
    #[serde(default)]
    pub disabled_plans: Vec<String>,
}

/// `GET /users/{id}/licenseDetails` item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LicenseDetail {
    #[serde(default)]
    pub id: Option<String>,
    pub sku_id: String,
    #[serde(default)]
    pub sku_part_number: Option<String>,
    #[serde(default)]
    pub service_plans: Vec<ServicePlan>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePlan {
    pub service_plan_id: String,
    #[serde(default)]
    pub service_plan_name: Option<String>,
    #[serde(default)]
    pub provisioning_status: Option<String>,
    #[serde(default)]
    pub applies_to: Option<String>,
}

/// `GET /subscribedSkus` item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribedSku {
    #[serde(default)]
    pub id: Option<String>,
    pub sku_id: String,
    #[serde(default)]
    pub sku_part_number: Option<String>,
    #[serde(default)]
    pub applies_to: Option<String>,
    #[serde(default)]
    pub capability_status: Option<String>,
    #[serde(default)]
    pub consumed_units: i64,
    #[serde(default)]
    pub prepaid_units: PrepaidUnits,
    #[serde(default)]
    pub service_plans: Vec<ServicePlan>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SubscribedSku {
    /// Seats still free: `prepaidUnits.enabled - consumedUnits` (docs/graph-behaviour.md#licenses),
    /// never negative.
    pub fn available_units(&self) -> i64 {
        (self.prepaid_units.enabled - self.consumed_units).max(0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepaidUnits {
    #[serde(default)]
    pub enabled: i64,
    #[serde(default)]
    pub suspended: i64,
    #[serde(default)]
    pub warning: i64,
    #[serde(default)]
    pub locked_out: i64,
}

/// A group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_nickname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_types: Option<Vec<String>>,
    /// When the directory created the group (ISO 8601 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Group {
    /// A Microsoft 365 (unified) group.
    pub fn is_unified(&self) -> bool {
        self.group_types
            .as_ref()
            .is_some_and(|t| t.iter().any(|g| g.eq_ignore_ascii_case("Unified")))
    }
}

/// Which kind of group to create (docs/graph-behaviour.md#creating-groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupKind {
    /// `mailEnabled: false, securityEnabled: true, groupTypes: []`.
    #[default]
    Security,
    /// `groupTypes: ["Unified"], mailEnabled: true`.
    Microsoft365,
}

/// Body of `POST /groups`. Members (≤ 20, object ids) are bound at creation when given.
#[derive(Debug, Clone, PartialEq)]
pub struct NewGroup {
    pub display_name: String,
    pub mail_nickname: String,
    pub kind: GroupKind,
    pub description: Option<String>,
    /// Object ids of initial members (at most 20; more are added after creation).
    pub members: Vec<String>,
    /// Object ids of owners (at most 20).
    pub owners: Vec<String>,
    /// Any other property to send.
    pub extra: Map<String, Value>,
}

impl NewGroup {
    pub fn security(display_name: impl Into<String>, mail_nickname: impl Into<String>) -> Self {
        NewGroup {
            display_name: display_name.into(),
            mail_nickname: mail_nickname.into(),
            kind: GroupKind::Security,
            description: None,
            members: vec![],
            owners: vec![],
            extra: Map::new(),
        }
    }

    pub fn microsoft365(display_name: impl Into<String>, mail_nickname: impl Into<String>) -> Self {
        NewGroup {
            kind: GroupKind::Microsoft365,
            ..NewGroup::security(display_name, mail_nickname)
        }
    }

    /// The JSON body, with `@odata.bind` URLs built on `graph_base` (`…/v1.0`).
    pub(crate) fn to_body(&self, graph_base: &str) -> Value {
        let mut m = self.extra.clone();
        m.insert("displayName".into(), self.display_name.clone().into());
        m.insert("mailNickname".into(), self.mail_nickname.clone().into());
        let (mail, security, types): (bool, bool, Vec<Value>) = match self.kind {
            GroupKind::Security => (false, true, vec![]),
            GroupKind::Microsoft365 => (true, false, vec!["Unified".into()]),
        };
        m.entry("mailEnabled").or_insert(mail.into());
        m.entry("securityEnabled").or_insert(security.into());
        m.entry("groupTypes").or_insert(Value::Array(types));
        if let Some(d) = &self.description {
            m.insert("description".into(), d.clone().into());
        }
        let bind = |ids: &[String]| -> Value {
            Value::Array(
                ids.iter()
                    .map(|id| Value::String(directory_object_url(graph_base, id)))
                    .collect(),
            )
        };
        if !self.members.is_empty() {
            m.insert("members@odata.bind".into(), bind(&self.members));
        }
        if !self.owners.is_empty() {
            m.insert("owners@odata.bind".into(), bind(&self.owners));
        }
        Value::Object(m)
    }
}

/// `https://graph…/v1.0/directoryObjects/{id}` for `@odata.id` / `@odata.bind`.
pub(crate) fn directory_object_url(graph_base: &str, id: &str) -> String {
    format!(
        "{graph_base}/directoryObjects/{}",
        crate::odata::encode_path_segment(id)
    )
}

/// Any directory object (member, manager, deleted item).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DirectoryObject {
    pub id: String,
    #[serde(
        rename = "@odata.type",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub odata_type: Option<String>,
    #[serde(
        rename = "displayName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub display_name: Option<String>,
    #[serde(
        rename = "userPrincipalName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub user_principal_name: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl DirectoryObject {
    pub fn is_user(&self) -> bool {
        self.odata_type.as_deref() == Some("#microsoft.graph.user")
    }
}

/// `GET /organization` item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub verified_domains: Vec<VerifiedDomain>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedDomain {
    pub name: String,
    #[serde(default)]
    pub is_default: Option<bool>,
    #[serde(default)]
    pub is_initial: Option<bool>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub capabilities: Option<String>,
}

/// `GET /domains` item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Domain {
    /// The domain name.
    pub id: String,
    #[serde(default)]
    pub is_verified: bool,
    #[serde(default)]
    pub is_default: bool,
    #[serde(default)]
    pub is_initial: bool,
    /// `Managed` or `Federated`.
    #[serde(default)]
    pub authentication_type: Option<String>,
    #[serde(default)]
    pub supported_services: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Domain {
    pub fn is_federated(&self) -> bool {
        self.authentication_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("Federated"))
    }
}

/// Result of adding many members: who was added by the chunked PATCH, who one by one, who was
/// already there, and who failed (with the error).
#[derive(Debug, Default)]
pub struct AddMembersOutcome {
    pub added: Vec<String>,
    pub already_members: Vec<String>,
    pub failed: Vec<(String, crate::GraphError)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_keeps_unknown_fields_and_camel_case() {
        let v = serde_json::json!({"id": "1", "userPrincipalName": "a@x.com", "accountEnabled": true,
            "officeLocation": "B1", "@odata.context": "ctx"});
        let u: User = serde_json::from_value(v).unwrap();
        assert_eq!(u.user_principal_name.as_deref(), Some("a@x.com"));
        assert_eq!(u.account_enabled, Some(true));
        assert_eq!(u.extra["officeLocation"], "B1");
    }

    #[test]
    fn new_user_body_and_debug() {
        let mut n = NewUser::new("a@x.com", "A", "a", "P@ssw0rd!x");
        n.usage_location = Some("US".into());
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(v["passwordProfile"]["forceChangePasswordNextSignIn"], true);
        assert_eq!(v["usageLocation"], "US");
        assert!(v.get("givenName").is_none());
        assert!(!format!("{n:?}").contains("P@ssw0rd"));
    }

    #[test]
    fn debug_never_shows_a_password() {
        let profile = PasswordProfile {
            password: "Pr0file-secret!".into(),
            force_change_password_next_sign_in: true,
        };
        let patch = Patch::new().set("passwordProfile", serde_json::to_value(&profile).unwrap());
        let mut n = NewUser::new("a@x.com", "A", "a", "Pr0file-secret!");
        n.extra.insert("password".into(), "Pr0file-secret!".into());
        for shown in [
            format!("{profile:?} {profile:#?}"),
            format!("{patch:?} {patch:#?}"),
            format!("{n:?} {n:#?}"),
        ] {
            assert!(!shown.contains("Pr0file-secret!"), "{shown}");
            assert!(shown.contains("REDACTED"), "{shown}");
        }
        // Other properties still show.
        assert!(format!("{:?}", Patch::new().set("jobTitle", "Chef")).contains("Chef"));
    }

    #[test]
    fn new_group_bodies() {
        let mut g = NewGroup::security("Sales", "sales");
        g.members = vec!["u1".into()];
        let b = g.to_body("https://graph.microsoft.com/v1.0");
        assert_eq!(b["mailEnabled"], false);
        assert_eq!(b["securityEnabled"], true);
        assert_eq!(b["groupTypes"], serde_json::json!([]));
        assert_eq!(
            b["members@odata.bind"][0],
            "https://graph.microsoft.com/v1.0/directoryObjects/u1"
        );
        let b = NewGroup::microsoft365("Team", "team").to_body("https://g/v1.0");
        assert_eq!(b["groupTypes"], serde_json::json!(["Unified"]));
        assert_eq!(b["mailEnabled"], true);
        assert!(b.get("members@odata.bind").is_none());
    }

    #[test]
    fn seats() {
        let s: SubscribedSku = serde_json::from_value(serde_json::json!({
            "skuId": "x", "consumedUnits": 3, "prepaidUnits": {"enabled": 5}}))
        .unwrap();
        assert_eq!(s.available_units(), 2);
    }
}
