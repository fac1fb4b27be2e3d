//! The mapping section of the config, as data (serde; unknown keys rejected).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How one target value is computed. In the config:
///
/// | written as | is | example |
/// |---|---|---|
/// | a string containing `{{`, `{%` or `{#` | a minijinja template | `"{{ givenName \| lower }}.{{ sn \| lower }}@example.com"` |
/// | any other string | a literal | `"US"` |
/// | `true` / `false`, a number | a literal | `false` |
/// | `{ attribute = "mail" }` | the source attribute, type kept (list, binary, bool) | `{ attribute = "telephoneNumber" }` |
/// | `{ literal = "..." }` | a literal, even if it contains `{{` | `{ literal = "{{not a template}}" }` |
/// | `{ template = "..." }` | a template, said explicitly | `{ template = "{{ cn }}" }` |
/// | `[e1, e2, ...]` | a list of expressions, flattened (list properties) | `["{{ mail }}", { attribute = "altMail" }]` |
///
/// There is no implicit reference form such as a bare attribute name: `"mail"` is the literal
/// text `mail`. A template that is a single `{{ expression }}` keeps the expression's type, so
/// `"{{ phones | split(';') }}"` yields a list and `"{{ vip }}"` a bool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expression {
    Literal(String),
    Bool(bool),
    Attribute(String),
    Template(String),
    List(Vec<Expression>),
}

impl Expression {
    /// A string as written in the config: a template when it contains template syntax.
    pub fn parse_str(s: &str) -> Expression {
        if is_template_syntax(s) {
            Expression::Template(s.to_owned())
        } else {
            Expression::Literal(s.to_owned())
        }
    }

    /// The expression as it reads in the config (for error messages).
    pub fn source_text(&self) -> String {
        match self {
            Expression::Literal(s) if is_template_syntax(s) => format!("{{ literal = {s:?} }}"),
            Expression::Literal(s) => format!("{s:?}"),
            Expression::Bool(b) => b.to_string(),
            Expression::Attribute(a) => format!("{{ attribute = {a:?} }}"),
            Expression::Template(t) => format!("{t:?}"),
            Expression::List(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(Expression::source_text)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Template functions whose value comes from what the tenant holds rather than from the source:
/// `unique` picks the first candidate that is free in the tenant, `numbered` makes such
/// candidates. A value they produce names no one in particular.
pub const GENERATING_FUNCTIONS: &[&str] = &["unique", "numbered"];

impl Expression {
    /// The [`GENERATING_FUNCTIONS`] this expression calls (found by parsing its templates, so a
    /// call in any branch counts). A template that does not parse calls none here; compiling the
    /// mapping reports it.
    pub fn generating_functions(&self) -> Vec<&'static str> {
        match self {
            Expression::Literal(_) | Expression::Bool(_) | Expression::Attribute(_) => Vec::new(),
            Expression::List(items) => {
                let mut found: Vec<&'static str> = items
                    .iter()
                    .flat_map(Expression::generating_functions)
                    .collect();
                found.sort_unstable();
                found.dedup();
                found
            }
            Expression::Template(src) => {
                let env = minijinja::Environment::new();
                let Ok(template) = env.template_from_str(src) else {
                    return Vec::new();
                };
                let names = template.undeclared_variables(false);
                GENERATING_FUNCTIONS
                    .iter()
                    .copied()
                    .filter(|f| names.contains(*f))
                    .collect()
            }
        }
    }
}

impl Expression {
    /// The source attributes the expression reads: attribute names, and the variables a
    /// template names (a function name among them is harmless to ask a source for). `None`
    /// when a template does not parse: then nobody can tell, and a source reads everything.
    pub fn source_attributes(&self, into: &mut std::collections::BTreeSet<String>) -> Option<()> {
        match self {
            Expression::Literal(_) | Expression::Bool(_) => {}
            Expression::Attribute(name) => {
                into.insert(name.clone());
            }
            Expression::List(items) => {
                for item in items {
                    item.source_attributes(into)?;
                }
            }
            Expression::Template(src) => {
                let env = minijinja::Environment::new();
                let template = env.template_from_str(src).ok()?;
                into.extend(template.undeclared_variables(false));
            }
        }
        Some(())
    }

    /// Whether the expression reads anything from the source record: an attribute, or a
    /// template naming a variable. A constant (a literal, or a template of literals only) does
    /// not.
    pub fn reads_source(&self) -> bool {
        match self {
            Expression::Literal(_) | Expression::Bool(_) => false,
            Expression::Attribute(_) => true,
            Expression::List(items) => items.iter().any(Expression::reads_source),
            Expression::Template(src) => {
                let env = minijinja::Environment::new();
                env.template_from_str(src)
                    .map_or(true, |t| !t.undeclared_variables(false).is_empty())
            }
        }
    }
}

/// Refuses a match attribute whose mapped value is generated (`unique`, `numbered`): the
/// planner looks existing tenant users up by the mapped value, and a generated value is not an
/// identity. Its first candidate is usually a UPN someone already holds, so a new hire would be
/// linked to, and take over, that person's account. The message names the attribute, why, and
/// the fix.
pub fn check_match_attribute(spec: &MappingSpec, attribute: &str) -> Result<(), String> {
    let Some(expr) = spec.attributes.get(attribute) else {
        return Ok(());
    };
    let functions = expr.generating_functions();
    if functions.is_empty() {
        return Ok(());
    }
    let called = functions
        .iter()
        .map(|f| format!("{f}()"))
        .collect::<Vec<_>>()
        .join(" and ");
    Err(format!(
        "{attribute:?} cannot be the match attribute: its mapping {} calls {called}, which picks \
         a value by what is free in the tenant. A generated value is not an identity: matching \
         on it would link a new user to whoever already holds that value and take over their \
         account. Match on an attribute mapped straight from the source instead (e.g. \
         match_attribute = \"employeeId\" with employeeId = {{ attribute = \"employeeNumber\" }}, \
         or onPremisesImmutableId), or map {attribute} without {called}",
        expr.source_text()
    ))
}

/// Whether a config string is a template.
pub fn is_template_syntax(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

impl<'de> Deserialize<'de> for Expression {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ExpressionVisitor)
    }
}

struct ExpressionVisitor;

impl<'de> Visitor<'de> for ExpressionVisitor {
    type Value = Expression;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a literal or template string, a bool, a number, a list, or a table with one of `attribute`, `literal`, `template`",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Expression, E> {
        Ok(Expression::parse_str(v))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Expression, E> {
        Ok(Expression::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Expression, E> {
        Ok(Expression::Literal(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Expression, E> {
        Ok(Expression::Literal(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Expression, E> {
        Ok(Expression::Literal(v.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Expression, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Expression>()? {
            items.push(item);
        }
        Ok(Expression::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Expression, A::Error> {
        let mut found: Option<Expression> = None;
        while let Some(key) = map.next_key::<String>()? {
            let value: String = map.next_value()?;
            let expr = match key.as_str() {
                "attribute" => {
                    if value.trim().is_empty() {
                        return Err(de::Error::custom(
                            "`attribute` must name a source attribute",
                        ));
                    }
                    Expression::Attribute(value)
                }
                "literal" => Expression::Literal(value),
                "template" => Expression::Template(value),
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown key `{other}` in an expression table: use exactly one of `attribute`, `literal`, `template`"
                    )));
                }
            };
            if found.is_some() {
                return Err(de::Error::custom(
                    "an expression table takes exactly one of `attribute`, `literal`, `template`",
                ));
            }
            found = Some(expr);
        }
        found.ok_or_else(|| {
            de::Error::custom(
                "an empty expression table: use exactly one of `attribute`, `literal`, `template`",
            )
        })
    }
}

impl Serialize for Expression {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let table = |serializer: S, key: &str, value: &str| {
            let mut map = serializer.serialize_map(Some(1))?;
            map.serialize_entry(key, value)?;
            map.end()
        };
        match self {
            Expression::Literal(s) if is_template_syntax(s) => table(serializer, "literal", s),
            Expression::Literal(s) => serializer.serialize_str(s),
            Expression::Bool(b) => serializer.serialize_bool(*b),
            Expression::Attribute(a) => table(serializer, "attribute", a),
            Expression::Template(t) if is_template_syntax(t) => serializer.serialize_str(t),
            Expression::Template(t) => table(serializer, "template", t),
            Expression::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
        }
    }
}

/// The user mapping of a rule.
///
/// ```toml
/// [mapping.attributes]
/// userPrincipalName = "{{ unique(uid | lower, numbered(uid | lower)) }}@example.com"
/// displayName = { attribute = "cn" }
/// usageLocation = "US"
/// businessPhones = { attribute = "telephoneNumber" }
///
/// [mapping]
/// manager = { attribute = "manager" }
///
/// [mapping.password]
/// source = "generate"
///
/// [mapping.licenses]
/// sku_ids = { attribute = "licenseSku" }
/// disabled_plans = { "6fd2c87f-b296-42f0-b197-1e91e994b900" = ["a23b959c-7ce8-4e57-9140-b90eb88a9e97"] }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    /// Target Graph user property (camelCase, as in Graph; members of complex properties dotted,
    /// e.g. `onPremisesExtensionAttributes.extensionAttribute1`) → expression.
    #[serde(default)]
    pub attributes: BTreeMap<String, Expression>,
    /// The initial password (required before a rule may run, docs/design.md#users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordSpec>,
    /// License assignments (docs/design.md#licenses-and-manager). Absent = licenses not mapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licenses: Option<LicensesSpec>,
    /// The manager's source reference (id or DN). Absent = manager not mapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<Expression>,
    /// How users are named in messages; default: the first of the source attributes `uid`,
    /// `sAMAccountName`, `userName`, `mailNickname`, `mail`, `cn`, `displayName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Expression>,
}

/// The first of these a user has names it in messages when the mapping has no `label`.
pub const DEFAULT_LABEL_ATTRIBUTES: [&str; 7] = [
    "uid",
    "sAMAccountName",
    "userName",
    "mailNickname",
    "mail",
    "cn",
    "displayName",
];

impl MappingSpec {
    /// Every source attribute the user mapping reads (`None`: a template that does not parse
    /// makes it unknowable).
    pub fn source_attributes(&self) -> Option<std::collections::BTreeSet<String>> {
        let mut names = std::collections::BTreeSet::new();
        for expression in self.attributes.values() {
            expression.source_attributes(&mut names)?;
        }
        if let Some(PasswordSpec {
            source: PasswordSource::Mapped(expression),
            ..
        }) = &self.password
        {
            expression.source_attributes(&mut names)?;
        }
        if let Some(licenses) = &self.licenses {
            licenses.sku_ids.source_attributes(&mut names)?;
            for plans in licenses.disabled_plans.values() {
                plans.source_attributes(&mut names)?;
            }
        }
        if let Some(manager) = &self.manager {
            manager.source_attributes(&mut names)?;
        }
        match &self.label {
            Some(label) => label.source_attributes(&mut names)?,
            None => names.extend(DEFAULT_LABEL_ATTRIBUTES.map(str::to_owned)),
        }
        Some(names)
    }
}

/// Where the initial password comes from (docs/design.md#users). Sent on create only, never
/// updated.
///
/// ```toml
/// [mapping.password]
/// source = "generate"                        # random per user, never stored or logged
/// # source = { secret = "default_password" } # a SecretStore entry, never the config file
/// # source = { mapped = "{{ initialPassword }}" }
/// reset_password = true                      # passwordProfile.forceChangePasswordNextSignIn
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordSpec {
    pub source: PasswordSource,
    #[serde(default = "yes")]
    pub reset_password: bool,
}

fn yes() -> bool {
    true
}

/// See [`PasswordSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordSource {
    /// A value computed from the source record.
    Mapped(Expression),
    /// The name of a SecretStore entry holding a default password.
    Secret(String),
    /// Random per user ([`super::generate_password`]).
    Generate,
}

/// License mapping: the SKUs (one or many, each a skuId GUID or a SKU part number such as
/// `ENTERPRISEPACK`, resolved through the tenant's subscribed SKUs when planning) and, per SKU,
/// the service plans to switch off (docs/design.md#licenses-and-manager).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicensesSpec {
    /// skuId GUIDs or SKU part numbers: a string, a list, or a source attribute holding one or
    /// many.
    pub sku_ids: Expression,
    /// skuId or part number → servicePlanIds to disable in that SKU.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub disabled_plans: BTreeMap<String, Expression>,
}

/// Group mapping (docs/design.md#groups). Every field is optional; the context of its expressions
/// is the group's attributes plus `name` (the source group name) and `id`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMappingSpec {
    /// Default: the source group's name.
    #[serde(
        default,
        rename = "displayName",
        skip_serializing_if = "Option::is_none"
    )]
    pub display_name: Option<Expression>,
    /// Default: the name with characters Graph refuses removed, at most 64 characters.
    #[serde(
        default,
        rename = "mailNickname",
        skip_serializing_if = "Option::is_none"
    )]
    pub mail_nickname: Option<Expression>,
    /// Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Expression>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Wrap {
        e: Expression,
    }

    fn expr(json: &str) -> Result<Expression, String> {
        serde_json::from_str::<Wrap>(&format!(r#"{{"e": {json}}}"#))
            .map(|w| w.e)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn expression_syntax_table() {
        use Expression::*;
        let cases: Vec<(&str, Expression)> = vec![
            (r#""US""#, Literal("US".into())),
            (r#""mail""#, Literal("mail".into())),
            (r#""{{ mail }}""#, Template("{{ mail }}".into())),
            (
                r#""{% if a %}x{% endif %}""#,
                Template("{% if a %}x{% endif %}".into()),
            ),
            (r#"{"attribute": "mail"}"#, Attribute("mail".into())),
            (r#"{"literal": "{{x}}"}"#, Literal("{{x}}".into())),
            (r#"{"template": "{{x}}"}"#, Template("{{x}}".into())),
            ("true", Bool(true)),
            ("42", Literal("42".into())),
            (
                r#"["{{ a }}", {"attribute": "b"}]"#,
                List(vec![Template("{{ a }}".into()), Attribute("b".into())]),
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(expr(json).unwrap(), expected, "{json}");
            // Serialising gives back an equivalent form.
            let round: Expression =
                serde_json::from_str(&serde_json::to_string(&expected).unwrap()).unwrap();
            assert_eq!(round, expected, "{json}");
        }
    }

    #[test]
    fn malformed_expression_tables_are_rejected() {
        for (json, fragment) in [
            (r#"{"attr": "mail"}"#, "unknown key `attr`"),
            (r#"{"attribute": "a", "literal": "b"}"#, "exactly one"),
            (r#"{}"#, "empty expression table"),
            (r#"{"attribute": ""}"#, "must name"),
        ] {
            let err = expr(json).unwrap_err();
            assert!(err.contains(fragment), "{json}: {err}");
        }
    }

    #[test]
    fn spec_rejects_unknown_keys_and_reads_toml_shapes() {
        let err = serde_json::from_str::<MappingSpec>(r#"{"atributes": {}}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `atributes`"),
            "{err}"
        );
        let spec: MappingSpec = serde_json::from_value(serde_json::json!({
            "attributes": {"usageLocation": "US"},
            "password": {"source": "generate"},
            "licenses": {"sku_ids": ["6fd2c87f-b296-42f0-b197-1e91e994b900"]},
            "manager": {"attribute": "manager"}
        }))
        .unwrap();
        let pw = spec.password.unwrap();
        assert_eq!(pw.source, PasswordSource::Generate);
        assert!(pw.reset_password, "reset_password defaults to true");
        let pw: PasswordSpec = serde_json::from_value(
            serde_json::json!({"source": {"secret": "default_pw"}, "reset_password": false}),
        )
        .unwrap();
        assert_eq!(pw.source, PasswordSource::Secret("default_pw".into()));
        assert!(!pw.reset_password);
        let pw: PasswordSpec = serde_json::from_value(
            serde_json::json!({"source": {"mapped": {"attribute": "initialPassword"}}}),
        )
        .unwrap();
        assert_eq!(
            pw.source,
            PasswordSource::Mapped(Expression::Attribute("initialPassword".into()))
        );
        let g: GroupMappingSpec =
            serde_json::from_value(serde_json::json!({"mailNickname": "{{ name | lower }}"}))
                .unwrap();
        assert!(g.mail_nickname.is_some() && g.display_name.is_none());
    }
}
