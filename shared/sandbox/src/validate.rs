//! Graph's property rules for users (docs/graph-behaviour.md#user-property-rules) and groups
//! (docs/graph-behaviour.md#creating-groups).

use crate::wire::GraphError;

/// UPN policy (docs/graph-behaviour.md#upn-policy): charset `A-Za-z0-9'.-_!#^~`, one `@`, no `.`
/// right before it, ≤113 total, ≤64 before `@`, ≤48 after. Domain check is separate.
pub(crate) fn upn_syntax_ok(upn: &str) -> bool {
    let Some((local, domain)) = upn.split_once('@') else {
        return false;
    };
    if domain.contains('@') || local.is_empty() || domain.is_empty() {
        return false;
    }
    if upn.len() > 113 || local.len() > 64 || domain.len() > 48 {
        return false;
    }
    if local.ends_with('.') || local.starts_with('.') {
        return false;
    }
    let local_ok = local
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "'.-_!#^~".contains(c));
    let domain_ok = domain
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    local_ok && domain_ok
}

/// mailNickname (docs/graph-behaviour.md#creating-groups, #user-property-rules): 1..=64 chars,
/// ASCII, none of `@()\[]";:.<>,` or space. (The directory accepts `.` in a user's mailNickname,
/// e.g. `john.doe`; the dot ban applies to groups.)
pub(crate) fn mail_nickname_ok(nick: &str, for_group: bool) -> bool {
    if nick.is_empty() || nick.chars().count() > 64 {
        return false;
    }
    nick.chars().all(|c| {
        c.is_ascii()
            && !c.is_ascii_control()
            && !"@()\\[]\";:<>, ".contains(c)
            && (!for_group || c != '.')
    })
}

/// Graph's message for a weak password (docs/graph-behaviour.md#password-policy).
pub(crate) const WEAK_PASSWORD: &str = "The specified password does not comply with password complexity requirements. Please provide a different password.";

/// Password policy (docs/graph-behaviour.md#password-policy): 8–256 chars, 3 of 4 classes, allowed
/// symbols, no Unicode.
pub(crate) fn password_ok(pw: &str) -> bool {
    let len = pw.chars().count();
    if !(8..=256).contains(&len) {
        return false;
    }
    const SYMBOLS: &str = "@#$%^&*-_!+=[]{}|\\:',.?/`~\"();<> ";
    let mut classes = [false; 4];
    for c in pw.chars() {
        if c.is_ascii_lowercase() {
            classes[0] = true;
        } else if c.is_ascii_uppercase() {
            classes[1] = true;
        } else if c.is_ascii_digit() {
            classes[2] = true;
        } else if SYMBOLS.contains(c) {
            classes[3] = true;
        } else {
            return false;
        }
    }
    classes.iter().filter(|&&c| c).count() >= 3
}

/// ISO 3166-1 alpha-2 codes (usageLocation, docs/graph-behaviour.md#user-property-rules).
const ISO_3166: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

pub(crate) fn usage_location_ok(code: &str) -> bool {
    code.len() == 2 && ISO_3166.split(' ').any(|c| c == code)
}

/// Maximum lengths of string properties (docs/graph-behaviour.md#user-property-rules,
/// #creating-groups).
pub(crate) fn max_len(entity: &str, prop: &str) -> Option<usize> {
    match (entity, prop) {
        (_, "displayName") => Some(256),
        (_, "mailNickname") => Some(64),
        ("user", "givenName" | "surname") => Some(64),
        ("user", "jobTitle" | "city" | "country" | "state") => Some(128),
        ("user", "department" | "companyName" | "mobilePhone") => Some(64),
        ("user", "postalCode") => Some(40),
        ("user", "streetAddress") => Some(1024),
        ("user", "employeeId") => Some(16),
        ("user", "userPrincipalName") => Some(113),
        ("group", "description") => Some(1024),
        _ => None,
    }
}

/// Checks lengths and plain rules shared by create and update; `resource` is `User` or `Group`.
pub(crate) fn check_lengths(
    entity: &str,
    resource: &str,
    body: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), GraphError> {
    for (name, value) in body {
        if let (Some(max), Some(s)) = (max_len(entity, name), value.as_str())
            && s.chars().count() > max
        {
            return Err(GraphError::invalid_value(name, resource));
        }
    }
    Ok(())
}

/// `onPremisesImmutableId` may not contain `$` or `_`
/// (docs/graph-behaviour.md#user-property-rules).
pub(crate) fn immutable_id_ok(v: &str) -> bool {
    !v.is_empty() && !v.contains('$') && !v.contains('_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upn_rules() {
        assert!(upn_syntax_ok("a.b@example.com"));
        assert!(!upn_syntax_ok("a.@example.com"));
        assert!(!upn_syntax_ok("a b@example.com"));
        assert!(!upn_syntax_ok("a@b@example.com"));
        assert!(!upn_syntax_ok(&format!("{}@example.com", "a".repeat(65))));
        assert!(!upn_syntax_ok("josé@example.com"));
    }

    /// The UPN cases shared with the core crate's validator (`tests/fixtures/upn-cases.json`), so
    /// that the two cannot drift apart.
    #[test]
    fn upn_syntax_agrees_with_the_shared_table() {
        let table: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/upn-cases.json")).unwrap();
        let cases = table["cases"].as_array().unwrap();
        assert!(cases.len() >= 40, "{} cases", cases.len());
        for case in cases {
            let upn = case["upn"].as_str().unwrap();
            let valid = case["valid"].as_bool().unwrap();
            assert_eq!(upn_syntax_ok(upn), valid, "{upn:?}: {}", case["reason"]);
        }
    }

    #[test]
    fn password_rules() {
        assert!(password_ok("xWwvJ]6NMw+bWH-d"));
        assert!(!password_ok("short1A"));
        assert!(!password_ok("alllowercase1"));
        assert!(password_ok("lower1UPPER"));
        assert!(!password_ok("Pässword123"));
    }

    #[test]
    fn nick_rules() {
        assert!(mail_nickname_ok("john.doe", false));
        assert!(!mail_nickname_ok("john.doe", true));
        assert!(!mail_nickname_ok("a b", false));
        assert!(!mail_nickname_ok("naveen.mills,.jr.", false));
    }
}
