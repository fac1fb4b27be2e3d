//! The `$filter` subset Graph answers on users and groups
//! (docs/graph-behaviour.md#queries-and-filters, #advanced-queries).
//!
//! By default: `eq`, `in` (≤ 15 child clauses), `startsWith`, `and`/`or`, parentheses and a few
//! `any` lambdas (`assignedLicenses/any(x:x/skuId eq GUID)`, `proxyAddresses/any(...)`,
//! `groupTypes/any(...)`). `ne`, `not` and `endsWith` need an advanced query
//! (`ConsistencyLevel: eventual` + `$count=true`, [`QueryMode::Advanced`]); without one they get
//! Graph's "required parameters might be missing" 400. `ge`/`le`/`gt`/`lt` are refused in both
//! modes (the sandbox serves no range filters).

use http::StatusCode;
use serde_json::Value;

use crate::wire::GraphError;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    LParen,
    RParen,
    Comma,
    Colon,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Str(String),
    Bool(bool),
    Null,
    /// Unquoted GUID or number.
    Raw(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Cmp {
        prop: String,
        op: String,
        val: Lit,
    },
    In {
        prop: String,
        vals: Vec<Lit>,
    },
    Func {
        name: String,
        prop: String,
        val: Lit,
    },
    Any {
        coll: String,
        var: String,
        body: Box<Expr>,
    },
    All {
        coll: String,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

fn syntax_error(pos: usize, filter: &str) -> GraphError {
    GraphError::new(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        format!("Invalid filter clause: Syntax error at position {pos} in '{filter}'."),
    )
}

fn tokenize(s: &str) -> Result<Vec<(usize, Tok)>, GraphError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => i += 1,
            '(' => {
                out.push((i, Tok::LParen));
                i += 1;
            }
            ')' => {
                out.push((i, Tok::RParen));
                i += 1;
            }
            ',' => {
                out.push((i, Tok::Comma));
                i += 1;
            }
            ':' => {
                out.push((i, Tok::Colon));
                i += 1;
            }
            '\'' => {
                let start = i;
                i += 1;
                let mut lit = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(syntax_error(start, s)),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            lit.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            lit.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push((start, Tok::Str(lit)));
            }
            c if c.is_alphanumeric() || "_./-$".contains(c) => {
                let start = i;
                let mut w = String::new();
                while let Some(&ch) = chars.get(i) {
                    if ch.is_alphanumeric() || "_./-$".contains(ch) {
                        w.push(ch);
                        i += 1;
                    } else {
                        break;
                    }
                }
                out.push((start, Tok::Word(w)));
            }
            _ => return Err(syntax_error(i, s)),
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    src: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }
    fn here(&self) -> usize {
        self.toks
            .get(self.pos)
            .map(|(p, _)| *p)
            .unwrap_or(self.src.len())
    }
    fn err(&self) -> GraphError {
        syntax_error(self.here(), self.src)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }
    fn expect(&mut self, t: Tok) -> Result<(), GraphError> {
        if self.peek() == Some(&t) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err())
        }
    }
    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn or_expr(&mut self) -> Result<Expr, GraphError> {
        let mut left = self.and_expr()?;
        while self.keyword("or") {
            self.pos += 1;
            let right = self.and_expr()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr, GraphError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn literal(&mut self) -> Result<Lit, GraphError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Lit::Str(s)),
            Some(Tok::Word(w)) => Ok(match w.to_ascii_lowercase().as_str() {
                "true" => Lit::Bool(true),
                "false" => Lit::Bool(false),
                "null" => Lit::Null,
                _ => Lit::Raw(w),
            }),
            _ => {
                self.pos -= 1;
                Err(self.err())
            }
        }
    }

    fn unary(&mut self) -> Result<Expr, GraphError> {
        if self.keyword("not") {
            self.pos += 1;
            let inner = self.unary()?;
            return Ok(Expr::Not(Box::new(inner)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or_expr()?;
            self.expect(Tok::RParen)?;
            return Ok(e);
        }
        let Some(Tok::Word(word)) = self.next() else {
            self.pos = self.pos.saturating_sub(1);
            return Err(self.err());
        };
        // Function call or lambda.
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let lower = word.to_ascii_lowercase();
            if let Some(coll) = lower
                .strip_suffix("/any")
                .or_else(|| lower.strip_suffix("/all"))
            {
                let coll = word[..coll.len()].to_owned();
                if lower.ends_with("/all") {
                    // Skip to the matching parenthesis; `all` is refused anyway.
                    let mut depth = 1;
                    while depth > 0 {
                        match self.next() {
                            Some(Tok::LParen) => depth += 1,
                            Some(Tok::RParen) => depth -= 1,
                            None => return Err(self.err()),
                            _ => {}
                        }
                    }
                    return Ok(Expr::All { coll });
                }
                let Some(Tok::Word(var)) = self.next() else {
                    return Err(self.err());
                };
                self.expect(Tok::Colon)?;
                let body = self.or_expr()?;
                self.expect(Tok::RParen)?;
                return Ok(Expr::Any {
                    coll,
                    var,
                    body: Box::new(body),
                });
            }
            let Some(Tok::Word(prop)) = self.next() else {
                return Err(self.err());
            };
            self.expect(Tok::Comma)?;
            let val = self.literal()?;
            self.expect(Tok::RParen)?;
            return Ok(Expr::Func {
                name: word,
                prop,
                val,
            });
        }
        let Some(Tok::Word(op)) = self.next() else {
            self.pos = self.pos.saturating_sub(1);
            return Err(self.err());
        };
        let op = op.to_ascii_lowercase();
        if op == "in" {
            self.expect(Tok::LParen)?;
            let mut vals = Vec::new();
            loop {
                vals.push(self.literal()?);
                match self.next() {
                    Some(Tok::Comma) => continue,
                    Some(Tok::RParen) => break,
                    _ => {
                        self.pos -= 1;
                        return Err(self.err());
                    }
                }
            }
            return Ok(Expr::In { prop: word, vals });
        }
        if !matches!(op.as_str(), "eq" | "ne" | "gt" | "ge" | "lt" | "le" | "has") {
            self.pos -= 1;
            return Err(self.err());
        }
        let val = self.literal()?;
        Ok(Expr::Cmp {
            prop: word,
            op,
            val,
        })
    }
}

pub(crate) fn parse(filter: &str) -> Result<Expr, GraphError> {
    let toks = tokenize(filter)?;
    let mut p = Parser {
        toks,
        pos: 0,
        src: filter,
    };
    let e = p.or_expr()?;
    if p.pos < p.toks.len() {
        return Err(p.err());
    }
    Ok(e)
}

/// Whether a query is served from Graph's default store or, as an advanced query, from the
/// separate index that also answers `ne`, `not`, `endsWith`, `$search`, `$count` and `$filter`
/// with `$orderby` (<https://learn.microsoft.com/graph/aad-advanced-queries>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueryMode {
    Default,
    Advanced,
}

/// The string functions of `$filter` Graph knows on directory objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    StartsWith,
    EndsWith,
}

fn function(name: &str) -> Option<Function> {
    if name.eq_ignore_ascii_case("startsWith") {
        Some(Function::StartsWith)
    } else if name.eq_ignore_ascii_case("endsWith") {
        Some(Function::EndsWith)
    } else {
        None
    }
}

/// What `$filter` may use on an entity.
struct Caps {
    /// `eq` and `in` by default; also `ne` and `not` in advanced queries.
    eq: &'static [&'static str],
    starts_with: &'static [&'static str],
    /// `endsWith(property, '...')`, advanced queries only.
    ends_with: &'static [&'static str],
    booleans: &'static [&'static str],
    lambdas: &'static [&'static str],
    /// String collections whose lambda may use `startsWith(x, '...')`.
    lambda_starts_with: &'static [&'static str],
    /// String collections whose lambda may use `endsWith(x, '...')`, advanced queries only.
    lambda_ends_with: &'static [&'static str],
    resource: &'static str,
}

const USER_CAPS: Caps = Caps {
    eq: &[
        "id",
        "userPrincipalName",
        "mail",
        "mailNickname",
        "displayName",
        "givenName",
        "surname",
        "jobTitle",
        "department",
        "companyName",
        "employeeId",
        "accountEnabled",
        "usageLocation",
        "onPremisesImmutableId",
        "userType",
        "city",
        "country",
        "state",
        "postalCode",
        "preferredLanguage",
        "creationType",
        "externalUserState",
    ],
    starts_with: &[
        "userPrincipalName",
        "mail",
        "mailNickname",
        "displayName",
        "givenName",
        "surname",
        "jobTitle",
        "department",
        "companyName",
        "employeeId",
        "usageLocation",
        "city",
        "country",
        "state",
        "postalCode",
        "preferredLanguage",
    ],
    // "The endsWith operator is supported only with advanced query parameters by mail,
    // otherMails, userPrincipalName, and proxyAddresses properties" (aad-advanced-queries);
    // the collections take it inside a lambda.
    ends_with: &["mail", "userPrincipalName"],
    booleans: &["accountEnabled"],
    lambdas: &[
        "assignedLicenses",
        "proxyAddresses",
        "otherMails",
        "imAddresses",
    ],
    lambda_starts_with: &["proxyAddresses", "otherMails", "imAddresses"],
    lambda_ends_with: &["proxyAddresses", "otherMails"],
    resource: "User",
};

const GROUP_CAPS: Caps = Caps {
    eq: &[
        "id",
        "displayName",
        "mailNickname",
        "mail",
        "mailEnabled",
        "securityEnabled",
        "description",
        "classification",
        "onPremisesSecurityIdentifier",
        "onPremisesSyncEnabled",
        "isAssignableToRole",
    ],
    starts_with: &[
        "displayName",
        "mailNickname",
        "mail",
        "description",
        "classification",
    ],
    ends_with: &["mail"],
    booleans: &[
        "mailEnabled",
        "securityEnabled",
        "onPremisesSyncEnabled",
        "isAssignableToRole",
    ],
    lambdas: &["groupTypes", "proxyAddresses", "assignedLicenses"],
    lambda_starts_with: &["proxyAddresses"],
    lambda_ends_with: &["proxyAddresses"],
    resource: "Group",
};

fn caps(entity: &str) -> &'static Caps {
    if entity == "group" {
        &GROUP_CAPS
    } else {
        &USER_CAPS
    }
}

/// The string properties `startsWith` works on for `entity` (`$search` matches the same ones by
/// prefix).
pub(crate) fn starts_with_properties(entity: &str) -> &'static [&'static str] {
    caps(entity).starts_with
}

fn advanced(op: &str) -> GraphError {
    GraphError::unsupported_query(format!(
        "Operator '{op}' is not supported because the required parameters might be missing. Try adding $count=true query parameter and ConsistencyLevel:eventual header. Refer to https://aka.ms/graph-docs/advanced-queries for more information"
    ))
}

fn unsupported_prop(prop: &str, caps: &Caps) -> GraphError {
    GraphError::unsupported_query(format!(
        "Unsupported or invalid query filter clause specified for property '{prop}' of resource '{}'.",
        caps.resource
    ))
}

/// Graph's refusal of a query on a property `entity` has but does not index for it.
pub(crate) fn unsupported_property(entity: &str, prop: &str) -> GraphError {
    unsupported_prop(prop, caps(entity))
}

/// Graph's refusal of a query on a property `entity` does not have.
pub(crate) fn unknown_property(prop: &str) -> GraphError {
    // user and group are open types: the directory, not the OData layer, refuses the name.
    GraphError::unsupported_query(format!(
        "Property '{prop}' does not exist as a declared property or extension property."
    ))
}

fn type_mismatch(left: &str, right: &str) -> GraphError {
    GraphError::new(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        format!(
            "A binary operator with incompatible types was detected. Found operand types '{left}' and '{right}' for operator kind 'Equal'."
        ),
    )
}

fn lit_type(l: &Lit) -> &'static str {
    match l {
        Lit::Str(_) => "Edm.String",
        Lit::Bool(_) => "Edm.Boolean",
        Lit::Null => "Edm.Null",
        Lit::Raw(r) if uuid::Uuid::parse_str(r).is_ok() => "Edm.Guid",
        Lit::Raw(_) => "Edm.Int32",
    }
}

/// Child clauses of `or`/`in` (docs/graph-behaviour.md#queries-and-filters: ≤ 15 by default).
fn child_clauses(e: &Expr) -> usize {
    match e {
        Expr::In { vals, .. } => vals.len(),
        Expr::Or(a, b) => child_clauses(a) + child_clauses(b),
        _ => 1,
    }
}

fn known_prop(entity: &str, prop: &str) -> bool {
    crate::schema::has_property(entity, prop)
}

/// Validates a parsed filter against what Graph supports on `entity` in `mode`.
pub(crate) fn check(entity: &str, e: &Expr, mode: QueryMode) -> Result<(), GraphError> {
    Checker {
        entity,
        caps: caps(entity),
        mode,
    }
    .check(e)
}

struct Checker<'a> {
    entity: &'a str,
    caps: &'static Caps,
    mode: QueryMode,
}

impl Checker<'_> {
    fn check(&self, e: &Expr) -> Result<(), GraphError> {
        let clauses = child_clauses(e);
        if matches!(e, Expr::Or(..) | Expr::In { .. }) && clauses > 15 {
            return Err(GraphError::unsupported_query(format!(
                "Too many child clauses specified in search filter expression containing 'OR' operators: {clauses}. Max allowed: 15."
            )));
        }
        match e {
            Expr::Not(inner) => match self.mode {
                QueryMode::Default => Err(advanced("not")),
                QueryMode::Advanced => self.check(inner),
            },
            Expr::And(a, b) | Expr::Or(a, b) => {
                self.check(a)?;
                self.check(b)
            }
            Expr::Cmp { prop, op, val } => self.comparison(prop, op, val),
            Expr::In { prop, vals } => {
                self.prop(prop, self.caps.eq)?;
                vals.iter().try_for_each(|v| self.value(prop, v))
            }
            Expr::Func { name, prop, val } => self.function(name, prop, val),
            Expr::All { coll } => Err(unsupported_prop(coll, self.caps)),
            Expr::Any { coll, var, body } => self.lambda(coll, var, body),
        }
    }

    /// `prop` may be used where `list` allows it.
    fn prop(&self, prop: &str, list: &[&str]) -> Result<(), GraphError> {
        if list.contains(&prop) {
            Ok(())
        } else if self.caps.eq.contains(&prop) || known_prop(self.entity, prop) {
            Err(unsupported_prop(prop, self.caps))
        } else {
            Err(unknown_property(prop))
        }
    }

    /// A literal compared with `prop`: its type, and at most 120 characters.
    fn value(&self, prop: &str, val: &Lit) -> Result<(), GraphError> {
        let boolean = self.caps.booleans.contains(&prop);
        match val {
            Lit::Bool(_) if boolean => Ok(()),
            Lit::Str(s) if !boolean => {
                if s.chars().count() > 120 {
                    Err(unsupported_prop(prop, self.caps))
                } else {
                    Ok(())
                }
            }
            Lit::Null => Ok(()),
            other => Err(type_mismatch(
                if boolean { "Edm.Boolean" } else { "Edm.String" },
                lit_type(other),
            )),
        }
    }

    /// `eq` by default, `ne` in advanced queries; range operators never.
    fn comparison(&self, prop: &str, op: &str, val: &Lit) -> Result<(), GraphError> {
        self.prop(prop, self.caps.eq)?;
        match (op, self.mode) {
            ("eq", _) | ("ne", QueryMode::Advanced) => self.value(prop, val),
            (_, QueryMode::Default) => Err(advanced(op)),
            // Not indexed for it even with the advanced parameters: Graph's answer for a property
            // it cannot filter that way (aad-advanced-queries, "createdDateTime ge" on groups).
            (_, QueryMode::Advanced) => Err(unsupported_prop(prop, self.caps)),
        }
    }

    fn function(&self, name: &str, prop: &str, val: &Lit) -> Result<(), GraphError> {
        match (function(name), self.mode) {
            (Some(Function::StartsWith), _) => {
                self.prop(prop, self.caps.starts_with)?;
                self.value(prop, val)
            }
            (Some(Function::EndsWith), QueryMode::Default) => Err(advanced("endsWith")),
            (Some(Function::EndsWith), QueryMode::Advanced) => {
                self.prop(prop, self.caps.ends_with)?;
                self.value(prop, val)
            }
            (None, _) => Err(unsupported_prop(prop, self.caps)),
        }
    }

    fn lambda(&self, coll: &str, var: &str, body: &Expr) -> Result<(), GraphError> {
        let caps = self.caps;
        if !caps.lambdas.contains(&coll) {
            return Err(if known_prop(self.entity, coll) {
                unsupported_prop(coll, caps)
            } else {
                unknown_property(coll)
            });
        }
        let string_value = |val: &Lit| match val {
            Lit::Str(_) => Ok(()),
            other => Err(type_mismatch("Edm.String", lit_type(other))),
        };
        match body {
            Expr::Func { name, prop, val } if prop == var => match (function(name), self.mode) {
                (Some(Function::StartsWith), _) if caps.lambda_starts_with.contains(&coll) => {
                    string_value(val)
                }
                (Some(Function::EndsWith), QueryMode::Default)
                    if caps.lambda_ends_with.contains(&coll) =>
                {
                    Err(advanced("endsWith"))
                }
                (Some(Function::EndsWith), QueryMode::Advanced)
                    if caps.lambda_ends_with.contains(&coll) =>
                {
                    string_value(val)
                }
                _ => Err(unsupported_prop(coll, caps)),
            },
            Expr::Cmp { prop, op, val } => {
                if op != "eq" {
                    // A negated lambda is written `not(coll/any(...))`, never with `ne` inside.
                    return Err(match self.mode {
                        QueryMode::Default => advanced(op),
                        QueryMode::Advanced => unsupported_prop(coll, caps),
                    });
                }
                if coll == "assignedLicenses" {
                    // skuId is an Edm.Guid: unquoted (docs/graph-behaviour.md#queries-and-filters).
                    if *prop != format!("{var}/skuId") {
                        return Err(unsupported_prop(coll, caps));
                    }
                    if lit_type(val) != "Edm.Guid" {
                        return Err(type_mismatch("Edm.Guid", lit_type(val)));
                    }
                    Ok(())
                } else if prop != var {
                    Err(unsupported_prop(coll, caps))
                } else {
                    string_value(val)
                }
            }
            _ => Err(unsupported_prop(coll, caps)),
        }
    }
}

fn lit_matches(stored: Option<&Value>, lit: &Lit) -> bool {
    match (stored, lit) {
        (Some(Value::String(s)), Lit::Str(l)) => s.eq_ignore_ascii_case(l),
        (Some(Value::Bool(b)), Lit::Bool(l)) => b == l,
        (None | Some(Value::Null), Lit::Null) => true,
        (Some(Value::String(s)), Lit::Raw(l)) => s.eq_ignore_ascii_case(l),
        _ => false,
    }
}

/// `startsWith`/`endsWith` on a stored string, ignoring case.
fn text_matches(name: &str, stored: Option<&Value>, lit: &Lit) -> bool {
    let (Some(Value::String(s)), Lit::Str(l)) = (stored, lit) else {
        return false;
    };
    let (s, l) = (s.to_lowercase(), l.to_lowercase());
    match function(name) {
        Some(Function::StartsWith) => s.starts_with(&l),
        Some(Function::EndsWith) => s.ends_with(&l),
        None => false,
    }
}

/// Evaluates a checked filter against an object's stored properties.
pub(crate) fn eval(e: &Expr, props: &serde_json::Map<String, Value>) -> bool {
    match e {
        Expr::And(a, b) => eval(a, props) && eval(b, props),
        Expr::Or(a, b) => eval(a, props) || eval(b, props),
        Expr::Not(a) => !eval(a, props),
        Expr::Cmp { prop, op, val } => lit_matches(props.get(prop), val) != (op == "ne"),
        Expr::In { prop, vals } => vals.iter().any(|v| lit_matches(props.get(prop), v)),
        Expr::Func { name, prop, val } => text_matches(name, props.get(prop), val),
        Expr::All { .. } => false,
        Expr::Any { coll, var, body } => {
            let Some(items) = props.get(coll).and_then(Value::as_array) else {
                return false;
            };
            match body.as_ref() {
                Expr::Func { name, val, .. } => {
                    items.iter().any(|item| text_matches(name, Some(item), val))
                }
                Expr::Cmp { prop, val, .. } => items.iter().any(|item| {
                    if prop == var {
                        lit_matches(Some(item), val)
                    } else {
                        let sub = prop.strip_prefix(&format!("{var}/")).unwrap_or(prop);
                        lit_matches(item.get(sub), val)
                    }
                }),
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escaped_quote_and_in() {
        let e =
            parse("displayName eq 'O''Brien' and userPrincipalName in ('a@b.c','d@e.f')").unwrap();
        let Expr::And(a, _) = &e else { panic!() };
        assert_eq!(
            **a,
            Expr::Cmp {
                prop: "displayName".into(),
                op: "eq".into(),
                val: Lit::Str("O'Brien".into())
            }
        );
        assert!(check("user", &e, QueryMode::Default).is_ok());
    }

    #[test]
    fn lambda_guid_unquoted() {
        let e = parse("assignedLicenses/any(x:x/skuId eq 6fd2c87f-b296-42f0-b197-1e91e994b900)")
            .unwrap();
        assert!(check("user", &e, QueryMode::Default).is_ok());
        let e = parse("assignedLicenses/any(x:x/skuId eq '6fd2c87f-b296-42f0-b197-1e91e994b900')")
            .unwrap();
        assert!(check("user", &e, QueryMode::Default).is_err());
    }

    #[test]
    fn rejects_ne_and_syntax() {
        let e = parse("displayName ne 'x'").unwrap();
        assert_eq!(
            check("user", &e, QueryMode::Default).unwrap_err().code,
            "Request_UnsupportedQuery"
        );
        assert!(parse("displayName eq 'O'Brien'").is_err());
    }

    fn props(v: serde_json::Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    /// Each advanced-only form: refused by default, accepted and evaluated in advanced mode.
    #[test]
    fn advanced_forms_need_advanced_mode_and_evaluate() {
        let pat = props(serde_json::json!({
            "displayName": "Pat", "userPrincipalName": "pat@x.com",
            "proxyAddresses": ["SMTP:pat@x.com", "smtp:p@old.org"]
        }));
        let cases = [
            ("displayName ne 'Kim'", true),
            ("displayName ne 'PAT'", false),
            ("not(displayName eq 'Pat')", false),
            ("not startsWith(displayName,'K')", true),
            ("endsWith(userPrincipalName,'@X.COM')", true),
            ("endsWith(userPrincipalName,'@y.com')", false),
            ("proxyAddresses/any(p:endsWith(p,'@old.org'))", true),
            ("not(proxyAddresses/any(p:endsWith(p,'@old.org')))", false),
        ];
        for (text, expected) in cases {
            let e = parse(text).unwrap();
            assert!(check("user", &e, QueryMode::Default).is_err(), "{text}");
            assert!(check("user", &e, QueryMode::Advanced).is_ok(), "{text}");
            assert_eq!(eval(&e, &pat), expected, "{text}");
        }
    }

    #[test]
    fn advanced_mode_still_refuses_what_graph_does_not_index() {
        let refused = [
            ("endsWith(displayName,'t')", "displayName"),
            ("displayName ge 'a'", "displayName"),
            ("proxyAddresses/any(p:p ne 'x')", "proxyAddresses"),
        ];
        for (text, prop) in refused {
            let e = parse(text).unwrap();
            let err = check("user", &e, QueryMode::Advanced).unwrap_err();
            assert_eq!(
                err.message,
                format!(
                    "Unsupported or invalid query filter clause specified for property '{prop}' of resource 'User'."
                ),
                "{text}"
            );
        }
    }
}
