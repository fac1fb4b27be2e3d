//! The Graph v1.0 user properties a mapping may target, with their value shapes.
//!
//! Taken from docs/graph-behaviour.md#creating-users, #user-property-rules and the `user` entity
//! type of the v1.0 CSDL (`shared/sandbox/schema/v1.0-Prod.csdl`; a unit test cross-checks the
//! names). Only properties an application can write with `User.ReadWrite.All` on `POST`/`PATCH
//! /users` are listed; the rest are refused at config load with the reason.

/// What a target property holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyKind {
    /// `Edm.String`.
    Text,
    /// `Edm.Boolean`.
    Bool,
    /// `Collection(Edm.String)`.
    TextList,
    /// `Edm.DateTimeOffset`, written as an ISO 8601 string.
    DateTime,
}

/// One writable user property (a dotted name is a member of a complex property).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserProperty {
    pub name: &'static str,
    pub kind: PropertyKind,
    /// Graph refuses `null` for it, so an empty mapped value is left out instead of clearing it.
    pub nullable: bool,
}

const fn p(name: &'static str, kind: PropertyKind) -> UserProperty {
    UserProperty {
        name,
        kind,
        nullable: true,
    }
}

const fn not_null(name: &'static str, kind: PropertyKind) -> UserProperty {
    UserProperty {
        name,
        kind,
        nullable: false,
    }
}

use PropertyKind::{Bool, DateTime, Text, TextList};

/// Writable user properties, sorted by name.
pub const USER_PROPERTIES: &[UserProperty] = &[
    p("ageGroup", Text),
    p("businessPhones", TextList),
    p("city", Text),
    p("companyName", Text),
    p("consentProvidedForMinor", Text),
    p("country", Text),
    p("department", Text),
    not_null("displayName", Text),
    p("employeeHireDate", DateTime),
    p("employeeId", Text),
    p("employeeLeaveDateTime", DateTime),
    p("employeeOrgData.costCenter", Text),
    p("employeeOrgData.division", Text),
    p("employeeType", Text),
    p("faxNumber", Text),
    p("givenName", Text),
    p("jobTitle", Text),
    p("mail", Text),
    not_null("mailNickname", Text),
    p("mobilePhone", Text),
    p("officeLocation", Text),
    p("onPremisesExtensionAttributes.extensionAttribute1", Text),
    p("onPremisesExtensionAttributes.extensionAttribute10", Text),
    p("onPremisesExtensionAttributes.extensionAttribute11", Text),
    p("onPremisesExtensionAttributes.extensionAttribute12", Text),
    p("onPremisesExtensionAttributes.extensionAttribute13", Text),
    p("onPremisesExtensionAttributes.extensionAttribute14", Text),
    p("onPremisesExtensionAttributes.extensionAttribute15", Text),
    p("onPremisesExtensionAttributes.extensionAttribute2", Text),
    p("onPremisesExtensionAttributes.extensionAttribute3", Text),
    p("onPremisesExtensionAttributes.extensionAttribute4", Text),
    p("onPremisesExtensionAttributes.extensionAttribute5", Text),
    p("onPremisesExtensionAttributes.extensionAttribute6", Text),
    p("onPremisesExtensionAttributes.extensionAttribute7", Text),
    p("onPremisesExtensionAttributes.extensionAttribute8", Text),
    p("onPremisesExtensionAttributes.extensionAttribute9", Text),
    p("onPremisesImmutableId", Text),
    not_null("otherMails", TextList),
    p("passwordPolicies", Text),
    p("postalCode", Text),
    p("preferredDataLocation", Text),
    p("preferredLanguage", Text),
    p("showInAddressList", Bool),
    p("state", Text),
    p("streetAddress", Text),
    p("surname", Text),
    not_null("usageLocation", Text),
    not_null("userPrincipalName", Text),
    p("userType", Text),
];

/// Properties that must have a value on create (docs/graph-behaviour.md#creating-users).
/// `accountEnabled` and `passwordProfile` are the engine's; `mailNickname` is derived from the UPN
/// when not mapped.
pub const REQUIRED_MAPPED: &[&str] = &["userPrincipalName", "displayName"];

/// The writable property named exactly `name`.
pub fn user_property(name: &str) -> Option<&'static UserProperty> {
    USER_PROPERTIES.iter().find(|p| p.name == name)
}

/// Why a user property that exists in Graph cannot be a mapping target, if it is one of those.
pub fn refused_reason(name: &str) -> Option<&'static str> {
    Some(match name {
        "accountEnabled" => {
            "is owned by the engine: it follows the source user's enabled flag (allow_disable, provision_disabled_users)"
        }
        "passwordProfile" => "is set through the `password` section of the mapping",
        "assignedLicenses" => "is set through the `licenses` section of the mapping",
        "manager" => "is set through the `manager` entry of the mapping",
        "proxyAddresses" => "is read-only through Graph; map `mail` instead",
        "aboutMe" | "birthday" | "interests" | "mySite" | "pastProjects" | "preferredName"
        | "responsibilities" | "schools" | "skills" => {
            "is a SharePoint profile property: Graph does not accept it with application permissions or together with other properties"
        }
        "identities" => "is for Azure AD B2C accounts, which this product does not provision",
        "employeeOrgData" | "onPremisesExtensionAttributes" => {
            "is a complex property: map its members, e.g. `employeeOrgData.costCenter` or `onPremisesExtensionAttributes.extensionAttribute1`"
        }
        "id"
        | "createdDateTime"
        | "creationType"
        | "deletedDateTime"
        | "externalUserState"
        | "externalUserStateChangeDateTime"
        | "imAddresses"
        | "lastPasswordChangeDateTime"
        | "legalAgeGroupClassification"
        | "licenseAssignmentStates"
        | "assignedPlans"
        | "provisionedPlans"
        | "onPremisesDistinguishedName"
        | "onPremisesDomainName"
        | "onPremisesLastSyncDateTime"
        | "onPremisesProvisioningErrors"
        | "onPremisesSamAccountName"
        | "onPremisesSecurityIdentifier"
        | "onPremisesSyncEnabled"
        | "onPremisesUserPrincipalName"
        | "securityIdentifier"
        | "signInActivity"
        | "signInSessionsValidFromDateTime"
        | "serviceProvisioningErrors"
        | "mailboxSettings"
        | "isResourceAccount"
        | "isManagementRestricted"
        | "authorizationInfo"
        | "customSecurityAttributes"
        | "deviceEnrollmentLimit"
        | "identityParentId"
        | "print"
        | "hireDate" => "is read-only or not writable by this product",
        _ => return None,
    })
}

/// A writable property whose name matches `name` but for case, for "did you mean" hints.
pub fn case_insensitive_match(name: &str) -> Option<&'static str> {
    USER_PROPERTIES
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .map(|p| p.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        let names: Vec<&str> = USER_PROPERTIES.iter().map(|p| p.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    /// Every listed property (top-level name of a dotted one) is a property of `user` in the v1.0
    /// CSDL the sandbox embeds, and every refused one exists too (no typos in the refusal list).
    #[test]
    fn names_exist_in_the_v1_csdl() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../sandbox/schema/v1.0-Prod.csdl"
        );
        let csdl = std::fs::read_to_string(path).unwrap();
        let start = csdl
            .find(r#"<EntityType Name="user" BaseType="graph.directoryObject""#)
            .unwrap();
        let end = start + csdl[start..].find("</EntityType>").unwrap();
        let entity = &csdl[start..end];
        let declared = |name: &str| {
            entity.contains(&format!(r#"<Property Name="{name}""#))
                || entity.contains(&format!(r#"<NavigationProperty Name="{name}""#))
        };
        for prop in USER_PROPERTIES {
            let top = prop.name.split('.').next().unwrap();
            assert!(
                declared(top),
                "{} is not a user property in the CSDL",
                prop.name
            );
        }
        for name in [
            "accountEnabled",
            "passwordProfile",
            "assignedLicenses",
            "manager",
        ] {
            assert!(declared(name), "{name}");
            assert!(refused_reason(name).is_some(), "{name}");
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(
            user_property("usageLocation").map(|p| p.nullable),
            Some(false)
        );
        assert_eq!(
            user_property("businessPhones").map(|p| p.kind),
            Some(TextList)
        );
        assert!(user_property("accountEnabled").is_none());
        assert!(refused_reason("accountEnabled").unwrap().contains("engine"));
        assert_eq!(
            case_insensitive_match("UserPrincipalName"),
            Some("userPrincipalName")
        );
        assert_eq!(case_insensitive_match("nope"), None);
    }
}
