//! The SCIM-like `filter` subset PingOne answers on `/users`, `/groups`, a user's
//! `/memberOfGroups` and `/activities`
//! (<https://developer.pingidentity.com/pingone-api/platform/reference/paging-ordering-filtering-collections.html>,
//! <https://developer.pingidentity.com/pingone-api/platform/users/group-membership.html>,
//! <https://developer.pingidentity.com/pingone-api/platform/audit-activities.html>):
//! `attr eq "value"`, `attr sw "prefix"`, `enabled eq true`, `recordedat gt "<timestamp>"` (and
//! `ge`, `lt`, `le`), `memberOfGroups[id eq "<gid>"]` (every member, nested groups included) and
//! `memberOfGroups[id eq "<gid>" and type eq "DIRECT"]`, joined with `and` / `or` and
//! parentheses. Which attributes and operators are allowed depends on the resource
//! ([`Grammar`]); anything else is refused with a [`FilterError`], which the API turns into a
//! 400 `INVALID_DATA` with an `INVALID_FILTER` detail.
//!
//! Attribute names and operators ignore ASCII case, as SCIM's do (RFC 7644 §3.4.2.2,
//! <https://www.rfc-editor.org/rfc/rfc7644#section-3.4.2.2>): PingOne's own examples write
//! both `recordedat` and `recordedAt`. String comparisons ignore ASCII case too, as SCIM does for
//! attributes that are not case-exact. An attribute path that crosses an array (`resources.id`)
//! matches when any element matches. `gt`/`ge`/`lt`/`le` compare RFC 3339 timestamps as instants.

use serde_json::Value;

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct FilterError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError(message.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Sw,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn parse(word: &str) -> Option<Self> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => Self::Eq,
            "sw" => Self::Sw,
            "gt" => Self::Gt,
            "ge" => Self::Ge,
            "lt" => Self::Lt,
            "le" => Self::Le,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Sw => "sw",
            Self::Gt => "gt",
            Self::Ge => "ge",
            Self::Lt => "lt",
            Self::Le => "le",
        }
    }

    /// `gt`, `ge`, `lt`, `le`.
    pub(crate) fn is_ordered(self) -> bool {
        matches!(self, Self::Gt | Self::Ge | Self::Lt | Self::Le)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lit {
    Str(String),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    Cmp { attr: String, op: Op, value: Lit },
    MemberOf { group_id: String, direct: bool },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// What one resource's filter accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grammar {
    /// Attributes allowed with `eq`.
    pub eq: &'static [&'static str],
    /// Attributes allowed with `sw`.
    pub sw: &'static [&'static str],
    /// Timestamp attributes allowed with `gt`, `ge`, `lt` and `le`.
    pub ordered: &'static [&'static str],
    pub member_of: bool,
}

const USER_ATTRS: &[&str] = &[
    "id",
    "username",
    "email",
    "population.id",
    "externalId",
    "title",
    "enabled",
    "name.given",
    "name.family",
];

/// `/users`.
pub(crate) const USERS: Grammar = Grammar {
    eq: USER_ATTRS,
    sw: USER_ATTRS,
    ordered: &[],
    member_of: true,
};

/// A dynamic group's `userFilter`: the user filter without `memberOfGroups` (a group defined by
/// membership of groups could define itself).
pub(crate) const DYNAMIC_GROUP: Grammar = Grammar {
    eq: USER_ATTRS,
    sw: USER_ATTRS,
    ordered: &[],
    member_of: false,
};

/// `/groups`.
pub(crate) const GROUPS: Grammar = Grammar {
    eq: &["id", "name", "population.id", "externalId"],
    sw: &[],
    ordered: &[],
    member_of: true,
};

/// `/users/{id}/memberOfGroups` (over each `groupMemberships` entry).
pub(crate) const MEMBERSHIPS: Grammar = Grammar {
    eq: &["id", "name", "type"],
    sw: &[],
    ordered: &[],
    member_of: false,
};

/// `/activities`: the subset of the attributes the Audit Activities page lists that the stand-in
/// evaluates (<https://developer.pingidentity.com/pingone-api/platform/audit-activities.html>).
pub(crate) const ACTIVITIES: Grammar = Grammar {
    eq: &[
        "action.type",
        "resources.id",
        "resources.type",
        "resources.population.id",
        "correlationid",
        "actors.client.id",
    ],
    sw: &[],
    ordered: &["recordedat"],
    member_of: false,
};

const UNSUPPORTED_OPS: &[&str] = &["ne", "pr", "co", "ew", "in", "not"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Str(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
}

fn tokenize(input: &str) -> Result<Vec<Tok>, FilterError> {
    let mut toks = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | '[' | ']' => {
                chars.next();
                toks.push(match c {
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    '[' => Tok::LBracket,
                    _ => Tok::RBracket,
                });
            }
            '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(escaped) => s.push(escaped),
                            None => return err("the filter ends inside a string"),
                        },
                        Some(other) => s.push(other),
                        None => return err("a string in the filter is not closed with '\"'"),
                    }
                }
                toks.push(Tok::Str(s));
            }
            c if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                        w.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                toks.push(Tok::Word(w));
            }
            other => return err(format!("unexpected character '{other}' in the filter")),
        }
    }
    Ok(toks)
}

/// Parses `input` for a resource with `grammar`.
pub(crate) fn parse(input: &str, grammar: &Grammar) -> Result<Expr, FilterError> {
    let toks = tokenize(input)?;
    if toks.is_empty() {
        return err("the filter is empty");
    }
    let mut p = Parser {
        toks,
        pos: 0,
        grammar,
    };
    let expr = p.or_expr()?;
    match p.peek() {
        None => Ok(expr),
        Some(t) => err(format!(
            "unexpected {} after a complete expression",
            show(t)
        )),
    }
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("'{w}'"),
        Tok::Str(s) => format!("\"{s}\""),
        Tok::LParen => "'('".to_owned(),
        Tok::RParen => "')'".to_owned(),
        Tok::LBracket => "'['".to_owned(),
        Tok::RBracket => "']'".to_owned(),
    }
}

struct Parser<'g> {
    toks: Vec<Tok>,
    pos: usize,
    grammar: &'g Grammar,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(keyword))
    }

    fn expect(&mut self, want: &Tok, what: &str) -> Result<(), FilterError> {
        match self.next() {
            Some(t) if &t == want => Ok(()),
            Some(t) => err(format!("expected {what}, found {}", show(&t))),
            None => err(format!("expected {what}, found the end of the filter")),
        }
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), FilterError> {
        match self.next() {
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case(keyword) => Ok(()),
            Some(t) => err(format!("expected '{keyword}', found {}", show(&t))),
            None => err(format!("expected '{keyword}', found the end of the filter")),
        }
    }

    fn or_expr(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and_expr()?;
        while self.peek_keyword("or") {
            self.pos += 1;
            let right = self.and_expr()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.factor()?;
        while self.peek_keyword("and") {
            self.pos += 1;
            let right = self.factor()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn factor(&mut self) -> Result<Expr, FilterError> {
        match self.next() {
            Some(Tok::LParen) => {
                let inner = self.or_expr()?;
                self.expect(&Tok::RParen, "')'")?;
                Ok(inner)
            }
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("not") => {
                err("the operator 'not' is not supported")
            }
            Some(Tok::Word(w)) if w == "memberOfGroups" => self.member_of(),
            Some(Tok::Word(attr)) => self.comparison(attr),
            Some(t) => err(format!("expected an attribute name, found {}", show(&t))),
            None => err("expected an attribute name, found the end of the filter"),
        }
    }

    fn operator(&mut self, attr: &str) -> Result<Op, FilterError> {
        match self.next() {
            Some(Tok::Word(word)) => match Op::parse(&word) {
                Some(op) if op.is_ordered() && self.grammar.ordered.is_empty() => {
                    err(format!("the operator '{word}' is not supported"))
                }
                Some(op) => Ok(op),
                None if UNSUPPORTED_OPS.contains(&word.to_ascii_lowercase().as_str()) => {
                    err(format!("the operator '{word}' is not supported"))
                }
                None => err(format!(
                    "expected an operator such as 'eq' after '{attr}', found '{word}'"
                )),
            },
            Some(t) => err(format!(
                "expected an operator such as 'eq' after '{attr}', found {}",
                show(&t)
            )),
            None => err(format!("expected an operator such as 'eq' after '{attr}'")),
        }
    }

    fn comparison(&mut self, attr: String) -> Result<Expr, FilterError> {
        let op = self.operator(&attr)?;
        let allowed = match op {
            Op::Eq => self.grammar.eq,
            Op::Sw => self.grammar.sw,
            Op::Gt | Op::Ge | Op::Lt | Op::Le => self.grammar.ordered,
        };
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&attr)) {
            return err(format!(
                "the attribute '{attr}' cannot be filtered with '{}'",
                op.as_str()
            ));
        }
        let value = match self.next() {
            Some(Tok::Str(s)) => Lit::Str(s),
            Some(Tok::Word(w)) if w == "true" => Lit::Bool(true),
            Some(Tok::Word(w)) if w == "false" => Lit::Bool(false),
            Some(t) => {
                return err(format!(
                    "expected a quoted value after '{attr}', found {}",
                    show(&t)
                ));
            }
            None => return err(format!("expected a value after '{attr}'")),
        };
        if op == Op::Sw && !matches!(value, Lit::Str(_)) {
            return err("'sw' needs a quoted string");
        }
        if op.is_ordered() {
            match &value {
                Lit::Str(s) if crate::wire::parse_rfc3339_millis(s).is_some() => {}
                _ => {
                    return err(format!(
                        "'{}' needs a quoted ISO-8601 timestamp such as \"2026-01-31T09:30:00.000Z\"",
                        op.as_str()
                    ));
                }
            }
        }
        Ok(Expr::Cmp { attr, op, value })
    }

    /// `memberOfGroups[id eq "<gid>"]` or `memberOfGroups[id eq "<gid>" and type eq "DIRECT"]`.
    fn member_of(&mut self) -> Result<Expr, FilterError> {
        if !self.grammar.member_of {
            return err("'memberOfGroups' cannot be used here");
        }
        self.expect(&Tok::LBracket, "'[' after 'memberOfGroups'")?;
        self.expect(
            &Tok::Word("id".to_owned()),
            "'id' inside 'memberOfGroups[...]'",
        )?;
        self.expect_keyword("eq")?;
        let Some(Tok::Str(group_id)) = self.next() else {
            return err("expected a quoted group id in 'memberOfGroups[id eq \"...\"]'");
        };
        let mut direct = false;
        if self.peek_keyword("and") {
            self.pos += 1;
            self.expect(&Tok::Word("type".to_owned()), "'type'")?;
            self.expect_keyword("eq")?;
            match self.next() {
                Some(Tok::Str(t)) if t == "DIRECT" => direct = true,
                _ => return err("'memberOfGroups[... and type eq ...]' accepts only \"DIRECT\""),
            }
        }
        self.expect(&Tok::RBracket, "']' closing 'memberOfGroups['")?;
        Ok(Expr::MemberOf { group_id, direct })
    }
}

impl Expr {
    /// Whether `subject` (the resource's JSON) matches; `member_of(group_id, direct_only)`
    /// answers `memberOfGroups[...]`.
    pub(crate) fn matches(&self, subject: &Value, member_of: &dyn Fn(&str, bool) -> bool) -> bool {
        match self {
            Expr::And(a, b) => a.matches(subject, member_of) && b.matches(subject, member_of),
            Expr::Or(a, b) => a.matches(subject, member_of) || b.matches(subject, member_of),
            Expr::MemberOf { group_id, direct } => member_of(group_id, *direct),
            Expr::Cmp { attr, op, value } => {
                let mut found = Vec::new();
                collect(subject, &attr.split('.').collect::<Vec<_>>(), &mut found);
                found.into_iter().any(|v| compare(v, *op, value))
            }
        }
    }

    /// Whether every match of the expression has a `gt`/`ge`/`lt`/`le` bound on `attr`: a bound
    /// on either side of an `and`, or on both sides of an `or`.
    pub(crate) fn bounds(&self, attr: &str) -> bool {
        match self {
            Expr::Cmp { attr: a, op, .. } => op.is_ordered() && a.eq_ignore_ascii_case(attr),
            Expr::And(a, b) => a.bounds(attr) || b.bounds(attr),
            Expr::Or(a, b) => a.bounds(attr) && b.bounds(attr),
            Expr::MemberOf { .. } => false,
        }
    }
}

/// `v.key`, with the key's case ignored when no key matches exactly.
fn get_key<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).or_else(|| {
        v.as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Every value at `path` under `v`; an array on the way contributes each of its elements.
fn collect<'a>(v: &'a Value, path: &[&str], out: &mut Vec<&'a Value>) {
    if let Value::Array(items) = v {
        for item in items {
            collect(item, path, out);
        }
        return;
    }
    match path.split_first() {
        None => out.push(v),
        Some((key, rest)) => {
            if let Some(next) = get_key(v, key) {
                collect(next, rest, out);
            }
        }
    }
}

fn compare(found: &Value, op: Op, want: &Lit) -> bool {
    match (found, op, want) {
        (Value::String(s), Op::Eq, Lit::Str(want)) => s.eq_ignore_ascii_case(want),
        (Value::String(s), Op::Sw, Lit::Str(want)) => s
            .get(..want.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(want)),
        (Value::Bool(b), Op::Eq, Lit::Bool(want)) => b == want,
        (Value::String(s), op, Lit::Str(want)) if op.is_ordered() => {
            let (Some(have), Some(want)) = (
                crate::wire::parse_rfc3339_millis(s),
                crate::wire::parse_rfc3339_millis(want),
            ) else {
                return false;
            };
            match op {
                Op::Gt => have > want,
                Op::Ge => have >= want,
                Op::Lt => have < want,
                _ => have <= want,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({"username": "alice", "enabled": true, "name": {"given": "Alice"}, "population": {"id": "p1"}})
    }

    fn eval(f: &str) -> bool {
        let e = parse(f, &USERS).unwrap_or_else(|e| panic!("{f}: {e}"));
        e.matches(&user(), &|g, direct| g == "g1" && !direct)
    }

    #[test]
    fn evaluates() {
        assert!(eval(r#"username eq "ALICE""#));
        assert!(eval(r#"name.given sw "al""#));
        assert!(!eval(r#"name.given sw "alicex""#));
        assert!(eval("enabled eq true"));
        assert!(!eval("enabled eq false"));
        assert!(eval(
            r#"population.id eq "p1" and (username eq "x" or enabled eq true)"#
        ));
        assert!(!eval(r#"population.id eq "p2" or username eq "bob""#));
        assert!(eval(r#"memberOfGroups[id eq "g1"]"#));
        assert!(!eval(r#"memberOfGroups[id eq "g1" and type eq "DIRECT"]"#));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        // false and false or true == (false and false) or true
        assert!(eval(
            r#"username eq "x" and username eq "y" or enabled eq true"#
        ));
        // true or false and false == true or (false and false)
        assert!(eval(
            r#"enabled eq true or username eq "x" and username eq "y""#
        ));
    }

    #[test]
    fn refuses() {
        for (f, needle) in [
            (r#"username ne "a""#, "'ne' is not supported"),
            (r#"username gt "a""#, "'gt' is not supported"),
            ("username pr", "'pr' is not supported"),
            (r#"not (username eq "a")"#, "'not' is not supported"),
            (r#"mobilePhone eq "1""#, "'mobilePhone' cannot be filtered"),
            (r#"username eq "a" and"#, "end of the filter"),
            (r#"(username eq "a""#, "expected ')'"),
            (r#"username eq "a"#, "not closed"),
            (
                r#"memberOfGroups[id eq "g" and type eq "INDIRECT"]"#,
                "only \"DIRECT\"",
            ),
            ("", "empty"),
        ] {
            let e = parse(f, &USERS)
                .err()
                .unwrap_or_else(|| panic!("{f} parsed"));
            assert!(e.0.contains(needle), "{f}: {e}");
        }
        assert!(parse(r#"username sw "a""#, &GROUPS).is_err());
        assert!(parse(r#"memberOfGroups[id eq "g"]"#, &DYNAMIC_GROUP).is_err());
        for f in [
            r#"recordedat gt "yesterday""#,
            r#"action.type gt "2026-01-01T00:00:00Z""#,
            r#"recordedat eq "2026-01-01T00:00:00Z""#,
            r#"action.type sw "USER""#,
        ] {
            assert!(parse(f, &ACTIVITIES).is_err(), "{f}");
        }
    }

    #[test]
    fn activity_filters() {
        let record = json!({
            "recordedAt": "2026-01-31T09:30:00.500Z",
            "action": {"type": "USER.CREATED"},
            "resources": [{"type": "USER", "id": "u1"}, {"type": "GROUP", "id": "g1"}],
        });
        let eval = |f: &str| {
            parse(f, &ACTIVITIES)
                .unwrap_or_else(|e| panic!("{f}: {e}"))
                .matches(&record, &|_, _| false)
        };
        assert!(eval(r#"recordedat gt "2026-01-31T09:30:00.499Z""#));
        assert!(!eval(r#"recordedat gt "2026-01-31T09:30:00.500Z""#));
        assert!(eval(r#"recordedAt ge "2026-01-31T09:30:00.500Z""#));
        assert!(eval(
            r#"recordedat le "2026-01-31T10:30:00.500+01:00" or recordedat le "2000-01-01T00:00:00Z""#
        ));
        assert!(eval(
            r#"resources.id eq "g1" AND action.type eq "USER.CREATED""#
        ));
        assert!(!eval(r#"resources.type eq "MEMBER_OF_GROUP""#));
        let bounded = |f: &str| parse(f, &ACTIVITIES).map(|e| e.bounds("recordedat"));
        assert_eq!(
            bounded(r#"action.type eq "X" and recordedat gt "2026-01-01T00:00:00Z""#),
            Ok(true)
        );
        assert_eq!(
            bounded(r#"action.type eq "X" or recordedat gt "2026-01-01T00:00:00Z""#),
            Ok(false)
        );
    }
}
