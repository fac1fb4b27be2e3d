//! The template environment: minijinja plus the functions identity admins expect.
//!
//! Every helper below is registered both as a filter (`{{ sn | lower }}`) and as a function
//! (`{{ lower(sn) }}`), except `unique` and `numbered` (functions only). String helpers apply
//! element-wise to lists (multi-valued LDAP attributes) and pass a missing value through as
//! missing, so `{{ missing | lower }}` renders empty and `coalesce` can skip it.
//!
//! | name | does |
//! |---|---|
//! | `lower`, `upper`, `trim`, `replace(from, to)` | as usual |
//! | `ascii`, `normalize_diacritics` | transliterate to ASCII with `deunicode`: José Müller → Jose Muller, ß → ss, Ø → O, Æ → AE, Ł → L |
//! | `split(sep)` | a list of the trimmed, non-empty parts (sep defaults to whitespace) |
//! | `join(sep)` | the non-empty items joined (sep defaults to "") |
//! | `first` | the first non-empty item of a list; a single value passes through (Jinja's own `first` would give a text's first character) |
//! | `default(fallback)` | `fallback` when the value is missing, none, blank or an empty list (Jinja's own `default` only replaces undefined) |
//! | `coalesce(a, b, …)` | the first non-empty argument |
//! | `guid_to_immutable_id` | objectGUID bytes, or a GUID string in AD byte order, → base64 (onPremisesImmutableId) |
//! | `mail_nickname` / `mail_nickname(group=true)` | transliterate, then drop what Graph refuses in a mailNickname; at most 64 characters |
//! | `upn_alias` | transliterate, then drop what Graph refuses before the `@` of a UPN; trims dots |
//! | `unique(c1, c2, …)` | the first candidate free in the tenant, chosen by the engine (see [`super`]) |
//! | `numbered(base, start=2, end=9)` | `[base2, base3, …, base9]`, to feed `unique` |
//!
//! A list (a multi-valued attribute, `split`) mapped to a single-valued property is a per-user
//! error when it holds more than one value: the mapping must say which value it wants, with
//! `first` (`{{ mail | first }}`) or `join` (`{{ title | join(', ') }}`), never have one picked
//! silently. A list of exactly one value is that value.
//!
//! Why `deunicode` and not Unicode normalisation: NFD + dropping combining marks handles é → e
//! but leaves ß, Ø, Æ, Ł, Đ and every non-Latin script untouched, which Graph then refuses in a
//! UPN; `deunicode` maps them all to ASCII by table (ß → ss, Ø → O) in one pass.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use minijinja::value::{Enumerator, Kwargs, Object, Rest, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior};

use super::validate::{self, NicknameKind};
use crate::model::{AttrValue, Attributes};

/// What `unique(...)` renders as: the engine replaces it with each candidate in turn. A
/// private-use code point, so it cannot come from a source attribute by accident.
pub(crate) const UNIQUE_MARKER: &str = "\u{F8FF}unique\u{F8FF}";

/// Name under which the per-evaluation sink of `unique` calls is reachable from functions.
const SINK_VAR: &str = "__unique_sink";

/// The environment every mapping template is compiled into.
pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_recursion_limit(64);
    // minijinja prints booleans Python-style (`True`); Graph and admins expect `true`.
    env.set_formatter(|out, state, value| {
        if value.kind() == ValueKind::Bool {
            out.write_str(if value.is_true() { "true" } else { "false" })
                .map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string()))
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    for (name, f) in [
        ("lower", lower as fn(Value) -> Result<Value, Error>),
        ("upper", upper),
        ("trim", trim),
        ("ascii", ascii),
        ("normalize_diacritics", ascii),
        ("guid_to_immutable_id", guid_to_immutable_id_value),
        ("upn_alias", upn_alias),
    ] {
        env.add_filter(name, f);
        env.add_function(name, f);
    }
    env.add_filter("replace", replace);
    env.add_function("replace", replace);
    env.add_filter("split", split);
    env.add_function("split", split);
    env.add_filter("join", join);
    env.add_function("join", join);
    env.add_filter("first", first);
    env.add_function("first", first);
    env.add_filter("default", default);
    env.add_filter("d", default);
    env.add_function("default", default);
    env.add_filter("coalesce", coalesce);
    env.add_function("coalesce", coalesce);
    env.add_filter("mail_nickname", mail_nickname);
    env.add_function("mail_nickname", mail_nickname);
    env.add_function("unique", unique);
    env.add_function("numbered", numbered);
    env
}

// ---------------------------------------------------------------------------------------------
// Pure helpers (also public through `mapping`)

/// ASCII transliteration (`deunicode`); characters without one are dropped.
pub fn normalize_diacritics(s: &str) -> String {
    deunicode::deunicode_with_tofu(s, "")
}

/// A mailNickname from any text: transliterated, characters Graph refuses removed, dots not
/// leading or trailing (and removed altogether for groups), at most 64 characters.
pub fn sanitize_mail_nickname(s: &str, kind: NicknameKind) -> String {
    let ascii = normalize_diacritics(s);
    let kept: String = ascii
        .chars()
        .filter(|&c| validate::is_nickname_char(c, kind))
        .collect();
    let trimmed = kept.trim_matches('.');
    trimmed
        .chars()
        .take(64)
        .collect::<String>()
        .trim_end_matches('.')
        .to_owned()
}

/// A UPN alias from any text: transliterated, characters outside `A-Za-z0-9'.-_!#^~` removed,
/// runs of dots collapsed, no leading or trailing dot, at most 64 characters.
pub fn sanitize_upn_alias(s: &str) -> String {
    let ascii = normalize_diacritics(s);
    let mut out = String::with_capacity(ascii.len());
    for c in ascii.chars().filter(|&c| validate::is_upn_alias_char(c)) {
        if c == '.' && (out.is_empty() || out.ends_with('.')) {
            continue;
        }
        out.push(c);
    }
    let capped: String = out.chars().take(64).collect();
    capped.trim_end_matches('.').to_owned()
}

/// onPremisesImmutableId from a binary objectGUID: base64 of the 16 bytes as stored.
pub fn immutable_id_from_bytes(bytes: &[u8]) -> Result<String, String> {
    if bytes.len() != 16 {
        return Err(format!(
            "an objectGUID has 16 bytes, this value has {}",
            bytes.len()
        ));
    }
    Ok(STANDARD.encode(bytes))
}

/// onPremisesImmutableId from a GUID string: AD stores the first three groups little-endian, so
/// `d6d9f9c7-4e3b-4a5a-…` becomes the bytes `c7 f9 d9 d6 3b 4e 5a 4a …` before base64.
pub fn immutable_id_from_guid_str(guid: &str) -> Result<String, String> {
    let b = validate::parse_guid(guid)
        .ok_or_else(|| format!("{guid:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"))?;
    let le = [
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15],
    ];
    Ok(STANDARD.encode(le))
}

// ---------------------------------------------------------------------------------------------
// The context: source attributes as variables

/// A source record as template variables: each attribute by name (exact match first, then
/// case-insensitive, since LDAP names are), plus the `extra` variables (`source`, or `name`/`id`
/// for groups), which win over attributes.
#[derive(Debug)]
pub(crate) struct SourceData {
    attrs: Attributes,
    extra: BTreeMap<&'static str, Value>,
}

impl SourceData {
    pub(crate) fn new(attrs: Attributes, extra: BTreeMap<&'static str, Value>) -> Arc<Self> {
        Arc::new(SourceData { attrs, extra })
    }

    /// The attributes named `{prefix}.…` (a source that flattens objects with dotted names,
    /// such as PingOne's `name.given`) as a map, so that a template reads `name.given` too.
    fn dotted(&self, prefix: &str) -> Option<Value> {
        let members: Vec<(&str, &AttrValue)> = self
            .attrs
            .iter()
            .filter_map(|(name, value)| {
                let (head, rest) = name.split_once('.')?;
                head.eq_ignore_ascii_case(prefix).then_some((rest, value))
            })
            .collect();
        (!members.is_empty()).then(|| dotted_tree(&members))
    }

    pub(crate) fn attribute(&self, name: &str) -> Option<&AttrValue> {
        self.attrs.get(name).or_else(|| {
            self.attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
    }
}

/// `[("given", v), ("address.locality", w)]` as `{given: v, address: {locality: w}}`.
fn dotted_tree(members: &[(&str, &AttrValue)]) -> Value {
    let mut leaves: BTreeMap<String, Value> = BTreeMap::new();
    let mut branches: BTreeMap<&str, Vec<(&str, &AttrValue)>> = BTreeMap::new();
    for (name, value) in members {
        match name.split_once('.') {
            Some((head, rest)) => branches.entry(head).or_default().push((rest, value)),
            None => {
                leaves.insert((*name).to_owned(), attr_to_value(value));
            }
        }
    }
    for (head, nested) in branches {
        leaves
            .entry(head.to_owned())
            .or_insert_with(|| dotted_tree(&nested));
    }
    Value::from(leaves)
}

/// The attributes as a minijinja map (for `source.attributes`).
pub(crate) fn attributes_value(attrs: &Attributes) -> Value {
    Value::from(
        attrs
            .iter()
            .map(|(k, v)| (k.clone(), attr_to_value(v)))
            .collect::<BTreeMap<String, Value>>(),
    )
}

pub(crate) fn attr_to_value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Bool(b) => Value::from(*b),
        AttrValue::Int(i) => Value::from(*i),
        AttrValue::Float(f) => Value::from(*f),
        AttrValue::Text(s) => Value::from(s.as_str()),
        AttrValue::List(items) => Value::from(items.clone()),
        AttrValue::Binary(b) => Value::from_bytes(b.clone()),
    }
}

/// The root context of one evaluation: the record plus a fresh `unique` sink.
#[derive(Debug)]
pub(crate) struct EvalContext {
    data: Arc<SourceData>,
    sink: Value,
}

impl EvalContext {
    pub(crate) fn new(data: Arc<SourceData>) -> Self {
        EvalContext {
            data,
            sink: Value::from_object(UniqueSink::default()),
        }
    }

    /// The candidate lists `unique(...)` recorded during the evaluation.
    pub(crate) fn unique_calls(&self) -> Vec<Vec<String>> {
        self.sink
            .downcast_object_ref::<UniqueSink>()
            .and_then(|s| s.calls.lock().ok().map(|c| c.clone()))
            .unwrap_or_default()
    }

    /// The root value to render with: a cheap handle on the record and the sink.
    pub(crate) fn root(&self) -> Value {
        Value::from_object(ContextHandle {
            data: Arc::clone(&self.data),
            sink: self.sink.clone(),
        })
    }
}

#[derive(Debug)]
struct ContextHandle {
    data: Arc<SourceData>,
    sink: Value,
}

impl Object for ContextHandle {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        if key == SINK_VAR {
            return Some(self.sink.clone());
        }
        if let Some(v) = self.data.extra.get(key) {
            return Some(v.clone());
        }
        self.data
            .attribute(key)
            .map(attr_to_value)
            .or_else(|| self.data.dotted(key))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::NonEnumerable
    }
}

#[derive(Debug, Default)]
struct UniqueSink {
    calls: Mutex<Vec<Vec<String>>>,
}

impl Object for UniqueSink {}

// ---------------------------------------------------------------------------------------------
// Filters and functions

fn is_missing(v: &Value) -> bool {
    v.is_undefined() || v.is_none()
}

/// Whether a value counts as empty for `default`/`coalesce` and for mapped results.
pub(crate) fn is_empty_value(v: &Value) -> bool {
    if is_missing(v) {
        return true;
    }
    match v.kind() {
        ValueKind::String => v.as_str().is_some_and(|s| s.trim().is_empty()),
        ValueKind::Seq | ValueKind::Bytes => v.len() == Some(0),
        _ => false,
    }
}

fn text_of(v: &Value) -> Result<String, Error> {
    match v.kind() {
        ValueKind::String => Ok(v.as_str().unwrap_or_default().to_owned()),
        ValueKind::Bool => Ok(v.is_true().to_string()),
        ValueKind::Number => Ok(v.to_string()),
        ValueKind::Bytes => Err(Error::new(
            ErrorKind::InvalidOperation,
            "binary value: convert it first (e.g. guid_to_immutable_id)",
        )),
        other => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("expected text, got {other}"),
        )),
    }
}

/// Applies `f` to a text value, or to each item of a list; missing stays missing.
fn map_text(v: Value, f: impl Fn(&str) -> String) -> Result<Value, Error> {
    if is_missing(&v) {
        return Ok(v);
    }
    if v.kind() == ValueKind::Seq {
        let items = v
            .try_iter()?
            .map(|item| text_of(&item).map(|s| Value::from(f(&s))))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Value::from(items));
    }
    Ok(Value::from(f(&text_of(&v)?)))
}

fn lower(v: Value) -> Result<Value, Error> {
    map_text(v, str::to_lowercase)
}

fn upper(v: Value) -> Result<Value, Error> {
    map_text(v, str::to_uppercase)
}

fn trim(v: Value) -> Result<Value, Error> {
    map_text(v, |s| s.trim().to_owned())
}

fn ascii(v: Value) -> Result<Value, Error> {
    map_text(v, normalize_diacritics)
}

fn upn_alias(v: Value) -> Result<Value, Error> {
    map_text(v, sanitize_upn_alias)
}

fn replace(v: Value, from: String, to: String) -> Result<Value, Error> {
    map_text(v, |s| s.replace(&from, &to))
}

fn mail_nickname(v: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let group: Option<bool> = kwargs.get("group")?;
    kwargs.assert_all_used()?;
    let kind = if group.unwrap_or(false) {
        NicknameKind::Group
    } else {
        NicknameKind::User
    };
    map_text(v, |s| sanitize_mail_nickname(s, kind))
}

fn split(v: Value, sep: Option<String>) -> Result<Value, Error> {
    if is_missing(&v) {
        return Ok(v);
    }
    let texts: Vec<String> = if v.kind() == ValueKind::Seq {
        v.try_iter()?
            .map(|i| text_of(&i))
            .collect::<Result<_, _>>()?
    } else {
        vec![text_of(&v)?]
    };
    let mut parts = Vec::new();
    for t in &texts {
        let pieces: Vec<&str> = match sep.as_deref() {
            None | Some("") => t.split_whitespace().collect(),
            Some(sep) => t.split(sep).collect(),
        };
        parts.extend(
            pieces
                .into_iter()
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(Value::from),
        );
    }
    Ok(Value::from(parts))
}

fn join(v: Value, sep: Option<String>) -> Result<Value, Error> {
    if is_missing(&v) || v.kind() != ValueKind::Seq {
        return Ok(v);
    }
    let items: Vec<String> = v
        .try_iter()?
        .filter(|i| !is_empty_value(i))
        .map(|i| text_of(&i))
        .collect::<Result<_, _>>()?;
    Ok(Value::from(items.join(sep.as_deref().unwrap_or(""))))
}

/// The first non-empty item of a list; any other value as it is (missing stays missing).
fn first(v: Value) -> Result<Value, Error> {
    if is_missing(&v) || v.kind() != ValueKind::Seq {
        return Ok(v);
    }
    for item in v.try_iter()? {
        if !is_empty_value(&item) {
            return Ok(item);
        }
    }
    Ok(Value::UNDEFINED)
}

fn default(v: Value, fallback: Option<Value>) -> Value {
    if is_empty_value(&v) {
        fallback.unwrap_or_else(|| Value::from(""))
    } else {
        v
    }
}

fn coalesce(values: Rest<Value>) -> Value {
    values
        .0
        .into_iter()
        .find(|v| !is_empty_value(v))
        .unwrap_or(Value::UNDEFINED)
}

fn guid_to_immutable_id_value(v: Value) -> Result<Value, Error> {
    if is_missing(&v) {
        return Ok(v);
    }
    let res = if let Some(bytes) = v.as_bytes().filter(|_| v.kind() == ValueKind::Bytes) {
        immutable_id_from_bytes(bytes)
    } else if let Some(s) = v.as_str() {
        immutable_id_from_guid_str(s)
    } else {
        Err(format!(
            "expected a binary objectGUID or a GUID string, got {}",
            v.kind()
        ))
    };
    res.map(Value::from)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e))
}

fn unique(state: &State, candidates: Rest<Value>) -> Result<Value, Error> {
    let sink_value = state.lookup(SINK_VAR).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            "unique() is only available in user attribute mappings",
        )
    })?;
    let sink = sink_value
        .downcast_object_ref::<UniqueSink>()
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "unique() sink unavailable"))?;
    let mut list: Vec<String> = Vec::new();
    let mut push = |v: &Value| -> Result<(), Error> {
        if is_empty_value(v) {
            return Ok(());
        }
        let s = text_of(v)?.trim().to_owned();
        if !list.iter().any(|c| c.eq_ignore_ascii_case(&s)) {
            list.push(s);
        }
        Ok(())
    };
    for c in candidates.0 {
        if c.kind() == ValueKind::Seq {
            for item in c.try_iter()? {
                push(&item)?;
            }
        } else {
            push(&c)?;
        }
    }
    sink.calls
        .lock()
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, "unique() sink poisoned"))?
        .push(list);
    Ok(Value::from(UNIQUE_MARKER))
}

fn numbered(base: Value, start: Option<i64>, end: Option<i64>) -> Result<Value, Error> {
    if is_empty_value(&base) {
        return Ok(Value::from(Vec::<Value>::new()));
    }
    let base = text_of(&base)?;
    let (start, end) = (start.unwrap_or(2), end.unwrap_or(9));
    if end < start || end - start > 999 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "numbered(base, start, end) needs start <= end and at most 1000 numbers",
        ));
    }
    Ok(Value::from(
        (start..=end)
            .map(|n| Value::from(format!("{base}{n}")))
            .collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, attrs: &[(&str, AttrValue)]) -> (String, Vec<Vec<String>>) {
        let env = environment();
        let attrs: Attributes = attrs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let ctx = EvalContext::new(SourceData::new(attrs, BTreeMap::new()));
        let out = env.render_str(template, ctx.root()).unwrap();
        (out, ctx.unique_calls())
    }

    fn text(s: &str) -> AttrValue {
        AttrValue::Text(s.into())
    }

    #[test]
    fn filters_and_functions_table() {
        let attrs = [
            ("givenName", text("José")),
            ("sn", text("Müller")),
            ("blank", text("   ")),
            ("phones", text("+1 555 0100; +1 555 0101;")),
            (
                "groups",
                AttrValue::List(vec!["Sales".into(), "".into(), "IT".into()]),
            ),
            ("vip", AttrValue::Bool(true)),
            ("n", AttrValue::Int(7)),
        ];
        let cases = [
            ("{{ givenName | lower }}", "josé"),
            ("{{ lower(givenName) }}", "josé"),
            ("{{ sn | upper }}", "MÜLLER"),
            ("{{ upper(sn) }}", "MÜLLER"),
            ("[{{ '  x ' | trim }}]", "[x]"),
            ("{{ trim('  x ') }}", "x"),
            ("{{ sn | replace('ü', 'ue') }}", "Mueller"),
            ("{{ replace(sn, 'ü', 'ue') }}", "Mueller"),
            (
                "{{ givenName }} {{ sn }}|{{ (givenName ~ ' ' ~ sn) | ascii }}",
                "José Müller|Jose Muller",
            ),
            (
                "{{ normalize_diacritics('Straße Øre Æsir Łukasz Đorđe') }}",
                "Strasse Ore AEsir Lukasz Dorde",
            ),
            (
                "{{ phones | split(';') | join(',') }}",
                "+1 555 0100,+1 555 0101",
            ),
            ("{{ join(split('a b  c'), '-') }}", "a-b-c"),
            ("{{ groups | join('/') }}", "Sales/IT"),
            ("{{ groups | lower | join(',') }}", "sales,it"),
            ("{{ groups | first }}", "Sales"),
            ("{{ first(groups) }}", "Sales"),
            ("{{ sn | first }}", "Müller"),
            ("[{{ missing | first }}]", "[]"),
            ("{{ phones | split(';') | first }}", "+1 555 0100"),
            ("{{ missing | default('none') }}", "none"),
            ("{{ blank | default('none') }}", "none"),
            ("{{ sn | default('none') }}", "Müller"),
            ("{{ default(missing, 'x') }}", "x"),
            ("{{ coalesce(missing, blank, sn, givenName) }}", "Müller"),
            ("{{ missing | coalesce(blank, givenName) }}", "José"),
            ("[{{ coalesce(missing, blank) }}]", "[]"),
            ("[{{ missing | lower }}]", "[]"),
            (
                "{{ mail_nickname('José Müller (IT); x@y') }}",
                "JoseMullerITxy",
            ),
            ("{{ 'john.doe.' | mail_nickname }}", "john.doe"),
            (
                "{{ 'Sales.Team EU' | mail_nickname(group=true) }}",
                "SalesTeamEU",
            ),
            (
                "{{ upn_alias('..José  O\\'Brien..Jr.') }}",
                "JoseO'Brien.Jr",
            ),
            (
                "{{ numbered('jdoe', 2, 4) | join(',') }}",
                "jdoe2,jdoe3,jdoe4",
            ),
            ("{{ numbered('jdoe') | length }}", "8"),
            ("{{ vip }} {{ n }}", "true 7"),
            ("{{ GIVENNAME }}", "José"),
        ];
        for (template, expected) in cases {
            assert_eq!(render(template, &attrs).0, expected, "{template}");
        }
    }

    #[test]
    fn diacritics_table() {
        for (input, expected) in [
            ("José Müller", "Jose Muller"),
            ("ß", "ss"),
            ("Ø", "O"),
            ("øre", "ore"),
            ("Ångström", "Angstrom"),
            ("François", "Francois"),
            ("Çelik Şahin", "Celik Sahin"),
            ("Dvořák", "Dvorak"),
            ("Nguyễn", "Nguyen"),
            ("plain ascii", "plain ascii"),
        ] {
            assert_eq!(normalize_diacritics(input), expected, "{input}");
        }
    }

    #[test]
    fn guid_vector_in_ad_byte_order() {
        // d6d9f9c7-4e3b-4a5a-9c56-2b3d1c0f8a11: the first three groups reversed byte by byte
        // (d6d9f9c7 → c7 f9 d9 d6, 4e3b → 3b 4e, 4a5a → 5a 4a), the rest as written.
        let bytes: [u8; 16] = [
            0xc7, 0xf9, 0xd9, 0xd6, 0x3b, 0x4e, 0x5a, 0x4a, 0x9c, 0x56, 0x2b, 0x3d, 0x1c, 0x0f,
            0x8a, 0x11,
        ];
        // base64 by hand: c7f9d9 → x/nZ, d63b4e → 1jtO, 5a4a9c → Wkqc, 562b3d → Vis9,
        // 1c0f8a → HA+K, 11 → EQ==.
        let expected = "x/nZ1jtOWkqcVis9HA+KEQ==";
        assert_eq!(immutable_id_from_bytes(&bytes).unwrap(), expected);
        assert_eq!(
            immutable_id_from_guid_str("d6d9f9c7-4e3b-4a5a-9c56-2b3d1c0f8a11").unwrap(),
            expected
        );
        assert_eq!(
            immutable_id_from_guid_str("{D6D9F9C7-4E3B-4A5A-9C56-2B3D1C0F8A11}").unwrap(),
            expected
        );
        let attrs = [
            ("objectGUID", AttrValue::Binary(bytes.to_vec())),
            ("guidText", text("d6d9f9c7-4e3b-4a5a-9c56-2b3d1c0f8a11")),
        ];
        assert_eq!(
            render("{{ objectGUID | guid_to_immutable_id }}", &attrs).0,
            expected
        );
        assert_eq!(
            render("{{ guid_to_immutable_id(guidText) }}", &attrs).0,
            expected
        );
        assert!(immutable_id_from_bytes(&[1, 2, 3]).is_err());
        assert!(immutable_id_from_guid_str("not-a-guid").is_err());
        let env = environment();
        let ctx = EvalContext::new(SourceData::new(
            [("g".to_owned(), text("nope"))].into_iter().collect(),
            BTreeMap::new(),
        ));
        let err = env
            .render_str("{{ g | guid_to_immutable_id }}", ctx.root())
            .unwrap_err();
        assert!(err.to_string().contains("not a GUID"), "{err}");
    }

    #[test]
    fn unique_records_its_candidates_and_renders_a_marker() {
        let attrs = [("uid", text("JDoe")), ("blank", text(""))];
        let (out, calls) = render(
            "{{ unique(uid | lower, blank, numbered(uid | lower, 2, 3), 'jdoe') }}@example.com",
            &attrs,
        );
        assert_eq!(out, format!("{UNIQUE_MARKER}@example.com"));
        assert_eq!(calls, vec![vec!["jdoe", "jdoe2", "jdoe3"]]);
    }

    #[test]
    fn sanitizers_produce_valid_values() {
        for input in [
            "José Müller",
            "a@b(c)d[e]f;g:h<i>j,k l\"m\\n",
            "...",
            "北京",
            &"x".repeat(100),
        ] {
            let user = sanitize_mail_nickname(input, NicknameKind::User);
            let group = sanitize_mail_nickname(input, NicknameKind::Group);
            for (nick, kind) in [(user, NicknameKind::User), (group, NicknameKind::Group)] {
                assert!(
                    nick.is_empty() || validate::mail_nickname(&nick, kind).is_ok(),
                    "{input} → {nick}"
                );
            }
            let alias = sanitize_upn_alias(input);
            assert!(
                alias.is_empty()
                    || validate::user_principal_name(
                        &format!("{alias}@example.com"),
                        &validate::DomainPolicy::unchecked()
                    )
                    .is_ok(),
                "{input} → {alias}"
            );
        }
    }
}
