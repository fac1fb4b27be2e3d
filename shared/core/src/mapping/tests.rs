use secrecy::ExposeSecret;
use serde_json::json;

use super::*;
use crate::model::Attributes;

const SKU_E3: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";
const SKU_EMS: &str = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e";
const PLAN_SWAY: &str = "a23b959c-7ce8-4e57-9140-b90eb88a9e97";
const PLAN_YAMMER: &str = "7547a3fe-08ee-4ccb-b430-5077c5041653";

fn spec(value: serde_json::Value) -> MappingSpec {
    serde_json::from_value(value).unwrap()
}

/// A spec with the required entries and `extra` attribute mappings.
fn base_spec(extra: serde_json::Value) -> MappingSpec {
    let mut attributes = json!({
        "userPrincipalName": "{{ uid | lower }}@example.com",
        "displayName": "{{ givenName }} {{ sn }}",
    });
    if let (Some(a), Some(e)) = (attributes.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            a.insert(k.clone(), v.clone());
        }
    }
    spec(json!({ "attributes": attributes, "password": { "source": "generate" } }))
}

fn user(id: &str, attrs: serde_json::Value) -> SourceUser {
    let attributes: Attributes = serde_json::from_value(attrs).unwrap();
    SourceUser {
        id: id.to_owned(),
        enabled: true,
        attributes,
    }
}

fn bjensen() -> SourceUser {
    user(
        "4f2a9c1e-0000-4000-8000-000000000001",
        json!({
            "uid": "BJensen",
            "givenName": "Barbara",
            "sn": "Jensen",
            "mail": "bjensen@example.com",
            "telephoneNumber": ["+1 555 0100"],
            "altMail": ["b@home.example", "b@other.example"],
            "objectGUID": {"base64": "x/nZ1jtOWkqcVis9HA+KEQ=="},
            "vip": true,
            "manager": "uid=boss,ou=people,dc=example,dc=com",
            "skus": [SKU_E3, SKU_EMS],
            "initialPassword": "Welcome-2024!",
        }),
    )
}

fn errors_of(r: Result<MappedUser, Vec<MappingError>>) -> Vec<MappingError> {
    match r {
        Ok(m) => panic!("expected errors, got {:?}", m.properties),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// Mapping

#[test]
fn maps_every_kind_of_expression() {
    let mapper = Mapper::new(&base_spec(json!({
        "usageLocation": "US",
        "givenName": {"attribute": "givenName"},
        "surname": {"attribute": "SN"},
        "mail": {"attribute": "mail"},
        "businessPhones": {"attribute": "telephoneNumber"},
        "otherMails": ["{{ mail | replace('@example.com', '@alias.example') }}", {"attribute": "altMail"}],
        "showInAddressList": "{{ vip }}",
        "onPremisesImmutableId": "{{ objectGUID | guid_to_immutable_id }}",
        "onPremisesExtensionAttributes.extensionAttribute1": "{{ source.id }}",
        "employeeOrgData.costCenter": "CC-{{ uid | upper }}",
        "department": "Sales",
    })))
    .unwrap();
    let m = mapper.map_user(&bjensen()).unwrap();
    let expected = json!({
        "businessPhones": ["+1 555 0100"],
        "department": "Sales",
        "displayName": "Barbara Jensen",
        "employeeOrgData": {"costCenter": "CC-BJENSEN"},
        "givenName": "Barbara",
        "mail": "bjensen@example.com",
        "mailNickname": "bjensen",
        "onPremisesExtensionAttributes": {"extensionAttribute1": "4f2a9c1e-0000-4000-8000-000000000001"},
        "onPremisesImmutableId": "x/nZ1jtOWkqcVis9HA+KEQ==",
        "otherMails": ["bjensen@alias.example", "b@home.example", "b@other.example"],
        "showInAddressList": true,
        "surname": "Jensen",
        "usageLocation": "US",
        "userPrincipalName": "bjensen@example.com",
    });
    assert_eq!(serde_json::to_value(&m.properties).unwrap(), expected);
    assert_eq!(m.label.as_deref(), Some("BJensen"));
    assert!(m.unique_candidates.is_empty());
    assert_eq!(m.licenses, None, "licenses not mapped");
    assert_eq!(m.manager_ref, None, "manager not mapped");
    assert!(matches!(
        m.password
            .as_ref()
            .map(|p| (&p.origin, p.force_change_password_next_sign_in)),
        Some((PasswordOrigin::Generate, true))
    ));
    assert_eq!(
        mapper.mapped_properties().collect::<Vec<_>>(),
        [
            "businessPhones",
            "department",
            "displayName",
            "employeeOrgData",
            "givenName",
            "mail",
            "mailNickname",
            "onPremisesExtensionAttributes",
            "onPremisesImmutableId",
            "otherMails",
            "showInAddressList",
            "surname",
            "usageLocation",
            "userPrincipalName"
        ]
    );
}

#[test]
fn dotted_attributes_read_as_members_in_templates_and_whole_by_name() {
    let mapper = Mapper::new(&spec(json!({
        "attributes": {
            "userPrincipalName": "{{ username }}@example.com",
            "displayName": "{{ name.given }} {{ NAME.family }}",
            "givenName": {"attribute": "name.given"},
            "city": "{{ address.home.locality | default('none') }}",
            "department": "{{ name.middle | default('-') }}",
        },
        "password": {"source": "generate"},
    })))
    .unwrap();
    let pingone = user(
        "b0000000-0000-4000-8000-000000000b0b",
        json!({
            "username": "bob",
            "name.given": "Bob",
            "name.family": "Baker",
            "address.home.locality": "Lyon",
        }),
    );
    let m = mapper.map_user(&pingone).unwrap();
    let props = serde_json::to_value(&m.properties).unwrap();
    assert_eq!(props["displayName"], "Bob Baker");
    assert_eq!(props["givenName"], "Bob");
    assert_eq!(props["city"], "Lyon");
    assert_eq!(props["department"], "-");
}

#[test]
fn single_expression_templates_keep_their_type() {
    let mapper = Mapper::new(&base_spec(json!({
        "otherMails": "{{ mails | split(';') }}",
        "showInAddressList": "{{ not hidden }}",
        "employeeId": "{{ number }}",
        "jobTitle": "{{ title }} ({{ level }})",
    })))
    .unwrap();
    let u = user(
        "1",
        json!({"uid": "a", "givenName": "A", "sn": "B", "mails": "a@x.example; b@x.example",
               "hidden": false, "number": 42, "title": "Engineer", "level": 3}),
    );
    let m = mapper.map_user(&u).unwrap();
    assert_eq!(
        m.properties["otherMails"],
        json!(["a@x.example", "b@x.example"])
    );
    assert_eq!(m.properties["showInAddressList"], json!(true));
    assert_eq!(m.properties["employeeId"], json!("42"));
    assert_eq!(m.properties["jobTitle"], json!("Engineer (3)"));
}

#[test]
fn diacritics_in_a_upn_template() {
    let mapper = Mapper::new(&base_spec(json!({
        "userPrincipalName": "{{ (givenName ~ '.' ~ sn) | ascii | lower }}@example.com",
    })))
    .unwrap();
    for (given, sn, upn, nick) in [
        ("José", "Müller", "jose.muller@example.com", "jose.muller"),
        ("Jörg", "Weiß", "jorg.weiss@example.com", "jorg.weiss"),
        (
            "Søren",
            "Ørsted",
            "soren.orsted@example.com",
            "soren.orsted",
        ),
    ] {
        let m = mapper
            .map_user(&user("1", json!({"givenName": given, "sn": sn})))
            .unwrap();
        assert_eq!(m.properties["userPrincipalName"], json!(upn));
        assert_eq!(
            m.properties["mailNickname"],
            json!(nick),
            "derived from the UPN"
        );
    }
}

#[test]
fn empty_values_clear_or_are_left_out() {
    let mapper = Mapper::new(&base_spec(json!({
        "jobTitle": {"attribute": "title"},
        "businessPhones": {"attribute": "telephoneNumber"},
        "usageLocation": {"attribute": "c"},
        "showInAddressList": {"attribute": "visible"},
        "onPremisesExtensionAttributes.extensionAttribute2": "{{ missing }}",
        "department": "{{ dept | default('') }}",
    })))
    .unwrap();
    let m = mapper
        .map_user(&user(
            "1",
            json!({"uid": "a", "givenName": "A", "sn": "B", "dept": "  "}),
        ))
        .unwrap();
    assert_eq!(m.properties["jobTitle"], Json::Null, "null clears on PATCH");
    assert_eq!(
        m.properties["businessPhones"],
        json!([]),
        "collections clear with []"
    );
    assert_eq!(m.properties["showInAddressList"], Json::Null);
    assert_eq!(m.properties["department"], Json::Null);
    assert_eq!(
        m.properties["onPremisesExtensionAttributes"],
        json!({"extensionAttribute2": null})
    );
    assert!(
        !m.properties.contains_key("usageLocation"),
        "usageLocation cannot be cleared"
    );
    let create = m.create_properties();
    assert_eq!(
        create.keys().collect::<Vec<_>>(),
        ["displayName", "mailNickname", "userPrincipalName"]
    );
}

#[test]
fn required_properties_must_have_a_value() {
    let mapper = Mapper::new(&base_spec(json!({
        "userPrincipalName": {"attribute": "upn"},
        "displayName": "{{ cn }}",
    })))
    .unwrap();
    let errors = errors_of(mapper.map_user(&user("1", json!({"upn": " ", "sn": ""}))));
    let rules: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.property.as_str(), e.rule))
        .collect();
    assert_eq!(
        rules,
        [
            ("displayName", "required"),
            ("userPrincipalName", "required")
        ]
    );
}

#[test]
fn every_rule_is_enforced_per_user_with_a_named_error() {
    // (target, expression, source value, rule broken)
    let cases: Vec<(&str, serde_json::Value, serde_json::Value, &str)> = vec![
        (
            "userPrincipalName",
            json!({"attribute": "v"}),
            json!("b jensen@example.com"),
            "upn.charset",
        ),
        (
            "userPrincipalName",
            json!({"attribute": "v"}),
            json!("bjensen.@example.com"),
            "upn.dot_before_at",
        ),
        (
            "userPrincipalName",
            json!({"attribute": "v"}),
            json!("bjensen"),
            "upn.format",
        ),
        (
            "userPrincipalName",
            json!({"attribute": "v"}),
            json!(format!("{}@example.com", "a".repeat(65))),
            "upn.length",
        ),
        (
            "mailNickname",
            json!({"attribute": "v"}),
            json!("b jensen"),
            "mail_nickname.charset",
        ),
        (
            "mailNickname",
            json!({"attribute": "v"}),
            json!("n".repeat(65)),
            "length",
        ),
        (
            "displayName",
            json!({"attribute": "v"}),
            json!("d".repeat(257)),
            "length",
        ),
        (
            "givenName",
            json!({"attribute": "v"}),
            json!("g".repeat(65)),
            "length",
        ),
        (
            "surname",
            json!({"attribute": "v"}),
            json!("s".repeat(65)),
            "length",
        ),
        (
            "jobTitle",
            json!({"attribute": "v"}),
            json!("j".repeat(129)),
            "length",
        ),
        (
            "city",
            json!({"attribute": "v"}),
            json!("c".repeat(129)),
            "length",
        ),
        (
            "country",
            json!({"attribute": "v"}),
            json!("c".repeat(129)),
            "length",
        ),
        (
            "state",
            json!({"attribute": "v"}),
            json!("s".repeat(129)),
            "length",
        ),
        (
            "department",
            json!({"attribute": "v"}),
            json!("d".repeat(65)),
            "length",
        ),
        (
            "companyName",
            json!({"attribute": "v"}),
            json!("c".repeat(65)),
            "length",
        ),
        (
            "mobilePhone",
            json!({"attribute": "v"}),
            json!("1".repeat(65)),
            "length",
        ),
        (
            "postalCode",
            json!({"attribute": "v"}),
            json!("1".repeat(41)),
            "length",
        ),
        (
            "streetAddress",
            json!({"attribute": "v"}),
            json!("s".repeat(1025)),
            "length",
        ),
        (
            "usageLocation",
            json!({"attribute": "v"}),
            json!("UK"),
            "usage_location.code",
        ),
        (
            "usageLocation",
            json!({"attribute": "v"}),
            json!("us"),
            "usage_location.code",
        ),
        (
            "onPremisesImmutableId",
            json!({"attribute": "v"}),
            json!("abc_def"),
            "immutable_id.charset",
        ),
        (
            "onPremisesImmutableId",
            json!({"attribute": "v"}),
            json!("abc$def"),
            "immutable_id.charset",
        ),
        (
            "mail",
            json!({"attribute": "v"}),
            json!("josé@example.com"),
            "mail.charset",
        ),
        (
            "mail",
            json!({"attribute": "v"}),
            json!("a@b@example.com"),
            "mail.format",
        ),
        (
            "otherMails",
            json!({"attribute": "v"}),
            json!(["ok@example.com", "bad"]),
            "mail.format",
        ),
        (
            "businessPhones",
            json!({"attribute": "v"}),
            json!(["+1 555 0100", "+1 555 0101"]),
            "business_phones.count",
        ),
        (
            "employeeHireDate",
            json!({"attribute": "v"}),
            json!("yesterday"),
            "date_time.format",
        ),
        (
            "userType",
            json!({"attribute": "v"}),
            json!("Admin"),
            "enum",
        ),
        (
            "showInAddressList",
            json!({"attribute": "v"}),
            json!("maybe"),
            "evaluation",
        ),
        (
            "employeeId",
            json!({"attribute": "v"}),
            json!({"base64": "AAEC"}),
            "evaluation",
        ),
    ];
    for (target, expr, value, rule) in cases {
        let mapper = Mapper::new(&base_spec(json!({ target: expr }))).unwrap();
        let u = user(
            "4f2a9c1e-0000-4000-8000-000000000001",
            json!({"uid": "bjensen", "givenName": "Barbara", "sn": "Jensen", "v": value}),
        );
        let errors = errors_of(mapper.map_user(&u));
        assert_eq!(errors.len(), 1, "{target} {value}: {errors:?}");
        let e = &errors[0];
        assert_eq!(
            (e.property.as_str(), e.rule),
            (target, rule),
            "{value}: {e}"
        );
        assert_eq!(e.source_id, "4f2a9c1e-0000-4000-8000-000000000001");
        let shown = e.to_string();
        assert!(shown.starts_with("user 4f2a… (bjensen): "), "{shown}");
        assert!(shown.contains(target), "{shown}");
    }
}

#[test]
fn error_message_names_user_property_value_and_rule() {
    let mapper = Mapper::new(&base_spec(
        json!({"userPrincipalName": {"attribute": "upn"}}),
    ))
    .unwrap();
    let u = user(
        "4f2a9c1e-0000-4000-8000-000000000001",
        json!({"uid": "bjensen", "upn": "b jensen@example.com", "givenName": "B", "sn": "J"}),
    );
    let errors = errors_of(mapper.map_user(&u));
    assert_eq!(
        errors[0].to_string(),
        "user 4f2a… (bjensen): userPrincipalName \"b jensen@example.com\" is invalid: character ' ' is not allowed (allowed: A-Z a-z 0-9 ' . - _ ! # ^ ~)"
    );
    assert_eq!(errors[0].value.as_deref(), Some("b jensen@example.com"));
    assert_eq!(errors[0].kind, ObjectKind::User);
}

#[test]
fn all_errors_of_a_user_are_reported_together() {
    let mapper = Mapper::new(&base_spec(json!({
        "usageLocation": {"attribute": "c"},
        "postalCode": {"attribute": "zip"},
    })))
    .unwrap();
    let u = user(
        "1",
        json!({"uid": "a b", "givenName": "A", "sn": "B", "c": "XX", "zip": "9".repeat(50)}),
    );
    let errors = errors_of(mapper.map_user(&u));
    let props: Vec<&str> = errors.iter().map(|e| e.property.as_str()).collect();
    assert_eq!(props, ["postalCode", "usageLocation", "userPrincipalName"]);
}

#[test]
fn domain_policy_checks_verified_and_federated_domains() {
    let policy = DomainPolicy::new(["example.com", "fed.example.com"], ["fed.example.com"]);
    let mapper = Mapper::new(&base_spec(json!({
        "userPrincipalName": {"attribute": "upn"},
        "onPremisesImmutableId": "{{ objectGUID | guid_to_immutable_id }}",
    })))
    .unwrap()
    .with_domain_policy(policy);
    let mk = |upn: &str, guid: bool| {
        let mut attrs = json!({"upn": upn, "givenName": "A", "sn": "B"});
        if guid {
            attrs["objectGUID"] = json!({"base64": "x/nZ1jtOWkqcVis9HA+KEQ=="});
        }
        mapper.map_user(&user("1", attrs))
    };
    assert!(mk("a@example.com", false).is_ok());
    assert!(mk("a@fed.example.com", true).is_ok());
    let e = errors_of(mk("a@fed.example.com", false));
    assert_eq!(
        (e[0].property.as_str(), e[0].rule),
        ("onPremisesImmutableId", "immutable_id.required_federated")
    );
    let e = errors_of(mk("a@elsewhere.org", false));
    assert_eq!(e[0].rule, "upn.domain_not_verified");
    assert!(
        e[0].message.contains("example.com, fed.example.com"),
        "{}",
        e[0]
    );
}

// ---------------------------------------------------------------------------------------------
// Config errors

fn config_error(value: serde_json::Value) -> MappingConfigError {
    Mapper::new(&spec(value)).unwrap_err()
}

fn with_required(extra: serde_json::Value) -> serde_json::Value {
    let mut attrs =
        json!({"userPrincipalName": "{{ uid }}@example.com", "displayName": "{{ cn }}"});
    if let (Some(a), Some(e)) = (attrs.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            a.insert(k.clone(), v.clone());
        }
    }
    json!({"attributes": attrs, "password": {"source": "generate"}})
}

#[test]
fn unknown_and_refused_targets_are_rejected_at_load() {
    let cases = [
        (
            "favouriteColour",
            "is not a writable Microsoft Graph user property",
        ),
        ("UserPrincipalName", "did you mean `userPrincipalName`?"),
        ("accountEnabled", "owned by the engine"),
        ("passwordProfile", "`password` section"),
        ("assignedLicenses", "`licenses` section"),
        ("manager", "`manager` entry"),
        ("proxyAddresses", "read-only through Graph"),
        ("skills", "SharePoint"),
        ("createdDateTime", "read-only"),
        ("employeeOrgData", "map its members"),
        (
            "onPremisesExtensionAttributes.extensionAttribute16",
            "not a writable",
        ),
    ];
    for (target, fragment) in cases {
        let err = config_error(with_required(json!({ target: "x" })));
        let shown = err.to_string();
        assert!(shown.contains(&format!("`{target}`")), "{shown}");
        assert!(shown.contains(fragment), "{target}: {shown}");
    }
}

#[test]
fn template_errors_name_the_property_and_the_position() {
    let err = config_error(with_required(json!({"jobTitle": "{{ title | lower }"})));
    let MappingConfigError::Template {
        target,
        expression,
        line,
        column,
        message,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(target, "jobTitle");
    assert_eq!(expression, "\"{{ title | lower }\"");
    assert_eq!(*line, 1);
    assert!(*column > 1, "{err}");
    assert!(message.contains("syntax error"), "{err}");
    assert!(
        err.to_string()
            .starts_with("mapping of `jobTitle`: template"),
        "{err}"
    );

    let err = config_error(with_required(
        json!({"city": "line one\n{% if x %}unclosed"}),
    ));
    assert!(
        matches!(&err, MappingConfigError::Template { target, line: 2, .. } if target == "city"),
        "{err}"
    );

    // Unknown filters and functions are caught at load, not per user.
    for (expr, fragment) in [
        ("{{ sn | lowercase }}", "lowercase"),
        ("{{ frobnicate(sn) }}", "frobnicate"),
    ] {
        let err = config_error(with_required(json!({"surname": expr})));
        assert!(
            matches!(&err, MappingConfigError::Template { target, .. } if target == "surname"),
            "{err}"
        );
        assert!(err.to_string().contains(fragment), "{err}");
    }
}

#[test]
fn literals_are_validated_at_load() {
    for (target, value, fragment) in [
        ("usageLocation", json!("UK"), "ISO 3166-1"),
        ("businessPhones", json!(["1", "2"]), "one business phone"),
        ("showInAddressList", json!("perhaps"), "not a boolean"),
        ("jobTitle", json!(["a", "b"]), "holds a single value"),
        ("userType", json!("Admin"), "Member, Guest"),
    ] {
        let err = config_error(with_required(json!({ target: value })));
        assert!(
            matches!(&err, MappingConfigError::Invalid { target: t, .. } if t == target),
            "{err}"
        );
        assert!(err.to_string().contains(fragment), "{err}");
    }
    assert!(
        Mapper::new(&spec(with_required(
            json!({"usageLocation": "GB", "showInAddressList": false})
        )))
        .is_ok()
    );
}

#[test]
fn required_entries_are_config_errors() {
    let err = config_error(
        json!({"attributes": {"displayName": "x"}, "password": {"source": "generate"}}),
    );
    assert_eq!(
        err,
        MappingConfigError::Missing {
            target: "userPrincipalName".into(),
            why: "Graph requires it to create a user"
        }
    );
    let err = config_error(
        json!({"attributes": {"userPrincipalName": "{{ a }}@x.example", "displayName": "x"}}),
    );
    assert!(
        matches!(&err, MappingConfigError::Missing { target, .. } if target == "password"),
        "{err}"
    );
    let err = config_error(json!({
        "attributes": {"userPrincipalName": "{{ a }}@x.example", "displayName": "x"},
        "password": {"source": {"secret": " "}}
    }));
    assert!(err.to_string().contains("SecretStore"), "{err}");
    let mut value = with_required(json!({}));
    value["licenses"] = json!({"sku_ids": SKU_E3, "disabled_plans": {"E3 license": [PLAN_SWAY]}});
    let err = config_error(value);
    assert!(err.to_string().contains("licenses.disabled_plans"), "{err}");
    assert!(err.to_string().contains("part number"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// unique

fn unique_mapper() -> Mapper {
    Mapper::new(&base_spec(json!({
        "userPrincipalName": "{{ unique(uid | lower, (givenName ~ '.' ~ sn) | ascii | lower, numbered(uid | lower, 2, 3)) }}@example.com",
    })))
    .unwrap()
}

#[test]
fn unique_returns_validated_candidates_in_order() {
    let mapper = unique_mapper();
    let m = mapper
        .map_user(&user(
            "1",
            json!({"uid": "JDoe", "givenName": "John", "sn": "Doe"}),
        ))
        .unwrap();
    assert_eq!(
        m.unique_candidates["userPrincipalName"],
        [
            "jdoe@example.com",
            "john.doe@example.com",
            "jdoe2@example.com",
            "jdoe3@example.com"
        ]
    );
    assert!(
        !m.properties.contains_key("userPrincipalName"),
        "settled later"
    );
    assert!(
        !m.properties.contains_key("mailNickname"),
        "derived once the UPN is settled"
    );

    // Candidates breaking the UPN rules are dropped; the valid ones stay.
    let m = mapper
        .map_user(&user(
            "1",
            json!({"uid": "j doe", "givenName": "John", "sn": "Doe"}),
        ))
        .unwrap();
    assert_eq!(
        m.unique_candidates["userPrincipalName"],
        ["john.doe@example.com"]
    );
}

#[test]
fn unique_with_no_valid_candidate_is_an_error_naming_the_first() {
    let mapper = Mapper::new(&base_spec(json!({
        "userPrincipalName": "{{ unique(uid, uid ~ '2') }}@example.com",
    })))
    .unwrap();
    let errors = errors_of(mapper.map_user(&user(
        "1",
        json!({"uid": "a b", "givenName": "A", "sn": "B"}),
    )));
    assert_eq!(errors[0].rule, "upn.charset");
    assert_eq!(errors[0].value.as_deref(), Some("a b@example.com"));
}

#[test]
fn resolve_unique_picks_the_first_free_keeps_own_and_claims() {
    let mapper = unique_mapper();
    let john = user(
        "1",
        json!({"uid": "JDoe", "givenName": "John", "sn": "Doe"}),
    );
    let mut taken = TakenValues::new();
    taken.claim("userPrincipalName", "JDOE@example.com");

    // New user: jdoe is taken (case-insensitively), john.doe is free.
    let mut m = mapper.map_user(&john).unwrap();
    let chosen = mapper
        .resolve_unique(&mut m, &taken, &BTreeMap::new())
        .unwrap();
    assert_eq!(chosen["userPrincipalName"], "john.doe@example.com");
    assert_eq!(
        m.properties["userPrincipalName"],
        json!("john.doe@example.com")
    );
    assert_eq!(m.properties["mailNickname"], json!("john.doe"));
    assert!(m.unique_candidates.is_empty());
    for (p, v) in &chosen {
        taken.claim(p, v);
    }

    // A second John Doe in the same run gets the next candidate.
    let mut m2 = mapper.map_user(&john).unwrap();
    let chosen = mapper
        .resolve_unique(&mut m2, &taken, &BTreeMap::new())
        .unwrap();
    assert_eq!(chosen["userPrincipalName"], "jdoe2@example.com");

    // A linked user that holds a candidate keeps it, even if an earlier one is free now.
    let mut m3 = mapper.map_user(&john).unwrap();
    let current = BTreeMap::from([(
        "userPrincipalName".to_owned(),
        "JDoe3@example.com".to_owned(),
    )]);
    let chosen = mapper
        .resolve_unique(&mut m3, &|_: &str, _: &str| true, &current)
        .unwrap();
    assert_eq!(chosen["userPrincipalName"], "jdoe3@example.com");

    // Everything taken: a per-user error listing what was tried.
    let mut m4 = mapper.map_user(&john).unwrap();
    let errors = mapper
        .resolve_unique(&mut m4, &|_: &str, _: &str| false, &BTreeMap::new())
        .unwrap_err();
    assert_eq!(errors[0].rule, "unique.exhausted");
    assert!(errors[0].message.contains("4 tried"), "{}", errors[0]);
    assert!(
        errors[0]
            .to_string()
            .starts_with("user 1 (JDoe): userPrincipalName: "),
        "{}",
        errors[0]
    );
}

#[test]
fn resolve_unique_checks_federated_domains_on_the_chosen_upn() {
    let mapper = Mapper::new(&base_spec(json!({
        "userPrincipalName": "{{ unique(uid ~ '@fed.example.com', uid ~ '@example.com') }}",
    })))
    .unwrap()
    .with_domain_policy(DomainPolicy::new(
        ["example.com", "fed.example.com"],
        ["fed.example.com"],
    ));
    let mut m = mapper
        .map_user(&user(
            "1",
            json!({"uid": "jdoe", "givenName": "J", "sn": "D"}),
        ))
        .unwrap();
    let errors = mapper
        .resolve_unique(&mut m, &TakenValues::new(), &BTreeMap::new())
        .unwrap_err();
    assert_eq!(errors[0].rule, "immutable_id.required_federated");
}

#[test]
fn unique_misuse_is_reported() {
    for (expr, fragment) in [
        (
            "{{ unique(uid, 'x') | upper }}@example.com",
            "must not be transformed",
        ),
        (
            "{{ unique(uid) }}{{ unique(uid) }}@example.com",
            "only once",
        ),
    ] {
        let mapper = Mapper::new(&base_spec(json!({ "userPrincipalName": expr }))).unwrap();
        let errors = errors_of(
            mapper.map_user(&user("1", json!({"uid": "a", "givenName": "A", "sn": "B"}))),
        );
        assert_eq!(errors[0].rule, "evaluation");
        assert!(errors[0].message.contains(fragment), "{}", errors[0]);
    }
    let mapper = Mapper::new(&base_spec(
        json!({"showInAddressList": "{{ unique('true') }}"}),
    ))
    .unwrap();
    let errors =
        errors_of(mapper.map_user(&user("1", json!({"uid": "a", "givenName": "A", "sn": "B"}))));
    assert!(
        errors[0].message.contains("text properties only"),
        "{}",
        errors[0]
    );
}

// ---------------------------------------------------------------------------------------------
// Password, licenses, manager

fn password_origin(pw: serde_json::Value, u: &SourceUser) -> PasswordValue {
    let mut value = with_required(json!({}));
    value["password"] = pw;
    let mapper = Mapper::new(&spec(value)).unwrap();
    mapper.map_user(u).unwrap().password.unwrap()
}

#[test]
fn password_sources() {
    let u = user(
        "1",
        json!({"uid": "a", "cn": "A", "pw": "Welcome-2024!", "weak": "password", "uni": "Pässwörd-2024"}),
    );
    let p = password_origin(json!({"source": {"mapped": {"attribute": "pw"}}}), &u);
    assert!(matches!(&p.origin, PasswordOrigin::Value(s) if s.expose_secret() == "Welcome-2024!"));
    assert!(p.force_change_password_next_sign_in);
    assert!(
        !format!("{p:?}").contains("Welcome"),
        "Debug hides the password"
    );

    let p = password_origin(
        json!({"source": {"secret": "default_pw"}, "reset_password": false}),
        &u,
    );
    assert!(matches!(&p.origin, PasswordOrigin::Secret(n) if n == "default_pw"));
    assert!(!p.force_change_password_next_sign_in);

    for (attr, rule) in [
        ("weak", "password.classes"),
        ("uni", "password.charset"),
        ("missing", "required"),
    ] {
        let p = password_origin(
            json!({"source": {"mapped": format!("{{{{ {attr} }}}}")}}),
            &u,
        );
        let PasswordOrigin::Unusable(e) = &p.origin else {
            panic!("{attr}: {p:?}");
        };
        assert_eq!(
            (e.property.as_str(), e.rule, e.value.as_deref()),
            ("password", rule, None)
        );
        let shown = e.to_string();
        assert!(
            !shown.contains("password\"") && !shown.contains("Pässwörd"),
            "{shown}"
        );
    }
}

#[test]
fn licenses_mapped_unmapped_and_empty() {
    let mut value = with_required(json!({}));
    value["licenses"] = json!({
        "sku_ids": {"attribute": "skus"},
        "disabled_plans": { SKU_E3.to_uppercase(): [PLAN_YAMMER, PLAN_SWAY] },
    });
    let mapper = Mapper::new(&spec(value)).unwrap();
    assert!(mapper.maps_licenses());
    let with = |skus: serde_json::Value| {
        mapper.map_user(&user("1", json!({"uid": "a", "cn": "A", "skus": skus})))
    };
    assert_eq!(
        with(json!([SKU_EMS, SKU_E3.to_uppercase(), SKU_E3]))
            .unwrap()
            .licenses,
        Some(vec![
            LicenseAssignment {
                sku_id: SKU_E3.into(),
                disabled_plans: vec![PLAN_YAMMER.into(), PLAN_SWAY.into()],
            },
            LicenseAssignment {
                sku_id: SKU_EMS.into(),
                disabled_plans: vec![],
            },
        ])
    );
    assert_eq!(
        with(json!(SKU_EMS)).unwrap().licenses.map(|l| l.len()),
        Some(1)
    );
    assert_eq!(
        with(json!([])).unwrap().licenses,
        Some(vec![]),
        "mapped and empty"
    );
    assert_eq!(
        with(json!("")).unwrap().licenses,
        Some(vec![]),
        "mapped and empty"
    );
    // Part numbers pass as written (the planner resolves them); junk is refused by name.
    assert_eq!(
        with(json!(["SPE_E3", "spe_e3", "Microsoft_365_E3_(no_Teams)"]))
            .unwrap()
            .licenses,
        Some(vec![
            LicenseAssignment {
                sku_id: "Microsoft_365_E3_(no_Teams)".into(),
                disabled_plans: vec![],
            },
            LicenseAssignment {
                sku_id: "SPE_E3".into(),
                disabled_plans: vec![],
            },
        ])
    );
    for junk in ["E3 license", "6fd2c87f-b296-42f0", "3E", "E3;E5"] {
        let errors = errors_of(with(json!([SKU_EMS, junk])));
        assert_eq!(
            (errors[0].property.as_str(), errors[0].rule),
            ("licenses", "sku.format"),
            "{junk}"
        );
        assert_eq!(errors[0].value.as_deref(), Some(junk));
        assert!(
            errors[0].to_string().contains("nor a SKU part number"),
            "{}",
            errors[0]
        );
    }

    let unmapped = Mapper::new(&spec(with_required(json!({})))).unwrap();
    assert!(!unmapped.maps_licenses());
    assert_eq!(
        unmapped
            .map_user(&user("1", json!({"uid": "a", "cn": "A", "skus": [SKU_E3]})))
            .unwrap()
            .licenses,
        None,
        "not mapped"
    );
}

#[test]
fn disabled_plans_keyed_by_part_number() {
    let mut value = with_required(json!({}));
    value["licenses"] = json!({
        "sku_ids": {"attribute": "skus"},
        "disabled_plans": { "EnterprisePack": [PLAN_SWAY], SKU_EMS: [PLAN_YAMMER] },
    });
    let mapper = Mapper::new(&spec(value)).unwrap();
    let with = |skus: serde_json::Value| {
        mapper
            .map_user(&user("1", json!({"uid": "a", "cn": "A", "skus": skus})))
            .unwrap()
    };
    // Written alike: matched here, case-insensitively.
    let m = with(json!(["ENTERPRISEPACK"]));
    assert_eq!(
        m.licenses,
        Some(vec![LicenseAssignment {
            sku_id: "ENTERPRISEPACK".into(),
            disabled_plans: vec![PLAN_SWAY.into()],
        }])
    );
    // The GUID key is in the other form than the part number value: left to the planner.
    assert_eq!(
        m.sku_plans,
        BTreeMap::from([(SKU_EMS.to_owned(), vec![PLAN_YAMMER.to_owned()])])
    );
    // GUID values: the part number key is left to the planner, the GUID key matched here.
    let m = with(json!([SKU_EMS, SKU_E3]));
    assert_eq!(
        m.sku_plans,
        BTreeMap::from([("enterprisepack".to_owned(), vec![PLAN_SWAY.to_owned()])])
    );
    assert!(
        m.licenses
            .unwrap()
            .iter()
            .any(|l| l.sku_id == SKU_EMS && l.disabled_plans == vec![PLAN_YAMMER.to_owned()])
    );
}

#[test]
fn manager_reference_mapped_and_cleared() {
    let mut value = with_required(json!({}));
    value["manager"] = json!({"attribute": "manager"});
    let mapper = Mapper::new(&spec(value)).unwrap();
    assert!(mapper.maps_manager());
    let m = mapper
        .map_user(&user(
            "1",
            json!({"uid": "a", "cn": "A", "manager": "uid=boss,dc=example"}),
        ))
        .unwrap();
    assert_eq!(m.manager_ref, Some(Some("uid=boss,dc=example".to_owned())));
    let m = mapper
        .map_user(&user("1", json!({"uid": "a", "cn": "A", "manager": ""})))
        .unwrap();
    assert_eq!(m.manager_ref, Some(None), "mapped and cleared");
}

#[test]
fn label_comes_from_the_spec_or_common_attributes() {
    let mut value = with_required(json!({"userPrincipalName": {"attribute": "upn"}}));
    value["label"] = json!("{{ employeeNumber }}");
    let mapper = Mapper::new(&spec(value)).unwrap();
    let errors = errors_of(mapper.map_user(&user(
        "abc",
        json!({"employeeNumber": "E-17", "cn": "A", "upn": "bad"}),
    )));
    assert!(
        errors[0].to_string().starts_with("user abc (E-17): "),
        "{}",
        errors[0]
    );

    let mapper = Mapper::new(&spec(with_required(
        json!({"userPrincipalName": {"attribute": "upn"}}),
    )))
    .unwrap();
    let errors = errors_of(mapper.map_user(&user(
        "abc",
        json!({"mail": "a@example.com", "cn": "A", "upn": "bad"}),
    )));
    assert!(
        errors[0]
            .to_string()
            .starts_with("user abc (a@example.com): "),
        "{}",
        errors[0]
    );
    let errors = errors_of(mapper.map_user(&user("abc", json!({"cn": "", "upn": "bad"}))));
    assert!(
        errors[0].to_string().starts_with("user abc: "),
        "{}",
        errors[0]
    );
}

// ---------------------------------------------------------------------------------------------
// Groups

fn group(id: &str, name: &str, attrs: serde_json::Value) -> SourceGroup {
    SourceGroup {
        id: id.to_owned(),
        name: name.to_owned(),
        members: vec![],
        attributes: serde_json::from_value(attrs).unwrap(),
    }
}

#[test]
fn group_defaults() {
    let mapper = GroupMapper::new(&GroupMappingSpec::default()).unwrap();
    let cases = [
        ("Accounting", "Accounting"),
        ("Sales Team (EU); Ops.", "SalesTeamEUOps"),
        ("Équipe Qualité", "EquipeQualite"),
        (&"x".repeat(80), &"x".repeat(64)),
    ];
    for (name, nick) in cases {
        let g = mapper.map_group(&group("g1", name, json!({}))).unwrap();
        assert_eq!(g.display_name, name);
        assert_eq!(g.mail_nickname, nick);
        assert_eq!(g.description, None);
        assert_eq!(g.source_id, "g1");
    }
    let g = mapper.map_group(&group("grp-7", "()", json!({}))).unwrap();
    assert_eq!(g.mail_nickname, "grp-7", "falls back to the source id");
}

#[test]
fn group_mapping_and_errors() {
    let spec: GroupMappingSpec = serde_json::from_value(json!({
        "displayName": "GRP {{ name | upper }}",
        "mailNickname": "{{ name | mail_nickname(group=true) | lower }}",
        "description": {"attribute": "description"},
    }))
    .unwrap();
    let mapper = GroupMapper::new(&spec).unwrap();
    let g = mapper
        .map_group(&group("g1", "Sales.EU", json!({"description": "EU sales"})))
        .unwrap();
    assert_eq!(
        g,
        MappedGroup {
            source_id: "g1".into(),
            display_name: "GRP SALES.EU".into(),
            mail_nickname: "saleseu".into(),
            description: Some("EU sales".into()),
        }
    );
    let bad: GroupMappingSpec =
        serde_json::from_value(json!({"mailNickname": "{{ name }}"})).unwrap();
    let errors = GroupMapper::new(&bad)
        .unwrap()
        .map_group(&group(
            "g1",
            "Sales Team",
            json!({"description": "d".repeat(1100)}),
        ))
        .unwrap_err();
    assert_eq!(errors[0].rule, "mail_nickname.charset");
    assert_eq!(
        errors[0].to_string(),
        "group g1 (Sales Team): mailNickname \"Sales Team\" is invalid: character ' ' is not allowed (ASCII only, none of @ ( ) \\ [ ] \" ; : . < > , space)"
    );
    let err =
        GroupMapper::new(&serde_json::from_value(json!({"displayName": "{% if %}"})).unwrap())
            .unwrap_err();
    assert!(
        matches!(&err, MappingConfigError::Template { target, .. } if target == "displayName"),
        "{err}"
    );
    let long = GroupMapper::new(&GroupMappingSpec::default())
        .unwrap()
        .map_group(&group("g1", &"n".repeat(300), json!({})))
        .unwrap_err();
    assert_eq!(
        (long[0].property.as_str(), long[0].rule),
        ("displayName", "length")
    );
}

#[test]
fn mapper_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Mapper>();
    assert_send_sync::<GroupMapper>();
}

#[test]
fn unique_inside_a_single_expression_template() {
    let mapper = Mapper::new(&base_spec(json!({
        "userPrincipalName": "{{ unique(uid, uid ~ '1') ~ '@example.com' }}",
        "mailNickname": "{{ unique(uid, numbered(uid, 2, 2)) }}",
    })))
    .unwrap();
    let m = mapper
        .map_user(&user(
            "1",
            json!({"uid": "jdoe", "givenName": "J", "sn": "D"}),
        ))
        .unwrap();
    assert_eq!(
        m.unique_candidates["userPrincipalName"],
        ["jdoe@example.com", "jdoe1@example.com"]
    );
    assert_eq!(m.unique_candidates["mailNickname"], ["jdoe", "jdoe2"]);
}

#[test]
fn template_error_message_reads_well() {
    let err = config_error(with_required(json!({"jobTitle": "{{ title | lower }"})));
    assert_eq!(
        err.to_string(),
        "mapping of `jobTitle`: template \"{{ title | lower }\" is invalid at line 1, column 18: syntax error: unexpected `}`, expected end of variable block"
    );
}

// ---------------------------------------------------------------------------------------------
// Several values for one

#[test]
fn a_list_for_a_single_valued_property_is_a_per_user_error_naming_user_property_and_fix() {
    let mapper = Mapper::new(&base_spec(json!({
        "givenName": {"attribute": "givenName"},
        "jobTitle": "{{ titles }}",
        "department": "{{ dept | split(';') }}",
    })))
    .unwrap();
    let errors = errors_of(mapper.map_user(&user(
        "u-17",
        json!({
            "uid": "ann",
            "givenName": ["Ann", "Anna"],
            "titles": ["Clerk", "Buyer"],
            "dept": "Sales; Ops",
            "sn": "Lee",
        }),
    )));
    let mut properties: Vec<&str> = errors.iter().map(|e| e.property.as_str()).collect();
    properties.sort();
    assert_eq!(properties, ["department", "givenName", "jobTitle"]);
    for e in &errors {
        assert_eq!(e.rule, "multiple_values", "{e}");
        let text = e.to_string();
        assert!(text.starts_with("user u-17 (ann): "), "{text}");
        assert!(text.contains("2 values"), "{text}");
        assert!(
            text.contains("`first`") && text.contains("`join`"),
            "names the fix: {text}"
        );
    }
    let given = errors.iter().find(|e| e.property == "givenName").unwrap();
    assert!(given.message.contains("\"Ann\", \"Anna\""), "{given}");

    // One value in a list is that value.
    let m = mapper
        .map_user(&user(
            "u-18",
            json!({"uid": "bo", "givenName": ["Bo"], "titles": ["Clerk"], "dept": "Sales", "sn": "X"}),
        ))
        .unwrap();
    assert_eq!(m.properties["givenName"], json!("Bo"));
    assert_eq!(m.properties["jobTitle"], json!("Clerk"));
    assert_eq!(m.properties["department"], json!("Sales"));
}

#[test]
fn first_and_join_choose_among_several_values_explicitly() {
    let mapper = Mapper::new(&base_spec(json!({
        "givenName": "{{ givenName | first }}",
        "jobTitle": "{{ titles | join(', ') }}",
        "department": "{{ first(dept | split(';')) }}",
        "mail": "{{ mails | first }}",
    })))
    .unwrap();
    let m = mapper
        .map_user(&user(
            "u-17",
            json!({
                "uid": "ann",
                "givenName": ["Ann", "Anna"],
                "titles": ["Clerk", "Buyer"],
                "dept": " ; Sales; Ops",
                "mails": "ann@example.com",
            }),
        ))
        .unwrap();
    assert_eq!(m.properties["givenName"], json!("Ann"));
    assert_eq!(m.properties["jobTitle"], json!("Clerk, Buyer"));
    assert_eq!(m.properties["department"], json!("Sales"));
    // A single text passes through `first` whole (Jinja's own would give "a").
    assert_eq!(m.properties["mail"], json!("ann@example.com"));
}

#[test]
fn a_list_for_the_manager_or_a_group_name_is_an_error_too() {
    let mut value = with_required(json!({}));
    value["manager"] = json!({"attribute": "manager"});
    let mapper = Mapper::new(&spec(value)).unwrap();
    let errors = errors_of(mapper.map_user(&user(
        "1",
        json!({"uid": "a", "cn": "A", "manager": ["boss-1", "boss-2"]}),
    )));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0].property.as_str(), errors[0].rule),
        ("manager", "multiple_values")
    );

    let spec: GroupMappingSpec =
        serde_json::from_value(json!({"displayName": {"attribute": "cn"}})).unwrap();
    let mapper = GroupMapper::new(&spec).unwrap();
    let errors = mapper
        .map_group(&group("g1", "Sales", json!({"cn": ["Sales", "Vente"]})))
        .unwrap_err();
    assert_eq!(
        (errors[0].property.as_str(), errors[0].rule),
        ("displayName", "multiple_values")
    );
    assert!(errors[0].to_string().contains("`first`"), "{}", errors[0]);
    let g = mapper
        .map_group(&group("g1", "Sales", json!({"cn": ["Sales"]})))
        .unwrap();
    assert_eq!(g.display_name, "Sales");
}

// ---------------------------------------------------------------------------------------------
// Generated values are no match key

#[test]
fn generating_functions_are_found_in_any_template_of_an_expression() {
    let cases = [
        (
            json!("{{ unique(uid, numbered(uid)) }}@example.com"),
            vec!["numbered", "unique"],
        ),
        (
            json!("{{ numbered(uid) | first }}@example.com"),
            vec!["numbered"],
        ),
        (
            json!("{% if x %}{{ unique(uid) }}{% endif %}@example.com"),
            vec!["unique"],
        ),
        (json!(["{{ mail }}", "{{ unique(uid) }}"]), vec!["unique"]),
        (json!("{{ uid | lower }}@example.com"), vec![]),
        (json!({"attribute": "unique"}), vec![]),
        (json!("unique(uid)"), vec![]),
    ];
    for (value, expected) in cases {
        let expr: Expression = serde_json::from_value(value.clone()).unwrap();
        let mut found = expr.generating_functions();
        found.sort_unstable();
        assert_eq!(found, expected, "{value}");
    }
}

#[test]
fn a_generated_match_attribute_is_refused_naming_attribute_reason_and_fix() {
    let generated = base_spec(json!({
        "userPrincipalName": "{{ unique(uid | lower, numbered(uid | lower)) }}@example.com",
        "employeeId": {"attribute": "employeeNumber"},
    }));
    let message = check_match_attribute(&generated, "userPrincipalName").unwrap_err();
    for fragment in [
        "\"userPrincipalName\" cannot be the match attribute",
        "unique() and numbered()",
        "not an identity",
        "take over",
        "match_attribute = \"employeeId\"",
    ] {
        assert!(message.contains(fragment), "{fragment}: {message}");
    }
    // Matching on a source-stable attribute is fine, whatever the UPN does.
    assert_eq!(check_match_attribute(&generated, "employeeId"), Ok(()));
    assert_eq!(
        check_match_attribute(&base_spec(json!({})), "userPrincipalName"),
        Ok(())
    );
}

#[test]
fn a_constant_password_is_refused_naming_the_fix() {
    for constant in [
        json!({"source": {"mapped": "Welcome-2024!"}}),
        json!({"source": {"mapped": "{{ 'Welcome-' ~ '2024!' }}"}}),
        json!({"source": {"mapped": ["Welcome-2024!"]}}),
    ] {
        let mut value = with_required(json!({}));
        value["password"] = constant.clone();
        let error = Mapper::new(&spec(value))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(error.contains("password"), "{constant}: {error}");
        assert!(error.contains("is a constant"), "{constant}: {error}");
        assert!(
            error.contains("source = \"generate\""),
            "{constant}: {error}"
        );
        assert!(
            !error.contains("Welcome-"),
            "the value is not repeated: {error}"
        );
    }
    // Reading the source is fine, in a template too.
    for mapped in [
        json!({"source": {"mapped": {"attribute": "pw"}}}),
        json!({"source": {"mapped": "{{ pw }}"}}),
    ] {
        let mut value = with_required(json!({}));
        value["password"] = mapped;
        assert!(Mapper::new(&spec(value)).is_ok());
    }
}
