//! The mapping engine: how source attributes become Graph property values (docs/design.md#mapping),
//! checked against Graph's rules (docs/graph-behaviour.md#user-property-rules, #creating-groups)
//! before any request.
//!
//! # Spec syntax
//!
//! A rule's `[mapping]` section is a [`MappingSpec`]: `attributes` maps a Graph user property to
//! an [`Expression`] — a literal (`"US"`, `false`), a source attribute (`{ attribute = "mail" }`,
//! type kept), or a minijinja template (any string containing `{{`, `{%` or `{#`). A bare string
//! is never an attribute reference. `password`, `licenses` and `manager` are separate entries the
//! engine handles apart; `accountEnabled` is the engine's and cannot be mapped. Every template is
//! compiled once, in [`Mapper::new`], into one environment per mapper; errors name the property,
//! the expression and the position.
//!
//! # Empty values
//!
//! A missing source attribute, a blank string or an empty list is *empty*. An empty mapped
//! property is in [`MappedUser::properties`] as `null` (collections as `[]`), which means "clear
//! it" to a PATCH; [`MappedUser::create_properties`] leaves those out of a create body. Properties
//! Graph cannot clear (`usageLocation`) are left out instead; `userPrincipalName` and
//! `displayName` must have a value (a per-user error otherwise). `mailNickname`, when not mapped,
//! is derived from the UPN's alias.
//!
//! # Several values for one
//!
//! A list (a multi-valued source attribute, a `split`) mapped to a property that holds one value
//! (a text or date user property, the manager reference, a group's names and
//! description) is a per-object error, rule `multiple_values`, when it holds more than one
//! value: which one is meant is for the mapping to say, with `first` or `join` (see the
//! functions table in `functions.rs`), never picked silently. A list of one value is that value.
//!
//! # The `unique` flow
//!
//! Templates are synchronous, the tenant is not. So `unique(c1, c2, …)` does not look anything
//! up: it records its candidates, and [`Mapper::map_user`] returns them, each already checked
//! against the property's rules, in [`MappedUser::unique_candidates`] (text around the call is
//! applied to every candidate: `"{{ unique(uid, numbered(uid)) }}@example.com"`). The engine then:
//!
//! 1. collects the candidates of the users it is about to create or link, and asks the tenant
//!    which are taken (`userPrincipalName in (...)`, 15 values per filter,
//!    docs/graph-behaviour.md#queries-and-filters; `mailNickname`/`proxyAddresses` likewise), into
//!    a [`TakenValues`];
//! 2. calls [`Mapper::resolve_unique`] per user with that set and the values the user's own
//!    tenant object holds (if linked): a candidate the user already holds is kept (no rename),
//!    otherwise the first free one is chosen and moved into `properties`;
//! 3. claims the chosen values in its [`TakenValues`] so that two users of the same run never
//!    pick the same value.
//!
//! A property mapped with `unique` or `numbered` cannot be the rule's match attribute
//! ([`check_match_attribute`]): a generated value names whoever holds it in the tenant, not the
//! source identity.
//!
//! A create that still collides (a race with another writer) comes back as `ObjectConflict`
//! (docs/graph-behaviour.md#uniqueness-conflicts) and is retried in a later run, where step 1 sees
//! the value as taken.

mod functions;
mod password;
mod properties;
mod spec;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use minijinja::value::{Value, ValueKind};
use minijinja::{Environment, ErrorKind};
use secrecy::SecretString;
use serde_json::Value as Json;

pub use functions::{
    immutable_id_from_bytes, immutable_id_from_guid_str, normalize_diacritics,
    sanitize_mail_nickname, sanitize_upn_alias,
};
pub use password::{GENERATED_LENGTH, PasswordOrigin, PasswordValue, generate_password};
pub use properties::{PropertyKind, USER_PROPERTIES, UserProperty};
pub use spec::{
    Expression, GENERATING_FUNCTIONS, GroupMappingSpec, LicensesSpec, MappingSpec, PasswordSource,
    PasswordSpec, check_match_attribute, is_template_syntax,
};
pub use validate::{DomainPolicy, NicknameKind, Violation};

use crate::model::{AttrValue, LicenseAssignment, ObjectKind, SourceGroup, SourceUser};
/// Source attributes as a template value (the scope filter evaluates over them too).
pub(crate) use functions::attributes_value;
use functions::{EvalContext, SourceData, UNIQUE_MARKER};

// ---------------------------------------------------------------------------------------------
// Errors

/// A mapping that cannot be compiled: reported at config load, naming the target property.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingConfigError {
    #[error("mapping target `{target}` is not a writable Microsoft Graph user property{hint}")]
    UnknownTarget { target: String, hint: String },
    #[error("mapping target `{target}` cannot be mapped: it {reason}")]
    RefusedTarget {
        target: String,
        reason: &'static str,
    },
    #[error(
        "mapping of `{target}`: template {expression} is invalid at line {line}, column {column}: {message}"
    )]
    Template {
        target: String,
        expression: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("the mapping must set `{target}`: {why}")]
    Missing { target: String, why: &'static str },
    #[error("mapping of `{target}`: {expression} {message}")]
    Invalid {
        target: String,
        expression: String,
        message: String,
    },
}

/// A value of one object that breaks a rule, or could not be computed. Names the object (source
/// id and a human label), the property, the value (never a password) and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MappingError {
    pub kind: ObjectKind,
    pub source_id: String,
    /// A human name for the object (uid, mail…), when one was found.
    pub label: Option<String>,
    /// Target property (`userPrincipalName`, `licenses`, `password`, …).
    pub property: String,
    /// The offending value; `None` for passwords and for values that could not be computed.
    pub value: Option<String>,
    /// Stable rule id ([`Violation::rule`], or `evaluation`, `type`, `unique.exhausted`).
    pub rule: &'static str,
    pub message: String,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, short(&self.source_id, 12))?;
        if let Some(label) = &self.label {
            write!(f, " ({label})")?;
        }
        match &self.value {
            Some(v) => write!(
                f,
                ": {} {:?} is invalid: {}",
                self.property,
                short(v, 80),
                self.message
            ),
            None => write!(f, ": {}: {}", self.property, self.message),
        }
    }
}

/// At most `max` characters, with `…` when cut.
fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let keep = if max > 12 { max - 1 } else { 4 };
        format!("{}…", s.chars().take(keep).collect::<String>())
    }
}

/// Who the errors of one evaluation are about.
struct Subject<'a> {
    kind: ObjectKind,
    id: &'a str,
    label: Option<String>,
}

impl Subject<'_> {
    fn error(
        &self,
        property: &str,
        value: Option<&str>,
        rule: &'static str,
        message: impl Into<String>,
    ) -> MappingError {
        MappingError {
            kind: self.kind,
            source_id: self.id.to_owned(),
            label: self.label.clone(),
            property: property.to_owned(),
            value: value.map(str::to_owned),
            rule,
            message: message.into(),
        }
    }

    fn violation(&self, property: &str, value: Option<&str>, v: Violation) -> MappingError {
        self.error(property, value, v.rule, v.message)
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled expressions

/// Variable a typed single-expression template stores its value in.
const VALUE_VAR: &str = "__value";

/// An evaluated expression, before it meets its target's type.
#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Empty,
    Text(String),
    Bool(bool),
    List(Vec<String>),
    Bytes(Vec<u8>),
    Unique(Vec<String>),
}

#[derive(Debug)]
enum Compiled {
    Literal(Raw),
    Attribute(String),
    /// A template by name in the environment; `typed` is the single-expression variant that keeps
    /// the value's type.
    Template {
        name: String,
        typed: Option<String>,
    },
    List(Vec<Compiled>),
}

/// Compiles expressions into one environment.
struct Compiler {
    env: Environment<'static>,
}

impl Compiler {
    fn new() -> Self {
        Compiler {
            env: functions::environment(),
        }
    }

    fn compile(
        &mut self,
        target: &str,
        name: &str,
        expr: &Expression,
    ) -> Result<Compiled, MappingConfigError> {
        Ok(match expr {
            Expression::Literal(s) => Compiled::Literal(text_raw(s)),
            Expression::Bool(b) => Compiled::Literal(Raw::Bool(*b)),
            Expression::Attribute(a) => Compiled::Attribute(a.clone()),
            Expression::List(items) => Compiled::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, e)| self.compile(target, &format!("{name}[{i}]"), e))
                    .collect::<Result<_, _>>()?,
            ),
            Expression::Template(src) => {
                let fail = |e: &minijinja::Error| template_error(target, expr, src, e);
                self.env
                    .add_template_owned(name.to_owned(), src.clone())
                    .map_err(|e| fail(&e))?;
                // Unknown filters and functions only show at render time: render once with no
                // attributes so that a typo is a config error, not a per-user one.
                if let Ok(t) = self.env.get_template(name) {
                    let ctx =
                        EvalContext::new(SourceData::new(Default::default(), BTreeMap::new()));
                    if let Err(e) = t.render(ctx.root())
                        && matches!(
                            e.kind(),
                            ErrorKind::UnknownFilter
                                | ErrorKind::UnknownFunction
                                | ErrorKind::UnknownTest
                                | ErrorKind::UnknownMethod
                        )
                    {
                        return Err(fail(&e));
                    }
                }
                let typed = single_expression(src).and_then(|inner| {
                    let typed_name = format!("{name}#typed");
                    let typed_src = format!("{{% set {VALUE_VAR} = ({inner}) %}}");
                    self.env
                        .add_template_owned(typed_name.clone(), typed_src)
                        .ok()
                        .map(|()| typed_name)
                });
                Compiled::Template {
                    name: name.to_owned(),
                    typed,
                }
            }
        })
    }
}

/// The inner expression of a template that is exactly one `{{ … }}`.
fn single_expression(src: &str) -> Option<&str> {
    let inner = src.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if ["{{", "}}", "{%", "%}", "{#", "#}"]
        .iter()
        .any(|t| inner.contains(t))
    {
        return None;
    }
    let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
    let inner = inner.strip_suffix(['-', '+']).unwrap_or(inner);
    let inner = inner.trim();
    (!inner.is_empty()).then_some(inner)
}

fn template_error(
    target: &str,
    expr: &Expression,
    src: &str,
    e: &minijinja::Error,
) -> MappingConfigError {
    let (line, column) = match e.range() {
        Some(r) => {
            let before = src.get(..r.start).unwrap_or(src);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            (line, column)
        }
        None => (e.line().unwrap_or(1), 1),
    };
    let message = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    MappingConfigError::Template {
        target: target.to_owned(),
        expression: expr.source_text(),
        line,
        column,
        message,
    }
}

fn text_raw(s: &str) -> Raw {
    let t = s.trim();
    if t.is_empty() {
        Raw::Empty
    } else {
        Raw::Text(t.to_owned())
    }
}

fn attr_raw(v: &AttrValue) -> Raw {
    match v {
        AttrValue::Text(s) => text_raw(s),
        AttrValue::Int(i) => Raw::Text(i.to_string()),
        AttrValue::Float(f) => Raw::Text(f.to_string()),
        AttrValue::Bool(b) => Raw::Bool(*b),
        AttrValue::List(items) => list_raw(items.iter().map(String::as_str)),
        AttrValue::Binary(b) if b.is_empty() => Raw::Empty,
        AttrValue::Binary(b) => Raw::Bytes(b.clone()),
    }
}

fn list_raw<'a>(items: impl Iterator<Item = &'a str>) -> Raw {
    let items: Vec<String> = items
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if items.is_empty() {
        Raw::Empty
    } else {
        Raw::List(items)
    }
}

fn value_raw(v: &Value) -> Result<Raw, String> {
    if v.is_undefined() || v.is_none() {
        return Ok(Raw::Empty);
    }
    match v.kind() {
        ValueKind::Bool => Ok(Raw::Bool(v.is_true())),
        ValueKind::Number => Ok(Raw::Text(v.to_string())),
        ValueKind::String => Ok(text_raw(v.as_str().unwrap_or_default())),
        ValueKind::Bytes => Ok(v
            .as_bytes()
            .filter(|b| !b.is_empty())
            .map_or(Raw::Empty, |b| Raw::Bytes(b.to_vec()))),
        ValueKind::Seq | ValueKind::Iterable => {
            let mut items = Vec::new();
            for item in v.try_iter().map_err(|e| e.to_string())? {
                match item.kind() {
                    ValueKind::Bool => items.push(item.is_true().to_string()),
                    ValueKind::String | ValueKind::Number => items.push(item.to_string()),
                    ValueKind::Undefined | ValueKind::None => {}
                    other => return Err(format!("the expression yields a list holding a {other}")),
                }
            }
            Ok(list_raw(items.iter().map(String::as_str)))
        }
        other => Err(format!("the expression yields a {other}, not a value")),
    }
}

/// Evaluates compiled expressions against one record.
struct Evaluator<'a> {
    env: &'a Environment<'static>,
    data: Arc<SourceData>,
}

impl Evaluator<'_> {
    fn eval(&self, c: &Compiled) -> Result<Raw, String> {
        match c {
            Compiled::Literal(raw) => Ok(raw.clone()),
            Compiled::Attribute(name) => Ok(self.data.attribute(name).map_or(Raw::Empty, attr_raw)),
            Compiled::List(items) => {
                let mut out = Vec::new();
                for item in items {
                    match self.eval(item)? {
                        Raw::Empty => {}
                        Raw::Text(s) => out.push(s),
                        Raw::Bool(b) => out.push(b.to_string()),
                        Raw::List(l) => out.extend(l),
                        Raw::Bytes(_) => return Err(binary_message()),
                        Raw::Unique(_) => {
                            return Err("unique() cannot be an item of a list".to_owned());
                        }
                    }
                }
                Ok(list_raw(out.iter().map(String::as_str)))
            }
            Compiled::Template { name, typed } => {
                let ctx = EvalContext::new(Arc::clone(&self.data));
                let raw = match typed {
                    Some(typed) => {
                        let t = self.env.get_template(typed).map_err(|e| e.to_string())?;
                        let captured = t.render_captured(ctx.root()).map_err(|e| e.to_string())?;
                        let value = captured.state().lookup(VALUE_VAR).unwrap_or_default();
                        value_raw(&value)?
                    }
                    None => {
                        let t = self.env.get_template(name).map_err(|e| e.to_string())?;
                        text_raw(&t.render(ctx.root()).map_err(|e| e.to_string())?)
                    }
                };
                apply_unique(raw, ctx.unique_calls())
            }
        }
    }
}

/// The manager reference of a user: `None` when the mapping gives nothing (cleared).
fn map_manager(
    ev: &Evaluator<'_>,
    manager: &Compiled,
    subject: &Subject<'_>,
) -> Result<Option<String>, Box<MappingError>> {
    let type_error = |message: String| Box::new(subject.error("manager", None, "type", message));
    match ev.eval(manager) {
        Ok(Raw::Empty) => Ok(None),
        Ok(Raw::Text(s)) => Ok(Some(s)),
        Ok(Raw::List(l)) => single_value(l)
            .map(Some)
            .map_err(|message| Box::new(subject.error("manager", None, MULTIPLE_VALUES, message))),
        Ok(Raw::Bool(_)) => Err(type_error(
            "the manager reference must be an id or a DN, not a boolean".to_owned(),
        )),
        Ok(Raw::Bytes(_)) => Err(type_error(binary_message())),
        Ok(Raw::Unique(_)) => Err(type_error(
            "unique() does not apply to the manager".to_owned(),
        )),
        Err(message) => Err(Box::new(subject.error(
            "manager",
            None,
            "evaluation",
            message,
        ))),
    }
}

fn binary_message() -> String {
    "is a binary value: convert it first, e.g. with guid_to_immutable_id".to_owned()
}

/// Turns the marker `unique()` rendered into the candidate list (text around it applied).
fn apply_unique(raw: Raw, calls: Vec<Vec<String>>) -> Result<Raw, String> {
    let mut calls = calls.into_iter();
    let Some(candidates) = calls.next() else {
        return Ok(raw);
    };
    if calls.next().is_some() {
        return Err("unique() may be called only once per value".to_owned());
    }
    let text = match &raw {
        Raw::Text(s) if s.matches(UNIQUE_MARKER).count() == 1 => s,
        _ => {
            return Err("the result of unique() must not be transformed or repeated: apply filters to its candidates instead".to_owned());
        }
    };
    let (before, after) = text.split_once(UNIQUE_MARKER).unwrap_or((text, ""));
    let mut out: Vec<String> = Vec::new();
    for c in candidates {
        let full = format!("{before}{c}{after}").trim().to_owned();
        if !full.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(&full)) {
            out.push(full);
        }
    }
    Ok(if out.is_empty() {
        Raw::Empty
    } else {
        Raw::Unique(out)
    })
}

/// A value shaped for its target property.
enum Shaped {
    Empty,
    Value(Json),
    Unique(Vec<String>),
}

/// Why a value does not fit its target: a stable rule id and the message.
type ShapeError = (&'static str, String);

fn shape(kind: PropertyKind, raw: Raw) -> Result<Shaped, ShapeError> {
    use PropertyKind::*;
    let evaluation = |m: String| ("evaluation", m);
    Ok(match (kind, raw) {
        (_, Raw::Empty) => Shaped::Empty,
        (_, Raw::Bytes(_)) => return Err(evaluation(binary_message())),
        (Text, Raw::Unique(c)) => Shaped::Unique(c),
        (_, Raw::Unique(_)) => {
            return Err(evaluation(
                "unique() applies to text properties only".to_owned(),
            ));
        }
        (Text | DateTime, Raw::Text(s)) => Shaped::Value(Json::String(s)),
        (Text | DateTime, Raw::Bool(b)) => Shaped::Value(Json::String(b.to_string())),
        (Text | DateTime, Raw::List(l)) => Shaped::Value(Json::String(
            single_value(l).map_err(|m| (MULTIPLE_VALUES, m))?,
        )),
        (Bool, Raw::Bool(b)) => Shaped::Value(Json::Bool(b)),
        (Bool, Raw::Text(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Shaped::Value(Json::Bool(true)),
            "false" | "0" | "no" => Shaped::Value(Json::Bool(false)),
            _ => {
                return Err(evaluation(format!(
                    "{s:?} is not a boolean (true or false)"
                )));
            }
        },
        (Bool, Raw::List(_)) => return Err(evaluation("a list is not a boolean".to_owned())),
        (TextList, Raw::List(l)) => {
            Shaped::Value(Json::Array(l.into_iter().map(Json::String).collect()))
        }
        (TextList, Raw::Text(s)) => Shaped::Value(Json::Array(vec![Json::String(s)])),
        (TextList, Raw::Bool(b)) => Shaped::Value(Json::Array(vec![Json::String(b.to_string())])),
    })
}

/// Rule id of a list given where one value is expected.
const MULTIPLE_VALUES: &str = "multiple_values";

/// The one value of a list (a list is never empty here: [`list_raw`] makes that `Empty`). A list
/// of several values is refused: which one is meant is the mapping's choice (`first`, `join`),
/// never a silent pick.
fn single_value(list: Vec<String>) -> Result<String, String> {
    if list.len() == 1 {
        return Ok(list.into_iter().next().unwrap_or_default());
    }
    let shown = list
        .iter()
        .take(3)
        .map(|v| format!("{:?}", short(v, 40)))
        .collect::<Vec<_>>()
        .join(", ");
    let more = if list.len() > 3 { ", …" } else { "" };
    Err(format!(
        "the mapping gives {} values ({shown}{more}) for a property that holds one value; say which \
         in the mapping: `first` for the first value (\"{{{{ attr | first }}}}\") or `join` for all of \
         them (\"{{{{ attr | join(', ') }}}}\")",
        list.len()
    ))
}

/// The value of a shaped JSON value as text, for error messages.
fn json_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Users

/// What one user maps to. `properties` holds plain Graph properties (members of complex ones
/// nested: `{"onPremisesExtensionAttributes": {"extensionAttribute1": …}}`), `null`/`[]` for
/// mapped-but-empty ones (see the module docs).
#[derive(Debug, Clone)]
pub struct MappedUser {
    pub source_id: String,
    /// A human name for messages (see [`MappingSpec::label`]).
    pub label: Option<String>,
    pub properties: BTreeMap<String, Json>,
    /// Properties mapped with `unique(...)`: the valid candidates in order of preference, to be
    /// settled by [`Mapper::resolve_unique`].
    pub unique_candidates: BTreeMap<String, Vec<String>>,
    /// `None` when the mapping has no password (a config error before any run,
    /// docs/design.md#users).
    pub password: Option<PasswordValue>,
    /// `None` = licenses not mapped; `Some(empty)` = mapped and the source has none
    /// (docs/design.md#licenses-and-manager). A `sku_id` is a lower-cased skuId GUID, or a SKU
    /// part number as written, which the planner resolves against the tenant.
    pub licenses: Option<Vec<LicenseAssignment>>,
    /// Disabled plans whose `disabled_plans` key names a SKU in the other form than the values
    /// of `sku_ids` (a part number key for a GUID value, or the reverse): lower-cased key →
    /// plans. Only the tenant's SKU table tells which SKU they belong to; the planner applies
    /// them once it has it. Empty when keys and values are written alike.
    pub sku_plans: BTreeMap<String, Vec<String>>,
    /// `None` = manager not mapped; `Some(None)` = mapped and cleared at the source.
    pub manager_ref: Option<Option<String>>,
}

impl MappedUser {
    /// The properties for a create body: without `null`s and empty collections.
    pub fn create_properties(&self) -> BTreeMap<String, Json> {
        fn keep(v: &Json) -> Option<Json> {
            match v {
                Json::Null => None,
                Json::Array(a) if a.is_empty() => None,
                Json::Object(m) => {
                    let kept: serde_json::Map<String, Json> = m
                        .iter()
                        .filter_map(|(k, v)| keep(v).map(|v| (k.clone(), v)))
                        .collect();
                    (!kept.is_empty()).then_some(Json::Object(kept))
                }
                other => Some(other.clone()),
            }
        }
        self.properties
            .iter()
            .filter_map(|(k, v)| keep(v).map(|v| (k.clone(), v)))
            .collect()
    }

    /// The userPrincipalName, once settled.
    pub fn user_principal_name(&self) -> Option<&str> {
        self.properties
            .get("userPrincipalName")
            .and_then(Json::as_str)
    }
}

/// Whether a value is free in the tenant. The engine fills it before resolving (module docs).
pub trait UniquenessCheck {
    /// `property` is the target (`userPrincipalName`, `mailNickname`, …); comparisons are the
    /// implementation's (Graph compares these case-insensitively).
    fn is_free(&self, property: &str, value: &str) -> bool;
}

impl<F: Fn(&str, &str) -> bool> UniquenessCheck for F {
    fn is_free(&self, property: &str, value: &str) -> bool {
        self(property, value)
    }
}

/// Values known to be taken, per property, compared case-insensitively: filled from tenant
/// lookups, then by [`TakenValues::claim`] as the run hands values out.
#[derive(Debug, Clone, Default)]
pub struct TakenValues {
    taken: BTreeSet<(String, String)>,
}

impl TakenValues {
    pub fn new() -> Self {
        TakenValues::default()
    }

    /// Marks `value` of `property` as taken.
    pub fn claim(&mut self, property: &str, value: &str) {
        self.taken
            .insert((property.to_owned(), value.to_lowercase()));
    }

    pub fn is_taken(&self, property: &str, value: &str) -> bool {
        self.taken
            .contains(&(property.to_owned(), value.to_lowercase()))
    }
}

impl UniquenessCheck for TakenValues {
    fn is_free(&self, property: &str, value: &str) -> bool {
        !self.is_taken(property, value)
    }
}

struct Target {
    property: &'static UserProperty,
    compiled: Compiled,
}

enum CompiledPassword {
    Mapped(Compiled),
    Secret(String),
    Generate,
}

struct CompiledLicenses {
    sku_ids: Compiled,
    /// SKU reference (a skuId or a part number, [`validate::SkuReference`]) → plans.
    disabled_plans: BTreeMap<validate::SkuReference, Compiled>,
}

/// Attributes tried, in order, to name a user in messages when the mapping has no `label`.
const LABEL_ATTRIBUTES: &[&str] = &spec::DEFAULT_LABEL_ATTRIBUTES;

/// A compiled user mapping. Built once at config load; [`Mapper::map_user`] is cheap and pure.
pub struct Mapper {
    env: Environment<'static>,
    targets: Vec<Target>,
    password: Option<(CompiledPassword, bool)>,
    licenses: Option<CompiledLicenses>,
    manager: Option<Compiled>,
    label: Option<Compiled>,
    derive_mail_nickname: bool,
    domains: DomainPolicy,
}

impl fmt::Debug for Mapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapper")
            .field("targets", &self.mapped_properties().collect::<Vec<_>>())
            .field("licenses", &self.licenses.is_some())
            .field("manager", &self.manager.is_some())
            .finish_non_exhaustive()
    }
}

impl Mapper {
    /// Compiles a user mapping: target names checked against Graph's writable user properties,
    /// templates compiled, literals validated. Domain checks are off until
    /// [`Mapper::with_domain_policy`].
    pub fn new(spec: &MappingSpec) -> Result<Mapper, MappingConfigError> {
        let mut compiler = Compiler::new();
        let mut targets = Vec::new();
        for (name, expr) in &spec.attributes {
            let property = resolve_target(name)?;
            let compiled = compiler.compile(name, name, expr)?;
            check_literal(property, expr, &compiled)?;
            targets.push(Target { property, compiled });
        }
        for required in properties::REQUIRED_MAPPED {
            if !spec.attributes.contains_key(*required) {
                return Err(MappingConfigError::Missing {
                    target: (*required).to_owned(),
                    why: "Graph requires it to create a user",
                });
            }
        }
        let derive_mail_nickname = !spec.attributes.contains_key("mailNickname");
        let Some(pw) = &spec.password else {
            return Err(MappingConfigError::Missing {
                target: "password".to_owned(),
                why: "a rule needs a password source before it may run: `source = \"generate\"`, `{ secret = \"name\" }` or `{ mapped = ... }`",
            });
        };
        let password = Some((
            match &pw.source {
                PasswordSource::Mapped(e) if !e.reads_source() => {
                    return Err(MappingConfigError::Invalid {
                        target: "password".to_owned(),
                        // Never the value: it is a password.
                        expression: "{ mapped = <a constant, not shown> }".to_owned(),
                        message: "is a constant: it would be every new user's password, readable by \
                                  anyone who can read the configuration; use `source = \"generate\"`, \
                                  map a source attribute (`source = { mapped = { attribute = \"…\" } }`), \
                                  or keep a default in the secret store (`source = { secret = \"name\" }`)"
                            .to_owned(),
                    });
                }
                PasswordSource::Mapped(e) => {
                    CompiledPassword::Mapped(compiler.compile("password", "password", e)?)
                }
                PasswordSource::Secret(name) if name.trim().is_empty() => {
                    return Err(MappingConfigError::Invalid {
                        target: "password".to_owned(),
                        expression: "{ secret = \"\" }".to_owned(),
                        message: "must name a SecretStore entry".to_owned(),
                    });
                }
                PasswordSource::Secret(name) => CompiledPassword::Secret(name.clone()),
                PasswordSource::Generate => CompiledPassword::Generate,
            },
            pw.reset_password,
        ));
        let licenses = match &spec.licenses {
            None => None,
            Some(l) => {
                let sku_ids = compiler.compile("licenses", "licenses.sku_ids", &l.sku_ids)?;
                let mut disabled_plans = BTreeMap::new();
                for (sku, plans) in &l.disabled_plans {
                    let key =
                        validate::sku_reference(sku).map_err(|v| MappingConfigError::Invalid {
                            target: "licenses.disabled_plans".to_owned(),
                            expression: format!("{sku:?}"),
                            message: format!("{v} (keys are skuIds or SKU part numbers)"),
                        })?;
                    let name = format!("licenses.disabled_plans.{sku}");
                    disabled_plans.insert(key, compiler.compile(&name, &name, plans)?);
                }
                Some(CompiledLicenses {
                    sku_ids,
                    disabled_plans,
                })
            }
        };
        let manager = spec
            .manager
            .as_ref()
            .map(|e| compiler.compile("manager", "manager", e))
            .transpose()?;
        let label = spec
            .label
            .as_ref()
            .map(|e| compiler.compile("label", "label", e))
            .transpose()?;
        Ok(Mapper {
            env: compiler.env,
            targets,
            password,
            licenses,
            manager,
            label,
            derive_mail_nickname,
            domains: DomainPolicy::unchecked(),
        })
    }

    /// Turns on the domain rules (verified UPN domain; immutable id on federated domains).
    pub fn with_domain_policy(mut self, domains: DomainPolicy) -> Self {
        self.domains = domains;
        self
    }

    /// Replaces the domain policy (after a fresh `GET /domains`).
    pub fn set_domain_policy(&mut self, domains: DomainPolicy) {
        self.domains = domains;
    }

    /// The plain properties this mapping manages (top-level names, without duplicates), plus
    /// `mailNickname` when derived.
    pub fn mapped_properties(&self) -> impl Iterator<Item = &'static str> + '_ {
        let mut names: BTreeSet<&'static str> = self
            .targets
            .iter()
            .map(|t| t.property.name.split('.').next().unwrap_or(t.property.name))
            .collect();
        if self.derive_mail_nickname {
            names.insert("mailNickname");
        }
        names.into_iter()
    }

    /// Whether `licenses` is mapped (docs/design.md#licenses-and-manager distinguishes not mapped
    /// from mapped and empty).
    pub fn maps_licenses(&self) -> bool {
        self.licenses.is_some()
    }

    /// Whether `manager` is mapped.
    pub fn maps_manager(&self) -> bool {
        self.manager.is_some()
    }

    /// Maps and validates one user; every problem found is returned, not just the first.
    pub fn map_user(&self, user: &SourceUser) -> Result<MappedUser, Vec<MappingError>> {
        let extra = BTreeMap::from([(
            "source",
            Value::from(BTreeMap::from([
                ("id", Value::from(user.id.as_str())),
                ("enabled", Value::from(user.enabled)),
                ("attributes", functions::attributes_value(&user.attributes)),
            ])),
        )]);
        let ev = Evaluator {
            env: &self.env,
            data: SourceData::new(user.attributes.clone(), extra),
        };
        let subject = Subject {
            kind: ObjectKind::User,
            id: &user.id,
            label: self.label(&ev),
        };
        let mut errors = Vec::new();
        let mut mapped = MappedUser {
            source_id: user.id.clone(),
            label: subject.label.clone(),
            properties: BTreeMap::new(),
            unique_candidates: BTreeMap::new(),
            password: None,
            licenses: None,
            sku_plans: BTreeMap::new(),
            manager_ref: None,
        };

        self.map_properties(&ev, &subject, &mut mapped, &mut errors);
        self.check_derived(&subject, &mut mapped, &mut errors);
        if let Some((source, reset)) = &self.password {
            let origin = match source {
                CompiledPassword::Generate => PasswordOrigin::Generate,
                CompiledPassword::Secret(name) => PasswordOrigin::Secret(name.clone()),
                CompiledPassword::Mapped(c) => mapped_password(&ev, c, &subject),
            };
            mapped.password = Some(PasswordValue {
                origin,
                force_change_password_next_sign_in: *reset,
            });
        }

        if let Some(lic) = &self.licenses {
            match self.map_licenses(&ev, lic, &subject) {
                Ok((licenses, sku_plans)) => {
                    mapped.licenses = Some(licenses);
                    mapped.sku_plans = sku_plans;
                }
                Err(mut e) => errors.append(&mut e),
            }
        }

        if let Some(manager) = &self.manager {
            match map_manager(&ev, manager, &subject) {
                Ok(reference) => mapped.manager_ref = Some(reference),
                Err(e) => errors.push(*e),
            }
        }

        if errors.is_empty() {
            Ok(mapped)
        } else {
            Err(errors)
        }
    }

    /// The mapped properties, shaped and validated, into `mapped`; problems into `errors`.
    fn map_properties(
        &self,
        ev: &Evaluator<'_>,
        subject: &Subject<'_>,
        mapped: &mut MappedUser,
        errors: &mut Vec<MappingError>,
    ) {
        for target in &self.targets {
            let prop = target.property;
            let shaped = ev
                .eval(&target.compiled)
                .map_err(|message| ("evaluation", message))
                .and_then(|raw| shape(prop.kind, raw));
            match shaped {
                Err((rule, message)) => {
                    errors.push(subject.error(prop.name, None, rule, message));
                }
                Ok(Shaped::Empty) => {
                    if properties::REQUIRED_MAPPED.contains(&prop.name)
                        || prop.name == "mailNickname"
                    {
                        errors.push(subject.error(
                            prop.name,
                            None,
                            "required",
                            "is required, but the mapping gave an empty value (missing source attribute?)",
                        ));
                    } else if prop.kind == PropertyKind::TextList {
                        insert_property(&mut mapped.properties, prop.name, Json::Array(Vec::new()));
                    } else if prop.nullable {
                        insert_property(&mut mapped.properties, prop.name, Json::Null);
                    }
                }
                Ok(Shaped::Value(v)) => {
                    match validate::user_property_value(prop.name, &v, &self.domains) {
                        Ok(()) => insert_property(&mut mapped.properties, prop.name, v),
                        Err(violation) => {
                            errors.push(subject.violation(
                                prop.name,
                                Some(&json_text(&v)),
                                violation,
                            ));
                        }
                    }
                }
                Ok(Shaped::Unique(candidates)) => {
                    if let Some(valid) =
                        self.unique_candidates(prop.name, candidates, subject, errors)
                    {
                        mapped.unique_candidates.insert(prop.name.to_owned(), valid);
                    }
                }
            }
        }
    }

    /// The valid candidates of a `unique(...)` property; when none is valid, an error naming the
    /// first invalid one.
    fn unique_candidates(
        &self,
        property: &str,
        candidates: Vec<String>,
        subject: &Subject<'_>,
        errors: &mut Vec<MappingError>,
    ) -> Option<Vec<String>> {
        let mut valid = Vec::new();
        let mut first_violation = None;
        for c in candidates {
            match validate::user_property_value(property, &Json::String(c.clone()), &self.domains) {
                Ok(()) => valid.push(c),
                Err(v) => {
                    first_violation.get_or_insert((c, v));
                }
            }
        }
        match (valid.is_empty(), first_violation) {
            (true, Some((c, v))) => {
                errors.push(subject.violation(property, Some(&c), v));
                None
            }
            _ => Some(valid),
        }
    }

    /// Values derived from the mapped ones: mailNickname from the UPN (when not mapped), and
    /// the immutable id a federated UPN needs.
    fn check_derived(
        &self,
        subject: &Subject<'_>,
        mapped: &mut MappedUser,
        errors: &mut Vec<MappingError>,
    ) {
        if self.derive_mail_nickname
            && let Some(upn) = mapped.user_principal_name().map(str::to_owned)
            && let Some(e) = derive_nickname(mapped, &upn, subject)
        {
            errors.push(e);
        }
        if let Some(upn) = mapped.user_principal_name()
            && let Err(v) = validate::immutable_id_for_federated(
                upn,
                mapped
                    .properties
                    .get("onPremisesImmutableId")
                    .and_then(Json::as_str),
                &self.domains,
            )
        {
            errors.push(subject.violation("onPremisesImmutableId", None, v));
        }
    }

    /// Settles the `unique(...)` properties of `mapped` (module docs, step 2): a candidate equal
    /// (case-insensitively) to the value the user's tenant object holds now (`current`, empty for
    /// a user not linked yet) is kept; otherwise the first free one. Returns the chosen values,
    /// for the caller to claim.
    pub fn resolve_unique(
        &self,
        mapped: &mut MappedUser,
        check: &dyn UniquenessCheck,
        current: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, Vec<MappingError>> {
        let source_id = mapped.source_id.clone();
        let subject = Subject {
            kind: ObjectKind::User,
            id: &source_id,
            label: mapped.label.clone(),
        };
        let mut chosen = BTreeMap::new();
        let mut errors = Vec::new();
        for (property, candidates) in std::mem::take(&mut mapped.unique_candidates) {
            let own = current
                .get(&property)
                .and_then(|cur| candidates.iter().find(|c| c.eq_ignore_ascii_case(cur)));
            match own.or_else(|| candidates.iter().find(|c| check.is_free(&property, c))) {
                Some(value) => {
                    insert_property(
                        &mut mapped.properties,
                        &property,
                        Json::String(value.clone()),
                    );
                    chosen.insert(property, value.clone());
                }
                None => {
                    let shown = candidates
                        .iter()
                        .take(5)
                        .map(|c| format!("{c:?}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let more = if candidates.len() > 5 { ", …" } else { "" };
                    errors.push(subject.error(
                        &property,
                        None,
                        "unique.exhausted",
                        format!(
                            "every candidate is taken in the tenant ({} tried: {shown}{more}); add candidates to unique(...)",
                            candidates.len()
                        ),
                    ));
                }
            }
        }
        if let Some(upn) = chosen.get("userPrincipalName").cloned() {
            if self.derive_mail_nickname
                && !mapped.properties.contains_key("mailNickname")
                && let Some(e) = derive_nickname(mapped, &upn, &subject)
            {
                errors.push(e);
            }
            if let Err(v) = validate::immutable_id_for_federated(
                &upn,
                mapped
                    .properties
                    .get("onPremisesImmutableId")
                    .and_then(Json::as_str),
                &self.domains,
            ) {
                errors.push(subject.violation("onPremisesImmutableId", None, v));
            }
        }
        if errors.is_empty() {
            Ok(chosen)
        } else {
            Err(errors)
        }
    }

    fn label(&self, ev: &Evaluator<'_>) -> Option<String> {
        let raw = match &self.label {
            Some(c) => ev.eval(c).ok()?,
            None => LABEL_ATTRIBUTES
                .iter()
                .filter_map(|a| ev.data.attribute(a).map(attr_raw))
                .find(|r| matches!(r, Raw::Text(_) | Raw::List(_)))?,
        };
        match raw {
            Raw::Text(s) => Some(short(&s, 64)),
            Raw::List(l) => l.into_iter().next().map(|s| short(&s, 64)),
            _ => None,
        }
    }

    /// The user's licenses: each SKU of `sku_ids` (a skuId or a part number,
    /// [`validate::sku_reference`]) with the plans of the `disabled_plans` key written the same
    /// way, and the plans of keys written in the other form ([`MappedUser::sku_plans`]).
    #[allow(
        clippy::type_complexity,
        reason = "the two halves of MappedUser's licenses"
    )]
    fn map_licenses(
        &self,
        ev: &Evaluator<'_>,
        lic: &CompiledLicenses,
        subject: &Subject<'_>,
    ) -> Result<(Vec<LicenseAssignment>, BTreeMap<String, Vec<String>>), Vec<MappingError>> {
        let skus: Vec<validate::SkuReference> = evaluate_list(
            ev,
            &lic.sku_ids,
            subject,
            "licenses",
            "skuIds or SKU part numbers",
        )
        .map_err(|e| vec![*e])?
        .into_iter()
        .map(|item| {
            validate::sku_reference(&item)
                .map_err(|v| Box::new(subject.violation("licenses", Some(&item), v)))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| vec![*e])?;
        let plans_of = |c: &Compiled| -> Result<Vec<String>, Box<MappingError>> {
            let property = "licenses.disabled_plans";
            let mut plans: Vec<String> = Vec::new();
            for item in evaluate_list(ev, c, subject, property, "servicePlanId GUIDs")? {
                validate::guid(&item)
                    .map_err(|v| Box::new(subject.violation(property, Some(&item), v)))?;
                let g = item.trim().trim_matches(['{', '}']).to_ascii_lowercase();
                if !plans.contains(&g) {
                    plans.push(g);
                }
            }
            plans.sort();
            Ok(plans)
        };
        let mut errors = Vec::new();
        let mut out: Vec<LicenseAssignment> = Vec::new();
        for sku in &skus {
            let sku_id = match sku {
                validate::SkuReference::Id(id) | validate::SkuReference::PartNumber(id) => id,
            };
            if out.iter().any(|l| l.sku_id.eq_ignore_ascii_case(sku_id)) {
                continue;
            }
            let key = lic
                .disabled_plans
                .iter()
                .find(|(k, _)| k.key() == sku.key());
            let disabled_plans = match key.map(|(_, c)| plans_of(c)).transpose() {
                Ok(plans) => plans.unwrap_or_default(),
                Err(e) => {
                    errors.push(*e);
                    continue;
                }
            };
            out.push(LicenseAssignment {
                sku_id: sku_id.clone(),
                disabled_plans,
            });
        }
        out.sort();
        // Keys written in the other form than some value may belong to it once resolved.
        let mut sku_plans = BTreeMap::new();
        for (key, c) in &lic.disabled_plans {
            if skus.iter().any(|s| s.is_id() != key.is_id()) {
                match plans_of(c) {
                    Ok(plans) => {
                        sku_plans.insert(key.key(), plans);
                    }
                    Err(e) => errors.push(*e),
                }
            }
        }
        if errors.is_empty() {
            Ok((out, sku_plans))
        } else {
            Err(errors)
        }
    }
}

/// An expression evaluated to a list of strings (empty, one text, or a list); anything else is
/// an error on `property` saying `expected` one or more of what it should hold.
fn evaluate_list(
    ev: &Evaluator<'_>,
    c: &Compiled,
    subject: &Subject<'_>,
    property: &str,
    expected: &str,
) -> Result<Vec<String>, Box<MappingError>> {
    match ev.eval(c) {
        Ok(Raw::Empty) => Ok(Vec::new()),
        Ok(Raw::Text(s)) => Ok(vec![s]),
        Ok(Raw::List(l)) => Ok(l),
        Ok(_) => Err(Box::new(subject.error(
            property,
            None,
            "type",
            format!("expected one or more {expected}"),
        ))),
        Err(message) => Err(Box::new(subject.error(
            property,
            None,
            "evaluation",
            message,
        ))),
    }
}

fn mapped_password(ev: &Evaluator<'_>, c: &Compiled, subject: &Subject<'_>) -> PasswordOrigin {
    let unusable = |rule, message: String| {
        PasswordOrigin::Unusable(subject.error("password", None, rule, message))
    };
    match ev.eval(c) {
        // Errors from templates may quote values; say only that it failed.
        Err(_) => unusable(
            "evaluation",
            "the password expression could not be evaluated".to_owned(),
        ),
        Ok(Raw::Empty) => unusable(
            "required",
            "the mapped password is empty (missing source attribute?)".to_owned(),
        ),
        Ok(Raw::Text(s)) => match validate::password(&s) {
            Ok(()) => PasswordOrigin::Value(SecretString::from(s)),
            Err(v) => PasswordOrigin::Unusable(subject.violation("password", None, v)),
        },
        Ok(_) => unusable("type", "the mapped password must be text".to_owned()),
    }
}

/// Sets mailNickname from the UPN's alias; the error when nothing usable is left.
fn derive_nickname(
    mapped: &mut MappedUser,
    upn: &str,
    subject: &Subject<'_>,
) -> Option<MappingError> {
    let alias = upn.split('@').next().unwrap_or(upn);
    let nick = sanitize_mail_nickname(alias, NicknameKind::User);
    if nick.is_empty() {
        return Some(subject.error(
            "mailNickname",
            Some(alias),
            "required",
            "cannot be derived from the userPrincipalName; map it explicitly",
        ));
    }
    insert_property(&mut mapped.properties, "mailNickname", Json::String(nick));
    None
}

/// Inserts a value, nesting dotted names (`a.b` → `{"a": {"b": v}}`).
fn insert_property(properties: &mut BTreeMap<String, Json>, name: &str, value: Json) {
    match name.split_once('.') {
        None => {
            properties.insert(name.to_owned(), value);
        }
        Some((outer, inner)) => {
            let entry = properties
                .entry(outer.to_owned())
                .or_insert_with(|| Json::Object(serde_json::Map::new()));
            if let Json::Object(map) = entry {
                map.insert(inner.to_owned(), value);
            }
        }
    }
}

fn resolve_target(name: &str) -> Result<&'static UserProperty, MappingConfigError> {
    if let Some(p) = properties::user_property(name) {
        return Ok(p);
    }
    if let Some(reason) = properties::refused_reason(name) {
        return Err(MappingConfigError::RefusedTarget {
            target: name.to_owned(),
            reason,
        });
    }
    let hint = properties::case_insensitive_match(name)
        .map(|m| format!(" (did you mean `{m}`? names are case-sensitive)"))
        .unwrap_or_else(|| {
            " (see https://learn.microsoft.com/graph/api/resources/user)".to_owned()
        });
    Err(MappingConfigError::UnknownTarget {
        target: name.to_owned(),
        hint,
    })
}

/// Literal values are checked at load, so `usageLocation = "UK"` fails before any run.
fn check_literal(
    property: &UserProperty,
    expr: &Expression,
    compiled: &Compiled,
) -> Result<(), MappingConfigError> {
    let invalid = |message: String| MappingConfigError::Invalid {
        target: property.name.to_owned(),
        expression: expr.source_text(),
        message,
    };
    if let (Compiled::List(_), PropertyKind::Text | PropertyKind::Bool | PropertyKind::DateTime) =
        (compiled, property.kind)
    {
        return Err(invalid(
            "is a list, but the property holds a single value".to_owned(),
        ));
    }
    fn is_static(c: &Compiled) -> bool {
        match c {
            Compiled::Literal(_) => true,
            Compiled::List(items) => items.iter().all(is_static),
            Compiled::Attribute(_) | Compiled::Template { .. } => false,
        }
    }
    if !is_static(compiled) {
        return Ok(());
    }
    // A static expression never reaches the environment, so an empty one will do.
    let env = Environment::empty();
    let ev = Evaluator {
        env: &env,
        data: SourceData::new(Default::default(), BTreeMap::new()),
    };
    let raw = ev.eval(compiled).map_err(&invalid)?;
    match shape(property.kind, raw).map_err(|(_, m)| invalid(m))? {
        Shaped::Value(v) => {
            validate::user_property_value(property.name, &v, &DomainPolicy::unchecked())
                .map_err(|v| invalid(format!("is invalid: {v}")))
        }
        Shaped::Empty | Shaped::Unique(_) => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Groups

/// What one group maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedGroup {
    pub source_id: String,
    pub display_name: String,
    pub mail_nickname: String,
    pub description: Option<String>,
}

/// A compiled group mapping.
pub struct GroupMapper {
    env: Environment<'static>,
    display_name: Option<Compiled>,
    mail_nickname: Option<Compiled>,
    description: Option<Compiled>,
}

impl fmt::Debug for GroupMapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupMapper").finish_non_exhaustive()
    }
}

impl GroupMapper {
    pub fn new(spec: &GroupMappingSpec) -> Result<GroupMapper, MappingConfigError> {
        let mut compiler = Compiler::new();
        let mut compile = |target: &str, e: &Option<Expression>| {
            e.as_ref()
                .map(|e| compiler.compile(target, &format!("group.{target}"), e))
                .transpose()
        };
        let display_name = compile("displayName", &spec.display_name)?;
        let mail_nickname = compile("mailNickname", &spec.mail_nickname)?;
        let description = compile("description", &spec.description)?;
        Ok(GroupMapper {
            env: compiler.env,
            display_name,
            mail_nickname,
            description,
        })
    }

    /// Maps and validates one group. Defaults: displayName = the group's name; mailNickname =
    /// the name with what Graph refuses removed (at most 64 characters; the source id, then
    /// `group`, when nothing is left); no description.
    pub fn map_group(&self, group: &SourceGroup) -> Result<MappedGroup, Vec<MappingError>> {
        let extra = BTreeMap::from([
            ("name", Value::from(group.name.as_str())),
            ("id", Value::from(group.id.as_str())),
            (
                "source",
                Value::from(BTreeMap::from([
                    ("id", Value::from(group.id.as_str())),
                    ("name", Value::from(group.name.as_str())),
                    ("attributes", functions::attributes_value(&group.attributes)),
                ])),
            ),
        ]);
        let ev = Evaluator {
            env: &self.env,
            data: SourceData::new(group.attributes.clone(), extra),
        };
        let subject = Subject {
            kind: ObjectKind::Group,
            id: &group.id,
            label: Some(short(&group.name, 64)),
        };
        let mut errors = Vec::new();
        let mut text = |property: &str, c: &Option<Compiled>| -> Option<String> {
            let c = c.as_ref()?;
            match ev.eval(c) {
                Ok(Raw::Empty) => None,
                Ok(Raw::Text(s)) => Some(s),
                Ok(Raw::List(l)) => match single_value(l) {
                    Ok(v) => Some(v),
                    Err(message) => {
                        errors.push(subject.error(property, None, MULTIPLE_VALUES, message));
                        None
                    }
                },
                Ok(Raw::Bool(b)) => Some(b.to_string()),
                Ok(_) => {
                    errors.push(subject.error(property, None, "type", "expected text"));
                    None
                }
                Err(message) => {
                    errors.push(subject.error(property, None, "evaluation", message));
                    None
                }
            }
        };
        let display_name =
            text("displayName", &self.display_name).unwrap_or_else(|| group.name.trim().to_owned());
        let mail_nickname = text("mailNickname", &self.mail_nickname).unwrap_or_else(|| {
            [group.name.as_str(), group.id.as_str()]
                .iter()
                .map(|s| sanitize_mail_nickname(s, NicknameKind::Group))
                .find(|s| !s.is_empty())
                .unwrap_or_else(|| "group".to_owned())
        });
        let description = text("description", &self.description);
        if let Err(v) = validate::group_display_name(&display_name) {
            errors.push(subject.violation("displayName", Some(&display_name), v));
        }
        if let Err(v) = validate::mail_nickname(&mail_nickname, NicknameKind::Group) {
            errors.push(subject.violation("mailNickname", Some(&mail_nickname), v));
        }
        if let Some(d) = &description
            && let Err(v) = validate::group_description(d)
        {
            errors.push(subject.violation("description", Some(d), v));
        }
        if errors.is_empty() {
            Ok(MappedGroup {
                source_id: group.id.clone(),
                display_name,
                mail_nickname,
                description,
            })
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests;
