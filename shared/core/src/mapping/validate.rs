//! Graph's rules for user and group property values, checked before any request.
//!
//! Pure functions, usable outside the mapping engine (the planner, the CLI). Each returns a
//! [`Violation`] that says which rule was broken in words an operator can act on; none echoes a
//! password. Sources (sections of docs/graph-behaviour.md):
//!
//! | rule | source |
//! |---|---|
//! | UPN charset, one `@`, no `.` before `@`, 113/64/48 lengths | #upn-policy |
//! | UPN domain verified; immutable id required on federated domains | #domains |
//! | mailNickname ≤64, ASCII, none of `@()\[]";:<>,` or space (groups also no `.`) | #user-property-rules, #creating-groups |
//! | displayName required, ≤256, not clearable | #user-property-rules |
//! | string lengths (givenName 64, jobTitle 128, …) | #user-property-rules |
//! | usageLocation ISO 3166-1 alpha-2 | #user-property-rules; docs/design.md#licenses-and-manager |
//! | onPremisesImmutableId without `$` or `_` | #user-property-rules |
//! | mail without accents, one `@` | #user-property-rules |
//! | businessPhones: one number at most | #user-property-rules |
//! | password 8–256, 3 of 4 classes, listed symbols, no Unicode | #password-policy |
//! | group description ≤1024 | Graph group resource (the sandbox enforces the same) |

use std::collections::BTreeSet;
use std::fmt;

use crate::directory::TenantDomain;

/// A broken rule: a stable short id (for tests and metrics) and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Stable id of the rule, e.g. `upn.charset`, `length`, `usage_location.code`.
    pub rule: &'static str,
    /// What is wrong, e.g. `character ' ' is not allowed (allowed: A-Z a-z 0-9 ' . - _ ! # ^ ~)`.
    pub message: String,
}

impl Violation {
    pub fn new(rule: &'static str, message: impl Into<String>) -> Self {
        Violation {
            rule,
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Result of one check.
pub type Check = Result<(), Violation>;

// ---------------------------------------------------------------------------------------------
// Domains

/// The tenant's domains as far as UPNs care: which are verified (a UPN must use one) and which are
/// federated (a UPN there needs `onPremisesImmutableId`). Built from `GET /domains`
/// ([`DomainPolicy::from_tenant`]); [`DomainPolicy::unchecked`] skips the domain checks (when the
/// domains are not known yet, e.g. `plan` offline).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainPolicy {
    /// Lower-cased verified domain names; `None` = not checked.
    verified: Option<BTreeSet<String>>,
    federated: BTreeSet<String>,
}

impl DomainPolicy {
    /// No domain checks: every domain passes, none is federated.
    pub fn unchecked() -> Self {
        DomainPolicy::default()
    }

    /// Verified domains and the federated ones among them (names compare case-insensitively).
    pub fn new<V, F>(verified: V, federated: F) -> Self
    where
        V: IntoIterator,
        V::Item: AsRef<str>,
        F: IntoIterator,
        F::Item: AsRef<str>,
    {
        DomainPolicy {
            verified: Some(
                verified
                    .into_iter()
                    .map(|d| d.as_ref().to_ascii_lowercase())
                    .collect(),
            ),
            federated: federated
                .into_iter()
                .map(|d| d.as_ref().to_ascii_lowercase())
                .collect(),
        }
    }

    /// From the tenant's `/domains`.
    pub fn from_tenant(domains: &[TenantDomain]) -> Self {
        DomainPolicy::new(
            domains
                .iter()
                .filter(|d| d.verified)
                .map(|d| d.name.as_str()),
            domains
                .iter()
                .filter(|d| d.federated)
                .map(|d| d.name.as_str()),
        )
    }

    /// Whether a UPN may use `domain` (always true when unchecked).
    pub fn is_verified(&self, domain: &str) -> bool {
        match &self.verified {
            None => true,
            Some(set) => set.contains(&domain.to_ascii_lowercase()),
        }
    }

    /// Whether `domain` is federated.
    pub fn is_federated(&self, domain: &str) -> bool {
        self.federated.contains(&domain.to_ascii_lowercase())
    }

    fn verified_list(&self) -> String {
        match &self.verified {
            None => String::new(),
            Some(set) if set.is_empty() => "none".to_owned(),
            Some(set) => set.iter().cloned().collect::<Vec<_>>().join(", "),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// userPrincipalName

/// Characters allowed in the alias of a UPN, as Entra's policy lists them.
pub const UPN_ALLOWED: &str = "A-Z a-z 0-9 ' . - _ ! # ^ ~";

/// Whether `c` may appear in the alias (the part before `@`) of a UPN.
pub fn is_upn_alias_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "'.-_!#^~".contains(c)
}

/// The UPN policy (docs/graph-behaviour.md#upn-policy) and the verified-domain rule
/// (docs/graph-behaviour.md#domains).
pub fn user_principal_name(upn: &str, domains: &DomainPolicy) -> Check {
    if upn.is_empty() {
        return Err(Violation::new("required", "a value is required"));
    }
    let Some((alias, domain)) = upn.split_once('@') else {
        return Err(Violation::new(
            "upn.format",
            "must have the form alias@domain (no '@' found)",
        ));
    };
    if domain.contains('@') {
        return Err(Violation::new(
            "upn.format",
            "only one '@' is allowed, the one between alias and domain",
        ));
    }
    if alias.is_empty() || domain.is_empty() {
        return Err(Violation::new(
            "upn.format",
            "must have the form alias@domain (alias or domain is empty)",
        ));
    }
    if let Some(c) = alias.chars().find(|&c| !is_upn_alias_char(c)) {
        let accent = if c.is_alphabetic() {
            "; accented and non-Latin letters are not allowed"
        } else {
            ""
        };
        return Err(Violation::new(
            "upn.charset",
            format!(
                "character {} is not allowed (allowed: {UPN_ALLOWED}){accent}",
                quote_char(c)
            ),
        ));
    }
    if alias.ends_with('.') {
        return Err(Violation::new(
            "upn.dot_before_at",
            "a '.' right before the '@' is not allowed",
        ));
    }
    if alias.starts_with('.') {
        return Err(Violation::new(
            "upn.leading_dot",
            "the alias must not start with '.'",
        ));
    }
    if let Some(c) = domain
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
    {
        return Err(Violation::new(
            "upn.domain_charset",
            format!(
                "character {} is not allowed in the domain (allowed: A-Z a-z 0-9 . -)",
                quote_char(c)
            ),
        ));
    }
    let (total, before, after) = (upn.len(), alias.len(), domain.len());
    if total > 113 {
        return Err(Violation::new(
            "upn.length",
            format!("is {total} characters long; at most 113 are allowed"),
        ));
    }
    if before > 64 {
        return Err(Violation::new(
            "upn.length",
            format!("the part before '@' is {before} characters long; at most 64 are allowed"),
        ));
    }
    if after > 48 {
        return Err(Violation::new(
            "upn.length",
            format!("the domain is {after} characters long; at most 48 are allowed"),
        ));
    }
    if !domains.is_verified(domain) {
        return Err(Violation::new(
            "upn.domain_not_verified",
            format!(
                "domain '{domain}' is not a verified domain of the tenant (verified: {})",
                domains.verified_list()
            ),
        ));
    }
    Ok(())
}

/// The domain part of a UPN or address, if it has one.
pub fn domain_of(address: &str) -> Option<&str> {
    address.rsplit_once('@').map(|(_, d)| d)
}

// ---------------------------------------------------------------------------------------------
// mailNickname

/// Which object a mailNickname belongs to: groups also refuse `.`
/// (docs/graph-behaviour.md#creating-groups); the directory accepts it in user nicknames
/// (`john.doe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicknameKind {
    User,
    Group,
}

/// Characters every mailNickname refuses, besides non-ASCII and control characters.
pub const NICKNAME_FORBIDDEN: &str = "@()\\[]\";:<>, ";

/// Whether `c` may appear in a mailNickname of that kind.
pub fn is_nickname_char(c: char, kind: NicknameKind) -> bool {
    let refused_dot = kind == NicknameKind::Group && c == '.';
    c.is_ascii() && !c.is_ascii_control() && !NICKNAME_FORBIDDEN.contains(c) && !refused_dot
}

/// mailNickname: 1–64 characters, ASCII, none of `@ ( ) \ [ ] " ; : < > ,` nor space; groups
/// also no `.` (docs/graph-behaviour.md#creating-groups, #user-property-rules).
pub fn mail_nickname(nick: &str, kind: NicknameKind) -> Check {
    if nick.is_empty() {
        return Err(Violation::new("required", "a value is required"));
    }
    if let Some(c) = nick.chars().find(|&c| !is_nickname_char(c, kind)) {
        let refused = match kind {
            NicknameKind::User => "@ ( ) \\ [ ] \" ; : < > , space",
            NicknameKind::Group => "@ ( ) \\ [ ] \" ; : . < > , space",
        };
        return Err(Violation::new(
            "mail_nickname.charset",
            format!(
                "character {} is not allowed (ASCII only, none of {refused})",
                quote_char(c)
            ),
        ));
    }
    max_chars(nick, 64)
}

// ---------------------------------------------------------------------------------------------
// Lengths and plain strings

/// Maximum length in characters of a user string property
/// (docs/graph-behaviour.md#user-property-rules), if Graph has one.
pub fn user_max_length(property: &str) -> Option<usize> {
    Some(match property {
        "displayName" => 256,
        "mailNickname" | "givenName" | "surname" => 64,
        "jobTitle" | "city" | "country" | "state" => 128,
        "department" | "companyName" | "mobilePhone" => 64,
        "postalCode" => 40,
        "streetAddress" => 1024,
        "employeeId" => 16,
        "userPrincipalName" => 113,
        _ => return None,
    })
}

/// At most `max` characters (Graph counts characters, not bytes).
pub fn max_chars(value: &str, max: usize) -> Check {
    let n = value.chars().count();
    if n > max {
        return Err(Violation::new(
            "length",
            format!("is {n} characters long; at most {max} are allowed"),
        ));
    }
    Ok(())
}

/// displayName: required on create, cannot be cleared, at most 256 characters.
pub fn display_name(value: &str) -> Check {
    if value.trim().is_empty() {
        return Err(Violation::new(
            "required",
            "a value is required (displayName is required on create and cannot be cleared)",
        ));
    }
    max_chars(value, 256)
}

/// ISO 3166-1 alpha-2 country codes, officially assigned (usageLocation).
pub const ISO_3166_ALPHA2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// usageLocation: an upper-case ISO 3166-1 alpha-2 code
/// (docs/graph-behaviour.md#user-property-rules, docs/design.md#licenses-and-manager).
/// [`ISO_3166_ALPHA2`] as a table indexed by `26 × first letter + second letter`: a lookup per
/// user, not a scan of the list.
const ISO_3166_TABLE: [bool; 26 * 26] = {
    let codes = ISO_3166_ALPHA2.as_bytes();
    let mut table = [false; 26 * 26];
    let mut i = 0;
    while i + 1 < codes.len() {
        table[(codes[i] - b'A') as usize * 26 + (codes[i + 1] - b'A') as usize] = true;
        i += 3;
    }
    table
};

pub fn usage_location(code: &str) -> Check {
    let known = |c: &str| match c.as_bytes() {
        [a @ b'A'..=b'Z', b @ b'A'..=b'Z'] => {
            ISO_3166_TABLE[usize::from(a - b'A') * 26 + usize::from(b - b'A')]
        }
        _ => false,
    };
    if known(code) {
        return Ok(());
    }
    let upper = code.to_ascii_uppercase();
    if known(&upper) {
        return Err(Violation::new(
            "usage_location.code",
            format!("country codes are upper case: use \"{upper}\" (apply `| upper`)"),
        ));
    }
    Err(Violation::new(
        "usage_location.code",
        "is not an ISO 3166-1 alpha-2 country code (two letters such as US, GB, JP)",
    ))
}

/// onPremisesImmutableId: non-empty, without `$` or `_`
/// (docs/graph-behaviour.md#user-property-rules).
pub fn immutable_id(value: &str) -> Check {
    if value.is_empty() {
        return Err(Violation::new("required", "a value is required"));
    }
    if let Some(c) = value.chars().find(|&c| c == '$' || c == '_') {
        return Err(Violation::new(
            "immutable_id.charset",
            format!(
                "character {} is not allowed ('$' and '_' are refused)",
                quote_char(c)
            ),
        ));
    }
    Ok(())
}

/// mail: one `@` between a local part and a domain, ASCII only (no accents), no spaces.
pub fn mail(value: &str) -> Check {
    let Some((local, domain)) = value.split_once('@') else {
        return Err(Violation::new(
            "mail.format",
            "must have the form local@domain",
        ));
    };
    if domain.contains('@') {
        return Err(Violation::new("mail.format", "only one '@' is allowed"));
    }
    if local.is_empty() || domain.is_empty() {
        return Err(Violation::new(
            "mail.format",
            "must have the form local@domain (local part or domain is empty)",
        ));
    }
    if let Some(c) = value.chars().find(|c| !c.is_ascii()) {
        return Err(Violation::new(
            "mail.charset",
            format!(
                "character {} is not allowed (no accented or non-ASCII characters)",
                quote_char(c)
            ),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_ascii_whitespace() || c.is_ascii_control())
    {
        return Err(Violation::new(
            "mail.charset",
            format!("character {} is not allowed", quote_char(c)),
        ));
    }
    Ok(())
}

/// businessPhones: a collection in the schema, but Graph accepts one number at most.
pub fn business_phones(phones: &[String]) -> Check {
    if phones.len() > 1 {
        return Err(Violation::new(
            "business_phones.count",
            format!(
                "has {} numbers; Graph accepts one business phone at most",
                phones.len()
            ),
        ));
    }
    Ok(())
}

/// An `Edm.DateTimeOffset` in ISO 8601 form: `YYYY-MM-DDThh:mm:ss[.fff](Z|±hh:mm)`.
pub fn date_time(value: &str) -> Check {
    let bad = || {
        Violation::new(
            "date_time.format",
            "is not an ISO 8601 date-time such as 2024-05-01T00:00:00Z",
        )
    };
    let b = value.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r)
            .is_some_and(|s| !s.is_empty() && s.iter().all(u8::is_ascii_digit))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && (at(10, b'T') || at(10, b't'))
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19))
    {
        return Err(bad());
    }
    let mut i = 19;
    if at(i, b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
    }
    let zone_ok = match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            i + 6 == b.len() && digits(i + 1..i + 3) && at(i + 3, b':') && digits(i + 4..i + 6)
        }
        _ => false,
    };
    if zone_ok { Ok(()) } else { Err(bad()) }
}

/// A GUID in its string form (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`): skuIds, servicePlanIds.
pub fn guid(value: &str) -> Check {
    if parse_guid(value).is_some() {
        Ok(())
    } else {
        Err(Violation::new(
            "guid.format",
            "is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
        ))
    }
}

/// How a rule names a SKU in `licenses.sku_ids` and the keys of `licenses.disabled_plans`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkuReference {
    /// A skuId GUID, lower-cased, without braces.
    Id(String),
    /// A skuPartNumber (`ENTERPRISEPACK`, `SPE_E3`) as written: the planner resolves it to its
    /// skuId through the tenant's subscribed SKUs
    /// (<https://learn.microsoft.com/en-us/graph/api/subscribedsku-list>), case-insensitively.
    PartNumber(String),
}

impl SkuReference {
    /// The reference compared case-insensitively: the GUID, or the part number lower-cased.
    pub fn key(&self) -> String {
        match self {
            SkuReference::Id(id) => id.clone(),
            SkuReference::PartNumber(part) => part.to_ascii_lowercase(),
        }
    }

    /// Whether it is a skuId GUID.
    pub fn is_id(&self) -> bool {
        matches!(self, SkuReference::Id(_))
    }
}

/// The longest part number accepted (Microsoft's string ids are well under it).
const MAX_PART_NUMBER_CHARS: usize = 100;

/// A SKU as a rule may name it: a skuId GUID, or a part number: an ASCII letter, then ASCII
/// letters, digits and `_ - . ( ) /` (Microsoft's string ids, e.g. `ENTERPRISEPACK`, `SPE_E3`,
/// `Microsoft_365_E3_(no_Teams)`; see
/// <https://learn.microsoft.com/en-us/entra/identity/users/licensing-service-plan-reference>).
/// A value made only of hex digits and dashes is taken for a mistyped GUID.
pub fn sku_reference(value: &str) -> Result<SkuReference, Violation> {
    let v = value.trim();
    if parse_guid(v).is_some() {
        return Ok(SkuReference::Id(
            v.trim_matches(['{', '}']).to_ascii_lowercase(),
        ));
    }
    let part_number_shape = v.len() <= MAX_PART_NUMBER_CHARS
        && v.starts_with(|c: char| c.is_ascii_alphabetic())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.()/".contains(c));
    let guid_like = v.contains('-') && v.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if part_number_shape && !guid_like {
        return Ok(SkuReference::PartNumber(v.to_owned()));
    }
    Err(Violation::new(
        "sku.format",
        "is neither a skuId GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) nor a SKU part number \
         (letters, digits and _ - . ( ) /, starting with a letter, e.g. ENTERPRISEPACK or SPE_E3)",
    ))
}

/// The 16 bytes of a string GUID in textual (big-endian) order; braces are accepted.
pub(crate) fn parse_guid(value: &str) -> Option<[u8; 16]> {
    let v = value.trim();
    let v = v
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(v);
    let groups: Vec<&str> = v.split('-').collect();
    if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
        return None;
    }
    let hex: String = groups.concat();
    let mut out = [0u8; 16];
    for (i, slot) in out.iter_mut().enumerate() {
        let pair = hex.get(2 * i..2 * i + 2)?;
        *slot = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// A value out of a closed list (ageGroup, userType, …).
pub fn one_of(value: &str, allowed: &[&str]) -> Check {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(Violation::new(
            "enum",
            format!("is not one of: {}", allowed.join(", ")),
        ))
    }
}

/// passwordPolicies: a comma-separated subset of `DisablePasswordExpiration`,
/// `DisableStrongPassword` (or `None`).
pub fn password_policies(value: &str) -> Check {
    const ALLOWED: [&str; 3] = ["DisablePasswordExpiration", "DisableStrongPassword", "None"];
    for part in value.split(',').map(str::trim) {
        if !ALLOWED.contains(&part) {
            return Err(Violation::new(
                "enum",
                format!(
                    "'{part}' is not a password policy (allowed, comma-separated: {})",
                    ALLOWED.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Password

/// Symbols Entra accepts in a password, besides the blank space
/// (docs/graph-behaviour.md#password-policy).
pub const PASSWORD_SYMBOLS: &str = "@#$%^&*-_!+=[]{}|\\:',.?/`~\"();<>";

/// Entra's password policy for cloud-only users (docs/graph-behaviour.md#password-policy): 8–256
/// characters, at least 3 of lowercase / uppercase / digit / symbol, only the listed symbols and
/// the blank space, no Unicode. The message never repeats the password or any of its characters.
pub fn password(pw: &str) -> Check {
    let len = pw.chars().count();
    if !(8..=256).contains(&len) {
        return Err(Violation::new(
            "password.length",
            format!("is {len} characters long; 8 to 256 are required"),
        ));
    }
    let mut classes = [false; 4];
    for c in pw.chars() {
        if c.is_ascii_lowercase() {
            classes[0] = true;
        } else if c.is_ascii_uppercase() {
            classes[1] = true;
        } else if c.is_ascii_digit() {
            classes[2] = true;
        } else if c == ' ' || PASSWORD_SYMBOLS.contains(c) {
            classes[3] = true;
        } else {
            return Err(Violation::new(
                "password.charset",
                format!(
                    "contains a character that is not allowed (Unicode characters and symbols other than {PASSWORD_SYMBOLS} and space are refused)"
                ),
            ));
        }
    }
    let n = classes.iter().filter(|&&c| c).count();
    if n < 3 {
        return Err(Violation::new(
            "password.classes",
            format!(
                "uses {n} of the 4 character classes (lowercase, uppercase, digit, symbol); at least 3 are required"
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One user property value

/// Checks one user property value as it would be sent (`serde_json`), by property name: the
/// rules above for the properties that have them, Graph's maximum lengths
/// (docs/graph-behaviour.md#user-property-rules) for the others. `null` (clearing) passes, except
/// for displayName, which cannot be cleared.
pub fn user_property_value(
    property: &str,
    value: &serde_json::Value,
    domains: &DomainPolicy,
) -> Check {
    use serde_json::Value as J;
    match value {
        J::Null if property == "displayName" => display_name(""),
        J::Null | J::Bool(_) => Ok(()),
        J::String(s) => user_text_value(property, s, domains),
        J::Array(items) => {
            let texts: Vec<String> = items
                .iter()
                .map(|i| i.as_str().unwrap_or_default().to_owned())
                .collect();
            match property {
                "businessPhones" => business_phones(&texts),
                "otherMails" => texts.iter().try_for_each(|m| mail(m)),
                _ => Ok(()),
            }
        }
        J::Object(members) => members.iter().try_for_each(|(name, v)| {
            user_property_value(&format!("{property}.{name}"), v, domains)
        }),
        J::Number(_) => Err(Violation::new(
            "type",
            "is a number; Graph expects a string here",
        )),
    }
}

fn user_text_value(property: &str, v: &str, domains: &DomainPolicy) -> Check {
    match property {
        "userPrincipalName" => user_principal_name(v, domains)?,
        "mailNickname" => mail_nickname(v, NicknameKind::User)?,
        "displayName" => display_name(v)?,
        "usageLocation" => usage_location(v)?,
        "onPremisesImmutableId" => immutable_id(v)?,
        "mail" => mail(v)?,
        "ageGroup" => one_of(v, &["Minor", "NotAdult", "Adult"])?,
        "consentProvidedForMinor" => one_of(v, &["Granted", "Denied", "NotRequired"])?,
        "userType" => one_of(v, &["Member", "Guest"])?,
        "passwordPolicies" => password_policies(v)?,
        "employeeHireDate" | "employeeLeaveDateTime" => date_time(v)?,
        _ => {}
    }
    match user_max_length(property) {
        Some(max) => max_chars(v, max),
        None => Ok(()),
    }
}

/// Cross-property rule (docs/graph-behaviour.md#domains): a UPN in a federated domain needs
/// `onPremisesImmutableId` on create.
pub fn immutable_id_for_federated(
    upn: &str,
    immutable_id: Option<&str>,
    domains: &DomainPolicy,
) -> Check {
    match domain_of(upn) {
        Some(domain) if domains.is_federated(domain) && immutable_id.is_none_or(str::is_empty) => {
            Err(Violation::new(
                "immutable_id.required_federated",
                format!(
                    "domain '{domain}' is federated: onPremisesImmutableId must be mapped and non-empty"
                ),
            ))
        }
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Groups

/// A group's displayName: required, at most 256 characters
/// (docs/graph-behaviour.md#creating-groups).
pub fn group_display_name(value: &str) -> Check {
    display_name(value)
}

/// A group's description: at most 1024 characters.
pub fn group_description(value: &str) -> Check {
    max_chars(value, 1024)
}

fn quote_char(c: char) -> String {
    if c.is_control() {
        format!("U+{:04X}", c as u32)
    } else {
        format!("'{c}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(r: Check) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(v) => v.rule,
        }
    }

    #[test]
    fn upn_rules_table() {
        let open = DomainPolicy::unchecked();
        let long_alias = format!("{}@example.com", "a".repeat(65));
        let alias64 = format!("{}@example.com", "a".repeat(64));
        let long_domain = format!("a@{}.com", "d".repeat(45));
        let long_total = format!("{}@{}.com", "a".repeat(64), "d".repeat(46));
        let cases: Vec<(&str, &str)> = vec![
            ("bjensen@example.com", "ok"),
            ("b.jensen@example.com", "ok"),
            ("o'brien-x_y!z#a^b~c@example.com", "ok"),
            ("ALL.CAPS.123@Example.COM", "ok"),
            ("", "required"),
            ("bjensen", "upn.format"),
            ("a@b@example.com", "upn.format"),
            ("@example.com", "upn.format"),
            ("bjensen@", "upn.format"),
            ("b jensen@example.com", "upn.charset"),
            ("josé@example.com", "upn.charset"),
            ("a+b@example.com", "upn.charset"),
            ("a,b@example.com", "upn.charset"),
            ("bjensen.@example.com", "upn.dot_before_at"),
            (".bjensen@example.com", "upn.leading_dot"),
            ("bjensen@exa mple.com", "upn.domain_charset"),
            (&long_alias, "upn.length"),
            (&alias64, "ok"),
            (&long_domain, "upn.length"),
            (&long_total, "upn.length"),
        ];
        for (upn, expected) in cases {
            assert_eq!(rule(user_principal_name(upn, &open)), expected, "{upn}");
        }
    }

    /// The UPN cases shared with the sandbox tenant's validator (`tests/fixtures/upn-cases.json`),
    /// so that the two cannot drift apart.
    #[test]
    fn upn_syntax_agrees_with_the_shared_table() {
        let table: serde_json::Value =
            serde_json::from_str(include_str!("../../../../tests/fixtures/upn-cases.json"))
                .unwrap();
        let cases = table["cases"].as_array().unwrap();
        assert!(cases.len() >= 40, "{} cases", cases.len());
        let open = DomainPolicy::unchecked();
        for case in cases {
            let upn = case["upn"].as_str().unwrap();
            let valid = case["valid"].as_bool().unwrap();
            let verdict = user_principal_name(upn, &open);
            assert_eq!(
                verdict.is_ok(),
                valid,
                "{upn:?} ({}): {verdict:?}",
                case["reason"]
            );
        }
        for valid in [true, false] {
            assert!(
                cases.iter().any(|c| c["valid"] == valid),
                "no case with valid = {valid}"
            );
        }
    }

    #[test]
    fn upn_message_names_the_character_and_the_allowed_set() {
        let v =
            user_principal_name("b jensen@example.com", &DomainPolicy::unchecked()).unwrap_err();
        assert_eq!(
            v.message,
            "character ' ' is not allowed (allowed: A-Z a-z 0-9 ' . - _ ! # ^ ~)"
        );
        let v = user_principal_name("josé@example.com", &DomainPolicy::unchecked()).unwrap_err();
        assert!(
            v.message.contains("'é'") && v.message.contains("accented"),
            "{v}"
        );
    }

    #[test]
    fn upn_domain_must_be_verified() {
        let policy = DomainPolicy::new(["example.com", "corp.example.com"], ["corp.example.com"]);
        assert!(user_principal_name("a@example.com", &policy).is_ok());
        assert!(user_principal_name("a@EXAMPLE.com", &policy).is_ok());
        let v = user_principal_name("a@other.org", &policy).unwrap_err();
        assert_eq!(v.rule, "upn.domain_not_verified");
        assert!(v.message.contains("corp.example.com, example.com"), "{v}");
        assert!(policy.is_federated("Corp.Example.com"));
        assert!(!policy.is_federated("example.com"));
        let from_tenant = DomainPolicy::from_tenant(&[
            TenantDomain {
                name: "example.com".into(),
                verified: true,
                federated: false,
            },
            TenantDomain {
                name: "pending.example".into(),
                verified: false,
                federated: false,
            },
        ]);
        assert!(from_tenant.is_verified("example.com"));
        assert!(!from_tenant.is_verified("pending.example"));
    }

    #[test]
    fn mail_nickname_table() {
        use NicknameKind::{Group, User};
        let long = "n".repeat(65);
        let cases: Vec<(&str, NicknameKind, &str)> = vec![
            ("bjensen", User, "ok"),
            ("john.doe", User, "ok"),
            ("john.doe", Group, "mail_nickname.charset"),
            ("sales-team_2", Group, "ok"),
            ("", User, "required"),
            ("a b", User, "mail_nickname.charset"),
            ("a@b", User, "mail_nickname.charset"),
            ("a(b)", User, "mail_nickname.charset"),
            ("a\\b", User, "mail_nickname.charset"),
            ("a[b]", User, "mail_nickname.charset"),
            ("a\"b", User, "mail_nickname.charset"),
            ("a;b", User, "mail_nickname.charset"),
            ("a:b", User, "mail_nickname.charset"),
            ("a<b>", User, "mail_nickname.charset"),
            ("a,b", User, "mail_nickname.charset"),
            ("müller", User, "mail_nickname.charset"),
            ("tab\there", User, "mail_nickname.charset"),
            (&long, User, "length"),
            (&long[..64], User, "ok"),
        ];
        for (nick, kind, expected) in cases {
            assert_eq!(
                rule(mail_nickname(nick, kind)),
                expected,
                "{nick:?} {kind:?}"
            );
        }
    }

    #[test]
    fn length_rules_follow_graph_facts() {
        let cases = [
            ("displayName", 256),
            ("givenName", 64),
            ("surname", 64),
            ("jobTitle", 128),
            ("city", 128),
            ("country", 128),
            ("state", 128),
            ("department", 64),
            ("companyName", 64),
            ("mobilePhone", 64),
            ("postalCode", 40),
            ("streetAddress", 1024),
            ("mailNickname", 64),
        ];
        for (prop, max) in cases {
            assert_eq!(user_max_length(prop), Some(max), "{prop}");
            assert!(
                max_chars(&"é".repeat(max), max).is_ok(),
                "{prop} counts chars"
            );
            assert_eq!(
                rule(max_chars(&"x".repeat(max + 1), max)),
                "length",
                "{prop}"
            );
        }
        assert_eq!(user_max_length("officeLocation"), None);
    }

    #[test]
    fn display_name_rules() {
        assert_eq!(rule(display_name("Barbara Jensen")), "ok");
        assert_eq!(rule(display_name("  ")), "required");
        assert_eq!(rule(display_name(&"x".repeat(257))), "length");
        assert_eq!(rule(group_display_name("")), "required");
        assert_eq!(rule(group_description(&"x".repeat(1025))), "length");
    }

    #[test]
    fn usage_location_uses_the_real_code_list() {
        for ok in ["US", "GB", "JP", "DE", "FR", "CH", "AX", "SS", "CW"] {
            assert_eq!(rule(usage_location(ok)), "ok", "{ok}");
        }
        // Two upper-case letters that are not assigned codes.
        for bad in ["XX", "UK", "EU", "ZZ", "AA", "USA", "U", ""] {
            assert_eq!(rule(usage_location(bad)), "usage_location.code", "{bad}");
        }
        let v = usage_location("us").unwrap_err();
        assert!(v.message.contains("\"US\""), "{v}");
        assert_eq!(ISO_3166_ALPHA2.split(' ').count(), 249);
        assert_eq!(ISO_3166_TABLE.iter().filter(|known| **known).count(), 249);
    }

    #[test]
    fn immutable_id_and_mail_rules() {
        assert_eq!(rule(immutable_id("x/nZ1jtOWkqcVis9HA+KEQ==")), "ok");
        assert_eq!(rule(immutable_id("abc$")), "immutable_id.charset");
        assert_eq!(rule(immutable_id("a_b")), "immutable_id.charset");
        assert_eq!(rule(immutable_id("")), "required");
        assert_eq!(rule(mail("bjensen@example.com")), "ok");
        assert_eq!(rule(mail("bjensen")), "mail.format");
        assert_eq!(rule(mail("a@b@c")), "mail.format");
        assert_eq!(rule(mail("@example.com")), "mail.format");
        assert_eq!(rule(mail("josé@example.com")), "mail.charset");
        assert_eq!(rule(mail("jo se@example.com")), "mail.charset");
    }

    #[test]
    fn business_phones_hold_one_number() {
        assert_eq!(rule(business_phones(&[])), "ok");
        assert_eq!(rule(business_phones(&["+1 555 0100".into()])), "ok");
        assert_eq!(
            rule(business_phones(&[
                "+1 555 0100".into(),
                "+1 555 0101".into()
            ])),
            "business_phones.count"
        );
    }

    #[test]
    fn password_rules_table() {
        let long = format!("Aa1{}", "x".repeat(254));
        let cases: Vec<(&str, &str)> = vec![
            ("xWwvJ]6NMw+bWH-d", "ok"),
            ("lower1UPPER", "ok"),
            ("lower UPPER", "ok"),
            ("abcDEF12", "ok"),
            ("abcdef!1", "ok"),
            ("Aa1!", "password.length"),
            (&long, "password.length"),
            ("alllowercase1", "password.classes"),
            ("ALLUPPER!!!!", "password.classes"),
            ("Pässword123", "password.charset"),
            ("Password123€", "password.charset"),
            ("Password\t123", "password.charset"),
        ];
        for (pw, expected) in cases {
            assert_eq!(rule(password(pw)), expected, "case {expected}");
        }
        assert_eq!(rule(password(&long[..256])), "ok");
    }

    #[test]
    fn password_messages_never_echo_the_password() {
        for pw in ["Pässword123", "short", "alllowercase1"] {
            let v = password(pw).unwrap_err();
            assert!(!v.message.contains(pw), "{v}");
            assert!(!v.message.contains('ä'), "{v}");
        }
    }

    #[test]
    fn date_time_guid_enum_rules() {
        for ok in [
            "2024-05-01T00:00:00Z",
            "2024-05-01T08:30:00.123Z",
            "2024-05-01T08:30:00+02:00",
        ] {
            assert_eq!(rule(date_time(ok)), "ok", "{ok}");
        }
        for bad in [
            "2024-05-01",
            "yesterday",
            "2024-05-01T08:30:00",
            "2024-05-01T08:30:00+2",
        ] {
            assert_eq!(rule(date_time(bad)), "date_time.format", "{bad}");
        }
        assert_eq!(rule(guid("6fd2c87f-b296-42f0-b197-1e91e994b900")), "ok");
        assert_eq!(rule(guid("{6FD2C87F-B296-42F0-B197-1E91E994B900}")), "ok");
        assert_eq!(rule(guid("ENTERPRISEPACK")), "guid.format");
        assert_eq!(
            sku_reference(" {6FD2C87F-B296-42F0-B197-1E91E994B900} "),
            Ok(SkuReference::Id(
                "6fd2c87f-b296-42f0-b197-1e91e994b900".into()
            ))
        );
        for part in [
            "ENTERPRISEPACK",
            "spe_e3",
            "Microsoft_365_E3_(no_Teams)",
            "O365_w/o_Teams",
        ] {
            assert_eq!(
                sku_reference(part),
                Ok(SkuReference::PartNumber(part.into())),
                "{part}"
            );
        }
        for junk in [
            "",
            "E3 plan",
            "3E",
            "E3,E5",
            "6fd2c87f-b296-42f0-b197-1e91e994b90g",
            "afd2c87f-b296-42f0",
            "ÉMS",
        ] {
            let violation = sku_reference(junk).unwrap_err();
            assert_eq!(violation.rule, "sku.format", "{junk}");
            assert!(violation.message.contains("part number"), "{junk}");
        }
        assert_eq!(
            rule(guid("6fd2c87f-b296-42f0-b197-1e91e994b90g")),
            "guid.format"
        );
        assert_eq!(rule(one_of("Member", &["Member", "Guest"])), "ok");
        assert_eq!(rule(one_of("member", &["Member", "Guest"])), "enum");
        assert_eq!(
            rule(password_policies(
                "DisablePasswordExpiration, DisableStrongPassword"
            )),
            "ok"
        );
        assert_eq!(rule(password_policies("Never")), "enum");
    }
}
