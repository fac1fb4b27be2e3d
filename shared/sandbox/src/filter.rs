//! The `$filter` subset Graph answers without advanced queries
//! (docs/graph-behaviour.md#queries-and-filters): `eq`, `in` (≤ 15 child clauses), `startsWith`,
//! `and`/`or`, parentheses and a few `any` lambdas (`assignedLicenses/any(x:x/skuId eq GUID)`,
//! `proxyAddresses/any(...)`, `groupTypes/any(...)`). `ne`, `not`, `endsWith`, `ge`/`le` need
//! `ConsistencyLevel: eventual` + `$count=true` on Graph; the sandbox always answers them with
//! Graph's "required parameters might be missing" 400, since advanced queries are left out.

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

/// What `$filter` may use on an entity by default (no advanced query).
struct Caps {
    eq: &'static [&'static str],
    starts_with: &'static [&'static str],
    booleans: &'static [&'static str],
    lambdas: &'static [&'static str],
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
    booleans: &["accountEnabled"],
    lambdas: &[
        "assignedLicenses",
        "proxyAddresses",
        "otherMails",
        "imAddresses",
    ],
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
    booleans: &[
        "mailEnabled",
        "securityEnabled",
        "onPremisesSyncEnabled",
        "isAssignableToRole",
    ],
    lambdas: &["groupTypes", "proxyAddresses", "assignedLicenses"],
    resource: "Group",
};

fn caps(entity: &str) -> &'static Caps {
    if entity == "group" {
        &GROUP_CAPS
    } else {
        &USER_CAPS
    }
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

fn unknown_prop(prop: &str, _caps: &Caps) -> GraphError {
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

/// Validates a parsed filter against what Graph supports by default.
pub(crate) fn check(entity: &str, e: &Expr) -> Result<(), GraphError> {
    let caps = caps(entity);
    let clauses = child_clauses(e);
    if matches!(e, Expr::Or(..) | Expr::In { .. }) && clauses > 15 {
        return Err(GraphError::unsupported_query(format!(
            "Too many child clauses specified in search filter expression containing 'OR' operators: {clauses}. Max allowed: 15."
        )));
    }
    let check_prop = |prop: &str, list: &[&str]| -> Result<(), GraphError> {
        if list.contains(&prop) {
            Ok(())
        } else if caps.eq.contains(&prop) || known_prop(entity, prop) {
            Err(unsupported_prop(prop, caps))
        } else {
            Err(unknown_prop(prop, caps))
        }
    };
    let check_val = |prop: &str, val: &Lit| -> Result<(), GraphError> {
        let boolean = caps.booleans.contains(&prop);
        match val {
            Lit::Bool(_) if boolean => Ok(()),
            Lit::Str(s) if !boolean => {
                if s.chars().count() > 120 {
                    Err(unsupported_prop(prop, caps))
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
    };
    match e {
        Expr::Not(_) => Err(advanced("not")),
        Expr::And(a, b) | Expr::Or(a, b) => {
            check(entity, a)?;
            check(entity, b)
        }
        Expr::Cmp { prop, op, val } => {
            if op != "eq" {
                check_prop(prop, caps.eq)?;
                return Err(advanced(op));
            }
            check_prop(prop, caps.eq)?;
            check_val(prop, val)
        }
        Expr::In { prop, vals } => {
            check_prop(prop, caps.eq)?;
            vals.iter().try_for_each(|v| check_val(prop, v))
        }
        Expr::Func { name, prop, val } => {
            if name.eq_ignore_ascii_case("startsWith") {
                check_prop(prop, caps.starts_with)?;
                check_val(prop, val)
            } else if name.eq_ignore_ascii_case("endsWith") {
                Err(advanced("endsWith"))
            } else {
                Err(unsupported_prop(prop, caps))
            }
        }
        Expr::All { coll } => Err(unsupported_prop(coll, caps)),
        Expr::Any { coll, var, body } => {
            if !caps.lambdas.contains(&coll.as_str()) {
                return Err(if known_prop(entity, coll) {
                    unsupported_prop(coll, caps)
                } else {
                    unknown_prop(coll, caps)
                });
            }
            let Expr::Cmp { prop, op, val } = body.as_ref() else {
                return Err(unsupported_prop(coll, caps));
            };
            if op != "eq" {
                return Err(advanced(op));
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
            } else {
                if prop != var {
                    return Err(unsupported_prop(coll, caps));
                }
                match val {
                    Lit::Str(_) => Ok(()),
                    other => Err(type_mismatch("Edm.String", lit_type(other))),
                }
            }
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

/// Evaluates a checked filter against an object's stored properties.
pub(crate) fn eval(e: &Expr, props: &serde_json::Map<String, Value>) -> bool {
    match e {
        Expr::And(a, b) => eval(a, props) && eval(b, props),
        Expr::Or(a, b) => eval(a, props) || eval(b, props),
        Expr::Not(a) => !eval(a, props),
        Expr::Cmp { prop, val, .. } => lit_matches(props.get(prop), val),
        Expr::In { prop, vals } => vals.iter().any(|v| lit_matches(props.get(prop), v)),
        Expr::Func { prop, val, .. } => match (props.get(prop), val) {
            (Some(Value::String(s)), Lit::Str(l)) => {
                s.to_lowercase().starts_with(&l.to_lowercase())
            }
            _ => false,
        },
        Expr::All { .. } => false,
        Expr::Any { coll, var, body } => {
            let Some(items) = props.get(coll).and_then(Value::as_array) else {
                return false;
            };
            let Expr::Cmp { prop, val, .. } = body.as_ref() else {
                return false;
            };
            items.iter().any(|item| {
                if prop == var {
                    lit_matches(Some(item), val)
                } else {
                    let sub = prop.strip_prefix(&format!("{var}/")).unwrap_or(prop);
                    lit_matches(item.get(sub), val)
                }
            })
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
        assert!(check("user", &e).is_ok());
    }

    #[test]
    fn lambda_guid_unquoted() {
        let e = parse("assignedLicenses/any(x:x/skuId eq 6fd2c87f-b296-42f0-b197-1e91e994b900)")
            .unwrap();
        assert!(check("user", &e).is_ok());
        let e = parse("assignedLicenses/any(x:x/skuId eq '6fd2c87f-b296-42f0-b197-1e91e994b900')")
            .unwrap();
        assert!(check("user", &e).is_err());
    }

    #[test]
    fn rejects_ne_and_syntax() {
        let e = parse("displayName ne 'x'").unwrap();
        assert_eq!(
            check("user", &e).unwrap_err().code,
            "Request_UnsupportedQuery"
        );
        assert!(parse("displayName eq 'O'Brien'").is_err());
    }
}
